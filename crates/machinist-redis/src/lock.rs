//! [`RedisLock`]: Go Machinery's periodic-task lock (`wire-format.md` §9), so that Go and Rust
//! schedulers of the same program never both fire a tick.
//!
//! The key is the caller's (Go: `machinery_lock_` + program basename + name + spec); the value
//! is the unix-nanosecond deadline. Go's algorithm — `SET key deadline NX` with the expiry
//! `deadline − now`; if that fails, `GET`, and when the stored deadline has passed, `GETSET` the
//! new one and succeed only if the old one had passed too, then `EXPIRE` — runs here as one
//! script ([`LOCK`](crate::scripts::LOCK)), so the take-over needs no second round trip and
//! cannot race. `unlock` is `DEL`, as the key has no owner token in Go either.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use machinist_core::{Lock, Result};
use redis::AsyncCommands;

use crate::broker::unix_nanos;
use crate::conn::RedisConnection;
use crate::error::RedisError;
use crate::options::RedisOptions;
use crate::scripts;

/// A [`Lock`] on Redis, compatible with Go Machinery's Redis lock.
#[derive(Clone)]
pub struct RedisLock {
    conn: RedisConnection,
}

impl std::fmt::Debug for RedisLock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisLock")
            .field("target", &self.conn.options().describe())
            .finish()
    }
}

impl RedisLock {
    /// Connects with `options`.
    pub async fn connect(options: RedisOptions) -> std::result::Result<Self, RedisError> {
        Ok(Self::new(RedisConnection::connect(options).await?))
    }

    /// A lock on an existing connection.
    pub fn new(conn: RedisConnection) -> Self {
        RedisLock { conn }
    }
}

#[async_trait]
impl Lock for RedisLock {
    async fn try_lock(&self, key: &str, expires_at: DateTime<Utc>) -> Result<bool> {
        let now = unix_nanos(Utc::now());
        let deadline = unix_nanos(expires_at);
        // Go: expiry = deadline + 1 − now (ns); at least 1 ms, rounded up to whole ms.
        let ttl_ns = deadline.saturating_add(1).saturating_sub(now).max(1);
        let ttl_ms = (ttl_ns.saturating_add(999_999)) / 1_000_000;
        let mut c = self.conn.conn();
        let taken: i64 = scripts::LOCK
            .key(key)
            .arg(deadline)
            .arg(ttl_ms.max(1))
            .arg(now)
            .invoke_async(&mut c)
            .await
            .map_err(|e| RedisError::redis("taking a lock", key, e).into_lock())?;
        Ok(taken == 1)
    }

    async fn unlock(&self, key: &str) -> Result<()> {
        let mut c = self.conn.conn();
        c.del::<_, ()>(key)
            .await
            .map_err(|e| RedisError::redis("releasing a lock", key, e).into_lock())
    }

    fn describe(&self) -> String {
        self.conn.options().describe()
    }
}
