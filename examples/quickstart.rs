//! Quickstart: Go Machinery's example flow in one process, with no server to install.
//!
//! ```bash
//! cargo run --release --example quickstart
//! ```
//!
//! It builds a `Server` on the in-memory broker, backend and lock, registers Go Machinery's
//! example tasks (`add`, `multiply`, `sum_ints` …, see `examples/tasks.rs`), starts a worker,
//! sends a task, a group, a chord, a chain, a delayed task, a retried task and a panicking one,
//! prints each result on its own line and stops the worker gracefully. It exits non-zero if any
//! result is wrong, so CI runs it as a check. Logs go to stderr at `warn` unless `RUST_LOG`
//! says otherwise (`RUST_LOG=info` shows the worker at work).

use tracing_subscriber::EnvFilter;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    machinist_examples::hide_expected_panics();

    let mut stdout = std::io::stdout().lock();
    machinist_examples::run_demo(&mut stdout).await
}
