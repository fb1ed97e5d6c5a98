//! What the contracts' schedule messages say, read the same way by every
//! service that caches what is on air.

use crate::media::v1::{NowNext, Slot};

/// Unix milliseconds of a timestamp; an absent one is the epoch.
fn millis(timestamp: Option<&prost_types::Timestamp>) -> i64 {
    timestamp.map_or(0, |timestamp| {
        timestamp
            .seconds
            .saturating_mul(1000)
            .saturating_add(i64::from(timestamp.nanos / 1_000_000))
    })
}

impl NowNext {
    /// The slot on air, and when what is on air next changes, in Unix
    /// milliseconds: the slot's end, or in a gap the next slot's start, or
    /// never (`i64::MAX`) when nothing is scheduled.
    pub fn on_air_until(self) -> (Option<Slot>, i64) {
        let slot = self.now.and_then(|entry| entry.slot);
        let next_start = self
            .next
            .and_then(|entry| entry.slot)
            .map(|slot| millis(slot.start_time.as_ref()));
        let changes_at = match &slot {
            Some(slot) => millis(slot.end_time.as_ref()),
            None => next_start.unwrap_or(i64::MAX),
        };
        (slot, changes_at)
    }
}
