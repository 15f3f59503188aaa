//! [`SqliteError`]: what goes wrong with an SQLite store, with messages that say what to do.
//!
//! Every error of the broker, backend and lock facades is one of these, wrapped in
//! [`machinist_core::Error::Broker`], [`Backend`](machinist_core::Error::Backend) or
//! [`Lock`](machinist_core::Error::Lock); downcast the source to match on the kind:
//!
//! ```
//! # use machinist_sqlite::SqliteError;
//! fn is_locked(e: &machinist_core::Error) -> bool {
//!     match e {
//!         machinist_core::Error::Broker(source) | machinist_core::Error::Backend(source) => {
//!             matches!(source.downcast_ref::<SqliteError>(), Some(SqliteError::Locked { .. }))
//!         }
//!         _ => false,
//!     }
//! }
//! ```

use std::path::PathBuf;

use rusqlite::ErrorCode;

/// An error of the SQLite store. Cloneable, because one failed transaction fails every caller
/// whose operation it carried.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum SqliteError {
    /// The URL or path given to [`SqliteStore::open`](crate::SqliteStore::open) is not one this
    /// crate understands.
    #[error("invalid SQLite location {location:?}: {reason}")]
    InvalidUrl {
        /// What was given.
        location: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The file could not be opened or created (missing directory, permissions …).
    #[error("cannot open {path}: {message}")]
    CannotOpen {
        /// The file.
        path: PathBuf,
        /// SQLite's or the OS's explanation.
        message: String,
    },
    /// The file is an SQLite database of another application: it was left untouched.
    #[error(
        "{path} is not a machinist database (application_id {application_id:#010x}, \
         {tables} schema objects); it was left untouched — choose another file"
    )]
    NotMachinist {
        /// The file.
        path: PathBuf,
        /// Its `PRAGMA application_id`.
        application_id: i32,
        /// How many tables, indexes … it holds.
        tables: i64,
    },
    /// The file was written by a newer machinist whose schema this version does not know.
    #[error(
        "{path} has machinist schema version {found}, newer than the {supported} this version \
         knows; upgrade machinist (the file was left untouched)"
    )]
    NewerSchema {
        /// The file.
        path: PathBuf,
        /// Its `PRAGMA user_version`.
        found: i64,
        /// The newest version this code knows ([`crate::schema::SCHEMA_VERSION`]).
        supported: i64,
    },
    /// The file is not an SQLite database at all (or is encrypted or corrupt).
    #[error("{path} is not an SQLite database (file is not a database, encrypted or corrupt)")]
    NotADatabase {
        /// The file.
        path: PathBuf,
    },
    /// `SQLITE_BUSY`/`SQLITE_LOCKED`: another connection kept the write lock longer than the
    /// busy timeout. Nothing of the failed operation was stored.
    #[error("database is locked (another process holds a write lock): {detail}")]
    Locked {
        /// SQLite's message and what was being done.
        detail: String,
    },
    /// `SQLITE_FULL`: the disk, or the size cap set by `max_page_count`, is full. Nothing of
    /// the failed operation was stored; what was acknowledged before is intact.
    #[error("database or disk is full: {detail}")]
    Full {
        /// SQLite's message and what was being done.
        detail: String,
    },
    /// A delivery's lease lapsed and another consumer took the message: this worker's
    /// decision about it no longer counts.
    #[error("the lease of message {id} was lost: it lapsed and another consumer took it")]
    LeaseLost {
        /// The message's row id.
        id: i64,
    },
    /// The store's writer thread is gone (the store was dropped, or the thread failed).
    #[error("the SQLite store is closed (its writer thread stopped)")]
    Closed,
    /// Any other SQLite error.
    #[error("sqlite: {message}")]
    Sqlite {
        /// SQLite's primary result code, when there is one.
        code: Option<ErrorCode>,
        /// The message.
        message: String,
    },
    /// A bug or an unexpected state inside this crate (a panic caught in the writer thread …).
    #[error("internal error in the SQLite store: {0}")]
    Internal(String),
}

impl SqliteError {
    /// Classifies a rusqlite error.
    pub(crate) fn from_sqlite(e: &rusqlite::Error) -> Self {
        let detail = e.to_string();
        match e.sqlite_error_code() {
            Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => {
                SqliteError::Locked { detail }
            }
            Some(ErrorCode::DiskFull) => SqliteError::Full { detail },
            code => SqliteError::Sqlite {
                code,
                message: detail,
            },
        }
    }

    /// Classifies a rusqlite error met while opening `path`.
    pub(crate) fn on_open(path: &std::path::Path, e: &rusqlite::Error) -> Self {
        match e.sqlite_error_code() {
            Some(ErrorCode::NotADatabase) => SqliteError::NotADatabase {
                path: path.to_owned(),
            },
            Some(ErrorCode::CannotOpen | ErrorCode::PermissionDenied | ErrorCode::ReadOnly) => {
                SqliteError::CannotOpen {
                    path: path.to_owned(),
                    message: e.to_string(),
                }
            }
            _ => Self::from_sqlite(e),
        }
    }

    /// True for `SQLITE_BUSY`/`SQLITE_LOCKED`.
    pub fn is_locked(&self) -> bool {
        matches!(self, SqliteError::Locked { .. })
    }

    /// True for `SQLITE_FULL`.
    pub fn is_full(&self) -> bool {
        matches!(self, SqliteError::Full { .. })
    }
}

impl From<rusqlite::Error> for SqliteError {
    fn from(e: rusqlite::Error) -> Self {
        Self::from_sqlite(&e)
    }
}

impl From<SqliteError> for machinist_core::Error {
    /// Store-level errors (opening, schema) become broker errors: the broker is what a worker
    /// cannot start without.
    fn from(e: SqliteError) -> Self {
        match e {
            SqliteError::InvalidUrl { .. } => machinist_core::Error::Config(e.to_string()),
            other => machinist_core::Error::broker(other),
        }
    }
}

/// `Result` with [`SqliteError`].
pub type SqlResult<T> = std::result::Result<T, SqliteError>;
