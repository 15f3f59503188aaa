//! Connections: [`Connector`] opens a connection to the first reachable URL of the list;
//! [`Shared`] is a lazily (re)connecting connection with one publisher-confirm channel shared by
//! every publish and a small pool of channels for everything else; [`Outage`] and [`Backoff`]
//! make outages quiet and spaced.
//!
//! Why a shared publish channel: publishes with confirms pipeline on one channel (each awaits
//! its own confirm), which is the fastest way to publish durably. Why separate operation
//! channels: RabbitMQ answers a refused operation (404 on a missing queue, 405 on a locked one,
//! 406 on different arguments) by closing the channel it ran on, and that must not fail
//! unrelated publishes. Each operation borrows a channel for itself (so `nack(multiple)` only
//! touches its own messages) and gives it back if it is still open.
//!
//! Why channels are retired after many declarations: lapin remembers every queue a channel
//! declared (for its topology recovery), so a channel that declares one queue per task would
//! grow without bound.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::{
    BasicProperties, Channel, Confirmation, Connection, ConnectionProperties, PublisherConfirm,
};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};

use crate::error::AmqpError;
use crate::options::{AmqpOptions, AmqpUrl, short};

/// Opens connections to the first reachable URL of the list, in order (Go's
/// `MultipleBrokerSeparator` behaviour: a dead first host does not stop us).
#[derive(Debug, Clone)]
pub(crate) struct Connector {
    urls: Vec<AmqpUrl>,
    name: String,
    timeout: Duration,
    #[cfg_attr(not(feature = "tls"), allow(dead_code))]
    ca_file: Option<std::path::PathBuf>,
    pub(crate) outage: Arc<Outage>,
}

impl Connector {
    /// A connector for `adapter` (`broker` or `backend`, named in outage logs).
    pub(crate) fn new(options: &AmqpOptions, adapter: &'static str) -> Self {
        Connector {
            urls: options.urls.clone(),
            name: options.connection_name.clone(),
            timeout: options.connect_timeout,
            ca_file: options.ca_file.clone(),
            outage: Arc::new(Outage::new(options.describe(), adapter)),
        }
    }

    /// Connects to the first URL that answers; `role` goes into the connection name.
    pub(crate) async fn connect(&self, role: &str) -> Result<Connection, AmqpError> {
        let mut failures = Vec::new();
        for url in &self.urls {
            let props = ConnectionProperties::default()
                .with_connection_name(format!("{} {role}", self.name).into());
            match tokio::time::timeout(self.timeout, self.open(url, props)).await {
                Ok(Ok(conn)) => {
                    debug!(url = %url.display, role, "connected");
                    return Ok(conn);
                }
                Ok(Err(e)) => failures.push(format!("{}: {e}", url.display)),
                Err(_) => failures.push(format!(
                    "{}: no answer within {:?}",
                    url.display, self.timeout
                )),
            }
        }
        Err(AmqpError::Connect(failures.join("; ")))
    }

    #[cfg(not(feature = "tls"))]
    async fn open(&self, url: &AmqpUrl, props: ConnectionProperties) -> lapin::Result<Connection> {
        Connection::connect_uri(url.uri.clone(), props).await
    }

    #[cfg(feature = "tls")]
    async fn open(&self, url: &AmqpUrl, props: ConnectionProperties) -> lapin::Result<Connection> {
        let cert_chain = match &self.ca_file {
            Some(path) => Some(std::fs::read_to_string(path).map_err(|e| {
                lapin::Error::from(std::io::Error::new(
                    e.kind(),
                    format!("reading tls.ca_file {}: {e}", path.display()),
                ))
            })?),
            None => None,
        };
        let tls = lapin::tcp::OwnedTLSConfig {
            identity: None,
            cert_chain,
        };
        let runtime = lapin::runtime::default_runtime()?;
        Connection::connect_uri_with_config(url.uri.clone(), props, tls, runtime).await
    }
}

/// A live connection and the number of its generation (bumped at every reconnect).
#[derive(Clone)]
struct Live {
    conn: Arc<Connection>,
    generation: u64,
}

/// How many declarations a pooled channel makes before it is retired (lapin keeps a record of
/// each on the channel).
const DECLARES_PER_CHANNEL: u32 = 2000;
/// Idle operation channels kept.
const IDLE_CHANNELS: usize = 16;

/// A lazily connected, reconnecting connection shared by one adapter (see the module docs).
pub(crate) struct Shared {
    pub(crate) connector: Connector,
    role: &'static str,
    retry_for: Duration,
    pub(crate) operation_timeout: Duration,
    connecting: tokio::sync::Mutex<()>,
    live: Mutex<Option<Live>>,
    /// The shared publish channel and its connection's generation (an `Arc`: a lapin
    /// `Channel` clone is a dozen reference counts, and every publish takes one).
    publish: Mutex<Option<(u64, Arc<Channel>)>>,
    idle: Mutex<Vec<OpChannel>>,
    declared: Mutex<HashMap<String, (u64, Instant)>>,
    generations: AtomicU64,
    pub(crate) closed: CancellationToken,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("role", &self.role)
            .field("target", &self.connector.outage.target)
            .finish()
    }
}

/// A channel borrowed for one operation.
pub(crate) struct OpChannel {
    pub(crate) channel: Channel,
    generation: u64,
    declares: u32,
}

impl OpChannel {
    /// Wraps a channel that is not from the pool (a consumer's own).
    pub(crate) fn detached(channel: Channel) -> Self {
        OpChannel {
            channel,
            generation: 0,
            declares: 0,
        }
    }

    /// Counts a declaration made on this channel.
    pub(crate) fn declared(&mut self) {
        self.declares += 1;
    }
}

impl Shared {
    /// A shared connection of `adapter` (`broker` or `backend`) whose connections are named
    /// after `role`.
    pub(crate) fn new(options: &AmqpOptions, adapter: &'static str, role: &'static str) -> Self {
        Shared {
            connector: Connector::new(options, adapter),
            role,
            retry_for: options.retry_for,
            operation_timeout: options.operation_timeout,
            connecting: tokio::sync::Mutex::new(()),
            live: Mutex::new(None),
            publish: Mutex::new(None),
            idle: Mutex::new(Vec::new()),
            declared: Mutex::new(HashMap::new()),
            generations: AtomicU64::new(0),
            closed: CancellationToken::new(),
        }
    }

    pub(crate) fn outage(&self) -> &Arc<Outage> {
        &self.connector.outage
    }

    fn current(&self) -> Option<Live> {
        let live = self.live.lock().unwrap_or_else(|p| p.into_inner());
        live.as_ref()
            .filter(|l| l.conn.status().connected())
            .cloned()
    }

    /// The live connection, connecting (once, whoever asks at the same time) if there is none.
    async fn connection(&self) -> Result<Live, AmqpError> {
        if let Some(live) = self.current() {
            return Ok(live);
        }
        if self.closed.is_cancelled() {
            return Err(AmqpError::config("the AMQP adapter was closed"));
        }
        let _one = self.connecting.lock().await;
        if let Some(live) = self.current() {
            return Ok(live);
        }
        let conn = self.connector.connect(self.role).await?;
        let generation = self.generations.fetch_add(1, Ordering::Relaxed) + 1;
        let live = Live {
            conn: Arc::new(conn),
            generation,
        };
        *self.live.lock().unwrap_or_else(|p| p.into_inner()) = Some(live.clone());
        self.idle.lock().unwrap_or_else(|p| p.into_inner()).clear();
        self.declared
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
        Ok(live)
    }

    /// The generation of the live connection (0 before the first).
    pub(crate) fn generation(&self) -> u64 {
        self.current().map_or(0, |l| l.generation)
    }

    /// Opens a channel in confirm mode.
    async fn open_channel(&self, live: &Live) -> Result<Channel, AmqpError> {
        let channel = live
            .conn
            .create_channel()
            .await
            .map_err(|e| AmqpError::amqp("opening a channel", e))?;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await
            .map_err(|e| AmqpError::amqp("enabling publisher confirms", e))?;
        Ok(channel)
    }

    /// The shared publisher-confirm channel.
    pub(crate) async fn publish_channel(&self) -> Result<Arc<Channel>, AmqpError> {
        let live = self.connection().await?;
        {
            let publish = self.publish.lock().unwrap_or_else(|p| p.into_inner());
            if let Some((generation, channel)) = publish.as_ref()
                && *generation == live.generation
                && channel.status().connected()
            {
                return Ok(Arc::clone(channel));
            }
        }
        let channel = Arc::new(self.open_channel(&live).await?);
        let mut publish = self.publish.lock().unwrap_or_else(|p| p.into_inner());
        // Another caller may have opened one meanwhile: keep the first, drop ours.
        if let Some((generation, existing)) = publish.as_ref()
            && *generation == live.generation
            && existing.status().connected()
        {
            return Ok(Arc::clone(existing));
        }
        *publish = Some((live.generation, Arc::clone(&channel)));
        Ok(channel)
    }

    /// Publishes on the shared confirm channel (`mandatory`) and waits for the confirm.
    /// `Ok(true)` when the message came back unroutable.
    pub(crate) async fn publish(
        &self,
        exchange: &str,
        routing_key: &str,
        body: &[u8],
        props: BasicProperties,
    ) -> Result<bool, AmqpError> {
        let channel = self.publish_channel().await?;
        publish_on(&channel, exchange, routing_key, body, props).await
    }

    /// A channel for one operation; give it back with [`Shared::release`].
    pub(crate) async fn op_channel(&self) -> Result<OpChannel, AmqpError> {
        let live = self.connection().await?;
        loop {
            let candidate = self.idle.lock().unwrap_or_else(|p| p.into_inner()).pop();
            match candidate {
                Some(op) if op.generation == live.generation && op.channel.status().connected() => {
                    return Ok(op);
                }
                Some(_) => {}
                None => break,
            }
        }
        Ok(OpChannel {
            channel: self.open_channel(&live).await?,
            generation: live.generation,
            declares: 0,
        })
    }

    /// Gives a channel back to the pool if it is still usable.
    pub(crate) fn release(&self, op: OpChannel) {
        if !op.channel.status().connected()
            || op.declares >= DECLARES_PER_CHANNEL
            || op.generation != self.generation()
        {
            return;
        }
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        if idle.len() < IDLE_CHANNELS {
            idle.push(op);
        }
    }

    /// True when `key` was declared on the live connection less than `max_age` ago.
    pub(crate) fn is_declared(&self, key: &str, max_age: Duration) -> bool {
        let generation = self.generation();
        self.declared
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(key)
            .is_some_and(|(g, at)| *g == generation && at.elapsed() < max_age)
    }

    /// Records that `key` was declared now.
    pub(crate) fn mark_declared(&self, key: &str) {
        let generation = self.generation();
        let mut declared = self.declared.lock().unwrap_or_else(|p| p.into_inner());
        if declared.len() >= 50_000 {
            // Bounded: forget the whole cache rather than track ages; the next uses redeclare.
            declared.clear();
        }
        declared.insert(key.to_owned(), (generation, Instant::now()));
    }

    /// Forgets a declaration (the queue turned out to be gone).
    pub(crate) fn forget_declared(&self, key: &str) {
        self.declared
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(key);
    }

    /// Runs `op` (each attempt bounded by `operation_timeout`) until it succeeds, fails for a
    /// reason other than an outage, or `retry_for` has passed: an outage is logged once (by [`Outage`]) and retried with back-off; a channel
    /// closed under us by another operation is retried at once, a few times.
    pub(crate) async fn retrying<T, F, Fut>(&self, mut op: F) -> Result<T, AmqpError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, AmqpError>>,
    {
        let deadline = Instant::now() + self.retry_for;
        let mut backoff = Backoff::default();
        let mut quick = 0;
        loop {
            let attempt = match tokio::time::timeout(self.operation_timeout, op()).await {
                Ok(result) => result,
                Err(_) => Err(AmqpError::Timeout {
                    what: "an AMQP operation".into(),
                    after: self.operation_timeout,
                }),
            };
            match attempt {
                Ok(v) => {
                    self.outage().ok();
                    return Ok(v);
                }
                Err(e) if e.is_retryable() && !self.closed.is_cancelled() => {
                    let connected = self.current().is_some();
                    if connected && quick < 3 {
                        // The connection is fine: only the channel died (closed by another
                        // operation's refusal). Try again on a fresh one.
                        quick += 1;
                        debug!("retrying on a fresh channel after: {e}");
                        continue;
                    }
                    if Instant::now() >= deadline {
                        return Err(e);
                    }
                    self.outage().failed(&e);
                    let delay = backoff.next_delay();
                    tokio::select! {
                        () = self.closed.cancelled() => return Err(e),
                        () = tokio::time::sleep(delay) => {}
                    }
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Closes the connection: the channels this adapter holds first, then the connection (see
    /// [`close_gracefully`]).
    pub(crate) async fn close(&self) {
        self.closed.cancel();
        if let Some((live, channels)) = self.take_all() {
            close_gracefully(&live.conn, channels).await;
        }
    }

    /// Takes the live connection and the channels held for it (the publish channel and the
    /// idle pool), leaving none.
    fn take_all(&self) -> Option<(Live, Vec<Channel>)> {
        let live = self.live.lock().unwrap_or_else(|p| p.into_inner()).take()?;
        let mut channels: Vec<Channel> = self
            .idle
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .drain(..)
            .map(|op| op.channel)
            .collect();
        if let Some((_, channel)) = self
            .publish
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
        {
            channels.push(Arc::unwrap_or_clone(channel));
        }
        Some((live, channels))
    }
}

/// Publishes on `channel` (in confirm mode, `mandatory`) and waits for the confirm.
/// `Ok(true)` when the message came back unroutable.
pub(crate) async fn publish_on(
    channel: &Channel,
    exchange: &str,
    routing_key: &str,
    body: &[u8],
    props: BasicProperties,
) -> Result<bool, AmqpError> {
    let confirm = send_publish(channel, exchange, routing_key, body, props).await?;
    confirmed(confirm, exchange, routing_key).await
}

/// Sends a `mandatory` publish on `channel`; returns once its frames are written (lapin sends
/// pending method frames of every channel before publishes: what is sent on the channel after
/// this returns reaches RabbitMQ after the message).
pub(crate) async fn send_publish(
    channel: &Channel,
    exchange: &str,
    routing_key: &str,
    body: &[u8],
    props: BasicProperties,
) -> Result<PublisherConfirm, AmqpError> {
    channel
        .basic_publish(
            short(exchange)?,
            short(routing_key)?,
            BasicPublishOptions {
                mandatory: true,
                immediate: false,
            },
            body,
            props,
        )
        .await
        .map_err(|e| AmqpError::amqp(publishing(exchange, routing_key), e))
}

/// Waits for the confirm of a [`send_publish`]: `Ok(true)` when the message came back
/// unroutable.
pub(crate) async fn confirmed(
    confirm: PublisherConfirm,
    exchange: &str,
    routing_key: &str,
) -> Result<bool, AmqpError> {
    match confirm
        .await
        .map_err(|e| AmqpError::amqp(publishing(exchange, routing_key), e))?
    {
        Confirmation::Ack(None) | Confirmation::NotRequested => Ok(false),
        Confirmation::Ack(Some(_)) => Ok(true),
        Confirmation::Nack(_) => Err(AmqpError::Nacked {
            what: publishing(exchange, routing_key),
        }),
    }
}

fn publishing(exchange: &str, routing_key: &str) -> String {
    format!("publishing to {exchange:?} with routing key {routing_key:?}")
}

/// Closes `channels`, then `conn`, each bounded (5 s), each only if still open.
///
/// Why in this order, and awaited: lapin closes a channel whose last handle is dropped from a
/// task of its own, which fails — logging "ERROR lapin::channels: Connection error: invalid
/// channel state: Closing" — when the connection started closing meanwhile. Closing the
/// channels first, and holding their handles until they are closed, leaves nothing for lapin
/// to close behind our back. (Without `connection.close` at all, RabbitMQ would log "client
/// unexpectedly closed TCP connection".)
pub(crate) async fn close_gracefully(conn: &Connection, channels: Vec<Channel>) {
    let bound = Duration::from_secs(5);
    futures_util::future::join_all(
        channels
            .iter()
            .filter(|c| c.status().connected())
            .map(|c| tokio::time::timeout(bound, c.close(200, "machinist closing".into()))),
    )
    .await;
    if conn.status().connected() {
        let _ = tokio::time::timeout(bound, conn.close(200, "machinist closing".into())).await;
    }
    drop(channels);
}

/// Runs `fut` on a task of the current runtime, if there is one (from a `Drop`), tracked by
/// `tracker` when given.
pub(crate) fn in_background(
    tracker: Option<&TaskTracker>,
    fut: impl Future<Output = ()> + Send + 'static,
) {
    if let Ok(handle) = tokio::runtime::Handle::try_current() {
        match tracker {
            Some(tracker) => drop(tracker.spawn_on(fut, &handle)),
            None => drop(handle.spawn(fut)),
        }
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        if let Some((live, channels)) = self.take_all()
            && live.conn.status().connected()
        {
            in_background(None, async move {
                close_gracefully(&live.conn, channels).await;
            });
        }
    }
}

/// Turns the first failure of an outage into one warning and the first success after it into
/// one info line, however many loops notice it.
#[derive(Debug)]
pub(crate) struct Outage {
    pub(crate) target: String,
    adapter: &'static str,
    down_since: Mutex<Option<Instant>>,
}

impl Outage {
    pub(crate) fn new(target: String, adapter: &'static str) -> Self {
        Outage {
            target,
            adapter,
            down_since: Mutex::new(None),
        }
    }

    /// Records a failure; logs it if it starts an outage.
    pub(crate) fn failed(&self, e: &AmqpError) {
        let mut down = self.down_since.lock().unwrap_or_else(|p| p.into_inner());
        if down.is_none() {
            *down = Some(Instant::now());
            warn!(rabbitmq = %self.target, adapter = self.adapter, "RabbitMQ unreachable ({e}); retrying with back-off");
        }
    }

    /// Records a success; logs the end of an outage.
    pub(crate) fn ok(&self) {
        let mut down = self.down_since.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(since) = down.take() {
            info!(rabbitmq = %self.target, adapter = self.adapter, "RabbitMQ reachable again after {:?}", since.elapsed());
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
        jitter(exp.min(Self::CAP))
    }

    /// Back to the shortest delay.
    pub(crate) fn reset(&mut self) {
        self.attempt = 0;
    }
}

/// `d` varied by up to ±25 %.
pub(crate) fn jitter(d: Duration) -> Duration {
    let (hi, lo) = uuid::Uuid::new_v4().as_u64_pair();
    let r = (hi ^ lo) % 501; // 0..=500 → -25 %..=+25 %
    let quarter = d / 4;
    let delta = quarter.mul_f64(r.abs_diff(250) as f64 / 250.0);
    if r < 250 {
        d.saturating_sub(delta)
    } else {
        d + delta
    }
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
            assert!(b.next_delay() <= Duration::from_millis(6250));
        }
        b.reset();
        assert!(b.next_delay() <= Duration::from_millis(125));
    }
}
