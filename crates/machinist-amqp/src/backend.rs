//! [`AmqpBackend`]: Go Machinery's AMQP result backend — one queue per task holding its
//! states as messages — read so that machinist gets the *latest* state (see the type's docs).

use std::collections::{HashMap, HashSet};
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use chrono::Utc;
use lapin::BasicProperties;
use lapin::options::{BasicAckOptions, QueueDeclareOptions, QueueDeleteOptions};
use lapin::types::{AMQPValue, FieldTable};
use machinist_core::{Backend, Error, GroupMeta, Result, StateContext, TaskState};
use tokio::time::Instant;
use tracing::debug;

use crate::broker::{get_all, requeue_all};
use crate::conn::{OpChannel, Shared};
use crate::error::AmqpError;
use crate::options::{AmqpOptions, short};
use crate::registry;
use crate::topology;

/// The most state messages one read takes from a task queue.
const READ_MAX: usize = 10_000;
/// In-process lock stripes for group operations.
const STRIPES: usize = 64;

/// The queue holding a group's `GroupMeta` (machinist's; Go keeps none for AMQP).
pub fn group_meta_queue(group_uuid: &str) -> String {
    format!("{group_uuid}_meta")
}
/// Go's chord marker: its existence tells Go workers the chord was triggered.
pub fn chord_triggered_queue(group_uuid: &str) -> String {
    format!("{group_uuid}_chord_triggered")
}
/// The exclusive queue machinist uses as a per-group mutex across processes.
pub fn group_lock_queue(group_uuid: &str) -> String {
    format!("{group_uuid}_lock")
}

/// A [`Backend`] on RabbitMQ in Go Machinery's shape, so Go and machinist read each other's
/// results. **It does not scale** (one queue per task, as Go's README warns): prefer the Redis
/// or SQLite backend; use this one where RabbitMQ is the only server available.
///
/// ## Storage (as Go)
///
/// Each task's states go to a queue named by its UUID — not durable, auto-delete,
/// `x-message-ttl` and `x-expires` = `results_expire_in` in ms as 32-bit ints — one persistent
/// JSON `TaskState` message per state (PENDING, RECEIVED, STARTED, RETRY, SUCCESS, FAILURE),
/// published with a confirm. A group member's final state is also published to a queue named by
/// the group UUID (same shape), as Go does; Go's workers count that queue to see a group
/// complete. machinist publishes through the default exchange straight to the queue; Go also
/// binds these queues to its exchange, which changes nothing for either.
///
/// ## Reading the latest state (where Go pops the oldest)
///
/// Go's `GetState` takes the *oldest* message off the queue (a poller walks PENDING → … →
/// SUCCESS one read at a time). machinist needs the latest, without losing it: a read takes
/// every message with `basic.get` (no ack), decodes the last, merges `TaskName`/`CreatedAt`
/// from the newest earlier state that has them (Go's Redis backend merges on write; here the
/// merge happens on read), acknowledges (deletes) the states in between, and returns the last one
/// and the one it merged from to the queue with `nack(requeue)` — RabbitMQ puts requeued
/// messages back at their positions, ahead of any state published meanwhile, so order holds.
/// The queue keeps at most two messages after a read. Cost: one round trip per message held
/// (about three), on a channel of its own. A read declares the queue first (as Go's `GetState`
/// does; skipped when this process declared it lately), so reading an unknown UUID leaves an
/// empty queue behind that expires after `results_expire_in`. Caveats: while a read holds the messages (a few
/// milliseconds) a concurrent read of the same task sees nothing and answers `None` (a poller
/// just polls again); and a Go process polling the same task pops states machinist would read.
///
/// ## Groups and chords
///
/// * `init_group` stores the `GroupMeta` (member order) in `<group>_meta` (same shape as a
///   result queue); Go stores nothing for AMQP groups, so Go-produced groups have none.
/// * A member's SUCCESS/FAILURE is also published to the group queue. The worker writes
///   states through `set_task_state`, whose context carries the signature's `GroupUUID` and
///   `GroupTaskCount` (as Go's backend gets the signature): any broker, any producer. A bare
///   `set_state` (no context) still finds the group when this process knows it: from the
///   [`AmqpBroker`](crate::AmqpBroker) delivery being processed or from `init_group` here
///   (see `registry`).
/// * `group_completed`: the group queue's message count (a passive declaration); when it
///   reaches the group size, the distinct completed members are counted under a lock (a
///   duplicate state — a task run twice — must not stand in for a missing member).
/// * `group_states`: the group queue's states, in `GroupMeta` order (completion order when
///   there is no meta, as Go), with `TaskName`/`CreatedAt` filled from each member's queue.
/// * `trigger_chord`: exactly one caller gets `true`. Under a per-group mutex — an in-process
///   lock plus an *exclusive* queue `<group>_lock` (RabbitMQ lets only one connection hold it:
///   405 RESOURCE_LOCKED for the others, and frees it if its connection dies) — the caller
///   declares Go's marker queue `<group>_chord_triggered` and wins only if it holds no message
///   yet, then puts one there. Go's `TriggerChord` reports "already triggered" once the marker
///   exists, so a Go worker finishing the last member later does not fire the chord again.
///
/// Readers of the group queue hold its messages briefly: every such read happens under the
/// group mutex, so two of them never split the messages between them.
#[derive(Clone)]
pub struct AmqpBackend {
    inner: Arc<BackendInner>,
}

struct BackendInner {
    options: AmqpOptions,
    shared: Shared,
    ttl_ms: i32,
    stripes: Vec<tokio::sync::Mutex<()>>,
    /// Group metas seen, until they expire.
    metas: Mutex<HashMap<String, (GroupMeta, Instant)>>,
}

impl std::fmt::Debug for AmqpBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AmqpBackend")
            .field("target", &self.inner.options.describe())
            .finish()
    }
}

/// What a locked look at a group queue found.
enum Look {
    /// Another process holds the group's lock.
    Locked,
    /// The states (decoded, in queue order) and how many messages were held.
    Seen(Vec<TaskState>, usize),
}

impl AmqpBackend {
    /// A backend with `options`; connects at once (failing with the reason if no URL answers).
    pub async fn connect(options: AmqpOptions) -> std::result::Result<Self, AmqpError> {
        let backend = Self::new(options)?;
        backend.inner.shared.publish_channel().await?;
        Ok(backend)
    }

    /// A backend with `options` that connects on first use.
    pub fn new(options: AmqpOptions) -> std::result::Result<Self, AmqpError> {
        options.validate()?;
        let shared = Shared::new(&options, "backend", "backend");
        let ttl_ms = options.results_ttl_ms();
        Ok(AmqpBackend {
            inner: Arc::new(BackendInner {
                options,
                shared,
                ttl_ms,
                stripes: (0..STRIPES).map(|_| tokio::sync::Mutex::new(())).collect(),
                metas: Mutex::new(HashMap::new()),
            }),
        })
    }

    /// The settings.
    pub fn options(&self) -> &AmqpOptions {
        &self.inner.options
    }
}

impl BackendInner {
    fn stripe(&self, group: &str) -> &tokio::sync::Mutex<()> {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        group.hash(&mut h);
        let i = usize::try_from(h.finish() % STRIPES as u64).unwrap_or(0);
        &self.stripes[i]
    }

    /// How long a result queue declaration is trusted before it is made again.
    fn fresh(&self) -> Duration {
        Duration::from_millis(u64::try_from(self.ttl_ms / 2).unwrap_or(0))
            .min(Duration::from_secs(600))
    }

    /// Declares a result queue with Go's flags and arguments unless that was done lately, so
    /// that reads never meet a missing queue (RabbitMQ would close the channel with a 404).
    /// Returns its message count when it declared it.
    async fn ensure_result_queue(
        &self,
        op: &mut OpChannel,
        queue: &str,
    ) -> std::result::Result<Option<u32>, AmqpError> {
        let key = format!("r:{queue}");
        if self.shared.is_declared(&key, self.fresh()) {
            return Ok(None);
        }
        let n = topology::declare_result_queue(op, queue, self.ttl_ms).await?;
        self.shared.mark_declared(&key);
        Ok(Some(n))
    }

    /// Declares (at most every half TTL, up to 10 min) and publishes one state message to a
    /// result queue, with a confirm.
    async fn publish_state(&self, queue: &str, body: &[u8]) -> std::result::Result<(), AmqpError> {
        let key = format!("r:{queue}");
        let props = BasicProperties::default()
            .with_content_type("application/json".into())
            .with_delivery_mode(2);
        self.shared
            .retrying(|| async {
                for attempt in 0..2 {
                    if !self.shared.is_declared(&key, self.fresh()) {
                        let mut op = self.shared.op_channel().await?;
                        self.ensure_result_queue(&mut op, queue).await?;
                        self.shared.release(op);
                    }
                    match self.shared.publish("", queue, body, props.clone()).await? {
                        false => return Ok(()),
                        // The queue expired or was purged since: declare it again, once.
                        true if attempt == 0 => self.shared.forget_declared(&key),
                        true => {
                            return Err(AmqpError::Unroutable {
                                what: "storing a state".into(),
                                exchange: String::new(),
                                routing_key: queue.to_owned(),
                            });
                        }
                    }
                }
                Ok(())
            })
            .await
    }

    /// Publishes a state to its task's queue, then, when `group` is given, to the group's queue.
    async fn store(&self, state: &TaskState, group: Option<&str>) -> Result<()> {
        let body = state.to_vec()?;
        self.publish_state(&state.task_uuid, &body)
            .await
            .map_err(AmqpError::into_backend)?;
        if let Some(group) = group {
            self.publish_state(group, &body)
                .await
                .map_err(AmqpError::into_backend)?;
        }
        Ok(())
    }

    /// The latest state in `queue`, merged and compacted (see [`AmqpBackend`]).
    async fn read_latest(&self, queue: &str) -> std::result::Result<Option<TaskState>, AmqpError> {
        self.shared
            .retrying(|| async {
                let mut op = self.shared.op_channel().await?;
                self.ensure_result_queue(&mut op, queue).await?;
                let Some(messages) = get_all(&mut op, queue, READ_MAX).await? else {
                    // Deleted since we declared it.
                    self.shared.forget_declared(&format!("r:{queue}"));
                    return Ok(None);
                };
                let Some(last) = messages.len().checked_sub(1) else {
                    self.shared.release(op);
                    return Ok(None);
                };
                let decoded: Vec<Option<TaskState>> = messages
                    .iter()
                    .map(|m| TaskState::from_slice(&m.delivery.data).ok())
                    .collect();
                let Some(newest) = (0..=last).rev().find(|&i| decoded[i].is_some()) else {
                    requeue_all(&messages).await?;
                    self.shared.release(op);
                    return Err(AmqpError::corrupt(
                        format!("reading the state in {queue:?}"),
                        "no message in the queue is a task state",
                    ));
                };
                let mut state = decoded[newest]
                    .clone()
                    .unwrap_or_else(|| TaskState::received(queue));
                let mut source = None;
                if state.task_name.is_empty() || state.created_at.is_none() {
                    for i in (0..newest).rev() {
                        if let Some(s) = &decoded[i]
                            && (!s.task_name.is_empty() || s.created_at.is_some())
                        {
                            state.merge_from(s);
                            source = Some(i);
                            break;
                        }
                    }
                }
                // Keep the newest message, the merge source and anything after the newest
                // decodable one; delete the states in between.
                for (i, m) in messages.iter().enumerate() {
                    if i < newest && Some(i) != source {
                        m.acker
                            .ack(BasicAckOptions::default())
                            .await
                            .map_err(|e| AmqpError::amqp("compacting a result queue", e))?;
                    }
                }
                requeue_all(&messages).await?;
                self.shared.release(op);
                Ok(Some(state))
            })
            .await
    }

    /// The group's meta: cached, or read from `<group>_meta` without consuming it.
    async fn meta(&self, group: &str) -> std::result::Result<Option<GroupMeta>, AmqpError> {
        {
            let mut metas = self.metas.lock().unwrap_or_else(|p| p.into_inner());
            match metas.get(group) {
                Some((meta, until)) if *until > Instant::now() => return Ok(Some(meta.clone())),
                Some(_) => {
                    metas.remove(group);
                }
                None => {}
            }
        }
        let queue = group_meta_queue(group);
        let meta = self
            .shared
            .retrying(|| async {
                let mut op = self.shared.op_channel().await?;
                self.ensure_result_queue(&mut op, &queue).await?;
                let Some(messages) = get_all(&mut op, &queue, 16).await? else {
                    self.shared.forget_declared(&format!("r:{queue}"));
                    return Ok(None);
                };
                let meta = messages
                    .iter()
                    .rev()
                    .find_map(|m| GroupMeta::from_slice(&m.delivery.data).ok());
                requeue_all(&messages).await?;
                self.shared.release(op);
                Ok(meta)
            })
            .await?;
        if let Some(meta) = &meta {
            self.remember(meta);
        }
        Ok(meta)
    }

    /// Caches a group meta until it expires (`CreatedAt` + `results_expire_in`).
    fn remember(&self, meta: &GroupMeta) {
        let Some(created) = meta.created_at else {
            return;
        };
        let left = (created + chrono::Duration::milliseconds(i64::from(self.ttl_ms)) - Utc::now())
            .to_std()
            .unwrap_or_default();
        if left.is_zero() {
            return;
        }
        let mut metas = self.metas.lock().unwrap_or_else(|p| p.into_inner());
        if metas.len() >= 10_000 {
            let now = Instant::now();
            metas.retain(|_, (_, until)| *until > now);
            if metas.len() >= 10_000 {
                metas.clear();
            }
        }
        metas.insert(
            meta.group_uuid.clone(),
            (meta.clone(), Instant::now() + left),
        );
    }

    /// Message count of a result queue (declaring it with Go's shape if it does not exist).
    async fn count(&self, queue: &str) -> std::result::Result<usize, AmqpError> {
        self.shared
            .retrying(|| async {
                let mut op = self.shared.op_channel().await?;
                let n = topology::declare_result_queue(&mut op, queue, self.ttl_ms).await?;
                self.shared.mark_declared(&format!("r:{queue}"));
                self.shared.release(op);
                Ok(usize::try_from(n).unwrap_or(usize::MAX))
            })
            .await
    }

    /// Message count of `queue` by a passive declaration, 0 when it does not exist (for
    /// queues that must not be created by looking, like Go's chord marker).
    async fn count_existing(&self, queue: &str) -> std::result::Result<usize, AmqpError> {
        self.shared
            .retrying(|| async {
                let mut op = self.shared.op_channel().await?;
                let n = topology::message_count(&mut op, queue).await?;
                if n.is_some() {
                    self.shared.release(op);
                }
                Ok(n.map_or(0, |n| usize::try_from(n).unwrap_or(usize::MAX)))
            })
            .await
    }

    /// Takes the cross-process group lock on `op` (an exclusive queue). False when another
    /// connection holds it (the channel is then closed).
    async fn lock(&self, op: &mut OpChannel, group: &str) -> std::result::Result<bool, AmqpError> {
        let queue = group_lock_queue(group);
        op.declared();
        match op
            .channel
            .queue_declare(
                short(&queue)?,
                QueueDeclareOptions {
                    exclusive: true,
                    auto_delete: true,
                    ..QueueDeclareOptions::default()
                },
                FieldTable::default(),
            )
            .await
        {
            Ok(_) => Ok(true),
            Err(e) => {
                let e = AmqpError::amqp(format!("locking group {group:?}"), e);
                if e.reply_code() == Some(405) {
                    Ok(false)
                } else {
                    Err(e)
                }
            }
        }
    }

    async fn unlock(&self, op: &OpChannel, group: &str) -> std::result::Result<(), AmqpError> {
        let queue = group_lock_queue(group);
        op.channel
            .queue_delete(short(&queue)?, QueueDeleteOptions::default())
            .await
            .map(drop)
            .map_err(|e| AmqpError::amqp(format!("unlocking group {group:?}"), e))
    }

    /// Deletes the group lock after a failure, if it can (a lock left behind lives until this
    /// connection closes).
    async fn unlock_after_failure(&self, group: &str) {
        if let Ok(op) = self.shared.op_channel().await
            && self.unlock(&op, group).await.is_ok()
        {
            self.shared.release(op);
        }
    }

    /// Reads the group queue under the group lock, without consuming it.
    async fn look(&self, group: &str) -> std::result::Result<Look, AmqpError> {
        let _local = self.stripe(group).lock().await;
        let result = self.look_locked(group).await;
        if result.is_err() {
            self.unlock_after_failure(group).await;
        }
        result
    }

    async fn look_locked(&self, group: &str) -> std::result::Result<Look, AmqpError> {
        self.shared
            .retrying(|| async {
                let mut op = self.shared.op_channel().await?;
                if !self.lock(&mut op, group).await? {
                    return Ok(Look::Locked);
                }
                let messages = get_all(&mut op, group, READ_MAX).await?;
                let (states, held) = match &messages {
                    Some(messages) => {
                        requeue_all(messages).await?;
                        (
                            messages
                                .iter()
                                .filter_map(|m| TaskState::from_slice(&m.delivery.data).ok())
                                .collect(),
                            messages.len(),
                        )
                    }
                    None => (Vec::new(), 0),
                };
                if messages.is_some() {
                    self.unlock(&op, group).await?;
                    self.shared.release(op);
                }
                // A missing group queue closed the channel, and with it our exclusive lock
                // queue (it belongs to the connection, not the channel): delete it anew.
                else {
                    let op = self.shared.op_channel().await?;
                    self.unlock(&op, group).await?;
                    self.shared.release(op);
                }
                Ok(Look::Seen(states, held))
            })
            .await
    }

    /// The members' final states from the group queue, deduplicated (latest per member), in
    /// `meta` order or else completion order.
    fn members(states: Vec<TaskState>, meta: Option<&GroupMeta>) -> Vec<TaskState> {
        let mut latest: HashMap<String, TaskState> = HashMap::new();
        let mut order: Vec<String> = Vec::new();
        for s in states.into_iter().filter(TaskState::is_completed) {
            if !latest.contains_key(&s.task_uuid) {
                order.push(s.task_uuid.clone());
            }
            latest.insert(s.task_uuid.clone(), s);
        }
        let order = meta.map_or(order, |m| m.task_uuids.clone());
        order.iter().filter_map(|u| latest.remove(u)).collect()
    }
}

#[async_trait]
impl Backend for AmqpBackend {
    /// Publishes the state to the task's queue (and, for a group member's final state, to the
    /// group's queue when this process knows the group: see `registry`). States are stored as
    /// written; `TaskName`/`CreatedAt` are carried over when read.
    async fn set_state(&self, state: &TaskState) -> Result<()> {
        let group = if state.is_completed() {
            registry::group_of(&state.task_uuid)
        } else {
            None
        };
        self.inner.store(state, group.as_deref()).await
    }

    /// As `set_state`, with the group taken from the context (the signature's `GroupUUID`
    /// and `GroupTaskCount`, as Go's `SetStateSuccess(signature, …)`), so a member's final state
    /// reaches the group's queue whoever produced the group and whatever the broker.
    async fn set_task_state(&self, ctx: &mut StateContext, state: &TaskState) -> Result<()> {
        let group = if !state.is_completed() {
            None
        } else if ctx.in_group() {
            Some(ctx.group_uuid.clone())
        } else {
            registry::group_of(&state.task_uuid)
        };
        self.inner.store(state, group.as_deref()).await
    }

    async fn get_state(&self, task_uuid: &str) -> Result<Option<TaskState>> {
        self.inner
            .read_latest(task_uuid)
            .await
            .map_err(AmqpError::into_backend)
    }

    async fn init_group(&self, group_uuid: &str, task_uuids: &[String]) -> Result<()> {
        registry::announce(group_uuid, task_uuids);
        let meta = GroupMeta::new(group_uuid, task_uuids.to_vec());
        let body = meta.to_vec()?;
        self.inner
            .publish_state(&group_meta_queue(group_uuid), &body)
            .await
            .map_err(AmqpError::into_backend)?;
        self.inner.remember(&meta);
        Ok(())
    }

    async fn get_group(&self, group_uuid: &str) -> Result<Option<GroupMeta>> {
        let inner = &self.inner;
        let Some(mut meta) = inner
            .meta(group_uuid)
            .await
            .map_err(AmqpError::into_backend)?
        else {
            return Ok(None);
        };
        meta.chord_triggered = inner
            .count_existing(&chord_triggered_queue(group_uuid))
            .await
            .map_err(AmqpError::into_backend)?
            > 0;
        Ok(Some(meta))
    }

    /// Counts the group queue; when it holds `count` states or more, checks under the group
    /// lock that they are `count` distinct members (see [`AmqpBackend`]).
    async fn group_completed(&self, group_uuid: &str, count: usize) -> Result<bool> {
        let inner = &self.inner;
        let run = async {
            if count == 0 {
                return Ok(true);
            }
            if inner.count(group_uuid).await? < count {
                return Ok(false);
            }
            let meta = inner.meta(group_uuid).await?;
            let wanted = meta
                .as_ref()
                .map_or(count, |m| m.task_uuids.len().max(count));
            for _ in 0..5 {
                let (states, held) = match inner.look(group_uuid).await? {
                    // Another process is looking; whatever it finds, it checks again after.
                    Look::Locked => return Ok(false),
                    Look::Seen(states, held) => (states, held),
                };
                let done: HashSet<&str> = states
                    .iter()
                    .filter(|s| s.is_completed())
                    .map(|s| s.task_uuid.as_str())
                    .collect();
                let complete = match &meta {
                    Some(m) => m.task_uuids.iter().all(|u| done.contains(u.as_str())),
                    None => done.len() >= wanted,
                };
                if complete {
                    return Ok(true);
                }
                // Duplicates made the count look complete. A member that finished while we
                // held the messages counted too low for itself: look again if more arrived.
                if inner.count(group_uuid).await? <= held {
                    return Ok(false);
                }
            }
            Ok(false)
        };
        run.await.map_err(AmqpError::into_backend)
    }

    async fn group_states(&self, group_uuid: &str, count: usize) -> Result<Vec<TaskState>> {
        let inner = &self.inner;
        let meta = inner
            .meta(group_uuid)
            .await
            .map_err(AmqpError::into_backend)?;
        let mut attempts = 0;
        let states = loop {
            match inner
                .look(group_uuid)
                .await
                .map_err(AmqpError::into_backend)?
            {
                Look::Seen(states, _) => break states,
                Look::Locked if attempts < 100 => {
                    attempts += 1;
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Look::Locked => {
                    return Err(AmqpError::Timeout {
                        what: format!("reading group {group_uuid:?} (its lock stayed taken)"),
                        after: Duration::from_secs(2),
                    }
                    .into_backend());
                }
            }
        };
        let mut members = BackendInner::members(states, meta.as_ref());
        if let Some(m) = &meta
            && let Some(missing) = m
                .task_uuids
                .iter()
                .find(|u| !members.iter().any(|s| &s.task_uuid == *u))
        {
            return Err(Error::StateNotFound(missing.clone()));
        }
        if members.len() < count {
            return Err(Error::StateNotFound(format!(
                "{group_uuid}: {} of {count} members have a final state",
                members.len()
            )));
        }
        // The copies in the group queue are stored as written: take TaskName/CreatedAt from
        // each member's own queue (best effort).
        for s in &mut members {
            if (s.task_name.is_empty() || s.created_at.is_none())
                && let Ok(Some(own)) = inner.read_latest(&s.task_uuid).await
            {
                s.merge_from(&own);
            }
        }
        Ok(members)
    }

    async fn trigger_chord(&self, group_uuid: &str) -> Result<bool> {
        let inner = &self.inner;
        let marker = chord_triggered_queue(group_uuid);
        let _local = inner.stripe(group_uuid).lock().await;
        let run = inner.shared.retrying(|| async {
            let mut op = inner.shared.op_channel().await?;
            if !inner.lock(&mut op, group_uuid).await? {
                debug!(group = %group_uuid, "chord: another process holds the group lock");
                return Ok(false);
            }
            let mut args = FieldTable::default();
            args.insert("x-expires".into(), AMQPValue::LongInt(inner.ttl_ms));
            op.declared();
            let seen = op
                .channel
                .queue_declare(short(&marker)?, QueueDeclareOptions::default(), args)
                .await
                .map_err(|e| AmqpError::amqp(format!("declaring {marker:?}"), e))?
                .message_count();
            let won = seen == 0;
            if won {
                let props = BasicProperties::default()
                    .with_content_type("text/plain".into())
                    .with_delivery_mode(2);
                let stamp = Utc::now().to_rfc3339();
                inner
                    .shared
                    .publish("", &marker, stamp.as_bytes(), props)
                    .await?;
            }
            inner.unlock(&op, group_uuid).await?;
            inner.shared.release(op);
            Ok(won)
        });
        let result = run.await;
        if result.is_err() {
            inner.unlock_after_failure(group_uuid).await;
        }
        result.map_err(AmqpError::into_backend)
    }

    async fn purge_state(&self, task_uuid: &str) -> Result<()> {
        delete_queues(&self.inner, &[task_uuid.to_owned()])
            .await
            .map_err(AmqpError::into_backend)
    }

    async fn purge_group(&self, group_uuid: &str) -> Result<()> {
        self.inner
            .metas
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(group_uuid);
        delete_queues(
            &self.inner,
            &[
                group_uuid.to_owned(),
                group_meta_queue(group_uuid),
                chord_triggered_queue(group_uuid),
            ],
        )
        .await
        .map_err(AmqpError::into_backend)
    }

    fn describe(&self) -> String {
        self.inner.options.describe()
    }

    async fn close(&self) {
        self.inner.shared.close().await;
    }
}

/// Deletes queues; missing ones are fine.
async fn delete_queues(
    inner: &BackendInner,
    queues: &[String],
) -> std::result::Result<(), AmqpError> {
    for queue in queues {
        inner.shared.forget_declared(&format!("r:{queue}"));
        inner
            .shared
            .retrying(|| async {
                let op = inner.shared.op_channel().await?;
                match op
                    .channel
                    .queue_delete(short(queue)?, QueueDeleteOptions::default())
                    .await
                {
                    Ok(_) => {
                        inner.shared.release(op);
                        Ok(())
                    }
                    Err(e) => {
                        let e = AmqpError::amqp(format!("deleting {queue:?}"), e);
                        if e.is_not_found() { Ok(()) } else { Err(e) }
                    }
                }
            })
            .await?;
    }
    Ok(())
}
