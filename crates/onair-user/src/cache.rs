//! A short-lived cache of users: every comment post asks about its author, and
//! users change rarely. Each process evicts a user as soon as it hears, on the
//! bus, that another process changed them; the time limit bounds staleness
//! should such a message be lost.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use onair_kit::store::StoreError;

use crate::store::{UserRecord, UserStore};

/// How many users are cached at most.
pub const USER_CACHE_CAPACITY: usize = 100_000;

/// The users read lately. `ttl` is the station's `user.cache_ms`: how long a
/// cached user is trusted without news from the bus.
pub struct UserCache {
    entries: Mutex<HashMap<String, (UserRecord, Instant)>>,
    /// Counts evictions. A read that started before an eviction may have
    /// fetched the old row, so it must not put it back (see [`UserCache::put`]).
    generation: AtomicU64,
    ttl: Duration,
    capacity: usize,
}

impl UserCache {
    /// An empty cache that trusts an entry for `ttl` and holds at most `capacity` users.
    pub fn new(ttl: Duration, capacity: usize) -> UserCache {
        UserCache {
            entries: Mutex::new(HashMap::new()),
            generation: AtomicU64::new(0),
            ttl,
            capacity,
        }
    }

    fn entries(&self) -> std::sync::MutexGuard<'_, HashMap<String, (UserRecord, Instant)>> {
        self.entries
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The cached user, unless absent or older than the time limit.
    pub fn get(&self, id: &str) -> Option<UserRecord> {
        let entries = self.entries();
        let (user, cached_at) = entries.get(id)?;
        (cached_at.elapsed() < self.ttl).then(|| user.clone())
    }

    /// Where the cache stands now; take it before reading the store, and
    /// hand it to [`UserCache::put`].
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::SeqCst)
    }

    /// Caches a user read from the store, unless a user was evicted since
    /// `read_generation`: the row read may predate that change.
    pub fn put(&self, user: UserRecord, read_generation: u64) {
        let mut entries = self.entries();
        if self.generation.load(Ordering::SeqCst) != read_generation {
            return;
        }
        if entries.len() >= self.capacity {
            let ttl = self.ttl;
            entries.retain(|_, (_, cached_at)| cached_at.elapsed() < ttl);
            if entries.len() >= self.capacity {
                entries.clear();
            }
        }
        entries.insert(user.id.clone(), (user, Instant::now()));
    }

    /// The user, from the cache or else from the store (and then cached).
    pub async fn get_or_load(
        &self,
        store: &UserStore,
        id: &str,
    ) -> Result<Option<UserRecord>, StoreError> {
        if let Some(user) = self.get(id) {
            return Ok(Some(user));
        }
        let read_generation = self.generation();
        let Some(user) = store.get_user(id).await? else {
            return Ok(None);
        };
        self.put(user.clone(), read_generation);
        Ok(Some(user))
    }

    /// Forgets a user that changed, so the next read goes to the store.
    pub fn evict(&self, id: &str) {
        let mut entries = self.entries();
        self.generation.fetch_add(1, Ordering::SeqCst);
        entries.remove(id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(id: &str) -> UserRecord {
        UserRecord {
            id: id.to_owned(),
            display_name: "x".to_owned(),
            role: 1,
            trust_score: 50,
            create_time_ms: 0,
            update_time_ms: 0,
            ban: None,
        }
    }

    #[test]
    fn entries_expire_and_can_be_evicted() {
        let cache = UserCache::new(Duration::from_secs(60), 10);
        cache.put(user("a"), cache.generation());
        assert!(cache.get("a").is_some());
        cache.evict("a");
        assert!(cache.get("a").is_none());

        let expired = UserCache::new(Duration::ZERO, 10);
        expired.put(user("b"), expired.generation());
        assert!(expired.get("b").is_none());
    }

    #[test]
    fn a_full_cache_makes_room() {
        let cache = UserCache::new(Duration::from_secs(60), 2);
        cache.put(user("a"), cache.generation());
        cache.put(user("b"), cache.generation());
        cache.put(user("c"), cache.generation());
        assert!(cache.get("c").is_some());
    }

    #[test]
    fn a_read_that_overlapped_a_change_is_not_cached() {
        let cache = UserCache::new(Duration::from_secs(60), 10);
        let before_read = cache.generation();
        cache.evict("a");
        cache.put(user("a"), before_read);
        assert!(cache.get("a").is_none());
    }
}
