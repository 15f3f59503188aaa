//! Shared fixtures: a [`Factory`] for the conformance suite, adapters on a spawned server, a
//! raw client (as a Go process would use), and waiting helpers.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use machinist_core::{Config, Server};
use machinist_redis::{RedisBackend, RedisBroker, RedisConnection, RedisLock, RedisOptions};
use machinist_testkit::redis_server::RedisServer;
use machinist_testkit::{Adapters, Factory};

/// The lease the tests use: short, so crashed consumers are reaped quickly.
pub const LEASE: Duration = Duration::from_secs(3);

/// Conformance adapters on one spawned server (per test), TCP or unix socket.
pub struct RedisFactory {
    pub server: RedisServer,
}

impl RedisFactory {
    pub fn tcp() -> Option<Self> {
        Some(RedisFactory {
            server: RedisServer::start()?,
        })
    }

    pub fn unix() -> Option<Self> {
        Some(RedisFactory {
            server: RedisServer::start_unix()?,
        })
    }
}

/// Options for `url` the way the tests use them: the scenario's config, its own delayed-task
/// key, a short lease.
pub fn options(url: &str, namespace: &str, config: &Config) -> RedisOptions {
    RedisOptions::from_url(url)
        .expect("test URL parses")
        .with_config(config)
        .with_delayed_tasks_key(format!("{namespace}_delayed"))
        .with_lease(LEASE)
}

/// Broker, backend and lock sharing one connection.
pub async fn adapters(options: RedisOptions) -> Adapters {
    let conn = RedisConnection::connect(options)
        .await
        .expect("connect to the test redis-server");
    Adapters {
        broker: Arc::new(RedisBroker::new(conn.clone())),
        backend: Arc::new(RedisBackend::new(conn.clone())),
        lock: Arc::new(RedisLock::new(conn)),
    }
}

#[async_trait]
impl Factory for RedisFactory {
    async fn adapters(&self, namespace: &str, config: &Config) -> Adapters {
        adapters(options(&self.server.url(), namespace, config)).await
    }
}

/// A plain redis-rs connection, used the way a Go producer or worker would use Redis.
pub async fn raw(url: &str) -> redis::aio::MultiplexedConnection {
    let url = url.replace("redis+socket://", "unix://").replace(":/0", "");
    redis::Client::open(url)
        .expect("raw client")
        .get_multiplexed_async_connection()
        .await
        .expect("raw connection")
}

/// A config for tests: no signal handling, a named default queue, short shutdown.
pub fn config(queue: &str) -> Config {
    Config {
        no_unix_signals: true,
        default_queue: queue.to_owned(),
        shutdown_timeout: Duration::from_secs(5),
        ..Config::default()
    }
}

/// A server with Go's test tasks on Redis adapters built from `options`.
pub async fn server(options: RedisOptions, config: &Config) -> Server {
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

/// A unique name for a test's queue.
pub fn unique(prefix: &str) -> String {
    format!("{prefix}_{}", uuid_like())
}

fn uuid_like() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!(
        "{:x}{}",
        nanos % (1 << 40),
        SEQ.fetch_add(1, Ordering::Relaxed)
    )
}
