//! [`SqliteOptions`] and the parsing of `sqlite://` locations.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::error::{SqlResult, SqliteError};

/// How hard a commit pushes data to the disk (`PRAGMA synchronous`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Synchronous {
    /// `NORMAL` (default): a commit is in the WAL before it is acknowledged, so it survives the
    /// process being killed; the last commits before a power loss or OS crash may be lost.
    #[default]
    Normal,
    /// `FULL`: the WAL is fsynced at every commit, so acknowledged data also survives a power
    /// loss. Group commit amortises the fsync over every operation queued at that moment.
    Full,
}

impl Synchronous {
    pub(crate) fn pragma(self) -> &'static str {
        match self {
            Synchronous::Normal => "NORMAL",
            Synchronous::Full => "FULL",
        }
    }
}

/// Settings of a [`SqliteStore`](crate::SqliteStore). Build with `SqliteOptions::default()` and
/// the `with_*` methods.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct SqliteOptions {
    /// The visibility timeout: a delivered message is hidden this long and comes back (to any
    /// worker) if its lease is not renewed or settled by then. Workers renew it every half
    /// lease while a task runs. Default 30 s.
    pub lease: Duration,
    /// How long task states and group metadata live after their last write (Go's
    /// `ResultsExpireIn`). Zero means Go's default, 3600 s.
    pub results_expire_in: Duration,
    /// How long an operation waits for another process's write lock before it fails with
    /// [`SqliteError::Locked`]. Default 5 s.
    pub busy_timeout: Duration,
    /// How often an idle store checks for writes by *other processes* (`PRAGMA data_version`,
    /// no disk I/O). Writes made through the same store wake waiters at once. Default 20 ms.
    pub poll_interval: Duration,
    /// Commit durability. Default [`Synchronous::Normal`].
    pub synchronous: Synchronous,
    /// A cap on the database size in pages (`PRAGMA max_page_count`, set on the writer
    /// connection): past it, writes fail with [`SqliteError::Full`]. Default: no cap.
    pub max_page_count: Option<u64>,
    /// How many read connections serve reads at once. Default 4.
    pub read_connections: usize,
}

impl Default for SqliteOptions {
    fn default() -> Self {
        SqliteOptions {
            lease: Duration::from_secs(30),
            results_expire_in: Duration::from_secs(3600),
            busy_timeout: Duration::from_secs(5),
            poll_interval: Duration::from_millis(20),
            synchronous: Synchronous::Normal,
            max_page_count: None,
            read_connections: 4,
        }
    }
}

impl SqliteOptions {
    /// The defaults, with `results_expire_in` taken from a machinist [`Config`](machinist_core::Config).
    pub fn from_config(config: &machinist_core::Config) -> Self {
        SqliteOptions {
            results_expire_in: config.results_ttl(),
            ..Self::default()
        }
    }

    /// Sets [`SqliteOptions::lease`].
    pub fn with_lease(mut self, lease: Duration) -> Self {
        self.lease = lease;
        self
    }
    /// Sets [`SqliteOptions::results_expire_in`].
    pub fn with_results_expire_in(mut self, expire_in: Duration) -> Self {
        self.results_expire_in = expire_in;
        self
    }
    /// Sets [`SqliteOptions::busy_timeout`].
    pub fn with_busy_timeout(mut self, timeout: Duration) -> Self {
        self.busy_timeout = timeout;
        self
    }
    /// Sets [`SqliteOptions::poll_interval`].
    pub fn with_poll_interval(mut self, interval: Duration) -> Self {
        self.poll_interval = interval;
        self
    }
    /// Sets [`SqliteOptions::synchronous`].
    pub fn with_synchronous(mut self, synchronous: Synchronous) -> Self {
        self.synchronous = synchronous;
        self
    }
    /// Sets [`SqliteOptions::max_page_count`].
    pub fn with_max_page_count(mut self, pages: Option<u64>) -> Self {
        self.max_page_count = pages;
        self
    }
    /// Sets [`SqliteOptions::read_connections`] (at least 1).
    pub fn with_read_connections(mut self, n: usize) -> Self {
        self.read_connections = n.max(1);
        self
    }

    /// The lease in whole milliseconds, at least 1.
    pub(crate) fn lease_ms(&self) -> i64 {
        duration_ms(self.lease).max(1)
    }

    /// The results expiry in milliseconds (zero means 3600 s).
    pub(crate) fn expire_ms(&self) -> i64 {
        if self.results_expire_in.is_zero() {
            3_600_000
        } else {
            duration_ms(self.results_expire_in).max(1)
        }
    }
}

/// A duration in whole milliseconds, saturating (and capped at about a century, so that
/// `now + d` cannot overflow).
pub(crate) fn duration_ms(d: Duration) -> i64 {
    const CENTURY_MS: i64 = 100 * 365 * 24 * 3600 * 1000;
    i64::try_from(d.as_millis()).map_or(CENTURY_MS, |ms| ms.min(CENTURY_MS))
}

/// Where a store lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Location {
    /// A file.
    File(PathBuf),
    /// A private in-memory database, shared by the store's connections under this URI.
    Memory(String),
}

impl Location {
    /// Parses `sqlite::memory:`, `sqlite://relative.db`, `sqlite:///abs.db`, `sqlite:path` or a
    /// bare path.
    pub(crate) fn parse(location: &str) -> SqlResult<Location> {
        static MEMORY_SEQ: AtomicU64 = AtomicU64::new(0);
        let invalid = |reason: &str| SqliteError::InvalidUrl {
            location: location.to_owned(),
            reason: reason.to_owned(),
        };
        let trimmed = location.trim();
        if trimmed.is_empty() {
            return Err(invalid("empty"));
        }
        if trimmed == "sqlite::memory:" || trimmed == ":memory:" || trimmed == "sqlite://:memory:" {
            let n = MEMORY_SEQ.fetch_add(1, Ordering::Relaxed);
            let name = format!(
                "file:machinist-mem-{}-{n}?mode=memory&cache=shared",
                std::process::id()
            );
            return Ok(Location::Memory(name));
        }
        let path = if let Some(rest) = trimmed.strip_prefix("sqlite://") {
            rest
        } else if let Some(rest) = trimmed.strip_prefix("sqlite:") {
            rest
        } else if let Some((scheme, _)) = trimmed.split_once("://") {
            return Err(invalid(&format!(
                "the scheme {scheme:?} is not sqlite (use sqlite://path/to/file.db)"
            )));
        } else {
            trimmed
        };
        if path.is_empty() {
            return Err(invalid("no file path after the scheme"));
        }
        if path.contains('?') {
            return Err(invalid(
                "query parameters are not supported; use SqliteOptions for settings",
            ));
        }
        Ok(Location::File(PathBuf::from(path)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(s: &str) -> PathBuf {
        match Location::parse(s) {
            Ok(Location::File(p)) => p,
            other => panic!("{s}: {other:?}"),
        }
    }

    #[test]
    fn parses_locations() {
        assert_eq!(file("sqlite://machinist.db"), PathBuf::from("machinist.db"));
        assert_eq!(file("sqlite://data/q.db"), PathBuf::from("data/q.db"));
        assert_eq!(
            file("sqlite:///var/lib/q.db"),
            PathBuf::from("/var/lib/q.db")
        );
        assert_eq!(file("sqlite:q.db"), PathBuf::from("q.db"));
        assert_eq!(file("/tmp/x.db"), PathBuf::from("/tmp/x.db"));
        assert_eq!(file("rel.db"), PathBuf::from("rel.db"));
        let a = Location::parse("sqlite::memory:").unwrap();
        let b = Location::parse("sqlite::memory:").unwrap();
        assert_ne!(a, b, "each memory store is private");
        assert!(matches!(a, Location::Memory(ref uri) if uri.contains("mode=memory")));
        for bad in [
            "",
            "redis://localhost",
            "sqlite://",
            "sqlite://x.db?mode=ro",
        ] {
            assert!(
                matches!(Location::parse(bad), Err(SqliteError::InvalidUrl { .. })),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn durations() {
        let o = SqliteOptions::default();
        assert_eq!(o.lease_ms(), 30_000);
        assert_eq!(
            o.with_results_expire_in(Duration::ZERO).expire_ms(),
            3_600_000
        );
        assert_eq!(duration_ms(Duration::MAX), 100 * 365 * 24 * 3600 * 1000);
    }
}
