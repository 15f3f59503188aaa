//! [`SqliteStore`]: one SQLite database, its writer thread, its read connections, and the
//! in-process wake-ups shared by the broker, backend and lock built on it.

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, Sender};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use rusqlite::types::ValueRef;
use rusqlite::{Connection, OpenFlags};
use tokio::sync::{Notify, Semaphore, oneshot};
use tokio_util::sync::CancellationToken;
use tracing::warn;

use crate::backend::SqliteBackend;
use crate::broker::SqliteBroker;
use crate::error::{SqlResult, SqliteError};
use crate::lock::SqliteLock;
use crate::options::{Location, SqliteOptions};
use crate::schema;
use crate::writer::{Call, Job, Work, Writer};

/// How many statements each connection keeps prepared.
const STATEMENT_CACHE: usize = 64;
/// How many keys `get_state` may track for `wait_for_change` before idle ones are dropped.
const MAX_WATCHED: usize = 4096;

/// The current time in unix milliseconds (rounded down).
pub(crate) fn now_ms() -> i64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    i64::try_from(now.as_millis()).unwrap_or(i64::MAX)
}

/// `at` in unix milliseconds, rounded *up*: a deadline stored in milliseconds must not come
/// before the one asked for.
pub(crate) fn ceil_ms(at: chrono::DateTime<chrono::Utc>) -> i64 {
    let ms = at.timestamp_millis();
    if at.timestamp_subsec_nanos().is_multiple_of(1_000_000) {
        ms
    } else {
        ms.saturating_add(1)
    }
}

/// A column read as bytes whatever its storage class (a row written by hand may hold text,
/// a number or NULL where a blob is expected).
pub(crate) fn value_bytes(v: ValueRef<'_>) -> Vec<u8> {
    match v {
        ValueRef::Null => Vec::new(),
        ValueRef::Integer(i) => i.to_string().into_bytes(),
        ValueRef::Real(f) => f.to_string().into_bytes(),
        ValueRef::Text(t) | ValueRef::Blob(t) => t.to_vec(),
    }
}

/// Something to wake after a commit.
#[derive(Debug, Clone)]
pub(crate) enum Wake {
    /// A message became (or may have become) deliverable in this queue.
    Queue(String),
    /// This task state was written or deleted.
    State(String),
}

/// What the writer thread and the handles share: in-process wake-ups.
pub(crate) struct Shared {
    /// Queue name → woken when a message is published or returned to it.
    queues: Mutex<HashMap<String, Arc<Notify>>>,
    /// Woken when another connection (another process) committed: idle consumers.
    pub(crate) external: Arc<Notify>,
    /// The same for result waiters, at most every [`crate::writer::STATE_WAKE_EVERY`]: each
    /// of them reads its state when woken, and there may be many.
    pub(crate) external_states: Arc<Notify>,
    /// Per-key bookkeeping for `wait_for_change`.
    watch: Mutex<Watch>,
}

/// State-write tracking for [`crate::SqliteBackend`]'s `wait_for_change`.
#[derive(Default)]
pub(crate) struct Watch {
    /// Bumped by every committed state write or purge.
    pub(crate) seq: u64,
    pub(crate) keys: HashMap<String, WatchKey>,
}

/// One watched task UUID.
pub(crate) struct WatchKey {
    pub(crate) notify: Arc<Notify>,
    /// `wait_for_change` calls waiting on it now.
    pub(crate) waiters: usize,
    /// `seq` when the caller last read the state (or last returned from a wait).
    pub(crate) read_seq: u64,
    /// `seq` of the last write to it seen while it was watched.
    pub(crate) write_seq: u64,
}

impl Watch {
    /// The key's entry, created for a reader that started reading at `read_seq`.
    pub(crate) fn key(&mut self, uuid: &str, read_seq: u64) -> &mut WatchKey {
        if !self.keys.contains_key(uuid) && self.keys.len() >= MAX_WATCHED {
            self.keys.retain(|_, k| k.waiters > 0);
        }
        let seq = self.seq;
        self.keys
            .entry(uuid.to_owned())
            .or_insert_with(|| WatchKey {
                notify: Arc::new(Notify::new()),
                waiters: 0,
                read_seq,
                // A write between the read and now was not tracked: assume there was one.
                write_seq: if seq > read_seq { seq } else { 0 },
            })
    }
}

fn locked<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // No code path panics while holding these locks with the data half-updated.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Shared {
    fn new() -> Self {
        Shared {
            queues: Mutex::new(HashMap::new()),
            external: Arc::new(Notify::new()),
            external_states: Arc::new(Notify::new()),
            watch: Mutex::new(Watch::default()),
        }
    }

    /// The notifier of `queue`, created if needed.
    pub(crate) fn queue_notify(&self, queue: &str) -> Arc<Notify> {
        let mut queues = locked(&self.queues);
        Arc::clone(
            queues
                .entry(queue.to_owned())
                .or_insert_with(|| Arc::new(Notify::new())),
        )
    }

    pub(crate) fn watch(&self) -> MutexGuard<'_, Watch> {
        locked(&self.watch)
    }

    /// Sends the wake-ups of a committed job.
    pub(crate) fn wake(&self, wakes: &[Wake]) {
        for wake in wakes {
            match wake {
                Wake::Queue(queue) => {
                    let notify = locked(&self.queues).get(queue).cloned();
                    if let Some(n) = notify {
                        n.notify_waiters();
                    }
                }
                Wake::State(uuid) => {
                    let mut watch = self.watch();
                    watch.seq += 1;
                    let seq = watch.seq;
                    if let Some(key) = watch.keys.get_mut(uuid) {
                        key.write_seq = seq;
                        key.notify.notify_waiters();
                    }
                }
            }
        }
    }
}

/// Read connections of a file store, used from `spawn_blocking`.
struct ReaderPool {
    path: PathBuf,
    busy_timeout: Duration,
    idle: Mutex<Vec<Connection>>,
    permits: Semaphore,
}

impl ReaderPool {
    fn open(&self) -> SqlResult<Connection> {
        let conn = Connection::open_with_flags(
            &self.path,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(|e| SqliteError::on_open(&self.path, &e))?;
        conn.busy_timeout(self.busy_timeout)?;
        conn.pragma_update(None, "query_only", true)?;
        conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
        Ok(conn)
    }

    fn with_conn<T>(&self, f: impl FnOnce(&Connection) -> SqlResult<T>) -> SqlResult<T> {
        let conn = locked(&self.idle).pop();
        let conn = match conn {
            Some(c) => c,
            None => self.open()?,
        };
        let result = f(&conn);
        if conn.is_autocommit() {
            locked(&self.idle).push(conn);
        }
        result
    }
}

/// The part of a store every handle shares.
pub(crate) struct StoreInner {
    sender: Sender<Box<dyn Job>>,
    pub(crate) shared: Arc<Shared>,
    readers: Option<Arc<ReaderPool>>,
    path: Option<PathBuf>,
    pub(crate) options: SqliteOptions,
    /// Set by `SqliteBroker::close`.
    broker_closed: AtomicBool,
    /// Cancelled by `SqliteBroker::close`: wakes waiting consumers.
    pub(crate) broker_shutdown: CancellationToken,
    token_base: u64,
    token_seq: AtomicU64,
}

impl StoreInner {
    /// Queues `work` for the writer and waits for its commit. The work runs inside a
    /// savepoint, so that an error undoes all of it.
    pub(crate) async fn write<T: Send + 'static>(
        &self,
        work: impl FnOnce(&Connection, i64, &mut Vec<Wake>) -> SqlResult<T> + Send + 'static,
    ) -> SqlResult<T> {
        self.submit(Box::new(work), true).await
    }

    /// [`StoreInner::write`] for work that runs **at most one changing statement** (any
    /// number of reads): SQLite undoes a failed statement itself, so no savepoint is needed.
    pub(crate) async fn write_one<T: Send + 'static>(
        &self,
        work: impl FnOnce(&Connection, i64, &mut Vec<Wake>) -> SqlResult<T> + Send + 'static,
    ) -> SqlResult<T> {
        self.submit(Box::new(work), false).await
    }

    async fn submit<T: Send + 'static>(&self, work: Work<T>, savepoint: bool) -> SqlResult<T> {
        let (tx, rx) = oneshot::channel();
        self.sender
            .send(Box::new(Call::new(work, savepoint, Some(tx))))
            .map_err(|_| SqliteError::Closed)?;
        rx.await.map_err(|_| SqliteError::Closed)?
    }

    /// Queues `work` (at most one changing statement) for the writer without waiting (used
    /// from `Drop`).
    pub(crate) fn write_detached(
        &self,
        work: impl FnOnce(&Connection, i64, &mut Vec<Wake>) -> SqlResult<()> + Send + 'static,
    ) {
        let work: Work<()> = Box::new(work);
        if self
            .sender
            .send(Box::new(Call::new(work, false, None)))
            .is_err()
        {
            warn!("sqlite store closed: an operation was dropped");
        }
    }

    /// Runs a read on a read connection (on the blocking pool), or on the writer for an
    /// in-memory store.
    pub(crate) async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection, i64) -> SqlResult<T> + Send + 'static,
    ) -> SqlResult<T> {
        let Some(pool) = &self.readers else {
            return self.write_one(move |conn, now, _| f(conn, now)).await;
        };
        let _permit = pool
            .permits
            .acquire()
            .await
            .map_err(|_| SqliteError::Closed)?;
        let pool = Arc::clone(pool);
        tokio::task::spawn_blocking(move || pool.with_conn(|conn| f(conn, now_ms())))
            .await
            .map_err(|e| SqliteError::Internal(format!("a read task failed: {e}")))?
    }

    /// A lease token no other lease (in any process) has.
    pub(crate) fn next_token(&self) -> i64 {
        let n = self.token_seq.fetch_add(1, Ordering::Relaxed);
        let mixed = self
            .token_base
            .wrapping_add(n.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        i64::try_from(mixed >> 1).unwrap_or(i64::MAX)
    }

    pub(crate) fn broker_closed(&self) -> bool {
        self.broker_closed.load(Ordering::Acquire)
    }

    pub(crate) fn close_broker(&self) {
        self.broker_closed.store(true, Ordering::Release);
        self.broker_shutdown.cancel();
    }

    /// `sqlite://<path>` or `sqlite::memory:`.
    pub(crate) fn describe(&self) -> String {
        match &self.path {
            Some(p) => format!("sqlite://{}", p.display()),
            None => "sqlite::memory:".to_owned(),
        }
    }
}

/// One SQLite database holding a machinist broker, result backend and lock.
///
/// Cheap to clone; every clone, and every [`SqliteBroker`], [`SqliteBackend`] and
/// [`SqliteLock`] made from it, shares one writer thread and one set of read connections.
/// The writer thread ends when the last of them is dropped (after finishing what was queued).
#[derive(Clone)]
pub struct SqliteStore {
    inner: Arc<StoreInner>,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore")
            .field("location", &self.inner.describe())
            .field("options", &self.inner.options)
            .finish()
    }
}

impl SqliteStore {
    /// Opens (creating it if needed) the database at `location`: `sqlite://relative/path.db`,
    /// `sqlite:///absolute/path.db`, `sqlite:path.db`, a bare path, or `sqlite::memory:` for a
    /// private in-memory database (tests).
    ///
    /// The file is checked before anything is written to it: a file of another application,
    /// of a newer machinist, or not SQLite at all is refused and left untouched. Otherwise it
    /// is switched to WAL mode and migrated to [`schema::SCHEMA_VERSION`].
    ///
    /// This blocks while it opens and migrates the file (waiting up to the busy timeout if
    /// another process holds the write lock); it needs no tokio runtime.
    pub fn open(location: &str, options: SqliteOptions) -> SqlResult<SqliteStore> {
        let location = Location::parse(location)?;
        let (conn, path) = match &location {
            Location::File(path) => {
                let conn = Connection::open_with_flags(
                    path,
                    OpenFlags::SQLITE_OPEN_READ_WRITE
                        | OpenFlags::SQLITE_OPEN_CREATE
                        | OpenFlags::SQLITE_OPEN_NO_MUTEX,
                )
                .map_err(|e| SqliteError::on_open(path, &e))?;
                (conn, Some(path.clone()))
            }
            Location::Memory(uri) => {
                let conn = Connection::open_with_flags(
                    uri,
                    OpenFlags::SQLITE_OPEN_READ_WRITE
                        | OpenFlags::SQLITE_OPEN_CREATE
                        | OpenFlags::SQLITE_OPEN_URI
                        | OpenFlags::SQLITE_OPEN_NO_MUTEX,
                )
                .map_err(|e| SqliteError::on_open(Path::new(uri), &e))?;
                (conn, None)
            }
        };
        let shown = path
            .clone()
            .unwrap_or_else(|| PathBuf::from("sqlite::memory:"));
        let on_open = |e: rusqlite::Error| SqliteError::on_open(&shown, &e);
        conn.busy_timeout(options.busy_timeout).map_err(on_open)?;
        // Several processes may open a fresh file at once; switching to WAL and migrating
        // need locks whose busy waits SQLite does not always take (it answers BUSY at once
        // to avoid deadlocks), so the first steps are retried until the busy timeout.
        let deadline = std::time::Instant::now() + options.busy_timeout;
        loop {
            match prepare_file(&conn, &shown, path.is_some(), &options) {
                Err(e) if e.is_locked() && std::time::Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(10));
                }
                other => break other?,
            }
        }
        if let Some(pages) = options.max_page_count {
            let _: i64 = conn
                .query_row(&format!("PRAGMA max_page_count = {pages}"), [], |r| {
                    r.get(0)
                })
                .map_err(on_open)?;
        }
        conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);

        let shared = Arc::new(Shared::new());
        let (sender, rx) = mpsc::channel();
        let writer = Writer::new(
            conn,
            rx,
            Arc::clone(&shared),
            options.poll_interval,
            options.busy_timeout,
        );
        std::thread::Builder::new()
            .name("machinist-sqlite-writer".into())
            .spawn(move || writer.run())
            .map_err(|e| SqliteError::Internal(format!("cannot start the writer thread: {e}")))?;

        let readers = path.as_ref().map(|p| {
            Arc::new(ReaderPool {
                path: p.clone(),
                busy_timeout: options.busy_timeout,
                idle: Mutex::new(Vec::new()),
                permits: Semaphore::new(options.read_connections.max(1)),
            })
        });
        let token_base = std::collections::hash_map::RandomState::new().hash_one((
            std::process::id(),
            now_ms(),
            &shown,
        ));
        Ok(SqliteStore {
            inner: Arc::new(StoreInner {
                sender,
                shared,
                readers,
                path,
                options,
                broker_closed: AtomicBool::new(false),
                broker_shutdown: CancellationToken::new(),
                token_base,
                token_seq: AtomicU64::new(0),
            }),
        })
    }

    /// The broker on this database.
    pub fn broker(&self) -> SqliteBroker {
        SqliteBroker::new(Arc::clone(&self.inner))
    }

    /// The result backend on this database.
    pub fn backend(&self) -> SqliteBackend {
        SqliteBackend::new(Arc::clone(&self.inner))
    }

    /// The lock on this database.
    pub fn lock(&self) -> SqliteLock {
        SqliteLock::new(Arc::clone(&self.inner))
    }

    /// The database file, or `None` for an in-memory store.
    pub fn path(&self) -> Option<&Path> {
        self.inner.path.as_deref()
    }

    /// The options the store was opened with.
    pub fn options(&self) -> &SqliteOptions {
        &self.inner.options
    }

    /// `sqlite://<path>` or `sqlite::memory:`.
    pub fn describe(&self) -> String {
        self.inner.describe()
    }
}

/// Checks a freshly opened file, switches it to WAL and brings its schema up to date.
fn prepare_file(
    conn: &Connection,
    shown: &Path,
    on_disk: bool,
    options: &SqliteOptions,
) -> Result<(), SqliteError> {
    let on_open = |e: rusqlite::Error| SqliteError::on_open(shown, &e);
    // Nothing is written before this check.
    schema::precheck(conn, shown)?;
    if on_disk {
        let mode: String = conn
            .query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))
            .map_err(on_open)?;
        if !mode.eq_ignore_ascii_case("wal") {
            warn!(
                "{}: WAL mode unavailable (journal mode {mode}); readers will wait for writers",
                shown.display()
            );
        }
    }
    conn.pragma_update(None, "synchronous", options.synchronous.pragma())
        .map_err(on_open)?;
    // Statement journals of savepoints in memory, not in temporary files.
    conn.pragma_update(None, "temp_store", "MEMORY")
        .map_err(on_open)?;
    schema::migrate(conn, shown, schema::SCHEMA_VERSION)?;
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn insert_lock(conn: &Connection, key: &str) -> SqlResult<()> {
        // Far in the future: the expiry sweep must not delete it.
        conn.execute(
            "INSERT INTO locks (key, expires_at) VALUES (?1, 9000000000000000)",
            [key],
        )?;
        Ok(())
    }

    fn has_lock(conn: &Connection, key: &str) -> SqlResult<bool> {
        Ok(
            conn.query_row("SELECT count(*) FROM locks WHERE key = ?1", [key], |r| {
                r.get::<_, i64>(0)
            })? == 1,
        )
    }

    #[tokio::test]
    async fn a_failing_operation_does_not_fail_its_batch() {
        let store = SqliteStore::open("sqlite::memory:", SqliteOptions::default()).unwrap();
        let inner = &store.inner;
        // Sent in the same poll, so that they share a transaction.
        let (a, bad, panicked, partial, b) = tokio::join!(
            inner.write_one(|c, _, _| insert_lock(c, "a")),
            inner.write_one(|c, _, _| Ok(c.execute("INSERT INTO nope VALUES (1)", [])?)),
            inner.write(|_, _, _| -> SqlResult<()> { panic!("boom") }),
            inner.write(|c, _, _| {
                insert_lock(c, "partial")?;
                insert_lock(c, "a") // a duplicate key: fails after a first change
            }),
            inner.write_one(|c, _, _| insert_lock(c, "b")),
        );
        a.unwrap();
        b.unwrap();
        assert!(matches!(bad, Err(SqliteError::Sqlite { .. })), "{bad:?}");
        assert!(
            matches!(&panicked, Err(SqliteError::Internal(m)) if m.contains("boom")),
            "{panicked:?}"
        );
        assert!(partial.is_err());
        let (has_a, has_b, has_partial) = inner
            .read(|c, _| {
                Ok((
                    has_lock(c, "a")?,
                    has_lock(c, "b")?,
                    has_lock(c, "partial")?,
                ))
            })
            .await
            .unwrap();
        assert!(has_a && has_b, "the other operations committed");
        assert!(!has_partial, "a failed operation is undone entirely");
    }

    #[test]
    fn milliseconds_round_up() {
        let at = chrono::DateTime::from_timestamp(10, 1).unwrap();
        assert_eq!(ceil_ms(at), 10_001);
        let exact = chrono::DateTime::from_timestamp(10, 2_000_000).unwrap();
        assert_eq!(ceil_ms(exact), 10_002);
        assert!(now_ms() > 1_600_000_000_000);
        assert_eq!(value_bytes(ValueRef::Integer(42)), b"42");
        assert!(value_bytes(ValueRef::Null).is_empty());
    }

    #[test]
    fn tokens_differ() {
        let store = SqliteStore::open("sqlite::memory:", SqliteOptions::default()).unwrap();
        let tokens: std::collections::HashSet<i64> =
            (0..10_000).map(|_| store.inner.next_token()).collect();
        assert_eq!(tokens.len(), 10_000);
        assert!(tokens.iter().all(|t| *t >= 0));
    }
}
