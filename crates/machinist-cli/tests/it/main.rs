//! The `machinist` binary, run as a user runs it (one integration-test binary, ripgrep style).
//! Every test that needs a broker has its own SQLite file in the temp directory.
//!
//! | module | what it covers |
//! |---|---|
//! | `tools` | `encode`, `decode`, `tasks`, `demo` (no broker) |
//! | `queue` | `send`, `worker`, `status`, `inspect`, `purge` round trips, signals |
//! | `typed` | every `TYPE:VALUE` form through a worker, and bad input |
//! | `config` | `config check`, layering of file, environment and flags |

mod config;
mod queue;
mod tools;
mod typed;
mod util;
