//! The `machinist` binary, run as a user runs it (one integration-test binary, ripgrep style).
//! Every test that needs a broker has its own SQLite file in the temp directory, or its own
//! `redis-server` (skipped when none is installed), or its own queue on the RabbitMQ of
//! `AMQP_URL` (skipped when none answers).
//!
//! | module | what it covers |
//! |---|---|
//! | `tools` | `encode`, `decode`, `tasks`, `demo` (no broker) |
//! | `queue` | `send`, `worker`, `status`, `inspect`, `purge` round trips, signals |
//! | `typed` | every `TYPE:VALUE` form through a worker, and bad input |
//! | `config` | `config check`, layering of file, environment and flags |
//! | `live` | `worker --config` following the file (hot reload), `worker --metrics-addr` |
//! | `redis` | round trips on a Redis the test starts (`--broker redis://…`) |
//! | `amqp` | round trips on RabbitMQ (`--broker amqp://…`, results on SQLite or RabbitMQ), each test on its own queue |
//! | `bench` | `machinist bench` on memory, SQLite (in-process and a worker process), Redis and AMQP: completes, checks every result, JSON shape |
//! | `examples` | the SQLite worker and sender example binaries, end to end |

mod amqp;
mod bench;
mod config;
mod live;
mod queue;
mod redis;
mod tools;
mod typed;
mod util;
