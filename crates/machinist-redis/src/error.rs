//! [`RedisError`]: what goes wrong in this crate, with enough context to act on. It reaches
//! machinist's callers wrapped in [`machinist_core::Error`] (`Broker`, `Backend` or `Lock`, by
//! the adapter that failed), or as `Config` for bad settings.

/// An error of the Redis adapters.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RedisError {
    /// Bad settings or URL.
    #[error("{0}")]
    Config(String),
    /// A key holds another Redis type than the one machinist (and Go) store there, e.g. a list
    /// where a task state (a string) should be.
    #[error("{what}: key {key:?} holds a value of the wrong Redis type (WRONGTYPE)")]
    WrongType {
        /// What machinist was doing.
        what: String,
        /// The key.
        key: String,
    },
    /// A stored value is not what Go Machinery or machinist writes there.
    #[error("{what}: {detail}")]
    Corrupt {
        /// What machinist was doing.
        what: String,
        /// What is wrong.
        detail: String,
    },
    /// Redis failed (connection, timeout, server error).
    #[error("{what}: {source}")]
    Redis {
        /// What machinist was doing.
        what: String,
        /// The redis-rs error.
        #[source]
        source: redis::RedisError,
    },
}

impl RedisError {
    pub(crate) fn config(msg: impl Into<String>) -> Self {
        RedisError::Config(msg.into())
    }

    /// Wraps a redis-rs error; a WRONGTYPE reply becomes [`RedisError::WrongType`] on `key`.
    pub(crate) fn redis(what: impl Into<String>, key: &str, source: redis::RedisError) -> Self {
        let what = what.into();
        if is_wrong_type(&source) {
            return RedisError::WrongType {
                what,
                key: key.to_owned(),
            };
        }
        RedisError::Redis { what, source }
    }

    pub(crate) fn corrupt(what: impl Into<String>, detail: impl Into<String>) -> Self {
        RedisError::Corrupt {
            what: what.into(),
            detail: detail.into(),
        }
    }

    /// True when the error means "Redis is unreachable or restarting" rather than "this
    /// command is wrong": the cases a consumer rides out by reconnecting.
    pub fn is_outage(&self) -> bool {
        match self {
            RedisError::Redis { source, .. } => is_outage(source),
            _ => false,
        }
    }

    pub(crate) fn into_broker(self) -> machinist_core::Error {
        match self {
            RedisError::Config(msg) => machinist_core::Error::Config(msg),
            e => machinist_core::Error::broker(e),
        }
    }

    pub(crate) fn into_backend(self) -> machinist_core::Error {
        match self {
            RedisError::Config(msg) => machinist_core::Error::Config(msg),
            e => machinist_core::Error::backend(e),
        }
    }

    pub(crate) fn into_lock(self) -> machinist_core::Error {
        match self {
            RedisError::Config(msg) => machinist_core::Error::Config(msg),
            e => machinist_core::Error::lock(e),
        }
    }
}

fn is_wrong_type(e: &redis::RedisError) -> bool {
    e.code() == Some("WRONGTYPE")
        || e.detail().is_some_and(|d| d.contains("WRONGTYPE"))
        || e.to_string().contains("WRONGTYPE")
}

/// Connection-level failures: I/O, timeouts, refused or dropped connections, a server still
/// loading its data after a restart, a cluster reconfiguring, a Sentinel failover under way
/// (no master named yet, or a write that reached the demoted master: `READONLY`).
pub(crate) fn is_outage(e: &redis::RedisError) -> bool {
    use redis::{ErrorKind, ServerErrorKind};
    e.is_io_error()
        || e.is_connection_dropped()
        || e.is_connection_refusal()
        || e.is_timeout()
        || e.is_unrecoverable_error()
        || is_read_only(e)
        || matches!(
            e.kind(),
            ErrorKind::ClusterConnectionNotFound
                | ErrorKind::MasterNameNotFoundBySentinel
                | ErrorKind::Server(
                    ServerErrorKind::BusyLoading
                        | ServerErrorKind::ClusterDown
                        | ServerErrorKind::TryAgain
                        | ServerErrorKind::MasterDown
                )
        )
}

/// Errors after which a Sentinel client must ask the sentinels again: the connection broke or
/// hangs, or the server it reaches is no longer the master.
pub(crate) fn may_be_failover(e: &redis::RedisError) -> bool {
    use redis::{ErrorKind, ServerErrorKind};
    e.is_io_error()
        || e.is_connection_dropped()
        || e.is_connection_refusal()
        || e.is_timeout()
        || e.is_unrecoverable_error()
        || is_read_only(e)
        || matches!(
            e.kind(),
            ErrorKind::Server(ServerErrorKind::MasterDown | ServerErrorKind::BusyLoading)
        )
}

/// `READONLY You can't write against a read only replica`, also when a script hit it.
fn is_read_only(e: &redis::RedisError) -> bool {
    e.code() == Some("READONLY")
        || e.detail().is_some_and(|d| d.contains("READONLY"))
        || e.to_string().contains("READONLY")
}
