//! Connections: [`RedisConnection`] is the shared, auto-reconnecting connection every adapter
//! of one deployment can use (a redis-rs `ConnectionManager`, or the cluster client's
//! connection), and each consumer opens its own extra connection for blocking pops.
//!
//! Why a second connection: a blocking pop (`BLMOVE … 1`) occupies the connection it runs on
//! until it returns, so on the shared multiplexed connection it would stall every command
//! pipelined behind it; and redis-rs times replies out after 500 ms by default, shorter than the
//! block. The blocking connection's reply timeout is the block plus the ordinary timeout.
//!
//! Write queue: a standalone or Sentinel connection carries a [`Batcher`] (`batch.rs`) that
//! sends the hot-path commands of concurrent tasks as one pipeline per round
//! ([`RedisConnection::batched`]); a cluster connection sends each caller's commands as their
//! own request.
//!
//! Outages: [`Outage`] makes "Redis went away" one warning and "Redis is back" one info line,
//! however many loops notice it; [`Backoff`] spaces the retries (100 ms doubling to 5 s, with
//! jitter), so nothing spins while Redis is down.
//!
//! Sentinel: [`SentinelConn`] asks the sentinels for the master's address whenever it has no
//! connection, and drops its connection on any error that may mean "this is no longer the
//! master" (I/O, refused, timeout, `READONLY`, `MASTERDOWN`, also as one reply of a
//! pipeline), so the command after a failover goes to the promoted replica. Blocking and
//! pub/sub connections resolve the master the same way each time they are opened.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use redis::aio::{
    ConnectionLike, ConnectionManager, ConnectionManagerConfig, MultiplexedConnection,
};
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use redis::sentinel::{SentinelClient, SentinelClientBuilder, SentinelServerType};
use redis::{AsyncConnectionConfig, Cmd, Pipeline, RedisFuture, Value};
use tokio::time::Instant;
use tracing::{debug, info, warn};

use crate::batch::{Batcher, Detached, Push, RequestStats};
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
    /// The master named by Sentinel, re-resolved after failures.
    Sentinel(SentinelConn),
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Conn::Manager(c) => c.req_packed_command(cmd),
            Conn::Plain(c) => c.req_packed_command(cmd),
            Conn::Cluster(c) => c.req_packed_command(cmd),
            Conn::Sentinel(c) => c.req_packed_command(cmd),
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
            Conn::Sentinel(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Manager(c) => c.get_db(),
            Conn::Plain(c) => c.get_db(),
            Conn::Cluster(c) => c.get_db(),
            Conn::Sentinel(c) => c.shared.db,
        }
    }
}

/// The master of a Sentinel-monitored deployment: one multiplexed connection, replaced through
/// the sentinels after an error that may mean a failover. Cheap to clone.
#[derive(Clone)]
pub(crate) struct SentinelConn {
    shared: Arc<SentinelShared>,
}

struct SentinelShared {
    /// The sentinels; locked while resolving, which also serializes reconnects.
    client: tokio::sync::Mutex<SentinelClient>,
    /// The current connection and its generation.
    current: Mutex<Option<(u64, MultiplexedConnection)>>,
    generation: AtomicU64,
    config: AsyncConnectionConfig,
    connect_timeout: Duration,
    master_name: String,
    /// The master's address last resolved, for the log line on a change.
    master_addr: Mutex<Option<String>>,
    /// The last failed attempt to reach the master: callers queued behind it fail at once
    /// instead of each walking the sentinels again.
    last_failure: Mutex<Option<(Instant, redis::RedisError)>>,
    db: i64,
}

/// How long a failed attempt to reach the master answers for the callers queued behind it.
const FAILURE_REUSE: Duration = Duration::from_millis(250);

impl SentinelConn {
    fn new(options: &RedisOptions, response_timeout: Duration) -> redis::RedisResult<Self> {
        let master_name = options.sentinel_master().unwrap_or_default().to_owned();
        let client = sentinel_client(options, &master_name)?;
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(options.connect_timeout))
            .set_response_timeout(Some(response_timeout));
        Ok(SentinelConn {
            shared: Arc::new(SentinelShared {
                client: tokio::sync::Mutex::new(client),
                current: Mutex::new(None),
                generation: AtomicU64::new(0),
                config,
                connect_timeout: options.connect_timeout,
                master_name,
                master_addr: Mutex::new(None),
                last_failure: Mutex::new(None),
                db: options.target.auth.db,
            }),
        })
    }

    /// A client for the current master, asked of the sentinels now.
    pub(crate) async fn master_client(&self) -> redis::RedisResult<redis::Client> {
        let shared = &self.shared;
        let mut sentinels = shared.client.lock().await;
        self.resolve(&mut sentinels).await
    }

    async fn resolve(&self, sentinels: &mut SentinelClient) -> redis::RedisResult<redis::Client> {
        let shared = &self.shared;
        // Each sentinel and the master's role check have their own timeouts; this bounds the
        // whole walk over the list.
        let bound = shared.connect_timeout.saturating_mul(2);
        let client = tokio::time::timeout(bound, sentinels.async_get_client())
            .await
            .map_err(|_| {
                redis::RedisError::from(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!(
                        "no sentinel named a reachable master {:?} within {bound:?}",
                        shared.master_name
                    ),
                ))
            })??;
        let addr = client.get_connection_info().addr().to_string();
        let mut last = shared.master_addr.lock().unwrap_or_else(|p| p.into_inner());
        match last.as_deref() {
            None => debug!(master = %shared.master_name, %addr, "Sentinel named the master"),
            Some(previous) if previous != addr => info!(
                master = %shared.master_name,
                %previous,
                %addr,
                "Sentinel names a new master (failover)"
            ),
            Some(_) => {}
        }
        *last = Some(addr);
        Ok(client)
    }

    /// The current connection, or a new one to the master the sentinels name now.
    async fn connection(&self) -> redis::RedisResult<(u64, MultiplexedConnection)> {
        if let Some(current) = self.current() {
            return Ok(current);
        }
        let shared = &self.shared;
        let mut sentinels = shared.client.lock().await;
        // Another caller may have reconnected, or just failed to, while this one waited.
        if let Some(current) = self.current() {
            return Ok(current);
        }
        if let Some((at, e)) = &*shared
            .last_failure
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            && at.elapsed() < FAILURE_REUSE
        {
            return Err(e.clone());
        }
        let opened = match self.resolve(&mut sentinels).await {
            Ok(client) => {
                client
                    .get_multiplexed_async_connection_with_config(&shared.config)
                    .await
            }
            Err(e) => Err(e),
        };
        let conn = match opened {
            Ok(conn) => conn,
            Err(e) => {
                *shared
                    .last_failure
                    .lock()
                    .unwrap_or_else(|p| p.into_inner()) = Some((Instant::now(), e.clone()));
                return Err(e);
            }
        };
        let generation = shared.generation.fetch_add(1, Ordering::Relaxed) + 1;
        *shared.current.lock().unwrap_or_else(|p| p.into_inner()) =
            Some((generation, conn.clone()));
        Ok((generation, conn))
    }

    fn current(&self) -> Option<(u64, MultiplexedConnection)> {
        self.shared
            .current
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Drops connection `generation` after an error that may mean it no longer reaches the
    /// master.
    fn failed(&self, generation: u64, e: &redis::RedisError) {
        if !crate::error::may_be_failover(e) {
            return;
        }
        let mut current = self
            .shared
            .current
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if current.as_ref().is_some_and(|(g, _)| *g == generation) {
            *current = None;
        }
    }
}

impl ConnectionLike for SentinelConn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        Box::pin(async move {
            let (generation, mut conn) = self.connection().await?;
            let result = conn.req_packed_command(cmd).await;
            if let Err(e) = &result {
                self.failed(generation, e);
            }
            result
        })
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        Box::pin(async move {
            let (generation, mut conn) = self.connection().await?;
            let result = conn.req_packed_commands(pipeline, offset, count).await;
            match &result {
                Err(e) => self.failed(generation, e),
                // A pipeline's server errors come back as replies (`READONLY` from a demoted
                // master, `MASTERDOWN` …): they mean a failover too.
                Ok(replies) => {
                    for reply in replies {
                        if let Value::ServerError(e) = reply {
                            self.failed(generation, &redis::RedisError::from(e.clone()));
                        }
                    }
                }
            }
            result
        })
    }

    fn get_db(&self) -> i64 {
        self.shared.db
    }
}

/// A redis-rs Sentinel client for `options`: the URL's hosts are the sentinels (with the
/// sentinel password), the URL's credentials and db are the master's; TLS to both with the
/// same material when the URL is `rediss://`.
fn sentinel_client(
    options: &RedisOptions,
    master_name: &str,
) -> redis::RedisResult<SentinelClient> {
    let infos = options.connection_infos().map_err(bad_settings)?;
    let sentinels: Vec<redis::ConnectionAddr> = infos.iter().map(|i| i.addr().clone()).collect();
    let mut builder =
        SentinelClientBuilder::new(sentinels, master_name, SentinelServerType::Master)?;
    let auth = &options.target.auth;
    builder = builder.set_client_to_redis_db(auth.db);
    if let Some(user) = &auth.username {
        builder = builder.set_client_to_redis_username(user);
    }
    if let Some(password) = &auth.password {
        builder = builder.set_client_to_redis_password(password);
    }
    if let Some(password) = options.sentinel.as_ref().and_then(|s| s.password.as_ref()) {
        builder = builder.set_client_to_sentinel_password(password);
    }
    #[cfg(feature = "tls")]
    if options.target.tls {
        let mode = if options.tls_files.insecure {
            redis::TlsMode::Insecure
        } else {
            redis::TlsMode::Secure
        };
        builder = builder.set_client_to_redis_tls_mode(mode);
        if let Some(certificates) = options.tls_certificates().map_err(bad_settings)? {
            builder = builder.set_client_to_redis_certificates(certificates);
        }
    }
    builder.build()
}

fn bad_settings(e: RedisError) -> redis::RedisError {
    redis::RedisError::from((
        redis::ErrorKind::InvalidClientConfig,
        "bad settings",
        e.to_string(),
    ))
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
    /// Coalesces the hot-path writes (`batch.rs`); `None` in a cluster.
    batcher: Option<Batcher>,
}

impl std::fmt::Debug for RedisConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisConnection")
            .field("target", &self.inner.options.describe())
            .finish()
    }
}

impl RedisConnection {
    /// True when both handles are one connection (clones of each other).
    pub(crate) fn same_as(&self, other: &RedisConnection) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner)
    }

    /// Connects (failing at once, with the reason, if Redis cannot be reached now; later
    /// outages are ridden out by reconnecting).
    pub async fn connect(options: RedisOptions) -> Result<Self, RedisError> {
        options.validate()?;
        let what = format!("connecting to {}", options.describe());
        let conn = open(&options, None).await.map_err(|e| {
            let what = if options.target.tls && e.to_string().contains("certificate") {
                format!(
                    "{what} (TLS: the server's certificate was not accepted; trust its CA with \
                     `tls.ca_file`)"
                )
            } else {
                what
            };
            RedisError::redis(what, "", e)
        })?;
        let outage = Arc::new(Outage::new(options.describe()));
        let batcher = match &conn {
            Conn::Cluster(_) => None,
            _ => Some(Batcher::new(conn.clone())),
        };
        Ok(RedisConnection {
            inner: Arc::new(ConnInner {
                options,
                conn,
                outage,
                batcher,
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

    /// Sends `cmds` (in order, contiguous) together with the commands other callers queue
    /// meanwhile, in one request per round (`batch.rs`); in a cluster, as a request of their
    /// own. Returns the last command's reply, or the first error among these commands.
    pub(crate) async fn batched(
        &self,
        cmds: impl IntoIterator<Item = Cmd>,
    ) -> redis::RedisResult<Value> {
        match &self.inner.batcher {
            Some(batcher) => batcher.run(cmds).await,
            None => crate::batch::direct(self.conn(), cmds).await,
        }
    }

    /// [`RedisConnection::batched`], then `push` merged with the other pushes to its list that
    /// leave in the same round (one `RPUSH` for all of them, `batch.rs`'s [`Push`]); the
    /// outcome counts it as the last command. Without a write queue it is one more command of
    /// the request.
    pub(crate) async fn batched_with(
        &self,
        cmds: impl IntoIterator<Item = Cmd>,
        push: Push<'_>,
    ) -> redis::RedisResult<Value> {
        match &self.inner.batcher {
            Some(batcher) => batcher.run_with(cmds, Some(push)).await,
            None => crate::batch::direct(self.conn(), cmds.into_iter().chain([push.cmd()])).await,
        }
    }

    /// Queues `cmds` like [`RedisConnection::batched`] without waiting for them: `done` gets
    /// their outcome on the write queue's task (`batch.rs`, [`Batcher::detach`]). Returns the
    /// commands when there is no write queue to take them (cluster, or no runtime): the caller
    /// sends them itself.
    pub(crate) fn detach(&self, cmds: Vec<Cmd>, done: Detached) -> Option<Vec<Cmd>> {
        match &self.inner.batcher {
            Some(batcher) => batcher.detach(cmds, done),
            None => Some(cmds),
        }
    }

    /// How many requests this connection's write queue sent, and the commands in them: the
    /// hot-path commands of every task go through it (`batch.rs`), coalesced into one request
    /// per round under load. All zero on a cluster connection, which has no write queue.
    pub fn requests(&self) -> RequestStats {
        self.inner
            .batcher
            .as_ref()
            .map(Batcher::stats)
            .unwrap_or_default()
    }

    pub(crate) fn outage(&self) -> &Arc<Outage> {
        &self.inner.outage
    }

    /// Opens a dedicated connection for blocking commands that block up to `block`.
    pub(crate) async fn blocking(&self, block: Duration) -> Result<Conn, RedisError> {
        let opened = match &self.inner.conn {
            Conn::Sentinel(sentinel) => {
                let options = &self.inner.options;
                let config = AsyncConnectionConfig::new()
                    .set_connection_timeout(Some(options.connect_timeout))
                    .set_response_timeout(Some(block + options.response_timeout));
                match sentinel.master_client().await {
                    Ok(client) => client
                        .get_multiplexed_async_connection_with_config(&config)
                        .await
                        .map(Conn::Plain),
                    Err(e) => Err(e),
                }
            }
            _ => open(&self.inner.options, Some(block)).await,
        };
        opened.map_err(|e| RedisError::redis("opening a connection for blocking pops", "", e))
    }

    /// Opens a RESP2 pub/sub connection to the (master) server; `None` in a cluster.
    pub(crate) async fn pubsub(&self) -> Result<Option<redis::aio::PubSub>, RedisError> {
        let options = &self.inner.options;
        let client = match &self.inner.conn {
            Conn::Cluster(_) => return Ok(None),
            Conn::Sentinel(sentinel) => sentinel.master_client().await,
            _ => options
                .connection_infos()
                .map_err(bad_settings)
                .and_then(|infos| {
                    infos.into_iter().next().ok_or_else(|| {
                        redis::RedisError::from((
                            redis::ErrorKind::InvalidClientConfig,
                            "no Redis host given",
                        ))
                    })
                })
                .and_then(redis::Client::open),
        }
        .map_err(|e| RedisError::redis("opening a pub/sub connection", "", e))?;
        match tokio::time::timeout(options.connect_timeout, client.get_async_pubsub()).await {
            Ok(Ok(pubsub)) => Ok(Some(pubsub)),
            Ok(Err(e)) => Err(RedisError::redis("opening a pub/sub connection", "", e)),
            Err(_) => Err(RedisError::redis(
                "opening a pub/sub connection",
                "",
                redis::RedisError::from(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!("not connected within {:?}", options.connect_timeout),
                )),
            )),
        }
    }
}

/// Opens a connection: the shared kind when `block` is `None`, else a dedicated one whose reply
/// timeout covers the block.
async fn open(options: &RedisOptions, block: Option<Duration>) -> redis::RedisResult<Conn> {
    let response_timeout = match block {
        Some(block) => block + options.response_timeout,
        None => options.response_timeout,
    };
    if options.is_sentinel() {
        let sentinel = SentinelConn::new(options, response_timeout)?;
        sentinel.connection().await?;
        return Ok(Conn::Sentinel(sentinel));
    }
    let infos = options.connection_infos().map_err(bad_settings)?;
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
