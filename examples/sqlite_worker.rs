//! Go Machinery's example worker on the embedded SQLite default
//! (`sqlite://machinist.db` in the working directory): every example task, Go's task
//! handlers logging, until SIGINT/SIGTERM.
//!
//! ```bash
//! cargo run --example sqlite_worker [-- sqlite://PATH]
//! ```
//!
//! Then run `sqlite_send` (with the same URL) in another terminal. See `examples/pair.rs`.

#[tokio::main]
async fn main() -> anyhow::Result<std::process::ExitCode> {
    machinist_examples::pair::init_tracing();
    let config = machinist_examples::pair::config_from(std::env::args().skip(1), "")?;
    machinist_examples::pair::worker_main(config).await
}
