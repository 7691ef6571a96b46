//! Answers remembered for a while, and only so many of them: a client sending a new token with every request
//! costs an API call each, never unbounded memory.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::RwLock;
use std::time::Instant;

pub struct Remembered<K, V> {
    entries: RwLock<HashMap<K, (V, Instant)>>,
    capacity: usize,
}

impl<K: Eq + Hash + Clone, V: Clone> Remembered<K, V> {
    pub fn new(capacity: usize) -> Self {
        Self { entries: RwLock::new(HashMap::new()), capacity: capacity.max(1) }
    }

    /// The value remembered for `key`, unless it expired by `now`.
    pub fn get(&self, key: &K, now: Instant) -> Option<V> {
        let entries = self.entries.read().unwrap_or_else(std::sync::PoisonError::into_inner);
        entries.get(key).filter(|(_, until)| *until > now).map(|(value, _)| value.clone())
    }

    /// Remembers `value` until `until`. When full, expired entries go first, then those that expire soonest.
    pub fn insert(&self, key: K, value: V, until: Instant, now: Instant) {
        let mut entries = self.entries.write().unwrap_or_else(std::sync::PoisonError::into_inner);
        if entries.len() >= self.capacity && !entries.contains_key(&key) {
            entries.retain(|_, (_, expires)| *expires > now);
            while entries.len() >= self.capacity {
                let Some(soonest) = entries.iter().min_by_key(|(_, (_, expires))| *expires).map(|(k, _)| k.clone())
                else {
                    break;
                };
                entries.remove(&soonest);
            }
        }
        entries.insert(key, (value, until));
    }

    pub fn len(&self) -> usize {
        self.entries.read().unwrap_or_else(std::sync::PoisonError::into_inner).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn answers_until_expiry_and_holds_at_most_its_capacity() {
        let cache = Remembered::new(3);
        let now = Instant::now();
        let second = Duration::from_secs(1);
        cache.insert("a", 1, now + second, now);
        assert_eq!(cache.get(&"a", now), Some(1));
        assert_eq!(cache.get(&"a", now + second), None, "expired");
        cache.insert("b", 2, now + 5 * second, now);
        cache.insert("c", 3, now + 9 * second, now);
        cache.insert("d", 4, now + 7 * second, now + 2 * second);
        assert_eq!(cache.len(), 3, "the expired one made room");
        cache.insert("e", 5, now + 8 * second, now + 2 * second);
        assert_eq!(cache.len(), 3);
        assert_eq!(cache.get(&"b", now), None, "the one expiring soonest went");
        assert_eq!((cache.get(&"c", now), cache.get(&"d", now), cache.get(&"e", now)), (Some(3), Some(4), Some(5)));
    }
}
