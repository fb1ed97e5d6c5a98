//! In-memory answers to the two reads a guide makes all the time: a
//! broadcast day's (or week's) timetable and now/next. Thousands of viewers
//! ask for the same day and the same now/next; the schedule changes a few
//! times a day.
//!
//! A timetable is kept in parts, one per channel and range, beside the
//! station's channel list. A write forgets only what it changed: a slot's
//! channel, or everything after a program or import changes many. Other
//! processes hear of it through the bus ([`CHANGED_SUBJECT`], whose payload
//! is the catalogue's [`MediaChanged`], made from a [`Changed`]). The bus
//! delivers at most once, so entries also expire after a configured time: a
//! lost message leaves another process stale for that long at most.
//! Generation numbers keep a read that started before a write from caching
//! what it read after the write was announced.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use onair_kit::events::{Announcement as _, MEDIA_CHANGED, MediaChanged, changed_channels};
use onair_proto::media::v1 as pb;

/// The bus subject every media process publishes on after a write, and
/// listens to for forgetting its cache. Its payload is a [`MediaChanged`].
pub const CHANGED_SUBJECT: &str = MEDIA_CHANGED;

/// A timetable range in unix milliseconds: its start and its end.
pub type Range = (i64, i64);

/// One channel's entries over one range, encoded as the `entries` field of
/// its `ChannelTimetable`.
pub type Entries = bytes::Bytes;

/// What a write changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Changed {
    /// Anything may have changed (a program several channels show, an
    /// import).
    Everything,
    /// The channels themselves or their slots, and nothing else.
    Channels(Vec<String>),
}

impl Changed {
    /// The bus payload: a [`MediaChanged`] naming the channels, or none
    /// for everything.
    pub fn to_payload(&self) -> bytes::Bytes {
        let channel_ids = match self {
            Changed::Everything => Vec::new(),
            Changed::Channels(ids) => ids.clone(),
        };
        MediaChanged { channel_ids }.encode_payload()
    }

    /// Reads a payload; anything but a list of channel ids is everything.
    pub fn from_payload(payload: &[u8]) -> Changed {
        match changed_channels(payload) {
            Some(ids) => Changed::Channels(ids),
            None => Changed::Everything,
        }
    }
}

/// The cached answers, shared by every request of a process.
pub struct ScheduleCache {
    /// How long an entry is trusted without hearing of a change.
    ttl: Duration,
    /// How many timetable ranges and now/next answers are kept; the oldest
    /// goes first.
    capacity: usize,
    state: Mutex<CacheState>,
}

#[derive(Default)]
struct CacheState {
    /// Grows with every change; a read records it before it starts, and what
    /// it read is not stored if what it read has changed since.
    generation: u64,
    /// The generation of the last change to everything.
    everything_changed: u64,
    /// The generation of the last change to each channel since then.
    channel_changed: HashMap<String, u64>,
    /// The station's channels, in number order.
    channels: Option<Cached<Vec<pb::Channel>>>,
    timetables: HashMap<Range, RangeParts>,
    now_next: HashMap<String, Cached<pb::BatchGetNowNextResponse>>,
}

impl CacheState {
    fn unchanged_since(&self, channel_id: &str, generation: u64) -> bool {
        self.everything_changed <= generation
            && self
                .channel_changed
                .get(channel_id)
                .is_none_or(|changed| *changed <= generation)
    }
}

/// The parts of one range: each channel's entries.
struct RangeParts {
    /// When a part was last stored: the oldest range goes first.
    stored: Instant,
    parts: HashMap<String, (Entries, Instant)>,
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
    /// A cache keeping up to `capacity` ranges and now/next answers for up
    /// to `ttl`; a zero `ttl` or `capacity` caches nothing.
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

    fn fresh(&self, stored: Instant) -> bool {
        stored.elapsed() < self.ttl
    }

    /// The generation to hand back to a `put_*` after reading an answer.
    pub fn generation(&self) -> u64 {
        self.state().generation
    }

    /// Forgets what a write changed. The channel list and now/next are
    /// always forgotten: they are cheap to read again.
    pub fn invalidate(&self, changed: &Changed) {
        let mut state = self.state();
        state.generation += 1;
        let generation = state.generation;
        state.channels = None;
        state.now_next.clear();
        match changed {
            Changed::Everything => {
                state.everything_changed = generation;
                state.channel_changed.clear();
                state.timetables.clear();
            }
            Changed::Channels(ids) => {
                for id in ids {
                    state.channel_changed.insert(id.clone(), generation);
                    for range in state.timetables.values_mut() {
                        range.parts.remove(id);
                    }
                }
                state.timetables.retain(|_, range| !range.parts.is_empty());
            }
        }
    }

    /// The station's channels, if cached.
    pub fn channels(&self) -> Option<Arc<Vec<pb::Channel>>> {
        let state = self.state();
        let cached = state.channels.as_ref()?;
        self.fresh(cached.stored).then(|| cached.value.clone())
    }

    /// Stores the channel list read under `generation`; dropped if anything
    /// changed since.
    pub fn put_channels(&self, channels: Arc<Vec<pb::Channel>>, generation: u64) {
        if !self.enabled() {
            return;
        }
        let mut state = self.state();
        if state.generation != generation {
            return;
        }
        state.channels = Some(Cached {
            value: channels,
            stored: Instant::now(),
            valid_from_ms: i64::MIN,
            valid_until_ms: i64::MAX,
        });
    }

    /// Each channel's cached entries over `range`, in the order given.
    pub fn entries<'a>(
        &self,
        range: Range,
        channel_ids: impl Iterator<Item = &'a str>,
    ) -> Vec<Option<Entries>> {
        let state = self.state();
        let parts = state.timetables.get(&range);
        channel_ids
            .map(|id| {
                let (entries, stored) = parts?.parts.get(id)?;
                self.fresh(*stored).then(|| entries.clone())
            })
            .collect()
    }

    /// Stores channels' entries over `range` read under `generation`; a
    /// channel that changed since is left out.
    pub fn put_entries(&self, range: Range, parts: Vec<(String, Entries)>, generation: u64) {
        if !self.enabled() {
            return;
        }
        let mut state = self.state();
        let parts: Vec<(String, Entries)> = parts
            .into_iter()
            .filter(|(id, _)| state.unchanged_since(id, generation))
            .collect();
        if parts.is_empty() {
            return;
        }
        let now = Instant::now();
        if state.timetables.len() >= self.capacity && !state.timetables.contains_key(&range) {
            let oldest = state
                .timetables
                .iter()
                .min_by_key(|(_, range)| range.stored)
                .map(|(range, _)| *range);
            if let Some(oldest) = oldest {
                state.timetables.remove(&oldest);
            }
        }
        let range = state.timetables.entry(range).or_insert_with(|| RangeParts {
            stored: now,
            parts: HashMap::new(),
        });
        range.stored = now;
        for (id, entries) in parts {
            range.parts.insert(id, (entries, now));
        }
    }

    /// Now/next for the channels `key` names, if cached and still true at
    /// `now_ms`.
    pub fn now_next(&self, key: &str, now_ms: i64) -> Option<Arc<pb::BatchGetNowNextResponse>> {
        let state = self.state();
        let cached = state.now_next.get(key)?;
        let holds = cached.valid_from_ms <= now_ms && now_ms < cached.valid_until_ms;
        (holds && self.fresh(cached.stored)).then(|| cached.value.clone())
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
        let map = &mut state.now_next;
        if map.len() >= self.capacity && !map.contains_key(&key) {
            let oldest = map
                .iter()
                .min_by_key(|(_, cached)| cached.stored)
                .map(|(key, _)| key.clone());
            if let Some(oldest) = oldest {
                map.remove(&oldest);
            }
        }
        map.insert(
            key,
            Cached {
                value,
                stored: Instant::now(),
                valid_from_ms,
                valid_until_ms,
            },
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries(title: &str) -> Entries {
        Entries::from(title.to_owned())
    }

    fn cached(cache: &ScheduleCache, range: Range, ids: &[&str]) -> Vec<bool> {
        cache
            .entries(range, ids.iter().copied())
            .iter()
            .map(Option::is_some)
            .collect()
    }

    #[test]
    fn a_write_during_a_read_keeps_the_read_out() {
        let cache = ScheduleCache::new(Duration::from_secs(60), 8);
        let range = (0, 10);
        let before_write = cache.generation();
        cache.invalidate(&Changed::Channels(vec!["one".to_owned()]));
        cache.put_entries(
            range,
            vec![
                ("one".to_owned(), entries("a")),
                ("two".to_owned(), entries("b")),
            ],
            before_write,
        );
        assert_eq!(
            cached(&cache, range, &["one", "two"]),
            vec![false, true],
            "only the channel written to is left out"
        );
        cache.put_entries(
            range,
            vec![("one".to_owned(), entries("a"))],
            cache.generation(),
        );
        assert_eq!(cached(&cache, range, &["one", "two"]), vec![true, true]);
        let before_everything = cache.generation();
        cache.invalidate(&Changed::Everything);
        assert_eq!(cached(&cache, range, &["one", "two"]), vec![false, false]);
        cache.put_entries(
            range,
            vec![("two".to_owned(), entries("b"))],
            before_everything,
        );
        assert_eq!(cached(&cache, range, &["two"]), vec![false]);
    }

    #[test]
    fn a_write_forgets_only_its_channels() {
        let cache = ScheduleCache::new(Duration::from_secs(60), 8);
        let generation = cache.generation();
        for range in [(0, 10), (10, 20)] {
            cache.put_entries(
                range,
                vec![
                    ("one".to_owned(), entries("a")),
                    ("two".to_owned(), entries("b")),
                ],
                generation,
            );
        }
        cache.put_channels(Arc::new(vec![pb::Channel::default()]), generation);
        cache.invalidate(&Changed::Channels(vec!["two".to_owned()]));
        for range in [(0, 10), (10, 20)] {
            assert_eq!(cached(&cache, range, &["one", "two"]), vec![true, false]);
        }
        assert!(cache.channels().is_none(), "the channel list is read again");
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
        cache.invalidate(&Changed::Channels(vec!["news-1".to_owned()]));
        assert!(cache.now_next("", 150).is_none());
    }

    #[test]
    fn the_oldest_range_makes_room_and_zero_disables() {
        let cache = ScheduleCache::new(Duration::from_secs(60), 2);
        for end in 1..=3 {
            cache.put_entries(
                (0, end),
                vec![("one".to_owned(), entries("a"))],
                cache.generation(),
            );
        }
        assert_eq!(cached(&cache, (0, 1), &["one"]), vec![false]);
        assert_eq!(cached(&cache, (0, 3), &["one"]), vec![true]);
        let disabled = ScheduleCache::new(Duration::ZERO, 2);
        disabled.put_entries((0, 1), vec![("one".to_owned(), entries("a"))], 0);
        assert_eq!(cached(&disabled, (0, 1), &["one"]), vec![false]);
    }

    #[test]
    fn payloads_name_channels_or_everything() {
        let channels = Changed::Channels(vec!["one".to_owned(), "two".to_owned()]);
        assert_eq!(Changed::from_payload(&channels.to_payload()), channels);
        assert_eq!(
            Changed::from_payload(&Changed::Everything.to_payload()),
            Changed::Everything
        );
        assert_eq!(Changed::from_payload(&[0xff, 0xfe]), Changed::Everything);
    }
}
