//! The advisor's answer cache: the same key within the time-to-live gets the stored answer
//! without a call. The caller chooses the key (the incident's fingerprint and a digest of the
//! evidence sent, so new evidence asks again). Bounded: when full, the oldest answer goes.
//! Pure: every method takes the time.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use super::config::CacheSettings;

/// Answers by key, each kept for the time-to-live.
#[derive(Debug, Clone)]
pub struct Cache<V> {
    ttl: Duration,
    capacity: usize,
    entries: HashMap<String, (Instant, V)>,
}

impl<V: Clone> Cache<V> {
    /// An empty cache; a zero `ttl` or `entries` keeps nothing.
    pub fn new(settings: CacheSettings) -> Self {
        Cache {
            ttl: settings.ttl,
            capacity: settings.entries,
            entries: HashMap::new(),
        }
    }

    /// The answer stored under `key`, if it is younger than the time-to-live at `now`.
    pub fn get(&mut self, key: &str, now: Instant) -> Option<V> {
        let (stored, value) = self.entries.get(key)?;
        if now.saturating_duration_since(*stored) < self.ttl {
            return Some(value.clone());
        }
        self.entries.remove(key);
        None
    }

    /// Stores `value` under `key` at `now`, dropping expired answers and then, when full, the
    /// oldest one.
    pub fn insert(&mut self, key: String, value: V, now: Instant) {
        if self.capacity == 0 || self.ttl.is_zero() {
            return;
        }
        if !self.entries.contains_key(&key) && self.entries.len() >= self.capacity {
            let ttl = self.ttl;
            self.entries
                .retain(|_, (stored, _)| now.saturating_duration_since(*stored) < ttl);
            if self.entries.len() >= self.capacity {
                let oldest = self
                    .entries
                    .iter()
                    .min_by_key(|(_, (stored, _))| *stored)
                    .map(|(k, _)| k.clone());
                if let Some(oldest) = oldest {
                    self.entries.remove(&oldest);
                }
            }
        }
        self.entries.insert(key, (now, value));
    }

    /// How many answers it holds (expired ones included until they are dropped).
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether it holds none.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cache(ttl_secs: u64, entries: usize) -> Cache<&'static str> {
        Cache::new(CacheSettings {
            ttl: Duration::from_secs(ttl_secs),
            entries,
        })
    }

    #[test]
    fn an_answer_is_reused_within_its_ttl_only() {
        let now = Instant::now();
        let mut c = cache(60, 10);
        c.insert("a".into(), "answer", now);
        assert_eq!(c.get("a", now + Duration::from_secs(59)), Some("answer"));
        assert_eq!(c.get("b", now), None);
        assert_eq!(c.get("a", now + Duration::from_secs(60)), None);
        assert!(c.is_empty(), "an expired answer is dropped when asked for");
    }

    #[test]
    fn when_full_the_oldest_answer_goes_first() {
        let now = Instant::now();
        let at = |s: u64| now + Duration::from_secs(s);
        let mut c = cache(3600, 2);
        c.insert("a".into(), "1", at(0));
        c.insert("b".into(), "2", at(1));
        c.insert("a".into(), "1'", at(2)); // replacing keeps the size and refreshes `a`
        assert_eq!(c.len(), 2);
        c.insert("c".into(), "3", at(3)); // `b` is now the oldest
        assert_eq!(c.get("b", at(3)), None);
        assert_eq!(c.get("a", at(3)), Some("1'"));
        assert_eq!(c.get("c", at(3)), Some("3"));
    }

    #[test]
    fn expired_answers_make_room_before_live_ones_are_evicted() {
        let now = Instant::now();
        let mut c = cache(10, 2);
        c.insert("old".into(), "x", now);
        c.insert("live".into(), "y", now + Duration::from_secs(9));
        c.insert("new".into(), "z", now + Duration::from_secs(10));
        assert_eq!(c.get("live", now + Duration::from_secs(10)), Some("y"));
        assert_eq!(c.len(), 2);
    }

    #[test]
    fn a_zero_ttl_or_size_keeps_nothing() {
        let now = Instant::now();
        for mut c in [cache(0, 10), cache(60, 0)] {
            c.insert("a".into(), "answer", now);
            assert_eq!(c.get("a", now), None);
        }
    }
}
