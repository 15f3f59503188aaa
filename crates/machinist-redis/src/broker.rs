//! [`RedisBroker`]: Go Machinery's Redis queues, consumed at-least-once (see the type's docs).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use base64::Engine as _;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use machinist_core::{
    Acknowledger, Backend, Broker, Consumer, Delivery, Error, Result, Signature, StateContext,
    TaskState,
};
use redis::AsyncCommands;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::{CancellationToken, DropGuard};
use tracing::{debug, error, info, warn};

use crate::backend::RedisBackend;
use crate::batch::{Detached, Push, command};
use crate::conn::{Backoff, Conn, RedisConnection};
use crate::error::RedisError;
use crate::keys::Keys;
use crate::options::RedisOptions;
use crate::scripts;

/// A [`Broker`] on Redis, sharing queues and the delayed-task set with Go Machinery. Cloning
/// is cheap and clones share the connection and the delayed-task mover.
///
/// ## Producing (exactly as Go)
///
/// `RPUSH <routing key> <json>`; with an ETA in the future,
/// `ZADD <delayed_tasks_key> <ETA in unix ns> <json>` instead. Go's JSON (plus machinist's
/// `CreatedAt` key, which Go ignores) in the same keys, so Go workers consume what machinist
/// sends and the other way round. The `RPUSH` joins the connection's write queue: the pushes,
/// acks, fetches and state writes of concurrent tasks go out as one pipeline per round
/// (`batch.rs`), each caller still getting its own outcome, and the round's pushes to one
/// queue as one `RPUSH` of all their messages, in order, after the round's other commands.
/// When the server's result backend is a [`RedisBackend`] on this same connection, a task's
/// PENDING `SET` and its push go in one request, the `SET` first
/// ([`Broker::publish_pending`]): sending a task costs one round trip, not two.
///
/// ## Delayed tasks
///
/// Each broker that consumes runs one mover task. A round is one script (`MOVE_DUE`): up to
/// `batch` tasks with a score ≤ now are removed from the sorted set and `RPUSH`ed to their
/// `RoutingKey` (the default queue when it is empty), atomically, so with any number of
/// movers (machinist or Go) each task is moved exactly once. The mover then sleeps until the
/// earliest remaining score, capped by `delayed_tasks_poll_period` (Go producers add tasks
/// without telling us), and is woken early when this broker publishes an ETA task.
///
/// In a cluster the queues live in other slots than the set, so no script can move a task: the
/// mover claims due tasks with one script (`CLAIM_DUE`: each stays in the set, due again one
/// `lease` later), pushes each to its queue, then removes it. A mover that dies in between
/// loses nothing; its claimed tasks are moved by any mover once they come due again (a task
/// pushed but not yet removed is then pushed twice: at-least-once, as everywhere else).
///
/// ## Consuming (at-least-once, where Go loses messages)
///
/// Go pops with `BLPOP`: a worker that dies mid-task loses it. Here each consumer has an id,
/// and per queue a **processing list** `<prefix>:processing:{<queue>}:<id>` in the queue's
/// cluster slot:
///
/// 1. A fetch moves messages queue → processing atomically: one `FETCH` script per round
///    moves up to the free prefetch (`LRANGE`, `LTRIM`, `RPUSH`: what that many
///    `LMOVE`s would do), queues in priority order; its `EVALSHA` joins the write queue. When
///    the worker's backend is a [`RedisBackend`] on this connection ([`Broker::consume_for`]),
///    the script also returns the stored state of each task whose message has no `CreatedAt`
///    (a Go producer's; one `MGET` of the UUIDs those messages name), handed out as
///    [`Delivery::stored_state`]: the worker's first state write needs no read of its own (a
///    machinist producer's message carries its PENDING's `CreatedAt`, which is all the worker
///    wants from it). The next fetch starts while the last one's messages are still being handed
///    out, once an eighth of the prefetch is free again, so a worker rarely waits for one.
///    When every queue is empty the consumer blocks with `BLMOVE` on its **own connection**:
///    on the only queue for `block_timeout` (1 s), or with several queues on the first one for
///    `multi_queue_block` (250 ms) before looking at all of them again — so an idle consumer
///    picks up a message on a secondary queue within that time (a Go producer's message taken
///    that way comes without its state: the worker reads it).
/// 2. The message is handed to the worker. The worker acknowledges only after the task's
///    state is stored; `ack` is `LREM` from the processing list, queued on the write queue
///    and not waited for (the worker's slot is free at once; an ack that meets an outage is
///    retried by the heartbeat, and the consumer's final cleanup, sent later on the same
///    queue, comes after every ack; a stopping worker waits for them with `Consumer::flush`).
///    `nack(requeue)` puts it back
///    at the queue's **front** (`REQUEUE`); `nack(false)` removes it; `dead_letter`
///    moves it to `<prefix>:dead:{<queue>}` as `{"reason":…,"body":…}` (`DEAD_LETTER`).
///    A delivery dropped undecided is requeued at once.
/// 3. The consumer keeps a **lease** `<prefix>:consumer:<id>` (`SET … PX lease`, renewed every
///    lease/3) and registers its queues in the hash `<prefix>:consumers`.
/// 4. Every consumer runs a **reaper** once per lease: for each registered consumer whose lease
///    key is gone, each of its processing lists is moved back to the front of its queue in
///    one script (`REAP`), and the consumer is unregistered. So a worker killed with
///    `kill -9` has its messages redelivered one lease later.
///
/// One lease covers all of a consumer's deliveries, so [`Acknowledger::lease`] is `None` and
/// the worker never calls `extend`: a task may run longer than the lease as long as its
/// process lives. Settlements that fail because Redis is unreachable are kept and retried by
/// the heartbeat until they succeed; on a clean stop the consumer returns what it fetched but
/// did not hand out, and once its last delivery is settled it deletes its lease and registry
/// entry (returning anything still in its processing lists).
///
/// Go producers and Go workers on the same queues keep working: they `RPUSH` and `BLPOP` the
/// bare queue key, which machinist only ever moves messages from (`FETCH`, `BLMOVE`) and
/// `LPUSH`/`RPUSH`es to.
///
#[derive(Clone)]
pub struct RedisBroker {
    inner: Arc<BrokerInner>,
}

struct BrokerInner {
    conn: RedisConnection,
    keys: Keys,
    /// Cancelled by `close()`.
    closed: CancellationToken,
    /// Wakes the mover when this broker publishes an ETA task.
    mover_wake: Arc<Notify>,
    mover: Mutex<Option<JoinHandle<()>>>,
    /// Stops the mover when the broker is dropped.
    _stop_mover: DropGuard,
    stop_mover: CancellationToken,
}

impl std::fmt::Debug for RedisBroker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisBroker")
            .field("target", &self.inner.conn.options().describe())
            .finish()
    }
}

impl RedisBroker {
    /// Connects with `options`.
    pub async fn connect(options: RedisOptions) -> std::result::Result<Self, RedisError> {
        Ok(Self::new(RedisConnection::connect(options).await?))
    }

    /// A broker on an existing connection.
    pub fn new(conn: RedisConnection) -> Self {
        let keys = Keys::new(&conn.options().key_prefix);
        let stop_mover = CancellationToken::new();
        RedisBroker {
            inner: Arc::new(BrokerInner {
                conn,
                keys,
                closed: CancellationToken::new(),
                mover_wake: Arc::new(Notify::new()),
                mover: Mutex::new(None),
                _stop_mover: stop_mover.clone().drop_guard(),
                stop_mover,
            }),
        }
    }

    /// The list a message due now goes to: its routing key, else the default queue.
    fn queue_of<'a>(&'a self, signature: &'a Signature) -> &'a str {
        if signature.routing_key.is_empty() {
            self.options().default_queue.as_str()
        } else {
            signature.routing_key.as_str()
        }
    }

    fn options(&self) -> &RedisOptions {
        self.inner.conn.options()
    }

    fn c(&self) -> Conn {
        self.inner.conn.conn()
    }

    /// Starts the delayed-task mover if it is not running.
    fn ensure_mover(&self) {
        let mut mover = self.inner.mover.lock().unwrap_or_else(|p| p.into_inner());
        if mover.as_ref().is_some_and(|h| !h.is_finished()) {
            return;
        }
        let task = Mover {
            conn: self.inner.conn.clone(),
            wake: Arc::clone(&self.inner.mover_wake),
            stop: self.inner.stop_mover.clone(),
        };
        *mover = Some(tokio::spawn(task.run()));
    }

    /// The key of the delayed-task sorted set.
    pub fn delayed_tasks_key(&self) -> &str {
        &self.options().delayed_tasks_key
    }

    /// The processing list `consumer` uses for `queue` (for inspection and tests).
    pub fn processing_key(&self, queue: &str, consumer: &str) -> String {
        self.inner.keys.processing(queue, consumer)
    }

    /// The dead-letter list of `queue`.
    pub fn dead_letter_key(&self, queue: &str) -> String {
        self.inner.keys.dead(queue)
    }

    /// A consumer of `queues`; `read_states`: each fetch also reads the fetched tasks' stored
    /// states (see [`Broker::consume_for`] below).
    async fn start_consumer(
        &self,
        queues: &[String],
        prefetch: usize,
        read_states: bool,
    ) -> Result<Box<dyn Consumer>> {
        if queues.is_empty() {
            return Err(Error::Config("consume needs at least one queue".into()));
        }
        if self.inner.closed.is_cancelled() {
            return Err(Error::Shutdown);
        }
        let consumer = RedisConsumer::start(self, queues, prefetch, read_states)
            .await
            .map_err(RedisError::into_broker)?;
        self.ensure_mover();
        Ok(Box::new(consumer))
    }

    /// Runs one reaper pass now (consumers also run it once per lease): returns the messages of
    /// every registered consumer whose lease expired to their queues; returns how many.
    pub async fn reap(&self) -> Result<u64> {
        reap(&self.inner.conn, &self.inner.keys, None)
            .await
            .map_err(RedisError::into_broker)
    }
}

#[async_trait]
impl Broker for RedisBroker {
    async fn publish(&self, signature: &Signature, body: Bytes) -> Result<()> {
        if self.inner.closed.is_cancelled() {
            return Err(Error::Shutdown);
        }
        if let Some(eta) = signature.eta.filter(|eta| *eta > Utc::now()) {
            let mut c = self.c();
            let key = &self.options().delayed_tasks_key;
            redis::cmd("ZADD")
                .arg(key)
                .arg(unix_nanos(eta))
                .arg(body.as_ref())
                .query_async::<()>(&mut c)
                .await
                .map_err(|e| RedisError::redis("storing a delayed task", key, e).into_broker())?;
            self.inner.mover_wake.notify_one();
            return Ok(());
        }
        let queue = self.queue_of(signature);
        let push = Push {
            key: queue.as_bytes(),
            value: &body,
        };
        self.inner
            .conn
            .batched_with([], push)
            .await
            .map(drop)
            .map_err(|e| RedisError::redis("publishing", queue, e).into_broker())
    }

    /// With a [`RedisBackend`] on this broker's own connection (the same URL through
    /// `machinist::connect`, or [`RedisBackend::new`] on a clone of it), and a message due now
    /// on a standalone server: `SET` (PENDING) and `RPUSH` go in one request, in that order,
    /// coalesced with other requests. Redis runs them in order; a failure either fails both
    /// (the server refuses writes: out of memory, read-only, unauthenticated) or leaves the
    /// second unsent (a lost connection), never a message without its PENDING. Otherwise (a
    /// delayed task, a cluster, another backend), the state write is awaited first.
    async fn publish_pending(
        &self,
        backend: &dyn Backend,
        ctx: &mut StateContext,
        state: &TaskState,
        signature: &Signature,
        body: Bytes,
    ) -> Result<()> {
        let redis = backend
            .as_any()
            .and_then(|b| b.downcast_ref::<RedisBackend>())
            .filter(|b| b.shares(&self.inner.conn));
        let due_now = signature.eta.is_none_or(|eta| eta <= Utc::now());
        let Some(redis) = redis.filter(|_| due_now && !self.options().is_cluster()) else {
            backend.set_task_state(ctx, state).await?;
            return self.publish(signature, body).await;
        };
        if self.inner.closed.is_cancelled() {
            return Err(Error::Shutdown);
        }
        let set = redis.pending_command(ctx, state)?;
        let queue = self.queue_of(signature);
        let push = Push {
            key: queue.as_bytes(),
            value: &body,
        };
        self.inner
            .conn
            .batched_with([set], push)
            .await
            .map(drop)
            .map_err(|e| {
                RedisError::redis("storing PENDING and publishing", queue, e).into_broker()
            })
    }

    async fn consume(&self, queues: &[String], prefetch: usize) -> Result<Box<dyn Consumer>> {
        self.start_consumer(queues, prefetch, false).await
    }

    /// When `backend` is a [`RedisBackend`] on this broker's own connection (standalone, not
    /// a cluster), each fetch also reads the fetched tasks' stored states, in the same script
    /// run, and hands each out with its delivery ([`Delivery::stored_state`]): the worker's
    /// first state write then needs no `GET` of its own (one round trip less per task).
    async fn consume_for(
        &self,
        queues: &[String],
        prefetch: usize,
        backend: &dyn Backend,
    ) -> Result<Box<dyn Consumer>> {
        let shares = backend
            .as_any()
            .and_then(|b| b.downcast_ref::<RedisBackend>())
            .is_some_and(|b| b.shares(&self.inner.conn));
        self.start_consumer(queues, prefetch, shares && !self.options().is_cluster())
            .await
    }

    async fn pending(&self, queue: &str, limit: usize) -> Result<Vec<Bytes>> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let mut c = self.c();
        let stop = isize::try_from(limit - 1).unwrap_or(isize::MAX);
        let items: Vec<Vec<u8>> = c
            .lrange(queue, 0, stop)
            .await
            .map_err(|e| RedisError::redis("listing pending tasks", queue, e).into_broker())?;
        Ok(items.into_iter().map(Bytes::from).collect())
    }

    async fn delayed(&self, limit: usize) -> Result<Vec<(DateTime<Utc>, Bytes)>> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let key = &self.options().delayed_tasks_key;
        let mut c = self.c();
        let stop = isize::try_from(limit - 1).unwrap_or(isize::MAX);
        let items: Vec<(Vec<u8>, f64)> = c
            .zrange_withscores(key, 0, stop)
            .await
            .map_err(|e| RedisError::redis("listing delayed tasks", key, e).into_broker())?;
        Ok(items
            .into_iter()
            .map(|(body, score)| (from_unix_nanos(score), Bytes::from(body)))
            .collect())
    }

    async fn dead_letters(&self, queue: &str, limit: usize) -> Result<Vec<(String, Bytes)>> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let key = self.inner.keys.dead(queue);
        let mut c = self.c();
        let stop = isize::try_from(limit - 1).unwrap_or(isize::MAX);
        let items: Vec<Vec<u8>> = c
            .lrange(&key, 0, stop)
            .await
            .map_err(|e| RedisError::redis("listing dead letters", &key, e).into_broker())?;
        Ok(items.iter().map(|raw| decode_dead_letter(raw)).collect())
    }

    async fn purge(&self, queue: &str) -> Result<u64> {
        let mut c = self.c();
        scripts::PURGE
            .key(queue)
            .invoke_async::<u64>(&mut c)
            .await
            .map_err(|e| RedisError::redis("purging", queue, e).into_broker())
    }

    fn describe(&self) -> String {
        self.options().describe()
    }

    async fn close(&self) {
        self.inner.closed.cancel();
        self.inner.stop_mover.cancel();
    }
}

/// Unix nanoseconds of `t`, saturating.
pub(crate) fn unix_nanos(t: DateTime<Utc>) -> i64 {
    t.timestamp_nanos_opt().unwrap_or(if t.timestamp() < 0 {
        i64::MIN
    } else {
        i64::MAX
    })
}

/// A sorted-set score (unix ns as a double) as a time.
fn from_unix_nanos(score: f64) -> DateTime<Utc> {
    // A saturating float-to-int cast; scores are within ±292 years in practice.
    #[allow(clippy::cast_possible_truncation)]
    let ns = score as i64;
    DateTime::from_timestamp_nanos(ns)
}

/// A dead-letter record: `{"reason": …, "body": <the message as a string>}`, or
/// `"body_base64"` when the message is not UTF-8.
fn encode_dead_letter(reason: &str, body: &[u8]) -> Vec<u8> {
    let json = |s: &str| serde_json::Value::from(s).to_string();
    match std::str::from_utf8(body) {
        Ok(text) => format!(r#"{{"reason":{},"body":{}}}"#, json(reason), json(text)),
        Err(_) => format!(
            r#"{{"reason":{},"body_base64":{}}}"#,
            json(reason),
            json(&base64::engine::general_purpose::STANDARD.encode(body))
        ),
    }
    .into_bytes()
}

fn decode_dead_letter(raw: &[u8]) -> (String, Bytes) {
    let Ok(serde_json::Value::Object(record)) = serde_json::from_slice::<serde_json::Value>(raw)
    else {
        return (
            "unreadable dead-letter record".to_owned(),
            Bytes::copy_from_slice(raw),
        );
    };
    let reason = record
        .get("reason")
        .and_then(serde_json::Value::as_str)
        .unwrap_or_default()
        .to_owned();
    let body = match (record.get("body"), record.get("body_base64")) {
        (Some(serde_json::Value::String(s)), _) => Bytes::from(s.clone().into_bytes()),
        (_, Some(serde_json::Value::String(b64))) => base64::engine::general_purpose::STANDARD
            .decode(b64)
            .map(Bytes::from)
            .unwrap_or_default(),
        _ => Bytes::new(),
    };
    (reason, body)
}

// ---------------------------------------------------------------------------------------------
// Delayed-task mover.
// ---------------------------------------------------------------------------------------------

struct Mover {
    conn: RedisConnection,
    wake: Arc<Notify>,
    stop: CancellationToken,
}

impl Mover {
    async fn run(self) {
        let options = self.conn.options().clone();
        let outage = Arc::clone(self.conn.outage());
        let mut backoff = Backoff::default();
        let mut last_error: Option<(String, Instant)> = None;
        loop {
            let sleep = match self.round(&options).await {
                Ok((moved, next)) => {
                    outage.ok();
                    backoff.reset();
                    last_error = None;
                    if moved > 0 {
                        debug!(moved, "moved due delayed tasks to their queues");
                    }
                    if moved >= options.batch {
                        tokio::task::yield_now().await;
                        continue;
                    }
                    let now = unix_nanos(Utc::now()) as f64;
                    match next {
                        Some(score) if score > now => {
                            let wait = Duration::from_nanos((score - now) as u64);
                            (wait + Duration::from_millis(1)).min(options.delayed_tasks_poll_period)
                        }
                        Some(_) => Duration::ZERO,
                        None => options.delayed_tasks_poll_period,
                    }
                }
                Err(e) if e.is_outage() => {
                    outage.failed(&e);
                    backoff.next_delay()
                }
                Err(e) => {
                    // Not a connection problem (e.g. the key holds another type): log it once
                    // a minute, not every round.
                    let text = e.to_string();
                    let quiet = last_error.as_ref().is_some_and(|(t, at)| {
                        *t == text && at.elapsed() < Duration::from_secs(60)
                    });
                    if !quiet {
                        error!("delayed-task mover: {text}");
                        last_error = Some((text, Instant::now()));
                    }
                    backoff.next_delay()
                }
            };
            tokio::select! {
                () = self.stop.cancelled() => return,
                () = self.wake.notified() => {}
                () = tokio::time::sleep(sleep) => {}
            }
        }
    }

    /// One round: moves what is due; returns how many, and the earliest remaining score.
    async fn round(
        &self,
        options: &RedisOptions,
    ) -> std::result::Result<(usize, Option<f64>), RedisError> {
        let key = &options.delayed_tasks_key;
        let now = unix_nanos(Utc::now());
        let mut c = self.conn.conn();
        let what = "moving due delayed tasks";
        if !options.is_cluster() {
            let (moved, next): (usize, String) = scripts::MOVE_DUE
                .key(key)
                .arg(now)
                .arg(&options.default_queue)
                .arg(options.batch)
                .invoke_async(&mut c)
                .await
                .map_err(|e| RedisError::redis(what, key, e))?;
            return Ok((moved, next.parse().ok()));
        }
        // Cluster: the queues live in other slots. Claim atomically (the tasks stay in the set,
        // due again one lease later), then push each one and remove it. A process that dies
        // in between loses nothing: its claimed tasks come due again. A push that fails makes
        // the task due at once again.
        let lease = i64::try_from(options.lease.as_nanos()).unwrap_or(i64::MAX);
        let (due, next): (Vec<Vec<u8>>, String) = scripts::CLAIM_DUE
            .key(key)
            .arg(now)
            .arg(options.batch)
            .arg(now.saturating_add(lease))
            .invoke_async(&mut c)
            .await
            .map_err(|e| RedisError::redis(what, key, e))?;
        let moved = due.len();
        for body in due {
            let queue = routing_key_of(&body).unwrap_or_else(|| options.default_queue.clone());
            if let Err(e) = c.rpush::<_, _, ()>(&queue, &body).await {
                let _: std::result::Result<(), _> = c.zadd(key, &body, now).await;
                return Err(RedisError::redis(what, &queue, e));
            }
            if let Err(e) = c.zrem::<_, _, ()>(key, &body).await {
                // Pushed: left in the set, it is pushed again when its claim lapses.
                warn!("a moved delayed task stays claimed ({e}); it may be delivered twice");
            }
        }
        Ok((moved, next.parse().ok()))
    }
}

/// The non-empty `RoutingKey` of an encoded signature.
fn routing_key_of(body: &[u8]) -> Option<String> {
    Signature::from_slice(body)
        .ok()
        .map(|s| s.routing_key)
        .filter(|k| !k.is_empty())
}

// ---------------------------------------------------------------------------------------------
// Consumer.
// ---------------------------------------------------------------------------------------------

/// One consumed queue's keys.
#[derive(Debug, Clone)]
struct QueueKeys {
    name: String,
    processing: String,
    dead: String,
}

/// A settlement that could not reach Redis; retried by the heartbeat.
#[derive(Debug, Clone)]
enum Op {
    /// `LREM` (ack, or nack without requeue).
    Remove { queue: usize, body: Bytes },
    /// Back to the queue's front.
    Requeue { queue: usize, body: Bytes },
    /// To the dead letters.
    Dead {
        queue: usize,
        body: Bytes,
        record: Vec<u8>,
    },
}

/// What a consumer and its deliveries share.
struct Shared {
    id: String,
    conn: RedisConnection,
    queues: Vec<QueueKeys>,
    dead_letter_max: usize,
    permits: Arc<Semaphore>,
    retry: Arc<Mutex<Vec<Op>>>,
    /// Each fetch also reads the fetched tasks' stored states ([`Broker::consume_for`]).
    read_states: bool,
    /// Dropped with the last reference: tells the heartbeat to clean up.
    _alive: DropGuard,
}

impl Shared {
    /// Runs a settlement; an outage queues it for the heartbeat and counts as done.
    async fn settle(&self, op: Op) -> Result<()> {
        match run_op(&self.conn, &self.queues, self.dead_letter_max, &op).await {
            Ok(()) => Ok(()),
            Err(e) => self.keep_if_outage(op, e).map_err(RedisError::into_broker),
        }
    }

    /// A settlement failed with `e`: an outage keeps it for the heartbeat (and counts as done),
    /// anything else is returned.
    fn keep_if_outage(&self, op: Op, e: RedisError) -> std::result::Result<(), RedisError> {
        if !e.is_outage() {
            return Err(e);
        }
        self.conn.outage().failed(&e);
        self.retry
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(op);
        Ok(())
    }
}

/// Runs the settlements an outage kept in `retry`, in order, until one fails; keeps that one and
/// the rest (before any added meanwhile).
async fn retry_settlements(
    conn: &RedisConnection,
    queues: &[QueueKeys],
    dead_letter_max: usize,
    retry: &Mutex<Vec<Op>>,
) -> std::result::Result<(), RedisError> {
    let ops = std::mem::take(&mut *retry.lock().unwrap_or_else(|p| p.into_inner()));
    let mut result = Ok(());
    let mut left = Vec::new();
    for op in ops {
        if result.is_err() {
            left.push(op);
            continue;
        }
        if let Err(e) = run_op(conn, queues, dead_letter_max, &op).await {
            left.push(op);
            result = Err(e);
        }
    }
    if !left.is_empty() {
        let mut retry = retry.lock().unwrap_or_else(|p| p.into_inner());
        left.append(&mut retry);
        *retry = left;
    }
    result
}

async fn run_op(
    conn: &RedisConnection,
    queues: &[QueueKeys],
    dead_letter_max: usize,
    op: &Op,
) -> std::result::Result<(), RedisError> {
    let mut c = conn.conn();
    let q = |i: usize| -> std::result::Result<&QueueKeys, RedisError> {
        queues
            .get(i)
            .ok_or_else(|| RedisError::corrupt("settling", "unknown queue index"))
    };
    match op {
        // The ack, coalesced with other tasks' writes (`batch.rs`).
        Op::Remove { queue, body } => {
            let k = q(*queue)?;
            conn.batched([command(&[b"LREM", k.processing.as_bytes(), b"1", body])])
                .await
                .map(drop)
                .map_err(|e| RedisError::redis("acknowledging", &k.processing, e))
        }
        Op::Requeue { queue, body } => {
            let k = q(*queue)?;
            scripts::REQUEUE
                .key(&k.processing)
                .key(&k.name)
                .arg(body.as_ref())
                .invoke_async::<i64>(&mut c)
                .await
                .map(drop)
                .map_err(|e| RedisError::redis("requeueing", &k.name, e))
        }
        Op::Dead {
            queue,
            body,
            record,
        } => {
            let k = q(*queue)?;
            scripts::DEAD_LETTER
                .key(&k.processing)
                .key(&k.dead)
                .arg(body.as_ref())
                .arg(record.as_slice())
                .arg(dead_letter_max)
                .invoke_async::<i64>(&mut c)
                .await
                .map(drop)
                .map_err(|e| RedisError::redis("dead-lettering", &k.dead, e))
        }
    }
}

/// A fetched message: its queue's index, its body, and its task's stored state when the fetch
/// read one.
type Fetched = (usize, Bytes, Option<Bytes>);

type FetchResult = (Option<Conn>, std::result::Result<Vec<Fetched>, RedisError>);

/// A consumer of one or more queues; see [`RedisBroker`].
struct RedisConsumer {
    shared: Arc<Shared>,
    closed: CancellationToken,
    buffer: VecDeque<(Fetched, OwnedSemaphorePermit)>,
    /// A fetch in progress; kept across `next()` calls so a cancelled `next()` loses nothing.
    fetch: Option<JoinHandle<FetchResult>>,
    reserved: Vec<OwnedSemaphorePermit>,
    blocking: Option<Conn>,
    backoff: Backoff,
    stopped: bool,
    /// The prefetch asked for (0: unbounded).
    prefetch: usize,
}

impl RedisConsumer {
    async fn start(
        broker: &RedisBroker,
        queues: &[String],
        prefetch: usize,
        read_states: bool,
    ) -> std::result::Result<Self, RedisError> {
        let conn = broker.inner.conn.clone();
        let options = conn.options().clone();
        let keys = broker.inner.keys.clone();
        let uuid = uuid::Uuid::new_v4().simple().to_string();
        let id = format!("{}-{}", std::process::id(), &uuid[..12]);
        let queue_keys: Vec<QueueKeys> = queues
            .iter()
            .map(|q| QueueKeys {
                name: q.clone(),
                processing: keys.processing(q, &id),
                dead: keys.dead(q),
            })
            .collect();
        let registration = serde_json::to_string(queues).unwrap_or_default();
        let heartbeat = Heartbeat {
            conn: conn.clone(),
            keys,
            id: id.clone(),
            queues: queue_keys.clone(),
            registration,
            lease: options.lease,
            dead_letter_max: options.dead_letter_max,
            retry: Arc::new(Mutex::new(Vec::new())),
        };
        heartbeat.renew().await?;
        let alive = CancellationToken::new();
        let permits = Arc::new(Semaphore::new(if prefetch == 0 {
            Semaphore::MAX_PERMITS
        } else {
            prefetch
        }));
        let shared = Arc::new(Shared {
            id: id.clone(),
            conn,
            queues: queue_keys,
            dead_letter_max: options.dead_letter_max,
            permits,
            retry: Arc::clone(&heartbeat.retry),
            read_states,
            _alive: alive.clone().drop_guard(),
        });
        tokio::spawn(heartbeat.run(alive));
        info!(consumer = %id, queues = ?queues, prefetch, "consuming");
        Ok(RedisConsumer {
            shared,
            closed: broker.inner.closed.clone(),
            buffer: VecDeque::new(),
            fetch: None,
            reserved: Vec::new(),
            blocking: None,
            backoff: Backoff::default(),
            stopped: false,
            prefetch,
        })
    }

    fn deliver(&self, (queue, body, state): Fetched, permit: OwnedSemaphorePermit) -> Delivery {
        let name = self
            .shared
            .queues
            .get(queue)
            .map(|q| q.name.clone())
            .unwrap_or_default();
        let acker = RedisAcker {
            shared: Arc::clone(&self.shared),
            queue,
            held: Mutex::new(Some((body.clone(), permit))),
        };
        let delivery = Delivery::new(name, body, Box::new(acker));
        match state {
            Some(state) => delivery.with_stored_state(state),
            None => delivery,
        }
    }

    /// Starts a fetch of up to `reserved.len()` messages on a spawned task.
    fn spawn_fetch(&mut self) {
        let shared = Arc::clone(&self.shared);
        let n = self.reserved.len();
        let blocking = self.blocking.take();
        self.fetch = Some(tokio::spawn(fetch_round(shared, n, blocking)));
    }

    /// Takes free prefetch slots (without waiting) until `batch` are reserved for a fetch.
    fn reserve(&mut self, batch: usize) {
        while self.reserved.len() < batch {
            match Arc::clone(&self.shared.permits).try_acquire_owned() {
                Ok(p) => self.reserved.push(p),
                Err(_) => break,
            }
        }
    }

    /// Takes in a finished fetch: its messages go to the buffer with the slots reserved for
    /// them; an outage waits out the backoff.
    async fn take_in(
        &mut self,
        joined: std::result::Result<FetchResult, tokio::task::JoinError>,
    ) -> Result<()> {
        let (blocking, result) =
            joined.map_err(|e| Error::Other(format!("redis fetch task failed: {e}")))?;
        match result {
            Ok(messages) => {
                self.blocking = blocking;
                self.shared.conn.outage().ok();
                self.backoff.reset();
                for fetched in messages {
                    match self.reserved.pop() {
                        Some(permit) => self.buffer.push_back((fetched, permit)),
                        None => self.return_unhanded(vec![fetched]).await,
                    }
                }
                // Slots the fetch found nothing for go back (the next fetch takes them again).
                self.reserved.clear();
                Ok(())
            }
            Err(e) if e.is_outage() => {
                self.shared.conn.outage().failed(&e);
                let delay = self.backoff.next_delay();
                tokio::select! {
                    biased;
                    () = self.closed.cancelled() => {}
                    () = tokio::time::sleep(delay) => {}
                }
                Ok(())
            }
            Err(e) => {
                let delay = self.backoff.next_delay();
                tokio::time::sleep(delay.min(Duration::from_millis(500))).await;
                Err(e.into_broker())
            }
        }
    }

    /// Puts back at their queues' front what was fetched but not handed out.
    async fn return_unhanded(&mut self, messages: Vec<Fetched>) {
        for (queue, body, _) in messages.into_iter().rev() {
            if let Err(e) = self.shared.settle(Op::Requeue { queue, body }).await {
                warn!("could not return a fetched message: {e}; it returns when the lease ends");
            }
        }
    }
}

#[async_trait]
impl Consumer for RedisConsumer {
    /// Hands out what the last fetch brought, and keeps a fetch going in the background for the
    /// prefetch slots that free up meanwhile, so a worker finishing a task rarely waits for a
    /// round trip to get the next one.
    async fn next(&mut self) -> Result<Option<Delivery>> {
        loop {
            if self.stopped || self.closed.is_cancelled() {
                return Ok(None);
            }
            if let Some(done) = self.fetch.take_if(|f| f.is_finished()) {
                self.take_in(done.await).await?;
            }
            if self.fetch.is_none() && !self.buffer.is_empty() {
                // Fetch ahead for the slots already free, once there are a few of them (a
                // fetch per freed slot would cost a script run per task).
                let batch = self.shared.conn.options().batch;
                let ahead = if self.prefetch == 0 {
                    batch
                } else {
                    (self.prefetch / 8).clamp(1, batch)
                };
                if self.shared.permits.available_permits() >= ahead {
                    self.reserve(batch);
                    self.spawn_fetch();
                }
            }
            if let Some((fetched, permit)) = self.buffer.pop_front() {
                return Ok(Some(self.deliver(fetched, permit)));
            }
            if self.fetch.is_none() {
                if self.reserved.is_empty() {
                    let permits = Arc::clone(&self.shared.permits);
                    let permit = tokio::select! {
                        biased;
                        () = self.closed.cancelled() => return Ok(None),
                        p = permits.acquire_owned() => p.map_err(|_| Error::Shutdown)?,
                    };
                    self.reserved.push(permit);
                }
                self.reserve(self.shared.conn.options().batch);
                self.spawn_fetch();
            }
            let Some(fetch) = self.fetch.as_mut() else {
                continue;
            };
            let joined = tokio::select! {
                biased;
                () = self.closed.cancelled() => return Ok(None),
                r = fetch => r,
            };
            self.fetch = None;
            self.take_in(joined).await?;
        }
    }

    /// The write queue sends its rounds in order and answers them in order: once a `PING`
    /// queued now is answered, every ack queued before it was sent and answered. Then one more
    /// try for the settlements an outage kept (the heartbeat retries them too while the
    /// consumer lives). Bounded by the response timeout; whatever still fails returns when the
    /// lease lapses.
    async fn flush(&mut self) -> Result<()> {
        let shared = &self.shared;
        let bound = shared.conn.options().response_timeout + Duration::from_secs(1);
        let flushed = tokio::time::timeout(bound, async {
            shared
                .conn
                .batched([command(&[b"PING"])])
                .await
                .map_err(|e| RedisError::redis("waiting for queued acks", "", e))?;
            retry_settlements(
                &shared.conn,
                &shared.queues,
                shared.dead_letter_max,
                &shared.retry,
            )
            .await
        })
        .await;
        match flushed {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => {
                warn!(consumer = %shared.id, "settlements not sent ({e}); their messages return when the lease lapses");
                Ok(())
            }
            Err(_) => {
                warn!(consumer = %shared.id, "settlements not sent within {bound:?}; their messages return when the lease lapses");
                Ok(())
            }
        }
    }

    async fn stop(&mut self) -> Result<()> {
        self.stopped = true;
        if let Some(fetch) = self.fetch.take() {
            let options = self.shared.conn.options();
            let bound = options.block_timeout + options.response_timeout + Duration::from_secs(1);
            if let Ok(Ok((_, Ok(messages)))) = tokio::time::timeout(bound, fetch).await {
                self.return_unhanded(messages).await;
            }
        }
        let buffered: Vec<Fetched> = self.buffer.drain(..).map(|(f, _)| f).collect();
        self.return_unhanded(buffered).await;
        self.reserved.clear();
        debug!(consumer = %self.shared.id, "consumer stopped");
        Ok(())
    }
}

/// One [`FETCH`](scripts::FETCH) of up to `want` messages from `q`: an `EVALSHA` coalesced
/// with other requests (`batch.rs`); when the server does not have the script (`NOSCRIPT`:
/// first use, or a restarted Redis), sent on its own, which loads it. With `read_states`
/// each message comes with its task's stored state (empty when there is none).
async fn fetch_from(
    conn: &RedisConnection,
    q: &QueueKeys,
    want: usize,
    read_states: bool,
) -> redis::RedisResult<Vec<(Bytes, Option<Bytes>)>> {
    let want_arg = want.to_string();
    let states_arg: &[u8] = if read_states { b"1" } else { b"0" };
    let evalsha = command(&[
        b"EVALSHA",
        scripts::FETCH.get_hash().as_bytes(),
        b"2",
        q.name.as_bytes(),
        q.processing.as_bytes(),
        want_arg.as_bytes(),
        states_arg,
    ]);
    let reply: Vec<Vec<u8>> = match conn.batched([evalsha]).await {
        Ok(reply) => redis::from_redis_value(reply)?,
        Err(e) if e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript) => {
            let mut c = conn.conn();
            scripts::FETCH
                .key(&q.name)
                .key(&q.processing)
                .arg(want)
                .arg(states_arg)
                .invoke_async(&mut c)
                .await?
        }
        Err(e) => return Err(e),
    };
    if !read_states {
        return Ok(reply.into_iter().map(|m| (Bytes::from(m), None)).collect());
    }
    // Pairs: message, state. An odd count cannot come from the script; the last message is
    // still handed out (without a state) rather than lost, since it is in the processing list.
    let mut out = Vec::with_capacity(reply.len() / 2 + 1);
    let mut items = reply.into_iter();
    while let Some(message) = items.next() {
        let state = items.next().filter(|s| !s.is_empty()).map(Bytes::from);
        out.push((Bytes::from(message), state));
    }
    Ok(out)
}

/// One fetch: a [`FETCH`](scripts::FETCH) script per queue in priority order until `n`
/// messages are taken; if none were, one `BLMOVE` on the first queue (on `blocking`, the
/// dedicated connection, opened if needed). Returns the connection to reuse, or `None` after
/// an error.
async fn fetch_round(shared: Arc<Shared>, n: usize, blocking: Option<Conn>) -> FetchResult {
    let mut out = Vec::new();
    for (i, q) in shared.queues.iter().enumerate() {
        let want = n - out.len();
        if want == 0 {
            break;
        }
        let got = fetch_from(&shared.conn, q, want, shared.read_states).await;
        match got {
            Ok(messages) => out.extend(messages.into_iter().map(|(m, state)| (i, m, state))),
            // What was taken so far is already in the processing lists: hand it out.
            Err(e) if out.is_empty() => {
                return (blocking, Err(RedisError::redis("fetching", &q.name, e)));
            }
            Err(_) => return (blocking, Ok(out)),
        }
    }
    if !out.is_empty() {
        return (blocking, Ok(out));
    }
    let options = shared.conn.options();
    let Some(first) = shared.queues.first() else {
        return (blocking, Ok(out));
    };
    let block = if shared.queues.len() > 1 {
        options.multi_queue_block
    } else {
        options.block_timeout
    };
    let mut conn = match blocking {
        Some(conn) => conn,
        None => match shared.conn.blocking(block.max(options.block_timeout)).await {
            Ok(conn) => conn,
            Err(e) => return (None, Err(e)),
        },
    };
    let popped: std::result::Result<Option<Vec<u8>>, _> = redis::cmd("BLMOVE")
        .arg(&first.name)
        .arg(&first.processing)
        .arg("LEFT")
        .arg("RIGHT")
        .arg(format!("{:.3}", block.as_secs_f64().max(0.01)))
        .query_async(&mut conn)
        .await;
    match popped {
        Ok(Some(m)) => (Some(conn), Ok(vec![(0, Bytes::from(m), None)])),
        Ok(None) => (Some(conn), Ok(Vec::new())),
        Err(e) => (
            None,
            Err(RedisError::redis("waiting for tasks", &first.name, e)),
        ),
    }
}

/// Settles one delivery.
struct RedisAcker {
    shared: Arc<Shared>,
    queue: usize,
    /// `None` once decided; the permit frees a prefetch slot when dropped.
    held: Mutex<Option<(Bytes, OwnedSemaphorePermit)>>,
}

impl RedisAcker {
    fn decide(&self) -> Option<Bytes> {
        self.held
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
            .map(|(body, _permit)| body)
    }
}

#[async_trait]
impl Acknowledger for RedisAcker {
    /// Queues the `LREM` and returns: the worker's slot is free while the ack travels with
    /// the next round of the connection's write queue (`batch.rs`). Anything the connection
    /// sends through the queue afterwards goes after it, so the consumer's final cleanup
    /// cannot return an acked message; an ack that hits an outage is kept for the heartbeat,
    /// like any settlement; any other failure is logged (the message comes back when the
    /// consumer's lease lapses). Without a write queue (cluster) the ack is awaited.
    async fn ack(&self) -> Result<()> {
        let Some(body) = self.decide() else {
            return Ok(());
        };
        let Some(keys) = self.shared.queues.get(self.queue) else {
            return Err(RedisError::corrupt("settling", "unknown queue index").into_broker());
        };
        let lrem = command(&[b"LREM", keys.processing.as_bytes(), b"1", &body]);
        let op = Op::Remove {
            queue: self.queue,
            body,
        };
        let shared = Arc::clone(&self.shared);
        let kept = op.clone();
        let done: Detached = Box::new(move |outcome| {
            if let Err(e) = outcome {
                let e = RedisError::redis("acknowledging", "", e);
                if let Err(e) = shared.keep_if_outage(kept, e) {
                    warn!(consumer = %shared.id, "could not acknowledge a message ({e}); it comes back when the consumer's lease lapses");
                }
            }
        });
        match self.shared.conn.detach(vec![lrem], done) {
            None => Ok(()),
            // No write queue: sent here and awaited.
            Some(_) => self.shared.settle(op).await,
        }
    }

    async fn nack(&self, requeue: bool) -> Result<()> {
        let Some(body) = self.decide() else {
            return Ok(());
        };
        let queue = self.queue;
        let op = if requeue {
            Op::Requeue { queue, body }
        } else {
            Op::Remove { queue, body }
        };
        self.shared.settle(op).await
    }

    async fn dead_letter(&self, reason: &str) -> Result<()> {
        let Some(body) = self.decide() else {
            return Ok(());
        };
        let record = encode_dead_letter(reason, &body);
        self.shared
            .settle(Op::Dead {
                queue: self.queue,
                body,
                record,
            })
            .await
    }

    /// `None`: the consumer's lease, renewed by its heartbeat, covers every delivery.
    fn lease(&self) -> Option<Duration> {
        None
    }
}

impl Drop for RedisAcker {
    fn drop(&mut self) {
        // Dropped undecided: give it back now rather than after the lease.
        let Some(body) = self.decide() else {
            return;
        };
        let op = Op::Requeue {
            queue: self.queue,
            body,
        };
        match tokio::runtime::Handle::try_current() {
            Ok(handle) => {
                let shared = Arc::clone(&self.shared);
                handle.spawn(async move {
                    if let Err(e) = shared.settle(op).await {
                        warn!("could not requeue a dropped delivery: {e}");
                    }
                });
            }
            Err(_) => self
                .shared
                .retry
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(op),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Heartbeat and reaper.
// ---------------------------------------------------------------------------------------------

/// A consumer's background duties: lease renewal, retrying failed settlements, reaping dead
/// consumers, and the final cleanup.
struct Heartbeat {
    conn: RedisConnection,
    keys: Keys,
    id: String,
    queues: Vec<QueueKeys>,
    registration: String,
    lease: Duration,
    dead_letter_max: usize,
    retry: Arc<Mutex<Vec<Op>>>,
}

impl Heartbeat {
    /// `SET lease PX` then `HSET registry` (the lease first, so a reaper never sees a registered
    /// consumer without one).
    async fn renew(&self) -> std::result::Result<(), RedisError> {
        let mut c = self.conn.conn();
        let lease_key = self.keys.lease(&self.id);
        let ms = u64::try_from(self.lease.as_millis()).unwrap_or(u64::MAX);
        redis::cmd("SET")
            .arg(&lease_key)
            .arg(std::process::id())
            .arg("PX")
            .arg(ms)
            .query_async::<()>(&mut c)
            .await
            .map_err(|e| RedisError::redis("renewing the consumer lease", &lease_key, e))?;
        let registry = self.keys.registry();
        c.hset::<_, _, _, ()>(&registry, &self.id, &self.registration)
            .await
            .map_err(|e| RedisError::redis("registering the consumer", &registry, e))
    }

    /// Retries the settlements that failed; keeps those that fail again.
    async fn flush(&self) -> std::result::Result<(), RedisError> {
        retry_settlements(&self.conn, &self.queues, self.dead_letter_max, &self.retry).await
    }

    async fn run(self, alive: CancellationToken) {
        let outage = Arc::clone(self.conn.outage());
        let every = self.lease / 3;
        // Reap at once: consumers that died before this one started have waited long enough.
        let mut reap_at = Instant::now();
        loop {
            let beat = async {
                self.renew().await?;
                self.flush().await?;
                if Instant::now() >= reap_at {
                    reap(&self.conn, &self.keys, Some(&self.id)).await?;
                    reap_at = Instant::now() + self.lease;
                }
                Ok::<(), RedisError>(())
            };
            match beat.await {
                Ok(()) => outage.ok(),
                Err(e) if e.is_outage() => outage.failed(&e),
                Err(e) => error!(consumer = %self.id, "consumer heartbeat: {e}"),
            }
            tokio::select! {
                () = alive.cancelled() => break,
                () = tokio::time::sleep(every) => {}
            }
        }
        self.cleanup().await;
    }

    /// After the consumer and all its deliveries are gone: settle what is pending, return
    /// anything left in the processing lists, drop the lease and the registration. A few
    /// attempts; if Redis stays away, the lease expiry lets another consumer do it.
    async fn cleanup(&self) {
        for attempt in 0..3u32 {
            let done = async {
                self.flush().await?;
                let mut c = self.conn.conn();
                for q in &self.queues {
                    let n: u64 = scripts::REAP
                        .key(&q.processing)
                        .key(&q.name)
                        .invoke_async(&mut c)
                        .await
                        .map_err(|e| RedisError::redis("returning messages", &q.name, e))?;
                    if n > 0 {
                        info!(consumer = %self.id, queue = %q.name, "returned {n} unsettled message(s)");
                    }
                }
                let lease_key = self.keys.lease(&self.id);
                c.del::<_, ()>(&lease_key)
                    .await
                    .map_err(|e| RedisError::redis("dropping the lease", &lease_key, e))?;
                let registry = self.keys.registry();
                c.hdel::<_, _, ()>(&registry, &self.id)
                    .await
                    .map_err(|e| RedisError::redis("unregistering", &registry, e))?;
                Ok::<(), RedisError>(())
            };
            match done.await {
                Ok(()) => {
                    debug!(consumer = %self.id, "consumer cleaned up");
                    return;
                }
                Err(e) if attempt == 2 => {
                    warn!(consumer = %self.id, "consumer cleanup failed ({e}); its lease expiry will return its messages");
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(200 << attempt)).await,
            }
        }
    }
}

/// Returns the messages of every registered consumer (but `me`) whose lease is gone to the
/// front of their queues, one list per script, and unregisters them. Returns how many.
async fn reap(
    conn: &RedisConnection,
    keys: &Keys,
    me: Option<&str>,
) -> std::result::Result<u64, RedisError> {
    let mut c = conn.conn();
    let registry = keys.registry();
    let consumers: Vec<(String, String)> = c
        .hgetall(&registry)
        .await
        .map_err(|e| RedisError::redis("reading the consumer registry", &registry, e))?;
    let mut total = 0;
    for (id, queues) in consumers {
        if Some(id.as_str()) == me {
            continue;
        }
        let lease_key = keys.lease(&id);
        let alive: bool = c
            .exists(&lease_key)
            .await
            .map_err(|e| RedisError::redis("checking a consumer lease", &lease_key, e))?;
        if alive {
            continue;
        }
        let queues: Vec<String> = serde_json::from_str(&queues).unwrap_or_default();
        for queue in &queues {
            let processing = keys.processing(queue, &id);
            let n: u64 = scripts::REAP
                .key(&processing)
                .key(queue)
                .invoke_async(&mut c)
                .await
                .map_err(|e| RedisError::redis("returning a dead consumer's messages", queue, e))?;
            if n > 0 {
                warn!(consumer = %id, queue = %queue, "consumer lease expired: returned {n} unacknowledged message(s) to the queue");
            }
            total += n;
        }
        c.hdel::<_, _, ()>(&registry, &id)
            .await
            .map_err(|e| RedisError::redis("unregistering a dead consumer", &registry, e))?;
    }
    Ok(total)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// A cluster mover that claimed due tasks and died before pushing them: the tasks stay in
    /// the set, not due until the claim lapses, and the next mover round after that moves them
    /// (before this, the claim removed them and a crash lost them).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn tasks_claimed_by_a_mover_that_died_come_due_again() {
        let Some(cluster) = machinist_testkit::redis_server::RedisCluster::start(3) else {
            return;
        };
        let lease = Duration::from_millis(800);
        let options = RedisOptions::from_url(&cluster.url())
            .unwrap()
            .with_lease(lease);
        assert!(options.is_cluster());
        let conn = RedisConnection::connect(options.clone()).await.unwrap();
        let mut c = conn.conn();
        let key = options.delayed_tasks_key.clone();
        let mut sig = Signature::new("add").args((1i64, 2i64));
        sig.routing_key = "claimed_q".to_owned();
        let body = sig.to_vec().unwrap();
        let now = unix_nanos(Utc::now());
        let _: () = c.zadd(&key, &body, now - 1_000_000_000).await.unwrap();

        // The claim, and no push: the process dies here.
        let (due, _): (Vec<Vec<u8>>, String) = scripts::CLAIM_DUE
            .key(&key)
            .arg(now)
            .arg(10)
            .arg(now + i64::try_from(lease.as_nanos()).unwrap())
            .invoke_async(&mut c)
            .await
            .unwrap();
        assert_eq!(due, vec![body.clone()]);
        let score: Option<f64> = c.zscore(&key, &body).await.unwrap();
        assert!(score.is_some(), "a claimed task stays in the set");

        let mover = Mover {
            conn: conn.clone(),
            wake: Arc::new(Notify::new()),
            stop: CancellationToken::new(),
        };
        let (moved, next) = mover.round(&options).await.unwrap();
        assert_eq!(moved, 0, "not due while claimed");
        assert!(next.is_some(), "its claim's end is the next due time");
        tokio::time::sleep(lease + Duration::from_millis(200)).await;
        let (moved, _) = mover.round(&options).await.unwrap();
        assert_eq!(moved, 1, "due again once the claim lapsed");
        let queued: Vec<Vec<u8>> = c.lrange("claimed_q", 0, -1).await.unwrap();
        assert_eq!(queued, vec![body.clone()], "pushed to its queue once");
        let left: usize = c.zcard(&key).await.unwrap();
        assert_eq!(left, 0, "removed from the set after the push");
    }

    #[test]
    fn dead_letter_records_round_trip() {
        let rec = encode_dead_letter("bad", b"{not json");
        assert_eq!(
            std::str::from_utf8(&rec).unwrap(),
            r#"{"reason":"bad","body":"{not json"}"#
        );
        assert_eq!(
            decode_dead_letter(&rec),
            ("bad".to_owned(), Bytes::from_static(b"{not json"))
        );
        let binary = [0xff, 0x00, 0x80];
        let rec = encode_dead_letter("binary", &binary);
        assert!(std::str::from_utf8(&rec).unwrap().contains("body_base64"));
        assert_eq!(decode_dead_letter(&rec).1, Bytes::copy_from_slice(&binary));
        assert_eq!(
            decode_dead_letter(b"junk").0,
            "unreadable dead-letter record"
        );
    }

    #[test]
    fn scores_round_trip_within_a_microsecond() {
        let t = DateTime::parse_from_rfc3339("2025-11-20T10:00:00.123456789Z")
            .unwrap()
            .with_timezone(&Utc);
        let back = from_unix_nanos(unix_nanos(t) as f64);
        assert!((back - t).num_nanoseconds().unwrap().abs() < 1000);
    }
}
