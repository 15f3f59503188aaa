//! Quickstart: Go Machinery's example flow in one process, on the embedded SQLite default:
//! no server to install.
//!
//! ```bash
//! cargo run --release -p machinist-examples --example quickstart
//! ```
//!
//! It wires a `Server` as any application would, `machinist::server(config)`, with broker,
//! result backend and lock in one SQLite file (`machinist-quickstart.db` in the temp directory,
//! removed at start so every run begins empty, and left there afterwards to look at).
//! It registers Go Machinery's example tasks (`add`, `multiply`, `sum_ints` …, see
//! `examples/tasks.rs`), starts a worker, sends a task, a group, a chord, a chain, a delayed
//! task, a retried task and a panicking one, prints each result on its own line and stops the
//! worker gracefully. It exits non-zero if any result is wrong, so CI runs it as a check. Logs
//! go to stderr at `warn` unless `RUST_LOG` says otherwise (`RUST_LOG=info` shows the worker
//! at work).
//!
//! An application with no URL configured (`machinist::server(Config::default())`) gets the
//! same, in `machinist.db` in its working directory.

use machinist::Config;
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

    // One file for broker, results and lock; a fresh one each run.
    let path = std::env::temp_dir().join("machinist-quickstart.db");
    machinist_examples::pair::remove_sqlite_files(&path);
    let url = format!("sqlite://{}", path.display());
    println!("tasks and results in {url}");
    let config = Config {
        broker: url.clone(),
        result_backend: url.clone(),
        lock: url,
        ..Config::default()
    };

    let mut stdout = std::io::stdout().lock();
    machinist_examples::run_demo(config, &mut stdout).await
}
