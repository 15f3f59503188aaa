//! # machinist-core
//!
//! The core of machinist, a distributed task queue that speaks Go Machinery's wire format.
//! This crate has no network dependencies: it holds the wire types, the traits every adapter
//! implements, the `Server` (producer side) and the `Worker` (consumer side), workflows,
//! retries, `AsyncResult`, and in-memory adapters for tests.
//!
//! ## Layout
//!
//! | file | what it holds |
//! |---|---|
//! | `signature.rs`, `arg.rs`, `state.rs` | wire types: `Signature`, `Arg`, `TaskResult`, `TaskState`, `GroupMeta` |
//! | `codec.rs` | where messages and states are encoded and decoded (Go's exact JSON) |
//! | `decode.rs` | the fast path of message decoding (the common shape, read directly; `codec.rs` decides the rest) |
//! | `time.rs` | Go's RFC 3339 time form |
//! | `types.rs` | Rust types ⇄ Go type names (`int64`, `[]string` …) |
//! | `periodic/` | periodic tasks: cron specs (Go's grammar + seconds), the scheduler, exactly once per tick through the `Lock` |
#![cfg_attr(docsrs, feature(doc_cfg))]

pub mod arg;
pub mod backend;
pub mod broker;
mod codec;
pub mod config;
mod decode;
pub mod error;
pub mod id;
pub mod lock;
pub mod memory;
pub mod metrics;
pub mod periodic;
pub mod result;
pub mod retry;
pub mod server;
pub mod signature;
pub mod state;
pub mod task;
pub mod time;
pub mod trace;
pub mod types;
pub mod worker;
pub mod workflow;

pub use arg::{Arg, TaskResult};
pub use backend::{Backend, GroupProgress, StateContext};
pub use broker::{Acknowledger, Broker, Consumer, Delivery};
pub use config::Config;
pub use error::{Error, Result};
pub use lock::Lock;
pub use periodic::{Misfire, PeriodicJob, Schedule, SpecError};
pub use result::{AsyncResult, ChainAsyncResult, ChordAsyncResult};
pub use server::Server;
pub use signature::{Headers, Signature};
pub use state::{GroupMeta, State, TaskState};
pub use task::{ArgError, Task, TaskContext, TaskError, TaskOutput, Variadic, blocking, task};
pub use types::{FromArg, FromResults, GoValue, IntoArg, IntoArgs, IntoResults, TypeError};
pub use worker::{ShutdownHandle, Stopped, Worker, WorkerHandle};
pub use workflow::{Chain, Chord, Group};
