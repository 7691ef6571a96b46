//! Answers remembered for a while, and only so many of them: a client sending a new token with every request
//! costs an API call each, never unbounded memory; and many requests missing the same answer at once (64
//! connections when it expires) wait for one call, not one each.

use std::collections::HashMap;
use std::future::Future;
use std::hash::Hash;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use tokio::sync::OnceCell;

pub struct Remembered<K, V> {
    entries: RwLock<HashMap<K, (V, Instant)>>,
    /// Answers being fetched, by key: who misses meanwhile waits for the same one.
    fetching: Mutex<HashMap<K, Arc<OnceCell<V>>>>,
    capacity: usize,
}

impl<K: Eq + Hash + Clone, V: Clone> Remembered<K, V> {
    pub fn new(capacity: usize) -> Self {
        Self { entries: RwLock::new(HashMap::new()), fetching: Mutex::new(HashMap::new()), capacity: capacity.max(1) }
    }

    /// The value remembered for `key`, else the one `fetch` gives (remembered for `lifetime` of it); concurrent
    /// misses of one key share one fetch. A failed fetch is not remembered.
    pub async fn get_or_fetch<E, Fut>(
        &self,
        key: &K,
        fetch: impl FnOnce() -> Fut,
        lifetime: impl Fn(&V) -> Duration,
    ) -> Result<V, E>
    where
        Fut: Future<Output = Result<V, E>>,
    {
        if let Some(value) = self.get(key, Instant::now()) {
            return Ok(value);
        }
        let cell = {
            let mut fetching = self.fetching.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            Arc::clone(fetching.entry(key.clone()).or_insert_with(|| Arc::new(OnceCell::new())))
        };
        let result = cell.get_or_try_init(fetch).await.cloned();
        if let Ok(value) = &result {
            let now = Instant::now();
            self.insert(key.clone(), value.clone(), now + lifetime(value), now);
        }
        let mut fetching = self.fetching.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if fetching.get(key).is_some_and(|current| Arc::ptr_eq(current, &cell)) {
            fetching.remove(key);
        }
        result
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

    #[cfg(test)]
    fn len(&self) -> usize {
        self.entries.read().unwrap_or_else(std::sync::PoisonError::into_inner).len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[tokio::test]
    async fn many_misses_at_once_share_one_fetch() {
        let cache: Arc<Remembered<&str, u32>> = Arc::new(Remembered::new(8));
        let fetches = Arc::new(AtomicUsize::new(0));
        let (release, released) = tokio::sync::watch::channel(false);
        let waiters: Vec<_> = (0..64)
            .map(|_| {
                let (cache, fetches, mut released) = (Arc::clone(&cache), Arc::clone(&fetches), released.clone());
                tokio::spawn(async move {
                    cache
                        .get_or_fetch(
                            &"key",
                            || async move {
                                fetches.fetch_add(1, Ordering::SeqCst);
                                let _ = released.wait_for(|go| *go).await;
                                Ok::<_, ()>(7)
                            },
                            |_| Duration::from_secs(10),
                        )
                        .await
                })
            })
            .collect();
        tokio::task::yield_now().await;
        release.send(true).expect("release");
        for waiter in waiters {
            assert_eq!(waiter.await.expect("task"), Ok(7));
        }
        assert_eq!(fetches.load(Ordering::SeqCst), 1, "one fetch for 64 misses");
        assert_eq!(cache.get(&"key", Instant::now()), Some(7), "and remembered");
        let failed =
            cache.get_or_fetch(&"other", || async { Err::<u32, _>("down") }, |_| Duration::from_secs(10)).await;
        assert_eq!(failed, Err("down"));
        assert_eq!(cache.get(&"other", Instant::now()), None, "a failure is not remembered");
    }

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
