//! Errors of the library side of machinist: what `Server`, `Worker`, brokers and backends
//! return. Errors raised *by task functions* live in [`crate::task::TaskError`]; errors about
//! argument types in [`crate::types::TypeError`].

use std::time::Duration;

/// A boxed error from an adapter (Redis, AMQP, SQLite …), kept as the `source`.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Every error the library returns.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A message or stored document could not be decoded or encoded.
    #[error("serialization: {0}")]
    Serialization(#[from] serde_json::Error),
    /// A value does not fit the Go type it claims or is asked for.
    #[error(transparent)]
    Type(#[from] crate::types::TypeError),
    /// The broker failed (connection, protocol, server error).
    #[error("broker: {0}")]
    Broker(#[source] BoxError),
    /// The result backend failed.
    #[error("result backend: {0}")]
    Backend(#[source] BoxError),
    /// The lock failed.
    #[error("lock: {0}")]
    Lock(#[source] BoxError),
    /// Invalid configuration.
    #[error("config: {0}")]
    Config(String),
    /// A periodic job could not be registered (bad spec, no runtime …).
    #[error(transparent)]
    Periodic(#[from] crate::periodic::PeriodicError),
    /// No task is registered under this name.
    #[error("task not registered: {0}")]
    TaskNotRegistered(String),
    /// A message is larger than the configured maximum.
    #[error("message of {size} bytes exceeds the maximum of {max} bytes")]
    MessageTooLarge {
        /// Size of the encoded message.
        size: usize,
        /// The configured maximum (`Config::max_message_size`).
        max: usize,
    },
    /// A wait gave up (`get_with_timeout`).
    #[error("timeout reached after {0:?}")]
    Timeout(Duration),
    /// A task ended in FAILURE; the text is its stored `Error`.
    #[error("{0}")]
    TaskFailed(String),
    /// No result is stored under this UUID (never sent, expired or purged).
    #[error("no state stored for {0}")]
    StateNotFound(String),
    /// The worker or broker was shut down.
    #[error("shut down")]
    Shutdown,
    /// Anything else, with a message.
    #[error("{0}")]
    Other(String),
}

impl Error {
    /// Wraps an adapter error as a broker error.
    pub fn broker(e: impl Into<BoxError>) -> Self {
        Error::Broker(e.into())
    }
    /// Wraps an adapter error as a backend error.
    pub fn backend(e: impl Into<BoxError>) -> Self {
        Error::Backend(e.into())
    }
    /// Wraps an adapter error as a lock error.
    pub fn lock(e: impl Into<BoxError>) -> Self {
        Error::Lock(e.into())
    }
}

/// `Result` with [`Error`] as the default error.
pub type Result<T, E = Error> = std::result::Result<T, E>;
