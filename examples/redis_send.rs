//! Go Machinery's example sender on Redis (`redis://127.0.0.1:6379/0`
//! unless a URL or `BROKER` says otherwise): single tasks, a group, a chord, a
//! chain, a delayed, a retried, a panicking and a long-running task, each result checked and
//! printed.
//!
//! ```bash
//! cargo run --example redis_send --features redis [-- redis://HOST:PORT/DB]
//! ```
//!
//! A worker must run on the same URL (`redis_worker`). Exits non-zero on a wrong or late
//! result. See `examples/pair.rs`.

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    machinist_examples::pair::init_tracing();
    let config = machinist_examples::pair::config_from(
        std::env::args().skip(1),
        "redis://127.0.0.1:6379/0",
    )?;
    machinist_examples::pair::send_main(config).await
}
