//! [`MemoryLock`]: a [`Lock`] inside the process's memory.
//!
//! It exists so that periodic scheduling and other exactly-once paths can be tested, and used
//! by a single-process deployment, without Redis. Expiry follows the wall clock (`chrono::Utc`),
//! as the `expires_at` the callers pass does. Expired keys are swept a few at a time on each
//! `try_lock`, in expiry order (O(log n)), so the map does not grow without bound.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use crate::error::Result;
use crate::lock::Lock;

/// How many expired keys one `try_lock` removes at most.
const SWEEP: usize = 64;

/// An in-memory [`Lock`]. Cloning is cheap and clones share the same keys.
///
/// `try_lock(key, expires_at)` succeeds when `key` is free or its holder's `expires_at` has
/// passed; `unlock` frees the key whoever holds it (like Go's lock, there is no owner token).
#[derive(Clone, Default)]
pub struct MemoryLock {
    inner: Arc<Mutex<LockState>>,
}

impl std::fmt::Debug for MemoryLock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryLock")
            .field("keys", &self.lock().held.len())
            .finish()
    }
}

#[derive(Default)]
struct LockState {
    /// Key → when its holder's time runs out.
    held: HashMap<String, DateTime<Utc>>,
    /// The same entries ordered by expiry, for sweeping.
    by_expiry: BTreeSet<(DateTime<Utc>, String)>,
}

impl LockState {
    fn remove(&mut self, key: &str) {
        if let Some((key, at)) = self.held.remove_entry(key) {
            self.by_expiry.remove(&(at, key));
        }
    }

    fn sweep(&mut self, now: DateTime<Utc>) {
        for _ in 0..SWEEP {
            let Some(first) = self.by_expiry.first() else {
                return;
            };
            if first.0 > now {
                return;
            }
            if let Some((_, key)) = self.by_expiry.pop_first() {
                self.held.remove(&key);
            }
        }
    }
}

impl MemoryLock {
    /// A lock with no key held.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, LockState> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[async_trait]
impl Lock for MemoryLock {
    async fn try_lock(&self, key: &str, expires_at: DateTime<Utc>) -> Result<bool> {
        let now = Utc::now();
        let mut state = self.lock();
        state.sweep(now);
        if state.held.get(key).is_some_and(|&at| at > now) {
            return Ok(false);
        }
        state.remove(key);
        state.held.insert(key.to_owned(), expires_at);
        state.by_expiry.insert((expires_at, key.to_owned()));
        Ok(true)
    }

    async fn unlock(&self, key: &str) -> Result<()> {
        self.lock().remove(key);
        Ok(())
    }

    fn describe(&self) -> String {
        "memory".to_owned()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use chrono::Duration;
    use std::time::Duration as StdDuration;

    #[tokio::test]
    async fn exclusive_until_unlocked() {
        let lock = MemoryLock::new();
        let until = Utc::now() + Duration::seconds(60);
        assert!(lock.try_lock("k", until).await.unwrap());
        assert!(!lock.try_lock("k", until).await.unwrap());
        assert!(lock.clone().try_lock("other", until).await.unwrap());
        lock.unlock("k").await.unwrap();
        assert!(lock.try_lock("k", until).await.unwrap());
        assert_eq!(lock.describe(), "memory");
    }

    #[tokio::test]
    async fn expired_holder_loses_the_key() {
        let lock = MemoryLock::new();
        assert!(
            lock.try_lock("k", Utc::now() - Duration::milliseconds(1))
                .await
                .unwrap()
        );
        let until = Utc::now() + Duration::seconds(60);
        assert!(lock.try_lock("k", until).await.unwrap(), "expired: free");
        assert!(!lock.try_lock("k", until).await.unwrap());

        assert!(
            lock.try_lock("short", Utc::now() + Duration::milliseconds(20))
                .await
                .unwrap()
        );
        assert!(!lock.try_lock("short", until).await.unwrap());
        tokio::time::sleep(StdDuration::from_millis(30)).await;
        assert!(lock.try_lock("short", until).await.unwrap());
    }

    #[tokio::test]
    async fn expired_keys_are_swept() {
        let lock = MemoryLock::new();
        let past = Utc::now() - Duration::seconds(1);
        for i in 0..10 {
            assert!(lock.try_lock(&format!("k{i}"), past).await.unwrap());
        }
        let until = Utc::now() + Duration::seconds(60);
        assert!(lock.try_lock("live", until).await.unwrap());
        let state = lock.lock();
        assert_eq!(state.held.len(), 1);
        assert_eq!(state.by_expiry.len(), 1);
    }

    #[tokio::test]
    async fn lock_with_retries_waits_for_expiry() {
        let lock = MemoryLock::new();
        assert!(
            lock.try_lock("k", Utc::now() + Duration::milliseconds(30))
                .await
                .unwrap()
        );
        let until = Utc::now() + Duration::seconds(60);
        assert!(
            lock.lock_with_retries("k", until, 20, StdDuration::from_millis(10))
                .await
                .unwrap()
        );
    }
}
