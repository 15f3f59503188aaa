//! The `machinist` binary, run as a user runs it (one integration-test binary, ripgrep style).
//! Every test that needs a broker has its own SQLite file in the temp directory, or its own
//! `redis-server` (skipped when none is installed).
//!
//! | module | what it covers |
//! |---|---|
//! | `tools` | `encode`, `decode`, `tasks`, `demo` (no broker) |
//! | `queue` | `send`, `worker`, `status`, `inspect`, `purge` round trips, signals |
//! | `typed` | every `TYPE:VALUE` form through a worker, and bad input |
//! | `config` | `config check`, layering of file, environment and flags |
//! | `live` | `worker --config` following the file (hot reload), `worker --metrics-addr` |
//! | `redis` | round trips on a Redis the test starts (`--broker redis://…`) |
//! | `bench` | `machinist bench` on memory, SQLite (in-process and a worker process) and Redis: completes, checks every result, JSON shape |
//! | `examples` | the SQLite worker and sender example binaries, end to end |

mod bench;
mod config;
mod live;
mod queue;
mod redis;
mod tools;
mod typed;
mod util;
