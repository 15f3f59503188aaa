//! A clean stop logs no error. The worker stops while tasks are still queued (prefetched
//! deliveries go back to the queue, the running ones finish and are acknowledged), then the
//! broker and the backend close: no `ERROR` event may be logged by anyone — lapin included
//! (it used to log "Connection error: invalid channel state: Closing" when a consumer's channel
//! was dropped while its connection was closing).
//!
//! The stop runs in a child process of this test binary, alone: the log capture is a global
//! subscriber, and the other integration tests log errors on purpose. Skipped when RabbitMQ is
//! not reachable.

use std::sync::Arc;
use std::time::Duration;

use lapin::options::{ExchangeDeleteOptions, QueueDeleteOptions};
use lapin::{Connection, ConnectionProperties};
use machinist_amqp::{AmqpBackend, AmqpBroker, AmqpOptions};
use machinist_core::memory::MemoryLock;
use machinist_core::{Backend, Config, Server, Signature, State};

use crate::common::Captured;
use tracing::Level;

fn options(url: &str, ns: &str, config: &Config) -> AmqpOptions {
    AmqpOptions::from_url(url)
        .expect("test URL parses")
        .with_config(config)
        .with_exchange(format!("{ns}_ex"))
        .with_binding_key(config.default_queue.clone())
        .with_connection_name(ns)
        .with_retry_for(Duration::from_secs(10))
        .with_operation_timeout(Duration::from_secs(5))
}

/// Set in the child process that runs the stop.
const CHILD: &str = "MACHINIST_SHUTDOWN_TEST_CHILD";

#[test]
fn a_clean_stop_logs_no_error() {
    if std::env::var_os(CHILD).is_some() {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime")
            .block_on(stop_and_capture());
        return;
    }
    let exe = std::env::current_exe().expect("the test binary");
    let out = std::process::Command::new(exe)
        .args([
            "--exact",
            "shutdown::a_clean_stop_logs_no_error",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD, "1")
        .output()
        .expect("run the child");
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("1 passed"),
        "the child ran no test: {}",
        String::from_utf8_lossy(&out.stdout)
    );
}

/// A worker stopped busy, one stopped idle, the adapters closed: no `ERROR` from anyone.
async fn stop_and_capture() {
    let captured = Captured::default();
    tracing_subscriber::fmt()
        .with_max_level(Level::ERROR)
        .with_ansi(false)
        .with_writer(captured.clone())
        .init();
    let Some(url) = machinist_testkit::rabbitmq::reachable() else {
        return;
    };
    let ns = format!(
        "mt_shutdown_{}_{:x}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() % (1 << 40))
    );
    let queue = format!("{ns}_tasks");
    let config = Config {
        no_unix_signals: true,
        default_queue: queue.clone(),
        shutdown_timeout: Duration::from_secs(10),
        results_expire_in: 120,
        ..Config::default()
    };
    let opts = options(&url, &ns, &config);
    let broker = Arc::new(AmqpBroker::connect(opts.clone()).await.expect("broker"));
    let backend = Arc::new(AmqpBackend::connect(opts).await.expect("backend"));
    let server = Server::new(
        config,
        broker.clone(),
        backend.clone(),
        Arc::new(MemoryLock::new()),
    );
    machinist_testkit::tasks::register_all(&server);

    // Two rounds on the same adapters: a worker stopped with tasks still queued, then one
    // stopped idle after draining the rest.
    let mut uuids = Vec::new();
    for i in 0..300i64 {
        let r = server
            .send_task(Signature::new("add").args((i, 1i64)))
            .await
            .expect("send");
        uuids.push(r.uuid().to_owned());
    }
    let worker = server.new_worker("busy", 16).launch_async();
    tokio::time::timeout(Duration::from_secs(30), async {
        while !matches!(
            backend.get_state(&uuids[20]).await,
            Ok(Some(ref s)) if s.state == State::Success
        ) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("some tasks done within 30 s");
    worker.quit().await.expect("the busy worker stops");

    let worker = server.new_worker("idle", 16).launch_async();
    tokio::time::timeout(Duration::from_secs(60), async {
        for u in &uuids {
            while !matches!(
                backend.get_state(u).await,
                Ok(Some(ref s)) if s.state == State::Success
            ) {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    })
    .await
    .expect("every task done within 60 s");
    worker.quit().await.expect("the idle worker stops");
    server.broker().close().await;
    server.backend().close().await;
    // Whatever closes in the background has time to log.
    tokio::time::sleep(Duration::from_millis(500)).await;

    // As tests/it/common.rs: lapin reads no host from an IP address and "" from a "/" path.
    let mut uri: lapin::uri::AMQPUri = url.parse().expect("URL parses");
    let hp = machinist_testkit::rabbitmq::host_port(&url);
    let host = hp.rsplit_once(':').map_or(hp.as_str(), |(h, _)| h);
    host.trim_matches(['[', ']'])
        .clone_into(&mut uri.authority.host);
    if uri.vhost.is_empty() {
        "/".clone_into(&mut uri.vhost);
    }
    let raw = Connection::connect_uri(uri, ConnectionProperties::default())
        .await
        .expect("raw connection");
    if let Ok(ch) = raw.create_channel().await {
        let _ = ch
            .queue_delete(queue.as_str().into(), QueueDeleteOptions::default())
            .await;
        let _ = ch
            .exchange_delete(format!("{ns}_ex").into(), ExchangeDeleteOptions::default())
            .await;
        let _ = ch.close(200, "bye".into()).await;
    }
    let _ = raw.close(200, "bye".into()).await;

    let errors = captured.text();
    assert!(errors.is_empty(), "a clean stop logged errors:\n{errors}");
}
