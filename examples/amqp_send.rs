//! Go Machinery's example sender on RabbitMQ (`amqp://guest:guest@127.0.0.1:5672/` unless a
//! URL or `BROKER` says otherwise): single tasks, a group, a chord, a chain, a delayed, a
//! retried, a panicking and a long-running task, each result checked and printed.
//!
//! ```bash
//! cargo run --example amqp_send --features amqp [-- amqp://USER:PASSWORD@HOST:PORT/VHOST]
//! ```
//!
//! A worker must run on the same URL and queue (`amqp_worker`). Exits non-zero on a wrong or
//! late result. See `examples/pair.rs`.

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    machinist_examples::pair::init_tracing();
    let config = machinist_examples::pair::amqp_config_from(
        std::env::args().skip(1),
        "amqp://guest:guest@127.0.0.1:5672/",
    )?;
    machinist_examples::pair::send_main(config).await
}
