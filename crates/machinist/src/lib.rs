//! # machinist
//!
//! A distributed task queue for Rust that speaks Go Machinery's wire format: register plain
//! `async fn`s as tasks, send [`Signature`]s through a broker, run them on workers with bounded
//! concurrency, and read states and results from a result backend. Groups, chords and chains
//! work as in Machinery, and Go and Rust peers can share one queue.
//!
//! ```no_run
//! use std::sync::Arc;
//! use std::time::Duration;
//! use machinist::{Config, Server, Signature, Variadic};
//! use machinist::memory::{MemoryBackend, MemoryBroker, MemoryLock};
//!
//! async fn add(Variadic(xs): Variadic<i64>) -> i64 {
//!     xs.iter().sum()
//! }
//!
//! # async fn run() -> machinist::Result<()> {
//! let config = Config::default();
//! let server = Server::new(
//!     config.clone(),
//!     Arc::new(MemoryBroker::new()),
//!     Arc::new(MemoryBackend::new(config.results_ttl())),
//!     Arc::new(MemoryLock::new()),
//! );
//! server.register_task("add", add);
//! let worker = server.new_worker("worker", 4).launch_async();
//! let mut result = server.send_task(Signature::new("add").args((1i64, 1i64))).await?;
//! let sum: i64 = result.results(Duration::from_secs(5)).await?;
//! assert_eq!(sum, 2);
//! worker.quit().await?;
//! # Ok(())
//! # }
//! ```
//!
//! ## Connecting by URL
//!
//! [`server()`] (or [`connect()`], for the adapters alone) picks the broker, result backend and
//! lock from the URLs of a [`Config`]: `sqlite://tasks.db`, `memory`, `redis://…` (feature
//! `redis`), `amqp://…` (feature `amqp`), later the others Machinery knows. An empty URL means the embedded
//! default, `sqlite://machinist.db` in the working directory: one durable file, no server to
//! run. Moving to Redis is one URL: `BROKER=redis://localhost:6379/0`. The
//! [`connect`](mod@connect) module lists every scheme and the feature behind it.
//!
//! ```no_run
//! # async fn run() -> machinist::Result<()> {
//! // BROKER, RESULT_BACKEND and LOCK unset: everything in ./machinist.db
//! let server = machinist::server(machinist::Config::default()).await?;
//! # drop(server);
//! # Ok(())
//! # }
//! ```
//!
//! ## Crates and features
//!
//! | feature | what it adds |
//! |---|---|
//! | (always) | core: wire types, server, worker, workflows, in-memory adapters (`memory`, `eager`) |
//! | `sqlite` (default) | module `sqlite` (`machinist-sqlite`): broker, backend and lock in one SQLite file (`sqlite://…`), the embedded default |
//! | `redis` | module `redis` (`machinist-redis`): broker, backend and lock on Redis (`redis://`, `redis+socket://`, Go's multi-host cluster form), shared with Go Machinery peers |
//! | `redis-tls` | `redis` plus `rediss://` (TLS through rustls) |
//! | `amqp` | module `amqp` (`machinist-amqp`): broker and result backend on RabbitMQ (`amqp://`, several URLs split by `multiple_broker_separator`), shared with Go Machinery peers |
//! | `amqp-tls` | `amqp` plus `amqps://` (TLS through rustls) |
//! | `otel` | W3C `traceparent` in task headers through OpenTelemetry |
//!
//! A URL whose adapter this build leaves out gives a [`ConnectError::FeatureDisabled`] naming
//! the feature to enable. Adapters for SQS, Pub/Sub, Memcache, MongoDB and DynamoDB will
//! come as features of this crate, one per service, so a build compiles only what it uses;
//! until then their URLs give a [`ConnectError::NotAvailable`] naming the feature.
#![cfg_attr(docsrs, feature(doc_cfg))]

pub mod connect;

pub use connect::{Adapter, Adapters, ConnectError, DEFAULT_URL, Role, connect, server};
pub use machinist_core::*;

/// The SQLite adapter: broker, result backend and lock in one file.
#[cfg(feature = "sqlite")]
#[cfg_attr(docsrs, doc(cfg(feature = "sqlite")))]
pub use machinist_sqlite as sqlite;

/// The Redis adapters: broker, result backend and lock, Go Machinery's keys.
#[cfg(feature = "redis")]
#[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
pub use machinist_redis as redis;

/// The AMQP (RabbitMQ) adapters: broker and result backend, Go Machinery's declarations.
#[cfg(feature = "amqp")]
#[cfg_attr(docsrs, doc(cfg(feature = "amqp")))]
pub use machinist_amqp as amqp;
