//! Shared fixtures: where RabbitMQ is (`AMQP_URL`, default the local guest account), a
//! [`Factory`] for the conformance suite with per-test exchange and queue names, a raw lapin
//! client (as a Go process would use RabbitMQ), and waiting helpers.

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use lapin::options::{ExchangeDeleteOptions, QueueDeleteOptions};
use lapin::{Connection, ConnectionProperties};
use machinist_amqp::{AmqpBackend, AmqpBroker, AmqpOptions};
use machinist_core::memory::MemoryLock;
use machinist_core::{Config, Server};
use machinist_testkit::{Adapters, Factory};

/// Logs to the test output when `RUST_LOG` is set.
pub fn init_logs() {
    if std::env::var_os("RUST_LOG").is_some() {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_test_writer()
            .try_init();
    }
}

/// The URL of a reachable RabbitMQ, or `None` after printing why the test is skipped.
pub fn rabbit() -> Option<String> {
    init_logs();
    machinist_testkit::rabbitmq::reachable()
}

/// Options for a test: its own exchange, binding key = default queue (so the publisher's
/// routing-key queue is the worker's queue), a connection name to find it by.
pub fn options(url: &str, namespace: &str, config: &Config) -> AmqpOptions {
    AmqpOptions::from_url(url)
        .expect("test URL parses")
        .with_config(config)
        .with_exchange(format!("{namespace}_ex"))
        .with_binding_key(config.default_queue.clone())
        .with_connection_name(namespace)
        .with_retry_for(Duration::from_secs(10))
        .with_operation_timeout(Duration::from_secs(5))
}

/// Broker and backend on `options`, and an in-memory lock (AMQP has none).
pub async fn adapters(options: AmqpOptions) -> Adapters {
    Adapters {
        broker: Arc::new(
            AmqpBroker::connect(options.clone())
                .await
                .expect("connect the broker to RabbitMQ"),
        ),
        backend: Arc::new(
            AmqpBackend::connect(options)
                .await
                .expect("connect the backend to RabbitMQ"),
        ),
        lock: Arc::new(MemoryLock::new()),
    }
}

/// Conformance adapters on the RabbitMQ of `AMQP_URL`, isolated by the scenario's namespace:
/// exchange `<ns>_ex`, queue and binding key `<ns>_tasks`. Result queues live at most two
/// minutes unused (instead of Go's hour) so test runs do not pile them up.
pub struct AmqpFactory {
    pub url: String,
}

impl AmqpFactory {
    pub fn from_env() -> Option<Self> {
        Some(AmqpFactory { url: rabbit()? })
    }
}

#[async_trait]
impl Factory for AmqpFactory {
    async fn adapters(&self, namespace: &str, config: &Config) -> Adapters {
        let mut config = config.clone();
        config.results_expire_in = config.results_expire_in.clamp(1, 120);
        adapters(options(&self.url, namespace, &config)).await
    }

    async fn teardown(&self, namespace: &str, adapters: &Adapters) {
        adapters.broker.close().await;
        adapters.backend.close().await;
        let queue = format!("{namespace}_tasks");
        cleanup(
            &self.url,
            &[queue.clone(), format!("{queue}.dead_letters")],
            &[format!("{namespace}_ex")],
        )
        .await;
    }
}

/// A plain lapin connection, used the way a Go producer or worker uses RabbitMQ.
pub async fn raw(url: &str) -> Connection {
    let mut uri: lapin::uri::AMQPUri = url.parse().expect("raw URL parses");
    // lapin reads no host from an IP address and "" from a "/" path; Go reads both.
    let hp = machinist_testkit::rabbitmq::host_port(url);
    let host = hp.rsplit_once(':').map_or(hp.as_str(), |(h, _)| h);
    host.trim_matches(['[', ']'])
        .clone_into(&mut uri.authority.host);
    if uri.vhost.is_empty() {
        "/".clone_into(&mut uri.vhost);
    }
    Connection::connect_uri(
        uri,
        ConnectionProperties::default().with_connection_name("machinist-test raw".into()),
    )
    .await
    .expect("raw connection")
}

/// Waits until a worker consumes `queue` (so a raw publish to it is not dropped unroutable).
pub async fn wait_for_consumer(conn: &Connection, queue: &str) {
    poll_until(10, &format!("a consumer on {queue}"), || async {
        let ch = conn.create_channel().await.ok()?;
        let q = ch
            .queue_declare(
                queue.into(),
                lapin::options::QueueDeclareOptions {
                    passive: true,
                    ..Default::default()
                },
                lapin::types::FieldTable::default(),
            )
            .await
            .ok()?;
        let _ = ch.close(200, "ok".into()).await;
        (q.consumer_count() > 0).then_some(())
    })
    .await;
}

/// Deletes queues and exchanges (best effort). Each channel is closed before the connection
/// (a channel merely dropped is closed by lapin in the background, which logs an error when
/// the connection is closing by then).
pub async fn cleanup(url: &str, queues: &[String], exchanges: &[String]) {
    let conn = raw(url).await;
    for q in queues {
        if let Ok(ch) = conn.create_channel().await {
            let _ = ch
                .queue_delete(q.as_str().into(), QueueDeleteOptions::default())
                .await;
            close_channel(&ch).await;
        }
    }
    for x in exchanges {
        if let Ok(ch) = conn.create_channel().await {
            let _ = ch
                .exchange_delete(x.as_str().into(), ExchangeDeleteOptions::default())
                .await;
            close_channel(&ch).await;
        }
    }
    let _ = conn.close(200, "bye".into()).await;
}

/// Closes `ch` if RabbitMQ has not (a refused operation closes it).
pub async fn close_channel(ch: &lapin::Channel) {
    if ch.status().connected() {
        let _ = ch.close(200, "bye".into()).await;
    }
}

/// A config for tests: no signal handling, a named default queue, short shutdown.
pub fn config(queue: &str) -> Config {
    Config {
        no_unix_signals: true,
        default_queue: queue.to_owned(),
        shutdown_timeout: Duration::from_secs(5),
        results_expire_in: 120,
        ..Config::default()
    }
}

/// A server with Go's test tasks on AMQP adapters built from `options`.
pub async fn server(options: AmqpOptions, config: &Config) -> Server {
    let a = adapters(options).await;
    let server = Server::new(config.clone(), a.broker, a.backend, a.lock);
    machinist_testkit::tasks::register_all(&server);
    server
}

/// Awaits `fut`, failing after `secs` seconds.
pub async fn within<T>(secs: u64, what: &str, fut: impl Future<Output = T>) -> T {
    match tokio::time::timeout(Duration::from_secs(secs), fut).await {
        Ok(v) => v,
        Err(_) => panic!("timed out after {secs} s waiting for {what}"),
    }
}

/// Polls `probe` every 20 ms until it returns `Some`, failing after `secs` seconds.
pub async fn poll_until<T, Fut>(secs: u64, what: &str, mut probe: impl FnMut() -> Fut) -> T
where
    Fut: Future<Output = Option<T>>,
{
    within(secs, what, async {
        loop {
            if let Some(v) = probe().await {
                return v;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
}

/// A unique name for a test's queues.
pub fn unique(prefix: &str) -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!(
        "mt_{prefix}_{}_{:x}{}",
        std::process::id(),
        nanos % (1 << 40),
        SEQ.fetch_add(1, Ordering::Relaxed)
    )
}

/// Log output captured in memory (a `tracing_subscriber` writer), for tests that check what
/// was logged.
#[derive(Clone, Default)]
pub struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Captured {
    type Writer = Captured;
    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

impl Captured {
    /// Everything written so far.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap_or_else(|p| p.into_inner())).into_owned()
    }

    /// The lines that contain `needle`.
    pub fn lines_with(&self, needle: &str) -> Vec<String> {
        self.text()
            .lines()
            .filter(|l| l.contains(needle))
            .map(str::to_owned)
            .collect()
    }
}
