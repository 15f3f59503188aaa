//! Go Machinery's example worker on Redis (`redis://127.0.0.1:6379/0`
//! unless a URL or `BROKER` says otherwise): every example task, Go's task
//! handlers logging, until SIGINT/SIGTERM.
//!
//! ```bash
//! cargo run --example redis_worker --features redis [-- redis://HOST:PORT/DB]
//! ```
//!
//! Then run `redis_send` (with the same URL) in another terminal. See `examples/pair.rs`.

#[tokio::main]
async fn main() -> anyhow::Result<std::process::ExitCode> {
    machinist_examples::pair::init_tracing();
    let config = machinist_examples::pair::config_from(
        std::env::args().skip(1),
        "redis://127.0.0.1:6379/0",
    )?;
    machinist_examples::pair::worker_main(config).await
}
