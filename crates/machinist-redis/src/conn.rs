//! Connections: [`RedisConnection`] is the shared, auto-reconnecting connection every adapter
//! of one deployment can use (a redis-rs `ConnectionManager`, or the cluster client's
//! connection), and each consumer opens its own extra connection for blocking pops.
//!
//! Why a second connection: a blocking pop (`BLMOVE … 1`) occupies the connection it runs on
//! until it returns, so on the shared multiplexed connection it would stall every command
//! pipelined behind it; and redis-rs times replies out after 500 ms by default, shorter than the
//! block. The blocking connection's reply timeout is the block plus the ordinary timeout.
//!
//! Outages: [`Outage`] makes "Redis went away" one warning and "Redis is back" one info line,
//! however many loops notice it; [`Backoff`] spaces the retries (100 ms doubling to 5 s, with
//! jitter), so nothing spins while Redis is down.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use redis::aio::{
    ConnectionLike, ConnectionManager, ConnectionManagerConfig, MultiplexedConnection,
};
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use redis::{AsyncConnectionConfig, Cmd, Pipeline, RedisFuture, Value};
use tokio::time::Instant;
use tracing::{info, warn};

use crate::error::RedisError;
use crate::options::RedisOptions;

/// One connection to Redis or to a Redis Cluster, cheap to clone (clones multiplex).
#[derive(Clone)]
pub(crate) enum Conn {
    /// Standalone server, reconnecting by itself.
    Manager(ConnectionManager),
    /// A dedicated standalone connection (blocking pops); replaced by its owner on failure.
    Plain(MultiplexedConnection),
    /// Cluster; the cluster client reconnects and follows slot moves by itself.
    Cluster(ClusterConnection),
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Conn::Manager(c) => c.req_packed_command(cmd),
            Conn::Plain(c) => c.req_packed_command(cmd),
            Conn::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Conn::Manager(c) => c.req_packed_commands(pipeline, offset, count),
            Conn::Plain(c) => c.req_packed_commands(pipeline, offset, count),
            Conn::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Manager(c) => c.get_db(),
            Conn::Plain(c) => c.get_db(),
            Conn::Cluster(c) => c.get_db(),
        }
    }
}

/// The shared connection of the Redis adapters: build one with [`RedisConnection::connect`]
/// and hand it to [`RedisBroker`](crate::RedisBroker), [`RedisBackend`](crate::RedisBackend)
/// and [`RedisLock`](crate::RedisLock) so they multiplex over one socket; or let each adapter's
/// `connect` open its own. Cloning is cheap.
#[derive(Clone)]
pub struct RedisConnection {
    inner: Arc<ConnInner>,
}

struct ConnInner {
    options: RedisOptions,
    conn: Conn,
    outage: Arc<Outage>,
}

impl std::fmt::Debug for RedisConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisConnection")
            .field("target", &self.inner.options.describe())
            .finish()
    }
}

impl RedisConnection {
    /// Connects (failing at once, with the reason, if Redis cannot be reached now; later
    /// outages are ridden out by reconnecting).
    pub async fn connect(options: RedisOptions) -> Result<Self, RedisError> {
        options.validate()?;
        let what = format!("connecting to {}", options.describe());
        let conn = open(&options, None)
            .await
            .map_err(|e| RedisError::redis(what, "", e))?;
        let outage = Arc::new(Outage::new(options.describe()));
        Ok(RedisConnection {
            inner: Arc::new(ConnInner {
                options,
                conn,
                outage,
            }),
        })
    }

    /// The settings this connection was made with.
    pub fn options(&self) -> &RedisOptions {
        &self.inner.options
    }

    /// A handle on the shared connection.
    pub(crate) fn conn(&self) -> Conn {
        self.inner.conn.clone()
    }

    pub(crate) fn outage(&self) -> &Arc<Outage> {
        &self.inner.outage
    }

    /// Opens a dedicated connection for blocking commands that block up to `block`.
    pub(crate) async fn blocking(&self, block: Duration) -> Result<Conn, RedisError> {
        open(&self.inner.options, Some(block))
            .await
            .map_err(|e| RedisError::redis("opening a connection for blocking pops", "", e))
    }
}

/// Opens a connection: the shared kind when `block` is `None`, else a dedicated one whose reply
/// timeout covers the block.
async fn open(options: &RedisOptions, block: Option<Duration>) -> redis::RedisResult<Conn> {
    let infos = options.connection_infos().map_err(|e| {
        redis::RedisError::from((
            redis::ErrorKind::InvalidClientConfig,
            "bad settings",
            e.to_string(),
        ))
    })?;
    let response_timeout = match block {
        Some(block) => block + options.response_timeout,
        None => options.response_timeout,
    };
    if options.is_cluster() {
        let client = ClusterClient::builder(infos)
            .connection_timeout(options.connect_timeout)
            .response_timeout(response_timeout)
            .retries(3)
            .build()?;
        return Ok(Conn::Cluster(client.get_async_connection().await?));
    }
    let info = infos.into_iter().next().ok_or_else(|| {
        redis::RedisError::from((redis::ErrorKind::InvalidClientConfig, "no Redis host given"))
    })?;
    let client = redis::Client::open(info)?;
    if block.is_some() {
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(options.connect_timeout))
            .set_response_timeout(Some(response_timeout));
        return Ok(Conn::Plain(
            client
                .get_multiplexed_async_connection_with_config(&config)
                .await?,
        ));
    }
    let config = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(options.connect_timeout))
        .set_response_timeout(Some(response_timeout))
        .set_number_of_retries(2)
        .set_max_delay(Duration::from_secs(1));
    Ok(Conn::Manager(
        ConnectionManager::new_with_config(client, config).await?,
    ))
}

/// Installs rustls's `ring` provider as the process default if none is installed yet.
#[cfg(feature = "tls")]
pub(crate) fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// Turns the first failure of an outage into one warning and the first success after it into
/// one info line.
#[derive(Debug)]
pub(crate) struct Outage {
    target: String,
    down_since: Mutex<Option<Instant>>,
}

impl Outage {
    pub(crate) fn new(target: String) -> Self {
        Outage {
            target,
            down_since: Mutex::new(None),
        }
    }

    /// Records a failure; logs it if it starts an outage.
    pub(crate) fn failed(&self, e: &RedisError) {
        let mut down = self.down_since.lock().unwrap_or_else(|p| p.into_inner());
        if down.is_none() {
            *down = Some(Instant::now());
            warn!(redis = %self.target, "Redis unreachable ({e}); retrying with back-off");
        }
    }

    /// Records a success; logs the end of an outage.
    pub(crate) fn ok(&self) {
        let mut down = self.down_since.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(since) = down.take() {
            info!(redis = %self.target, "Redis reachable again after {:?}", since.elapsed());
        }
    }
}

/// Exponential back-off with jitter: 100 ms, 200 ms … capped at 5 s, each ±25 %.
#[derive(Debug, Default)]
pub(crate) struct Backoff {
    attempt: u32,
}

impl Backoff {
    const BASE: Duration = Duration::from_millis(100);
    const CAP: Duration = Duration::from_secs(5);

    /// The next delay.
    pub(crate) fn next_delay(&mut self) -> Duration {
        let exp = Self::BASE.saturating_mul(1u32 << self.attempt.min(10));
        self.attempt = self.attempt.saturating_add(1);
        jitter(exp.min(Self::CAP), 4)
    }

    /// Back to the shortest delay.
    pub(crate) fn reset(&mut self) {
        self.attempt = 0;
    }
}

/// `d` varied by up to ±1/`fraction` of itself.
pub(crate) fn jitter(d: Duration, fraction: u32) -> Duration {
    let span = d / fraction.max(1);
    let r = random_u64() % 2001;
    // r in 0..=2000 maps to -span..=+span.
    let signed = (r as f64 - 1000.0) / 1000.0;
    let delta = span.mul_f64(signed.abs());
    if signed < 0.0 {
        d.saturating_sub(delta)
    } else {
        d + delta
    }
}

/// 64 random bits (from the OS-seeded UUID generator, to avoid another dependency).
pub(crate) fn random_u64() -> u64 {
    let (hi, lo) = uuid::Uuid::new_v4().as_u64_pair();
    hi ^ lo.rotate_left(17)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_to_the_cap() {
        let mut b = Backoff::default();
        let first = b.next_delay();
        assert!(first >= Duration::from_millis(75) && first <= Duration::from_millis(125));
        for _ in 0..20 {
            let d = b.next_delay();
            assert!(d <= Duration::from_millis(6250), "{d:?}");
        }
        b.reset();
        assert!(b.next_delay() <= Duration::from_millis(125));
    }
}
