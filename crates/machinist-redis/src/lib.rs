//! # machinist-redis
//!
//! Redis broker, result backend and lock for machinist, sharing keys, commands and JSON with
//! Go Machinery's Redis adapters: a Go producer, a Go worker, a machinist producer and a
//! machinist worker can all use one Redis at once.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use machinist_redis::{RedisBackend, RedisBroker, RedisConnection, RedisLock, RedisOptions};
//! let config = machinist_core::Config::default();
//! let options = RedisOptions::from_url("redis://:password@localhost:6379/0")?.with_config(&config);
//! let conn = RedisConnection::connect(options).await?;
//! let server = machinist_core::Server::new(
//!     config,
//!     std::sync::Arc::new(RedisBroker::new(conn.clone())),
//!     std::sync::Arc::new(RedisBackend::new(conn.clone())),
//!     std::sync::Arc::new(RedisLock::new(conn)),
//! );
//! # let _ = server; Ok(()) }
//! ```
//!
//! ## Layout
//!
//! | module | what it holds |
//! |---|---|
//! | `options` | [`RedisOptions`]: Go's URL forms (`redis://`, `rediss://`, `redis+socket://`, multi-host cluster), Sentinel, TLS files and the knobs |
//! | `conn` | [`RedisConnection`]: the shared auto-reconnecting connection (standalone, cluster, or the master named by Sentinel); dedicated connections for blocking pops and pub/sub; outage logging and back-off |
//! | `batch` | the shared connection's write queue: the hot-path requests of concurrent tasks (PENDING, push, merge `GET`, state `SET`s, fetch, ack) sent as one pipeline per round |
//! | `keys` | the keys machinist adds, with cluster hash tags |
//! | `scripts` | every Lua script, each making one step atomic |
//! | `broker` | [`RedisBroker`]: Go's queues and delayed set, consumed at-least-once |
//! | `backend` | [`RedisBackend`]: Go's state and group keys, atomic merge, Go-compatible chord trigger |
//! | `lock` | [`RedisLock`]: Go's periodic-task lock |
//! | `notify` | pushed result waits: state announcements and their subscriptions |
//! | `error` | [`RedisError`] |
//!
//! ## Keys
//!
//! | key | type | written by | what |
//! |---|---|---|---|
//! | `<RoutingKey>` (e.g. `machinery_tasks`) | list | Go and machinist | the queue: `RPUSH` JSON signatures |
//! | `delayed_tasks` (`delayed_tasks_key`) | sorted set | Go and machinist | tasks with a future ETA, scored by ETA in unix ns |
//! | `task_…`, `chord_…` | string, expiring | Go and machinist | a task's state (`TaskState` JSON) |
//! | `group_…` | string, expiring | Go and machinist | a group's `GroupMeta` JSON |
//! | `TriggerChordMutex` | string, 8 s | Go (redsync); machinist in cluster mode | Go's chord-trigger mutex |
//! | `machinery_lock_…` | string, expiring | Go and machinist schedulers | periodic-task lock, value = deadline in ns |
//! | `machinist:processing:{<queue>}:<consumer>` | list | machinist | messages a consumer holds |
//! | `machinist:dead:{<queue>}` | list | machinist | dead letters: `{"reason":…,"body":…}` |
//! | `machinist:consumer:<consumer>` | string, expiring | machinist | a consumer's lease |
//! | `machinist:consumers` | hash | machinist | consumer → its queues (JSON array) |
//! | `machinist:state:<uuid>` | pub/sub channel | machinist (not in a cluster) | announces each SUCCESS or FAILURE write (message: the state's name) |
//!
//! ## Scripts
//!
//! Every multi-step operation is one Lua script (module `scripts`), so it is atomic. The
//! worker's state writes are not scripts (see [`RedisBackend`]: one `GET` per task, then plain
//! `SET`s, as Go writes states); the set-state script serves a bare `set_state`.
//!
//! | script | keys | what |
//! |---|---|---|
//! | fetch | queue, processing | move up to N messages queue → processing (`LRANGE`, `LTRIM`, `RPUSH`: N `LMOVE`s in three commands) |
//! | requeue | processing, queue | `LREM` one message; if it was there, `LPUSH` it back to the queue |
//! | dead-letter | processing, dead | `LREM` one message; if it was there, `RPUSH` its record (trimmed) |
//! | reap | processing, queue | move a whole processing list back to the queue's front, in order |
//! | move due | delayed set | `ZRANGEBYSCORE … LIMIT 0 100`, `ZREM`, `RPUSH` to each message's `RoutingKey` (cjson) |
//! | purge | queue | `LLEN` then `DEL` |
//! | set state | state | (`set_state` without a context) `GET` + cjson, splice `TaskName`/`CreatedAt` into the new text, `SET … EX`, `PUBLISH` the announcement |
//! | trigger chord | group [, `TriggerChordMutex`] | "busy" while Go holds the mutex, else flip `ChordTriggered` once (`KEEPTTL`) |
//! | lock | lock key | `SET NX PX`, or take over a passed deadline |
//!
//! ## Go's `redis:` settings
//!
//! | Go field | here |
//! |---|---|
//! | `delayed_tasks_key` | [`RedisOptions::delayed_tasks_key`] |
//! | `delayed_tasks_poll_period` | [`RedisOptions::delayed_tasks_poll_period`] (the longest the mover sleeps) |
//! | `normal_tasks_poll_period` | [`RedisOptions::block_timeout`] (`BLMOVE` block) |
//! | `connect_timeout` | [`RedisOptions::connect_timeout`] |
//! | `read_timeout`, `write_timeout` | [`RedisOptions::response_timeout`] (one timeout per round trip) |
//! | `cluster_enabled` (v1 `cluster_mode`) | [`RedisOptions::cluster`]; several hosts in the URL also mean a cluster |
//! | `master_name` | [`RedisOptions::with_sentinel`]: the URL's hosts are sentinels (wins over the cluster form, as in go-redis) |
//! | `sentinel_password` | [`RedisOptions::with_sentinel_password`] |
//! | `max_idle`, `max_active`, `max_idle_timeout`, `wait` | no effect: one multiplexed connection replaces Go's pool (plus one per consumer for blocking pops, one per backend for pub/sub) |
//! | `client_name` | no effect |
//! | (Go: `TLSConfig` in code) `tls.ca_file`, `tls.cert_file` + `tls.key_file`, `tls.insecure_skip_verify` | [`RedisOptions::with_tls_ca_file`], [`RedisOptions::with_tls_client_cert`], [`RedisOptions::with_tls_insecure_skip_verify`] (for `rediss://` only) |
//!
//! ## Sentinel
//!
//! With a master name (Go's `master_name`; go-redis then builds a `FailoverClient`), the URL
//! lists the sentinels, `redis://[password@]s1:26379,s2:26379/db`; the password and db are
//! the master's, the sentinels' own password is `sentinel_password`. The sentinels are asked
//! in order (an unreachable one is skipped) for the master's address, which is checked with
//! `ROLE` before use. The shared connection, each consumer's blocking connection and the
//! pub/sub connection ask again whenever they reconnect, and the shared connection drops itself
//! on any error that may mean a failover (I/O, timeout, `READONLY`, `MASTERDOWN`): after the
//! sentinels promote a replica, the next command of each loop goes to it, with the usual
//! outage back-off and log lines meanwhile, and one info line naming the new master. Only the
//! master is used (no reads from replicas). What the old master acknowledged but had not yet
//! replicated is lost with it, as with any Redis failover: messages in a consumer's processing
//! list come back through the lease reaper if they were replicated.
//!
//! ## TLS
//!
//! `rediss://` (feature `tls`) verifies the server's certificate against the system's root
//! certificates, or only against the CA file given ([`RedisOptions::with_tls_ca_file`], the
//! facade's `tls.ca_file`); a client certificate is presented with
//! [`RedisOptions::with_tls_client_cert`]. A certificate that is not accepted fails
//! `connect` with rustls's reason (`invalid peer certificate: UnknownIssuer`) and a hint to
//! set the CA file. With Sentinel and `rediss://`, sentinels and master are reached over TLS
//! with the same material (that combination is not covered by the tests yet).
//!
//! ## Result waits
//!
//! [`RedisBackend`]'s `wait_for_change` does not poll: each SUCCESS or FAILURE write publishes
//! an announcement pipelined with the `SET` that stores it (no extra round trip), and each backend
//! subscribes, on one pub/sub connection opened at the first wait, to the channels of the
//! tasks being waited for. A waiter wakes within milliseconds of the write. Intermediate states
//! (RECEIVED, STARTED, RETRY: one `PUBLISH` per task, not four) and states written by Go
//! workers announce nothing: a wait never sleeps longer than
//! [`RedisOptions::state_poll`] (1 s), so they are still seen; when the server has keyspace
//! notifications on for strings (`notify-keyspace-events K$`, or `KA`), waiters also
//! subscribe to the key's keyspace channel and Go's writes wake them at once too. In a
//! cluster (where `PUBLISH` reaches every node) or with
//! [`RedisOptions::notify_states`] off, nothing is published and waits sleep the caller's
//! poll interval.
//!
//! ## Guarantees
//!
//! * **At-least-once delivery.** A message leaves its queue only by an atomic move into the
//!   consumer's processing list, and leaves that list only when the worker settles it after
//!   storing the task's state. A consumer that dies (`kill -9`, lost host) has its messages put
//!   back at the front of their queues one lease (30 s) later by any other consumer's reaper.
//!   A task may therefore run twice (a worker that stalled longer than its lease, or died after
//!   storing SUCCESS but before the ack); never zero times.
//! * **Delayed tasks move exactly once**, in ETA-score order, in batches of up to 100 per script.
//! * **States carry `TaskName`/`CreatedAt` over** from the stored state, as Go's do: the
//!   worker reads the stored state once per task (before RECEIVED) and keeps both for its later
//!   writes; every state is its own `SET`, so a reader can see each. A bare `set_state` merges
//!   atomically in one script.
//! * **The chord callback fires once** per group, also when Go workers finish some members.
//! * **Outages are ridden out**: each loop reconnects with back-off (100 ms doubling to 5 s),
//!   one warning when Redis goes away and one info line when it is back; settlements that
//!   could not be sent are retried until they succeed.
//!
//! ## Go interop
//!
//! Go producers and workers need nothing changed. They `RPUSH`/`BLPOP` the bare queue list
//! machinist moves messages from; they read states machinist wrote (Go's key order and escaping,
//! `TTL` present); their delayed tasks are moved by machinist's mover and theirs alike; their
//! redsync chord mutex is honoured; their periodic lock keys and values are the same.
//!
//! ## What differs from Go
//!
//! * Go's `BLPOP` loses a message when a worker dies mid-task; machinist's consumers redeliver.
//!   Messages a **Go** worker pops are still Go's responsibility.
//! * Go moves one delayed task per 500 ms round with `WATCH`/`MULTI`; machinist moves up to a
//!   batch per script and sleeps until the next due score.
//! * Go reads the stored state before every state write (`GET` then `SET`); machinist's worker
//!   reads it once per task and sends RECEIVED and STARTED in one request (two `SET`s),
//!   SUCCESS/FAILURE with its announcement in another.
//! * Go's pool sends each command as its own request; machinist queues the hot-path commands
//!   of all concurrent tasks (PENDING and push, merge `GET`, state `SET`s, fetch, ack) and sends
//!   whatever is queued as one pipeline per round on the shared connection, so under load the
//!   writes of dozens of tasks cost one request; a lone request is sent at once. Each caller
//!   still gets its own outcome. In a cluster (pipelines are single-slot there) each caller's
//!   commands are sent as their own request.
//! * Go's chord trigger takes the global redsync mutex; machinist's script only checks it
//!   (standalone) and keeps the group key's expiry instead of refreshing it.
//! * A stored state of the wrong Redis type is a clear [`RedisError::WrongType`], not a Go
//!   `redigo` type error; a member whose state expired mid-group is
//!   `StateNotFound(<member uuid>)`.
//! * Result waiters are woken by pub/sub announcements machinist publishes; Go's waiters still
//!   poll (and ignore the announcements).
//! * Redis 6.2 or later is needed (`LMOVE`, `BLMOVE`, `SET … KEEPTTL`).
//! * In a cluster, due delayed tasks are claimed by a script and then pushed to their queues by
//!   the client (the queues live in other slots); a push that fails puts the task back in the
//!   set. Queue names that contain `{` without a valid hash tag cannot be made to share a slot
//!   with their processing lists and should be avoided in a cluster.
//!
//! ## Features
//!
//! | feature | default | what |
//! |---|---|---|
//! | `tls` | off | `rediss://` through rustls (with the `ring` provider; no C crypto build) |
//!
//! Sentinel needs no feature (redis-rs's `sentinel` adds no crate to the build).
#![cfg_attr(docsrs, feature(doc_cfg))]

mod backend;
mod batch;
mod broker;
mod conn;
mod error;
mod keys;
mod lock;
mod notify;
mod options;
mod scripts;

pub use backend::{RedisBackend, TRIGGER_CHORD_MUTEX};
pub use batch::RequestStats;
pub use broker::RedisBroker;
pub use conn::RedisConnection;
pub use error::RedisError;
pub use keys::key_slot;
pub use lock::RedisLock;
pub use options::{DEFAULT_DELAYED_TASKS_KEY, RedisOptions};
