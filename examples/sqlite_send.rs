//! Go Machinery's example sender on the embedded SQLite default
//! (`sqlite://machinist.db` in the working directory): single tasks, a group, a chord, a
//! chain, a delayed, a retried, a panicking and a long-running task, each result checked and
//! printed.
//!
//! ```bash
//! cargo run --example sqlite_send [-- sqlite://PATH]
//! ```
//!
//! A worker must run on the same URL (`sqlite_worker`). Exits non-zero on a wrong or late
//! result. See `examples/pair.rs`.

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    machinist_examples::pair::init_tracing();
    let config = machinist_examples::pair::config_from(std::env::args().skip(1), "")?;
    machinist_examples::pair::send_main(config).await
}
