//! The [`Lock`] role: an expiring named lock, used to run each periodic task once per tick
//! across many workers, and wherever else exactly-once matters.

use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use crate::error::Result;

/// An expiring named lock (Go's `locks/iface.Lock`).
#[async_trait]
pub trait Lock: Send + Sync + 'static {
    /// Takes `key` until `expires_at` if nobody holds it (or the holder's time ran out).
    /// Returns `false` when someone else holds it.
    async fn try_lock(&self, key: &str, expires_at: DateTime<Utc>) -> Result<bool>;

    /// [`Lock::try_lock`] up to `retries + 1` times, `interval` apart.
    async fn lock_with_retries(
        &self,
        key: &str,
        expires_at: DateTime<Utc>,
        retries: u32,
        interval: Duration,
    ) -> Result<bool> {
        for attempt in 0..=retries {
            if self.try_lock(key, expires_at).await? {
                return Ok(true);
            }
            if attempt < retries {
                tokio::time::sleep(interval).await;
            }
        }
        Ok(false)
    }

    /// Releases `key` early.
    async fn unlock(&self, key: &str) -> Result<()>;

    /// A short name for logs, with no credentials.
    fn describe(&self) -> String;
}
