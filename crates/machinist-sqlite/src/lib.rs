//! # machinist-sqlite
//!
//! A machinist broker, result backend and lock in **one SQLite file**: the embedded default
//! that needs no server. A new user runs workers and producers on one machine with nothing to
//! install, keeps their tasks when a process dies, and moves to Redis or RabbitMQ later by
//! changing one URL. SQLite is compiled in (`rusqlite` with the bundled amalgamation), so there
//! is no system library to find either.
//!
//! ```
//! use machinist_sqlite::{SqliteOptions, SqliteStore};
//! # fn main() -> Result<(), machinist_sqlite::SqliteError> {
//! // `sqlite://machinist.db` is a file in the working directory; `sqlite::memory:` is private
//! // to this store (tests).
//! let store = SqliteStore::open("sqlite::memory:", SqliteOptions::default())?;
//! let (broker, backend, lock) = (store.broker(), store.backend(), store.lock());
//! # let _ = (broker, backend, lock);
//! # Ok(())
//! # }
//! ```
//!
//! The three handles implement [`machinist_core::Broker`], [`machinist_core::Backend`] and
//! [`machinist_core::Lock`]; give them to `machinist_core::Server::new` as `Arc`s.
//!
//! ## Where the file is
//!
//! `sqlite://machinist.db` (the default when nothing is configured) is `machinist.db` in the
//! **working directory of each process**; `sqlite:///var/lib/app/tasks.db` is absolute,
//! `sqlite://data/tasks.db` relative, and a bare path works too. SQLite keeps two more files
//! beside it while it is open, `machinist.db-wal` and `machinist.db-shm`: copy or delete the
//! three together, and only with every process stopped. Every process of a deployment must
//! open the same path, on a **local** filesystem (WAL mode needs shared memory, which network
//! filesystems do not provide). The file is an ordinary SQLite database: `sqlite3
//! machinist.db 'SELECT queue, count(*) FROM messages GROUP BY queue'` inspects it.
//!
//! ## Guarantees
//!
//! * **Acknowledged means stored.** Every write goes through the store's writer thread, which
//!   replies only after `COMMIT`. With [`Synchronous::Normal`] (the default) that commit is in
//!   the WAL and survives the process being killed; [`Synchronous::Full`] also survives a power
//!   loss.
//! * **At-least-once delivery.** A delivered message is hidden for a lease (the visibility
//!   timeout, [`SqliteOptions::lease`], 30 s by default) that the worker renews while the task
//!   runs, and deleted only when the worker acknowledges it — after the task's state is stored.
//!   A worker that dies (even `kill -9`) loses nothing: its messages become visible again when
//!   their lease lapses, and a task runs twice only if its worker died holding it.
//! * **Atomic dequeue across processes.** Taking messages is one `BEGIN IMMEDIATE` transaction
//!   that selects the oldest visible rows and leases them under a token of the consumer's own;
//!   acknowledgements, requeues and renewals only act while the token still matches.
//! * **ETAs are kept by the broker**, in the row (`visible_at`), found through an index.
//! * **No lost wake-ups, no spinning.** A publish or requeue in this process wakes idle
//!   consumers at once; another process's write is noticed within the poll interval
//!   ([`SqliteOptions::poll_interval`], 20 ms) through `PRAGMA data_version`, which costs no
//!   disk I/O; a consumer whose queues hold only delayed or leased rows sleeps until the
//!   earliest of them is due. An idle worker uses next to no CPU.
//! * **Chords fire once**: `trigger_chord` is a conditional `UPDATE` in a write transaction.
//! * **Results expire** after `results_expire_in` (invisible at once, deleted in the background
//!   at most 500 rows per table per sweep).
//! * **The file is checked before it is touched**: another application's database, a newer
//!   schema, or a file that is not SQLite is refused with a clear [`SqliteError`] and left as
//!   it was. Older schemas are migrated forward (see [`schema`]).
//! * **Errors are reported, never panics**: a locked database (another process held the write
//!   lock past the busy timeout) is [`SqliteError::Locked`], a full disk [`SqliteError::Full`];
//!   in both cases the failed operation stored nothing and everything acknowledged before is
//!   intact.
//!
//! ## Schema
//!
//! Version [`schema::SCHEMA_VERSION`] (`PRAGMA user_version`), `PRAGMA application_id` =
//! [`schema::APPLICATION_ID`]. Times are unix milliseconds.
//!
//! | table | columns | use |
//! |---|---|---|
//! | `messages` | `id`, `queue`, `body` (the encoded signature), `visible_at`, `enqueued_at`, `lease_token`, `redeliveries`, `dead_reason` | the broker |
//! | `states` | `uuid`, `body` (Go's JSON `TaskState`), `expires_at` | task states |
//! | `groups` | `uuid`, `body` (Go's JSON `GroupMeta`), `chord_triggered`, `expires_at`, `done` (members completed, counted by `group_member_completed`) | group metas |
//! | `locks` | `key`, `expires_at` | the lock |
//!
//! A message is *waiting* when `visible_at <= now` (this includes one whose lease lapsed),
//! *delayed* when `visible_at > now` and it was never leased since it was published or
//! requeued (`lease_token IS NULL`), *leased* when `visible_at > now` with a token, and *dead*
//! when `dead_reason` is set. The dequeue index is `(queue, visible_at, id) WHERE dead_reason
//! IS NULL`.
//!
//! ## How it works, and where it departs from the first design
//!
//! * **One writer thread per store, group commit.** Operations are closures sent over a
//!   channel; the thread runs everything queued in one transaction and replies after `COMMIT`,
//!   so throughput grows with load instead of paying one commit per operation. An operation
//!   making more than one change runs in a savepoint, so a failure undoes it alone; an
//!   operation making one change relies on SQLite's own statement rollback (savepoints cost a
//!   statement journal per operation). Callers then hear back *before* in-process waiters are
//!   woken, so whoever wrote a state knows it is stored before anyone reads it.
//! * **Reads** use a small pool of read-only connections on tokio's blocking pool (WAL lets
//!   them run beside the writer). An in-memory store reads through its writer instead, because
//!   shared-cache in-memory databases lock by table and report `SQLITE_LOCKED`, which no busy
//!   timeout covers.
//! * **Dequeue is `SELECT … ORDER BY visible_at, id LIMIT n` then `UPDATE` by id**, not
//!   `UPDATE … RETURNING`: the order of `RETURNING` rows is unspecified, and queues are FIFO.
//!   It takes up to the consumer's free prefetch (at most 64) per transaction; messages fetched
//!   ahead count against the prefetch and are given back by `Consumer::stop`.
//! * **No `eta` column**: a delayed row is one with a future `visible_at` and no lease token,
//!   which says the same. An `enqueued_at` column instead remembers each message's place, so
//!   that `nack(true)` puts it back where it was (the front), like the in-memory broker.
//! * **A delivery dropped undecided is given back at once** (like the in-memory broker), not
//!   after its lease: only a dead process waits for the lease.
//! * **`PRAGMA data_version` is read on the writer's own connection**, between batches and
//!   every poll interval while idle: it changes only for commits of *other* connections, so
//!   this process's own writes never cause spurious wake-ups. A consumer woken that way first
//!   looks on a read connection and takes the write lock only if one of its queues has a
//!   visible message, so idle workers do not contend with a busy producer elsewhere.
//! * **Two migrations**: version 1 creates the tables, version 2 the expiry and dead-letter
//!   indexes; a version-1 file is migrated on open (and the test suite proves it).
//!
//! ## Limits
//!
//! * One machine: processes share the file, not a network.
//! * Leases and ETAs follow the wall clock; a clock jump forward makes leases lapse early
//!   (tasks may run twice, none is lost).
//! * Message priorities are ignored (queues are FIFO), as in the in-memory broker.
//! * Dead letters are kept until deleted by hand (`DELETE FROM messages WHERE dead_reason IS
//!   NOT NULL`).
//! * One writer per process per file: throughput is bounded by one core doing SQLite work
//!   (8,000–12,000 tasks per second end to end, results stored, one worker process, on a
//!   shared 2-core machine: `cargo test --release -p machinist-sqlite -- --ignored
//!   throughput --nocapture`).
#![cfg_attr(docsrs, feature(doc_cfg))]

mod backend;
mod broker;
mod error;
mod lock;
mod options;
pub mod schema;
mod store;
mod writer;

pub use backend::SqliteBackend;
pub use broker::SqliteBroker;
pub use error::SqliteError;
pub use lock::SqliteLock;
pub use options::{SqliteOptions, Synchronous};
pub use store::SqliteStore;
