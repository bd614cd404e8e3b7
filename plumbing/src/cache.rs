//! A small bounded cache whose entries expire: ingest's key lookups, the
//! API's account statuses and its series reads all use it.
//!
//! Bounded by entry count and by a total weight (each entry says what it
//! weighs; 1 unless it holds something large). When an insert would exceed
//! either bound, expired entries go first, and if that is not enough, all of
//! them: an emptied cache costs some re-reads, never correctness, and keeps
//! the worst case simple.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// A bounded map of `K` to `V` whose entries live `ttl`.
#[derive(Debug)]
pub struct TtlCache<K, V> {
    ttl: Duration,
    max_entries: usize,
    max_weight: usize,
    inner: Mutex<Inner<K, V>>,
}

#[derive(Debug)]
struct Inner<K, V> {
    entries: HashMap<K, (Instant, V, usize)>,
    weight: usize,
}

impl<K: Hash + Eq + Clone, V: Clone> TtlCache<K, V> {
    /// At most `max_entries` entries of total weight `max_weight`, each
    /// served for `ttl` after it was inserted.
    pub fn new(ttl: Duration, max_entries: usize, max_weight: usize) -> Self {
        Self { ttl, max_entries, max_weight, inner: Mutex::new(Inner { entries: HashMap::new(), weight: 0 }) }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner<K, V>> {
        self.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The value for `k` if it is there and younger than the ttl.
    pub fn get(&self, k: &K) -> Option<V> {
        let inner = self.lock();
        inner.entries.get(k).filter(|(at, _, _)| at.elapsed() < self.ttl).map(|(_, v, _)| v.clone())
    }

    /// The value for `k` whatever its age (for state that must outlive a
    /// refresh, such as a key's rate limiter).
    pub fn get_stale(&self, k: &K) -> Option<V> {
        self.lock().entries.get(k).map(|(_, v, _)| v.clone())
    }

    /// Stores `v` for `k`, weighing `weight`.
    pub fn insert(&self, k: K, v: V, weight: usize) {
        if self.max_entries == 0 || weight > self.max_weight {
            return;
        }
        let mut inner = self.lock();
        if let Some((_, _, w)) = inner.entries.remove(&k) {
            inner.weight -= w;
        }
        if inner.entries.len() >= self.max_entries || inner.weight + weight > self.max_weight {
            let ttl = self.ttl;
            inner.entries.retain(|_, (at, _, _)| at.elapsed() < ttl);
            inner.weight = inner.entries.values().map(|(_, _, w)| w).sum();
            if inner.entries.len() >= self.max_entries || inner.weight + weight > self.max_weight {
                inner.entries.clear();
                inner.weight = 0;
            }
        }
        inner.weight += weight;
        inner.entries.insert(k, (Instant::now(), v, weight));
    }

    /// Forgets everything.
    pub fn clear(&self) {
        let mut inner = self.lock();
        inner.entries.clear();
        inner.weight = 0;
    }

    pub fn len(&self) -> usize {
        self.lock().entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_expire_and_the_bounds_hold() {
        let c: TtlCache<u32, &str> = TtlCache::new(Duration::from_millis(30), 3, 10);
        c.insert(1, "a", 1);
        assert_eq!(c.get(&1), Some("a"));
        std::thread::sleep(Duration::from_millis(40));
        assert_eq!(c.get(&1), None, "expired");
        assert_eq!(c.get_stale(&1), Some("a"), "still there for get_stale");
        for k in 2..10 {
            c.insert(k, "x", 1);
            assert!(c.len() <= 3);
        }
        c.insert(20, "heavy", 9);
        assert!(c.len() <= 2 && c.get(&20) == Some("heavy"));
        c.insert(21, "too heavy", 11);
        assert_eq!(c.get(&21), None, "heavier than the whole cache: not kept");
        let off: TtlCache<u32, u32> = TtlCache::new(Duration::from_secs(1), 0, 10);
        off.insert(1, 1, 1);
        assert!(off.is_empty(), "a zero-entry cache keeps nothing");
    }
}
