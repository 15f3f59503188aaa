//! Go Machinery's example worker on RabbitMQ (`amqp://guest:guest@127.0.0.1:5672/` unless a
//! URL or `BROKER` says otherwise), broker and result backend as in Go's AMQP example: every
//! example task, Go's task handlers logging, until SIGINT/SIGTERM.
//!
//! ```bash
//! cargo run --example amqp_worker --features amqp [-- amqp://USER:PASSWORD@HOST:PORT/VHOST]
//! ```
//!
//! Then run `amqp_send` (with the same URL) in another terminal. `RESULT_BACKEND=redis://…`
//! keeps results out of RabbitMQ (recommended beyond small volumes). See `examples/pair.rs`.

#[tokio::main]
async fn main() -> anyhow::Result<std::process::ExitCode> {
    machinist_examples::pair::init_tracing();
    let config = machinist_examples::pair::amqp_config_from(
        std::env::args().skip(1),
        "amqp://guest:guest@127.0.0.1:5672/",
    )?;
    machinist_examples::pair::worker_main(config).await
}
