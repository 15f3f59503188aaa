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
//! ## Crates and features
//!
//! | feature | what it adds |
//! |---|---|
//! | (always) | core: wire types, server, worker, workflows, in-memory adapters |
//! | `otel` | W3C `traceparent` in task headers through OpenTelemetry |
//!
//! Adapters for SQLite, Redis, AMQP, SQS, Pub/Sub, Memcache, MongoDB and DynamoDB come as
//! features of this crate, one per service, so a build compiles only what it uses.
#![cfg_attr(docsrs, feature(doc_cfg))]

pub use machinist_core::*;
