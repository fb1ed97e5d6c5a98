//! In-memory answers to the two reads a guide makes all the time: a
//! broadcast day's timetable and now/next. Thousands of viewers ask for the
//! same day and the same now/next; the schedule changes a few times a day.
//!
//! Every schedule write forgets everything cached, in this process at once
//! and in the others through the bus ([`CHANGED_SUBJECT`]). The bus delivers
//! at most once, so entries also expire after a configured time: a lost
//! message leaves another process stale for that long at most. A generation
//! number keeps a read that started before a write from caching what it read
//! after the write was announced.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use onair_proto::media::v1 as pb;

/// The bus subject every media process publishes on after a write, and
/// listens to for forgetting its cache. Its payload is empty.
pub const CHANGED_SUBJECT: &str = onair_kit::subjects::MEDIA_CHANGED;

/// What a timetable is cached under: the channel (empty for all) and the
/// range in unix milliseconds.
pub type TimetableKey = (String, i64, i64);

/// The cached answers, shared by every request of a process.
pub struct ScheduleCache {
    /// How long an entry is trusted without hearing of a change.
    ttl: Duration,
    /// How many entries of each kind are kept; the oldest goes first.
    capacity: usize,
    state: Mutex<CacheState>,
}

#[derive(Default)]
struct CacheState {
    /// Grows with every invalidation; an entry computed under an older one is
    /// not stored.
    generation: u64,
    timetables: HashMap<TimetableKey, Cached<pb::Timetable>>,
    now_next: HashMap<String, Cached<pb::BatchGetNowNextResponse>>,
}

struct Cached<T> {
    value: Arc<T>,
    stored: Instant,
    /// The schedule instants (unix ms) between which the answer holds:
    /// now/next changes when a slot starts or ends.
    valid_from_ms: i64,
    valid_until_ms: i64,
}

impl ScheduleCache {
    /// A cache keeping up to `capacity` entries of each kind for up to `ttl`;
    /// a zero `ttl` or `capacity` caches nothing.
    pub fn new(ttl: Duration, capacity: usize) -> ScheduleCache {
        ScheduleCache {
            ttl,
            capacity,
            state: Mutex::new(CacheState::default()),
        }
    }

    fn state(&self) -> MutexGuard<'_, CacheState> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn enabled(&self) -> bool {
        !self.ttl.is_zero() && self.capacity > 0
    }

    /// The generation to hand back to a `put_*` after computing an answer.
    pub fn generation(&self) -> u64 {
        self.state().generation
    }

    /// Forgets everything: the schedule changed.
    pub fn invalidate(&self) {
        let mut state = self.state();
        state.generation += 1;
        state.timetables.clear();
        state.now_next.clear();
    }

    /// The timetable cached under `key`, if still trusted.
    pub fn timetable(&self, key: &TimetableKey) -> Option<Arc<pb::Timetable>> {
        let state = self.state();
        let cached = state.timetables.get(key)?;
        (cached.stored.elapsed() < self.ttl).then(|| cached.value.clone())
    }

    /// Stores a timetable computed under `generation`; dropped if the
    /// schedule changed since.
    pub fn put_timetable(&self, key: TimetableKey, value: Arc<pb::Timetable>, generation: u64) {
        if !self.enabled() {
            return;
        }
        let mut state = self.state();
        if state.generation != generation {
            return;
        }
        let cached = Cached {
            value,
            stored: Instant::now(),
            valid_from_ms: i64::MIN,
            valid_until_ms: i64::MAX,
        };
        insert_bounded(&mut state.timetables, key, cached, self.capacity);
    }

    /// Now/next for the channels `key` names, if cached and still true at
    /// `now_ms`.
    pub fn now_next(&self, key: &str, now_ms: i64) -> Option<Arc<pb::BatchGetNowNextResponse>> {
        let state = self.state();
        let cached = state.now_next.get(key)?;
        let holds = cached.valid_from_ms <= now_ms && now_ms < cached.valid_until_ms;
        (holds && cached.stored.elapsed() < self.ttl).then(|| cached.value.clone())
    }

    /// Stores now/next computed at `valid_from_ms`, true until the first slot
    /// boundary after it (`valid_until_ms`).
    pub fn put_now_next(
        &self,
        key: String,
        value: Arc<pb::BatchGetNowNextResponse>,
        generation: u64,
        valid_from_ms: i64,
        valid_until_ms: i64,
    ) {
        if !self.enabled() {
            return;
        }
        let mut state = self.state();
        if state.generation != generation {
            return;
        }
        let cached = Cached {
            value,
            stored: Instant::now(),
            valid_from_ms,
            valid_until_ms,
        };
        insert_bounded(&mut state.now_next, key, cached, self.capacity);
    }
}

fn insert_bounded<K: Eq + std::hash::Hash + Clone, T>(
    map: &mut HashMap<K, Cached<T>>,
    key: K,
    value: Cached<T>,
    capacity: usize,
) {
    if map.len() >= capacity && !map.contains_key(&key) {
        let oldest = map
            .iter()
            .min_by_key(|(_, cached)| cached.stored)
            .map(|(key, _)| key.clone());
        if let Some(oldest) = oldest {
            map.remove(&oldest);
        }
    }
    map.insert(key, value);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn timetable() -> Arc<pb::Timetable> {
        Arc::new(pb::Timetable::default())
    }

    #[test]
    fn a_write_during_a_read_keeps_the_read_out() {
        let cache = ScheduleCache::new(Duration::from_secs(60), 8);
        let key = (String::new(), 0, 10);
        let before_write = cache.generation();
        cache.invalidate();
        cache.put_timetable(key.clone(), timetable(), before_write);
        assert!(cache.timetable(&key).is_none());
        cache.put_timetable(key.clone(), timetable(), cache.generation());
        assert!(cache.timetable(&key).is_some());
        cache.invalidate();
        assert!(cache.timetable(&key).is_none());
    }

    #[test]
    fn now_next_holds_until_the_next_boundary() {
        let cache = ScheduleCache::new(Duration::from_secs(60), 8);
        let value = Arc::new(pb::BatchGetNowNextResponse::default());
        cache.put_now_next(String::new(), value, cache.generation(), 100, 200);
        assert!(cache.now_next("", 99).is_none());
        assert!(cache.now_next("", 100).is_some());
        assert!(cache.now_next("", 199).is_some());
        assert!(cache.now_next("", 200).is_none());
        assert!(cache.now_next("news-1", 150).is_none());
    }

    #[test]
    fn the_oldest_entry_makes_room_and_zero_disables() {
        let cache = ScheduleCache::new(Duration::from_secs(60), 2);
        for end in 1..=3 {
            cache.put_timetable((String::new(), 0, end), timetable(), cache.generation());
        }
        assert!(cache.timetable(&(String::new(), 0, 1)).is_none());
        assert!(cache.timetable(&(String::new(), 0, 3)).is_some());
        let disabled = ScheduleCache::new(Duration::ZERO, 2);
        disabled.put_timetable((String::new(), 0, 1), timetable(), 0);
        assert!(disabled.timetable(&(String::new(), 0, 1)).is_none());
    }
}
