//! The time services read, so that tests can move it instead of sleeping.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant, SystemTime};

use crate::store::{from_unix_millis, unix_millis};

/// Wall-clock time: the system's, or a manual one in tests.
#[derive(Clone)]
pub struct Clock {
    manual: Option<Arc<AtomicI64>>,
}

impl Clock {
    /// The system clock.
    pub fn system() -> Clock {
        Clock { manual: None }
    }

    /// A clock that stands still at `start` until [`Clock::advance`] moves it.
    pub fn manual(start: SystemTime) -> Clock {
        Clock {
            manual: Some(Arc::new(AtomicI64::new(unix_millis(start)))),
        }
    }

    /// The current wall-clock time, to the millisecond.
    pub fn now(&self) -> SystemTime {
        from_unix_millis(self.now_ms())
    }

    /// Milliseconds since the Unix epoch.
    pub fn now_ms(&self) -> i64 {
        match &self.manual {
            Some(millis) => millis.load(Ordering::SeqCst),
            None => unix_millis(SystemTime::now()),
        }
    }

    /// Time since a fixed point that never goes back, for rate limits: the
    /// process's monotonic clock, or a manual clock's own time in tests.
    pub fn monotonic(&self) -> Duration {
        match &self.manual {
            Some(millis) => {
                Duration::from_millis(u64::try_from(millis.load(Ordering::SeqCst)).unwrap_or(0))
            }
            None => {
                static START: OnceLock<Instant> = OnceLock::new();
                START.get_or_init(Instant::now).elapsed()
            }
        }
    }

    /// Moves a manual clock forward; the system clock ignores it.
    pub fn advance(&self, by: Duration) {
        if let Some(millis) = &self.manual {
            let delta = i64::try_from(by.as_millis()).unwrap_or(i64::MAX);
            millis.fetch_add(delta, Ordering::SeqCst);
        }
    }
}

impl Default for Clock {
    fn default() -> Self {
        Clock::system()
    }
}

impl std::fmt::Debug for Clock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.manual {
            Some(_) => write!(f, "Clock::manual({})", self.now_ms()),
            None => write!(f, "Clock::system"),
        }
    }
}

/// Unix milliseconds as RFC 3339 in UTC, for messages people read.
pub fn format_millis(millis: i64) -> String {
    match jiff::Timestamp::from_millisecond(millis) {
        Ok(timestamp) => timestamp.to_string(),
        Err(_) => format!("{millis} ms since the epoch"),
    }
}

/// Unix milliseconds of a protobuf timestamp; an absent one is the epoch.
pub fn millis_from_timestamp(timestamp: Option<&prost_types::Timestamp>) -> i64 {
    timestamp.map_or(0, |timestamp| {
        timestamp.seconds * 1000 + i64::from(timestamp.nanos / 1_000_000)
    })
}

/// A protobuf timestamp from unix milliseconds.
pub fn timestamp_from_millis(millis: i64) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: millis.div_euclid(1000),
        nanos: i32::try_from(millis.rem_euclid(1000) * 1_000_000).unwrap_or(0),
    }
}
