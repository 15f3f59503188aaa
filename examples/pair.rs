//! What the example binaries share: Go Machinery's example as two processes, a worker
//! ([`worker_main`]) and a sender ([`send_main`]), on any broker a URL names.
//!
//! ```bash
//! # terminal 1: a worker on the embedded default (./machinist.db)
//! cargo run --example sqlite_worker
//! # terminal 2: Machinery's send flow against it; exits non-zero on a wrong result
//! cargo run --example sqlite_send
//!
//! # the same on Redis (the URL is optional; BROKER etc. work too)
//! cargo run --example redis_worker --features redis -- redis://127.0.0.1:6379/0
//! cargo run --example redis_send --features redis -- redis://127.0.0.1:6379/0
//!
//! # and on RabbitMQ, broker and results (AMQP has no lock: `memory` unless LOCK names one)
//! cargo run --example amqp_worker --features amqp -- amqp://guest:guest@127.0.0.1:5672/
//! cargo run --example amqp_send --features amqp -- amqp://guest:guest@127.0.0.1:5672/
//! ```
//!
//! The configuration is [`Config::from_env`] (Go's `BROKER`, `RESULT_BACKEND`, `LOCK`,
//! `DEFAULT_QUEUE`, `AMQP_EXCHANGE` …); a URL given as the only argument is used for broker,
//! backend and lock (for AMQP: broker and backend, see [`amqp_config_from`]).

use std::path::Path;
use std::process::ExitCode;

use anyhow::{Context as _, bail};
use machinist::{Config, Error, Stopped};
use tracing_subscriber::EnvFilter;

use crate::{Flow, register, send_flow};

/// The configuration of an example binary: the environment, then the URL in `args` (at most
/// one) for the three roles; roles still without a URL get `default_url` (empty: the embedded
/// SQLite default).
///
/// # Errors
///
/// A bad environment variable, or arguments that are not one URL.
pub fn config_from(
    args: impl IntoIterator<Item = String>,
    default_url: &str,
) -> anyhow::Result<Config> {
    let mut config = Config::from_env().context("reading the environment")?;
    let mut args = args.into_iter();
    let url = args.next();
    if let Some(extra) = args.next() {
        bail!("unexpected argument {extra:?}; usage: [URL]");
    }
    match url {
        Some(url) if url.starts_with('-') => bail!("unknown option {url:?}; usage: [URL]"),
        Some(url) => {
            config.broker.clone_from(&url);
            config.result_backend.clone_from(&url);
            config.lock = url;
        }
        None => {
            for field in [
                &mut config.broker,
                &mut config.result_backend,
                &mut config.lock,
            ] {
                if field.trim().is_empty() {
                    default_url.clone_into(field);
                }
            }
        }
    }
    Ok(config)
}

/// [`config_from`] for the AMQP examples: the URL (or `default_url`) is the broker and the
/// result backend, as in Go's AMQP example; AMQP has no lock, so a lock still naming an AMQP
/// URL becomes `memory` (the examples run no periodic tasks).
///
/// # Errors
///
/// As [`config_from`].
pub fn amqp_config_from(
    args: impl IntoIterator<Item = String>,
    default_url: &str,
) -> anyhow::Result<Config> {
    let mut config = config_from(args, default_url)?;
    let lock = config.lock.trim().to_ascii_lowercase();
    if lock.starts_with("amqp://") || lock.starts_with("amqps://") {
        config.lock = "memory".to_owned();
    }
    Ok(config)
}

/// Logs to stderr at `info`, or as `RUST_LOG` says.
pub fn init_tracing() {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
}

/// Go's example worker: every example task registered, consumer tag `machinery_worker`,
/// concurrency from the config (0: twice the CPUs), Go's example handlers logging each task's
/// start and end and each error. Runs until SIGINT/SIGTERM; exit 0 after a graceful stop.
///
/// # Errors
///
/// The broker, backend or lock cannot be reached at start.
pub async fn worker_main(config: Config) -> anyhow::Result<ExitCode> {
    crate::hide_expected_panics();
    let server = machinist::server(config).await.context("connecting")?;
    register(&server);
    tracing::info!(broker = %server.broker().describe(), "registered the example tasks");
    let concurrency = server.config().concurrency;
    let mut worker = server.new_worker("machinery_worker", concurrency);
    worker.set_pre_task_handler(|sig| {
        tracing::info!("I am a start of task handler for: {}", sig.name);
    });
    worker.set_post_task_handler(|sig| {
        tracing::info!("I am an end of task handler for: {}", sig.name);
    });
    worker.set_error_handler(|e| match e {
        // panic_task fails on purpose.
        Error::TaskFailed(text) => tracing::warn!("I am an error handler: {text}"),
        e => tracing::error!("I am an error handler: {e}"),
    });
    let stopped = worker.launch().await;
    server.broker().close().await;
    server.backend().close().await;
    Ok(match stopped.context("running the worker")? {
        Stopped::Gracefully => ExitCode::SUCCESS,
        Stopped::Abruptly => ExitCode::FAILURE,
    })
}

/// Go's example sender: the whole send flow ([`Flow::Full`], long-running task included)
/// against the workers of the configured broker; one line per result on stdout.
///
/// # Errors
///
/// The broker or backend cannot be reached, or a result is wrong or late.
pub async fn send_main(config: Config) -> anyhow::Result<()> {
    crate::hide_expected_panics();
    let server = machinist::server(config).await.context("connecting")?;
    tracing::info!(broker = %server.broker().describe(), "sending Go Machinery's example flow");
    let mut stdout = std::io::stdout().lock();
    let outcome = send_flow(&server, &mut stdout, Flow::Full).await;
    server.broker().close().await;
    server.backend().close().await;
    outcome
}

/// Removes an SQLite database file and its `-wal` and `-shm` companions, if there.
pub fn remove_sqlite_files(path: &Path) {
    for suffix in ["", "-wal", "-shm"] {
        let mut p = path.as_os_str().to_owned();
        p.push(suffix);
        let _ = std::fs::remove_file(p);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn one_url_for_every_role() {
        let c = config_from(args(&["redis://h:1/0"]), "").expect("ok");
        assert_eq!(c.broker, "redis://h:1/0");
        assert_eq!(c.result_backend, "redis://h:1/0");
        assert_eq!(c.lock, "redis://h:1/0");
        assert!(config_from(args(&["a", "b"]), "").is_err());
        assert!(config_from(args(&["--help"]), "").is_err());
    }

    #[test]
    fn amqp_examples_take_no_amqp_lock() {
        let c = amqp_config_from(args(&["amqp://g:g@h:5672/"]), "").expect("ok");
        assert_eq!(c.broker, "amqp://g:g@h:5672/");
        assert_eq!(c.result_backend, "amqp://g:g@h:5672/");
        assert_eq!(c.lock, "memory");
        let c = amqp_config_from(args(&["AMQPS://h/"]), "").expect("ok");
        assert_eq!(c.lock, "memory");
    }
}
