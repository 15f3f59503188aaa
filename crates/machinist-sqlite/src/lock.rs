//! [`SqliteLock`]: expiring named locks in the `locks` table.

use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use machinist_core::lock::Lock;
use machinist_core::{Error, Result};
use rusqlite::params;

use crate::store::{StoreInner, ceil_ms};

/// The [`Lock`] of a [`SqliteStore`](crate::SqliteStore).
///
/// `try_lock(key, expires_at)` is one upsert, `INSERT … ON CONFLICT (key) DO UPDATE … WHERE
/// the holder's expiry has passed`: it takes a free or expired key and reports whether a row
/// changed, atomically across processes. Expiries are kept in milliseconds, rounded up, so a
/// key is never freed before the time asked for. `unlock` deletes the key whoever holds it
/// (Go's lock has no owner token either). Expired keys are swept in the background.
#[derive(Clone)]
pub struct SqliteLock {
    store: Arc<StoreInner>,
}

impl std::fmt::Debug for SqliteLock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteLock")
            .field("location", &self.store.describe())
            .finish()
    }
}

impl SqliteLock {
    pub(crate) fn new(store: Arc<StoreInner>) -> Self {
        SqliteLock { store }
    }
}

#[async_trait]
impl Lock for SqliteLock {
    async fn try_lock(&self, key: &str, expires_at: DateTime<Utc>) -> Result<bool> {
        let key = key.to_owned();
        let until = ceil_ms(expires_at);
        self.store
            .write_one(move |conn, now, _| {
                let changed = conn
                    .prepare_cached(
                        "INSERT INTO locks (key, expires_at) VALUES (?1, ?2) \
                         ON CONFLICT (key) DO UPDATE SET expires_at = excluded.expires_at \
                         WHERE locks.expires_at <= ?3",
                    )?
                    .execute(params![key, until, now])?;
                Ok(changed == 1)
            })
            .await
            .map_err(Error::lock)
    }

    async fn unlock(&self, key: &str) -> Result<()> {
        let key = key.to_owned();
        self.store
            .write_one(move |conn, _, _| {
                conn.prepare_cached("DELETE FROM locks WHERE key = ?1")?
                    .execute([&key])?;
                Ok(())
            })
            .await
            .map_err(Error::lock)
    }

    fn describe(&self) -> String {
        self.store.describe()
    }
}
