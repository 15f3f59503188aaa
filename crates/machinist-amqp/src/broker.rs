//! [`AmqpBroker`]: Go Machinery's AMQP topology and messages, consumed with manual acks (see
//! the type's docs).

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures_util::stream::{self, StreamExt};
use lapin::message::BasicGetMessage;
use lapin::options::{
    BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicGetOptions, BasicNackOptions,
    BasicQosOptions, QueueDeclareOptions, QueuePurgeOptions,
};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{BasicProperties, Channel, Connection};
use machinist_core::{Acknowledger, Broker, Consumer, Delivery, Error, Result, Signature};
use tokio::sync::{Notify, mpsc};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, error, info, warn};

use crate::conn::{Backoff, OpChannel, Outage, Shared};
use crate::error::AmqpError;
use crate::options::{AmqpOptions, short, to_table, value_text};
use crate::registry;
use crate::topology;

/// Header carrying the reason of a dead-lettered message.
pub const REASON_HEADER: &str = "x-machinist-reason";
/// Header carrying the queue a dead-lettered message came from.
pub const QUEUE_HEADER: &str = "x-machinist-queue";
/// Header carrying when a message was dead-lettered (RFC 3339).
pub const DEAD_LETTERED_AT_HEADER: &str = "x-machinist-dead-lettered-at";

/// The most messages one inspection (`pending`, `delayed`, `dead_letters`) holds at once.
const INSPECT_MAX: usize = 10_000;

/// A [`Broker`] on RabbitMQ (or any AMQP 0-9-1 server) that declares, routes and publishes
/// exactly as Go Machinery's AMQP broker, so Go and machinist producers and workers share
/// queues. Cloning is cheap; clones share the publisher connection.
///
/// ## Publishing (as Go)
///
/// The routing key is resolved by [`Broker::adjust_routing_key`] (empty → `binding_key` on a
/// `direct` exchange, else the default queue). Before the first publish to a routing key the
/// publisher declares, as Go's does, the exchange and a queue — for a `direct` exchange one
/// named after the routing key and bound with it, otherwise the default queue bound with
/// `binding_key` — with `queue_declare_args`/`queue_binding_args`. The message is the JSON
/// signature with `content_type: application/json`, `delivery_mode: 2` (persistent),
/// `priority` when not 0 and `headers` (the signature's `Headers` as an AMQP table) when not
/// empty. Every publish waits for its publisher confirm; a `basic.nack` is an error, and so is a
/// message that comes back unroutable (published `mandatory`; Go's silent drop).
///
/// ## Delayed tasks (as Go)
///
/// An ETA in the future sends the message to `delay.<ms>.<exchange>.<routing key>` (durable,
/// `x-message-ttl` = ms, `x-expires` = 2×ms, dead-lettering to the exchange with the routing
/// key), redeclared for each message as Go does (that renews its expiry), or with
/// `delayed_queue` set to that one queue with a per-message `expiration`. RabbitMQ moves the
/// message to its queue when the delay ends; nothing waits in worker memory. A per-delay queue
/// expires 2×delay after its last declaration *with its messages*, so machinist pipelines the
/// declaration, the binding and the publish on one channel, declares the queue once more right
/// after the publish (the lease then runs from the message's arrival), publishes again when the
/// queue lapsed before the message got in (a 404 on the binding, or the message returned), and
/// delays by at least 50 ms: on a busy RabbitMQ, Go's declare-then-publish loses messages with
/// short delays. The delay is rounded *up* to whole milliseconds (Go truncates), so a task
/// never runs before its ETA. The destination queue is declared too (Go relies on a worker
/// having declared it).
///
/// ## Consuming: at-least-once
///
/// Each consumer opens its own connection and channel, declares the exchange and its queues
/// (durable, `queue_declare_args`, bound with `binding_key` and `queue_binding_args`), sets
/// `basic.qos(prefetch)` and consumes with manual acknowledgements. A delivery is acknowledged
/// only when the worker acknowledges it — after the task's state is stored — so a worker that
/// dies loses nothing: RabbitMQ redelivers what it had not acknowledged (`redelivered` becomes
/// [`Delivery::redeliveries`] = 1). `nack(requeue)` returns the message to its queue;
/// `dead_letter(reason)` publishes the body to `<queue>.dead_letters` with the reason in the
/// `x-machinist-reason` header, waits for the confirm, then acknowledges the original. A
/// delivery dropped undecided is requeued. Acknowledgements are coalesced into
/// `basic.ack(multiple)` frames, never covering a delivery still undecided (see `Acks`).
///
/// When the connection or channel dies (RabbitMQ restarted, an operator closed it, a 406 on a
/// declaration) the consumer reconnects with back-off (100 ms doubling to 5 s), redeclares and
/// consumes again; one warning when it goes, one info line when it is back. Deliveries taken
/// before the loss cannot be acknowledged any more (their acks are dropped quietly): RabbitMQ
/// redelivers them, and their second run stores the same outcome.
///
/// ## Inspection
///
/// * [`Broker::pending`]: `basic.get` without ack up to the limit, then one
///   `basic.nack(multiple, requeue)`: RabbitMQ puts the messages back at their positions, so the
///   order is kept. While they are held (a few milliseconds) consumers do not see them, and they
///   come back flagged `redelivered`. Messages a consumer holds unacknowledged are not listed.
/// * [`Broker::delayed`]: AMQP cannot list queues. machinist inspects the delay queues *this
///   process* published to (and `delayed_queue`) the same way; delayed tasks of other
///   processes are not listed.
/// * [`Broker::dead_letters`]: the same inspection of `<queue>.dead_letters`.
/// * [`Broker::purge`]: `queue.purge` (unacknowledged messages stay).
#[derive(Clone)]
pub struct AmqpBroker {
    inner: Arc<BrokerInner>,
}

struct BrokerInner {
    options: AmqpOptions,
    shared: Shared,
    /// Delay queues this process published to, with when they expire (`None`: never).
    delay_queues: Mutex<HashMap<String, Option<Instant>>>,
    /// Consumer connections being closed (their last delivery settled): `close` waits for them.
    closing: TaskTracker,
    /// Routing keys whose exchange and queue were declared on the connection of this
    /// generation: a publish to them skips [`BrokerInner::ensure_exchange`] and
    /// [`BrokerInner::ensure_route`] (two keys built and looked up per publish otherwise).
    ready: Mutex<(u64, HashSet<String>)>,
}

impl std::fmt::Debug for AmqpBroker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AmqpBroker")
            .field("target", &self.inner.options.describe())
            .field("exchange", &self.inner.options.exchange)
            .finish()
    }
}

impl AmqpBroker {
    /// A broker with `options`; connects at once (failing with the reason if no URL answers).
    pub async fn connect(options: AmqpOptions) -> std::result::Result<Self, AmqpError> {
        let broker = Self::new(options)?;
        broker.inner.shared.publish_channel().await?;
        Ok(broker)
    }

    /// A broker with `options` that connects on first use.
    pub fn new(options: AmqpOptions) -> std::result::Result<Self, AmqpError> {
        options.validate()?;
        let shared = Shared::new(&options, "broker", "publisher");
        Ok(AmqpBroker {
            inner: Arc::new(BrokerInner {
                options,
                shared,
                delay_queues: Mutex::new(HashMap::new()),
                closing: TaskTracker::new(),
                ready: Mutex::new((0, HashSet::new())),
            }),
        })
    }

    /// The settings.
    pub fn options(&self) -> &AmqpOptions {
        &self.inner.options
    }

    /// The dead-letter queue of `queue`: `<queue>.dead_letters`.
    pub fn dead_letter_queue(&self, queue: &str) -> String {
        format!("{queue}{}", self.inner.options.dead_letter_suffix)
    }
}

impl BrokerInner {
    /// The routing key Go would give a signature (see [`Broker::adjust_routing_key`]).
    fn routing_key(&self, sig: &Signature) -> String {
        if !sig.routing_key.is_empty() {
            sig.routing_key.clone()
        } else if self.options.is_direct() {
            self.options.binding_key.clone()
        } else {
            self.options.default_queue.clone()
        }
    }

    /// Declares the exchange once per connection.
    async fn ensure_exchange(&self) -> std::result::Result<(), AmqpError> {
        let key = format!("x:{}", self.options.exchange);
        if self.options.exchange.is_empty() || self.shared.is_declared(&key, Duration::MAX) {
            return Ok(());
        }
        let mut op = self.shared.op_channel().await?;
        topology::declare_exchange(&mut op, &self.options).await?;
        self.shared.release(op);
        self.shared.mark_declared(&key);
        Ok(())
    }

    /// Go's publisher-side queue for `routing_key` and its binding key: the routing key itself
    /// (bound with itself) on a direct exchange, else the default queue bound with
    /// `binding_key`.
    fn route_of<'a>(&'a self, routing_key: &'a str) -> (&'a str, &'a str) {
        if self.options.is_direct() {
            (routing_key, routing_key)
        } else {
            (
                self.options.default_queue.as_str(),
                self.options.binding_key.as_str(),
            )
        }
    }

    /// The declaration cache key of [`BrokerInner::ensure_route`].
    fn route_key(&self, routing_key: &str) -> String {
        let (queue, binding) = self.route_of(routing_key);
        format!("q:{queue}\n{binding}")
    }

    /// True when `routing_key`'s exchange and queue are known declared on the live connection.
    fn is_ready(&self, routing_key: &str) -> bool {
        let generation = self.shared.generation();
        let ready = self.ready.lock().unwrap_or_else(|p| p.into_inner());
        ready.0 == generation && ready.1.contains(routing_key)
    }

    /// Records that `routing_key`'s exchange and queue are declared (on connection
    /// `generation`).
    fn mark_ready(&self, routing_key: &str, generation: u64) {
        let mut ready = self.ready.lock().unwrap_or_else(|p| p.into_inner());
        if ready.0 != generation || ready.1.len() >= 10_000 {
            *ready = (generation, HashSet::new());
        }
        ready.1.insert(routing_key.to_owned());
    }

    /// Forgets that `routing_key`'s queue (and, with `exchange`, the exchange) is declared:
    /// it was deleted under us.
    fn forget_route(&self, routing_key: &str, exchange: bool) {
        self.ready
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .1
            .clear();
        self.shared.forget_declared(&self.route_key(routing_key));
        if exchange {
            self.shared
                .forget_declared(&format!("x:{}", self.options.exchange));
        }
    }

    /// Declares [`BrokerInner::route_of`] `routing_key` (Go's publisher-side queue and
    /// binding), once per connection.
    async fn ensure_route(&self, routing_key: &str) -> std::result::Result<String, AmqpError> {
        let (queue, binding) = self.route_of(routing_key);
        let key = self.route_key(routing_key);
        if !self.shared.is_declared(&key, Duration::MAX) {
            let mut op = self.shared.op_channel().await?;
            topology::declare_task_queue(&mut op, &self.options, queue, binding).await?;
            self.shared.release(op);
            self.shared.mark_declared(&key);
        }
        Ok(key)
    }

    /// Publishes a task now (see [`AmqpBroker`]).
    async fn publish_now(
        &self,
        sig: &Signature,
        body: &[u8],
        routing_key: &str,
    ) -> std::result::Result<(), AmqpError> {
        let props = task_properties(sig, true)?;
        let exchange = &self.options.exchange;
        self.shared
            .retrying(|| async {
                for attempt in 0..2 {
                    if !self.is_ready(routing_key) {
                        let generation = self.shared.generation();
                        self.ensure_exchange().await?;
                        self.ensure_route(routing_key).await?;
                        self.mark_ready(routing_key, generation);
                    }
                    match self
                        .shared
                        .publish(exchange, routing_key, body, props.clone())
                        .await
                    {
                        Ok(false) => return Ok(()),
                        // Unroutable or no exchange: the topology was deleted under us.
                        // Declare it again, once.
                        Ok(true) if attempt == 0 => self.forget_route(routing_key, false),
                        Err(e) if attempt == 0 && e.is_not_found() => {
                            self.forget_route(routing_key, true);
                        }
                        Ok(true) => {
                            return Err(AmqpError::Unroutable {
                                what: "publishing a task".into(),
                                exchange: exchange.clone(),
                                routing_key: routing_key.to_owned(),
                            });
                        }
                        Err(e) => return Err(e),
                    }
                }
                Ok(())
            })
            .await
    }

    /// Publishes a task with a future ETA to its delay queue (see [`AmqpBroker`]).
    async fn publish_delayed(
        &self,
        sig: &Signature,
        body: &[u8],
        routing_key: &str,
        eta: DateTime<Utc>,
    ) -> std::result::Result<(), AmqpError> {
        let delay = delay_ms(eta, Utc::now());
        let queue = topology::delay_queue(&self.options, delay, routing_key);
        let mut props = task_properties(sig, false)?;
        if let Some(expiration) = &queue.expiration {
            props = props.with_expiration(short(expiration)?);
        }
        let exchange = &self.options.exchange;
        self.shared
            .retrying(|| async {
                // A per-delay queue lives 2×delay after its last declaration: on a busy
                // RabbitMQ it can lapse between our declaration and the binding (404, the
                // channel is closed) or the publish (returned unroutable). Nothing was
                // published then; declare and publish again.
                let mut attempt = 0;
                loop {
                    attempt += 1;
                    self.ensure_exchange().await?;
                    // Where the message goes when its delay ends must exist by then.
                    self.ensure_route(routing_key).await?;
                    let mut op = self.shared.op_channel().await?;
                    let lapsed = match topology::delay_and_publish(
                        &mut op,
                        &self.options,
                        &queue,
                        body,
                        props.clone(),
                    )
                    .await
                    {
                        Ok(false) => {
                            self.shared.release(op);
                            return Ok(());
                        }
                        Ok(true) => {
                            self.shared.release(op);
                            AmqpError::Unroutable {
                                what: "publishing a delayed task".into(),
                                exchange: exchange.clone(),
                                routing_key: queue.name.clone(),
                            }
                        }
                        Err(e) if e.is_not_found() => {
                            // Or the exchange or the task queue was deleted under us.
                            self.forget_route(routing_key, true);
                            e
                        }
                        Err(e) => return Err(e),
                    };
                    if attempt >= DELAY_ATTEMPTS {
                        return Err(lapsed);
                    }
                    debug!(queue = %queue.name, "the delay queue lapsed before its message; again: {lapsed}");
                }
            })
            .await?;
        debug!(queue = %queue.name, delay_ms = delay, "published a delayed task");
        let expires = queue
            .expiration
            .is_none()
            .then(|| Instant::now() + Duration::from_millis(u64::try_from(delay).unwrap_or(0) * 2));
        let mut known = self.delay_queues.lock().unwrap_or_else(|p| p.into_inner());
        if known.len() > 1000 {
            let now = Instant::now();
            known.retain(|_, exp| exp.is_none_or(|e| e > now));
        }
        known.insert(queue.name, expires);
        Ok(())
    }

    /// Publishes `body` to `<queue>.dead_letters` with the reason (see [`AmqpBroker`]).
    async fn publish_dead_letter(
        &self,
        queue: &str,
        body: &[u8],
        original: &BasicProperties,
        reason: &str,
    ) -> std::result::Result<(), AmqpError> {
        let dl = format!("{queue}{}", self.options.dead_letter_suffix);
        let mut headers = original.headers().clone().unwrap_or_default();
        headers.insert(
            REASON_HEADER.into(),
            AMQPValue::LongString(LongString::from(reason)),
        );
        headers.insert(
            QUEUE_HEADER.into(),
            AMQPValue::LongString(LongString::from(queue)),
        );
        headers.insert(
            DEAD_LETTERED_AT_HEADER.into(),
            AMQPValue::LongString(LongString::from(Utc::now().to_rfc3339())),
        );
        let mut props = BasicProperties::default()
            .with_delivery_mode(2)
            .with_headers(headers);
        if let Some(ct) = original.content_type() {
            props = props.with_content_type(ct.clone());
        }
        self.shared
            .retrying(|| async {
                for attempt in 0..2 {
                    self.ensure_dead_letter_queue(&dl).await?;
                    match self.shared.publish("", &dl, body, props.clone()).await? {
                        false => return Ok(()),
                        true if attempt == 0 => self.shared.forget_declared(&format!("l:{dl}")),
                        true => {
                            return Err(AmqpError::Unroutable {
                                what: "dead-lettering".into(),
                                exchange: String::new(),
                                routing_key: dl.clone(),
                            });
                        }
                    }
                }
                Ok(())
            })
            .await
    }

    /// Declares a dead-letter queue (durable, no arguments) once per connection.
    async fn ensure_dead_letter_queue(&self, dl: &str) -> std::result::Result<(), AmqpError> {
        let key = format!("l:{dl}");
        if self.shared.is_declared(&key, Duration::MAX) {
            return Ok(());
        }
        let mut op = self.shared.op_channel().await?;
        op.declared();
        op.channel
            .queue_declare(
                short(dl)?,
                QueueDeclareOptions {
                    durable: true,
                    ..QueueDeclareOptions::default()
                },
                FieldTable::default(),
            )
            .await
            .map_err(|e| AmqpError::amqp(format!("declaring dead-letter queue {dl:?}"), e))?;
        self.shared.release(op);
        self.shared.mark_declared(&key);
        Ok(())
    }

    /// `basic.get` (no ack) up to `limit` messages of `queue`, then puts them all back with one
    /// `nack(multiple, requeue)`. An empty list when the queue does not exist.
    async fn inspect(
        &self,
        queue: &str,
        limit: usize,
    ) -> std::result::Result<Vec<BasicGetMessage>, AmqpError> {
        self.shared
            .retrying(|| async {
                let mut op = self.shared.op_channel().await?;
                let Some(messages) = get_all(&mut op, queue, limit).await? else {
                    return Ok(Vec::new());
                };
                requeue_all(&messages).await?;
                self.shared.release(op);
                Ok(messages)
            })
            .await
    }
}

/// `basic.get` without ack until the queue is empty or `limit` messages are held; `None` when
/// the queue does not exist (the channel is closed then).
pub(crate) async fn get_all(
    op: &mut OpChannel,
    queue: &str,
    limit: usize,
) -> std::result::Result<Option<Vec<BasicGetMessage>>, AmqpError> {
    let name = short(queue)?;
    let mut out = Vec::new();
    while out.len() < limit {
        match op
            .channel
            .basic_get(name.clone(), BasicGetOptions { no_ack: false })
            .await
        {
            Ok(Some(m)) => {
                let last = m.message_count == 0;
                out.push(m);
                if last {
                    break;
                }
            }
            Ok(None) => break,
            Err(e) => {
                let e = AmqpError::amqp(format!("reading queue {queue:?}"), e);
                if e.is_not_found() && out.is_empty() {
                    return Ok(None);
                }
                return Err(e);
            }
        }
    }
    Ok(Some(out))
}

/// Puts back every message held on the channel of `messages`, in their original order.
pub(crate) async fn requeue_all(
    messages: &[BasicGetMessage],
) -> std::result::Result<(), AmqpError> {
    if let Some(last) = messages.last() {
        last.acker
            .nack(BasicNackOptions {
                multiple: true,
                requeue: true,
            })
            .await
            .map_err(|e| AmqpError::amqp("returning inspected messages", e))?;
    }
    Ok(())
}

/// How many times a delayed publish declares and publishes again when its delay queue lapsed
/// before the message got in (see [`topology::delay_and_publish`]).
const DELAY_ATTEMPTS: u32 = 5;

/// The shortest delay a delay queue gets. A per-delay queue expires 2×delay after its last
/// declaration, and a message that reaches it later than that is lost (see
/// [`topology::delay_and_publish`]): the delay must outlast the longest stall between a
/// declaration and the message's arrival. Measured with 800 delayed publishes (32 in flight,
/// 16 delays) on a RabbitMQ sharing two overloaded cores: delays of 5–20 ms lost 2–7 % (5–17 %
/// without the renewing declaration), 20–35 ms up to 1 % either way, 30–45 ms none (up to 1 %
/// without), 50–65 ms none in any run. Go truncates and has no minimum.
const MIN_DELAY_MS: i64 = 50;

/// Whole milliseconds from `now` to `eta`, rounded up, at least [`MIN_DELAY_MS`].
fn delay_ms(eta: DateTime<Utc>, now: DateTime<Utc>) -> i64 {
    let us = (eta - now).num_microseconds().unwrap_or(i64::MAX);
    us.saturating_add(999).div_euclid(1000).max(MIN_DELAY_MS)
}

/// A task message's properties as Go sets them: JSON, persistent, the priority (not on delay
/// queues, as Go) and the headers, each only when not empty.
fn task_properties(
    sig: &Signature,
    with_priority: bool,
) -> std::result::Result<BasicProperties, AmqpError> {
    let mut props = BasicProperties::default()
        .with_content_type("application/json".into())
        .with_delivery_mode(2);
    if with_priority && sig.priority > 0 {
        props = props.with_priority(sig.priority);
    }
    if let Some(headers) = sig.headers.as_ref().filter(|h| !h.is_empty()) {
        props = props.with_headers(to_table(&headers.0)?);
    }
    Ok(props)
}

/// The ETA a message body carries (for `delayed()`).
fn eta_of(body: &[u8]) -> Option<DateTime<Utc>> {
    Signature::from_slice(body).ok().and_then(|s| s.eta)
}

#[async_trait]
impl Broker for AmqpBroker {
    async fn publish(&self, signature: &Signature, body: Bytes) -> Result<()> {
        let inner = &self.inner;
        if inner.shared.closed.is_cancelled() {
            return Err(Error::Shutdown);
        }
        if body.len() > inner.options.max_message_size {
            return Err(AmqpError::TooLarge {
                what: "publishing a task".into(),
                size: body.len(),
                max: inner.options.max_message_size,
            }
            .into_broker());
        }
        let routing_key = inner.routing_key(signature);
        let now = Utc::now();
        match signature.eta.filter(|eta| *eta > now) {
            Some(eta) => {
                inner
                    .publish_delayed(signature, &body, &routing_key, eta)
                    .await
            }
            None => inner.publish_now(signature, &body, &routing_key).await,
        }
        .map_err(AmqpError::into_broker)
    }

    /// Go's rule: an empty routing key becomes `binding_key` on a `direct` exchange, else the
    /// default queue.
    fn adjust_routing_key(&self, signature: &mut Signature, default_queue: &str) {
        if signature.routing_key.is_empty() {
            signature.routing_key = if self.inner.options.is_direct() {
                self.inner.options.binding_key.clone()
            } else {
                default_queue.to_owned()
            };
        }
    }

    async fn consume(&self, queues: &[String], prefetch: usize) -> Result<Box<dyn Consumer>> {
        if queues.is_empty() {
            return Err(Error::Config("consume needs at least one queue".into()));
        }
        if self.inner.shared.closed.is_cancelled() {
            return Err(Error::Shutdown);
        }
        let qos = if prefetch == 0 {
            self.inner.options.prefetch_count
        } else {
            u16::try_from(prefetch).unwrap_or(u16::MAX)
        };
        let consumer = AmqpConsumer::start(Arc::clone(&self.inner), queues.to_vec(), qos)
            .await
            .map_err(AmqpError::into_broker)?;
        Ok(Box::new(consumer))
    }

    async fn pending(&self, queue: &str, limit: usize) -> Result<Vec<Bytes>> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let messages = self
            .inner
            .inspect(queue, limit.min(INSPECT_MAX))
            .await
            .map_err(AmqpError::into_broker)?;
        Ok(messages
            .into_iter()
            .map(|m| Bytes::from(m.delivery.data))
            .collect())
    }

    async fn delayed(&self, limit: usize) -> Result<Vec<(DateTime<Utc>, Bytes)>> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let mut names: Vec<String> = {
            let now = Instant::now();
            let mut known = self
                .inner
                .delay_queues
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            known.retain(|_, exp| exp.is_none_or(|e| e > now));
            known.keys().cloned().collect()
        };
        if !self.inner.options.delayed_queue.is_empty()
            && !names.contains(&self.inner.options.delayed_queue)
        {
            names.push(self.inner.options.delayed_queue.clone());
        }
        let mut out = Vec::new();
        for name in names {
            let messages = self
                .inner
                .inspect(&name, INSPECT_MAX)
                .await
                .map_err(AmqpError::into_broker)?;
            for m in messages {
                let body = Bytes::from(m.delivery.data);
                let eta = eta_of(&body).unwrap_or_else(Utc::now);
                out.push((eta, body));
            }
        }
        out.sort_by_key(|(eta, _)| *eta);
        out.truncate(limit);
        Ok(out)
    }

    async fn dead_letters(&self, queue: &str, limit: usize) -> Result<Vec<(String, Bytes)>> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let dl = self.dead_letter_queue(queue);
        // Declared first (as dead-lettering does), so that looking does not meet a 404.
        self.inner
            .shared
            .retrying(|| self.inner.ensure_dead_letter_queue(&dl))
            .await
            .map_err(AmqpError::into_broker)?;
        let messages = self
            .inner
            .inspect(&dl, limit.min(INSPECT_MAX))
            .await
            .map_err(AmqpError::into_broker)?;
        Ok(messages
            .into_iter()
            .map(|m| {
                let reason = m
                    .delivery
                    .properties
                    .headers()
                    .as_ref()
                    .and_then(|h| h.inner().get(REASON_HEADER))
                    .and_then(value_text)
                    .unwrap_or_default();
                (reason, Bytes::from(m.delivery.data))
            })
            .collect())
    }

    async fn purge(&self, queue: &str) -> Result<u64> {
        let inner = &self.inner;
        inner
            .shared
            .retrying(|| async {
                let op = inner.shared.op_channel().await?;
                match op
                    .channel
                    .queue_purge(short(queue)?, QueuePurgeOptions::default())
                    .await
                {
                    Ok(n) => {
                        inner.shared.release(op);
                        Ok(u64::from(n))
                    }
                    Err(e) => {
                        let e = AmqpError::amqp(format!("purging {queue:?}"), e);
                        if e.is_not_found() { Ok(0) } else { Err(e) }
                    }
                }
            })
            .await
            .map_err(AmqpError::into_broker)
    }

    fn describe(&self) -> String {
        self.inner.options.describe()
    }

    /// Closes the publisher connection, and waits (up to 5 s) for the consumer connections
    /// whose closing has begun — a stopped consumer's connection closes when its last delivery
    /// is settled — so that a process exiting right after does not cut them.
    async fn close(&self) {
        self.inner.shared.close().await;
        self.inner.closing.close();
        let _ = tokio::time::timeout(Duration::from_secs(5), self.inner.closing.wait()).await;
    }
}

// ---------------------------------------------------------------------------------------------
// Consumer.
// ---------------------------------------------------------------------------------------------

/// A consumer's connection and channel, kept alive while any of its deliveries is unsettled
/// (their acks travel on this channel); closed cleanly when the last one goes.
struct Session {
    conn: Arc<Connection>,
    channel: Channel,
    acks: Arc<Acks>,
    /// The task sending `acks`.
    flusher: Mutex<Option<JoinHandle<()>>>,
    /// The broker's [`BrokerInner::closing`].
    closing: TaskTracker,
}

impl Drop for Session {
    /// The last acks, then the channel, then the connection: see
    /// [`crate::conn::close_gracefully`].
    fn drop(&mut self) {
        self.acks.finish();
        let flusher = self
            .flusher
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        let (conn, channel) = (Arc::clone(&self.conn), self.channel.clone());
        crate::conn::in_background(Some(&self.closing), async move {
            if let Some(flusher) = flusher {
                let _ = tokio::time::timeout(Duration::from_secs(5), flusher).await;
            }
            crate::conn::close_gracefully(&conn, vec![channel]).await;
        });
    }
}

/// How long an acknowledgement that cannot join a `multiple` one (an older delivery is still
/// running) waits for the older ones before it is sent alone.
const LONE_ACK_WAIT: Duration = Duration::from_millis(2);
/// How many such acknowledgements are sent alone at once without waiting.
const LONE_ACKS_MAX: usize = 32;

/// A consumer channel's acknowledgements, coalesced: one `basic.ack(multiple)` acknowledges
/// every delivery up to its tag, so instead of one frame (and one round through lapin) per
/// task, a task's ack is recorded and a flusher sends, as soon as it runs, one `multiple` ack
/// up to just below the oldest delivery still undecided. An ack above that one waits for it
/// at most [`LONE_ACK_WAIT`] (or until [`LONE_ACKS_MAX`] wait) and is then sent alone, so a
/// long task never holds back the others (RabbitMQ counts unacknowledged messages against the
/// prefetch). A nack or a delivery being nacked stays undecided until its `basic.nack` is on
/// the wire, so no `multiple` ack can cover it.
///
/// At-least-once holds: an ack is recorded only after the task's state is stored, and an ack
/// lost with the connection (or the process) means a redelivery. The session sends the last
/// acks before closing the channel.
struct Acks {
    channel: Channel,
    state: Mutex<AckState>,
    wake: Notify,
    outage: Arc<Outage>,
    bound: Duration,
}

#[derive(Default)]
struct AckState {
    /// Every tag up to this one was handed out. With several queues on the channel their
    /// deliveries can be handed out in another order than tagged, and a `multiple` ack must
    /// not cover a delivery still waiting in another queue's stream.
    handed_out: u64,
    /// Tags handed out above `handed_out + 1`.
    ahead: BTreeSet<u64>,
    /// Delivery tags handed out and not settled (a nack in flight included).
    open: BTreeSet<u64>,
    /// Tags acknowledged by the worker, not sent yet.
    acked: BTreeSet<u64>,
    /// Send what is left and stop.
    finishing: bool,
}

/// What the flusher sends next (see [`AckState::take`]).
#[derive(Debug, PartialEq)]
struct AckBatch {
    /// One `multiple` ack up to this tag.
    multiple: Option<u64>,
    /// Acks sent alone.
    singles: Vec<u64>,
    /// Acks left waiting for an older delivery.
    waiting: bool,
    /// Finished and nothing left: the flusher stops.
    done: bool,
}

impl AckState {
    /// `tag` was handed out.
    fn opened(&mut self, tag: u64) {
        self.open.insert(tag);
        if tag == self.handed_out + 1 {
            self.handed_out = tag;
            while !self.ahead.is_empty() {
                let next = self.handed_out + 1;
                if !self.ahead.remove(&next) {
                    break;
                }
                self.handed_out = next;
            }
        } else {
            self.ahead.insert(tag);
        }
    }

    /// Takes the acks to send now: every recorded ack below the oldest delivery still
    /// undecided (and below any not handed out yet) as one `multiple` ack; the others alone
    /// when `lone` (they waited long enough), when there are [`LONE_ACKS_MAX`] of them, or when
    /// finishing.
    fn take(&mut self, lone: bool) -> AckBatch {
        let floor = self
            .open
            .first()
            .copied()
            .unwrap_or(u64::MAX)
            .min(self.handed_out.saturating_add(1));
        let multiple = self.acked.range(..floor).next_back().copied();
        if let Some(up_to) = multiple {
            self.acked = self.acked.split_off(&(up_to + 1));
        }
        let singles = if lone || self.finishing || self.acked.len() >= LONE_ACKS_MAX {
            std::mem::take(&mut self.acked).into_iter().collect()
        } else {
            Vec::new()
        };
        AckBatch {
            multiple,
            singles,
            waiting: !self.acked.is_empty(),
            done: self.finishing && self.acked.is_empty(),
        }
    }
}

impl Acks {
    fn new(channel: Channel, outage: Arc<Outage>, bound: Duration) -> Arc<Self> {
        Arc::new(Acks {
            channel,
            state: Mutex::new(AckState::default()),
            wake: Notify::new(),
            outage,
            bound,
        })
    }

    fn state(&self) -> std::sync::MutexGuard<'_, AckState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// `tag` was handed out.
    fn opened(&self, tag: u64) {
        self.state().opened(tag);
    }

    /// `tag` is acknowledged: sent soon.
    fn ack(&self, tag: u64) {
        {
            let mut state = self.state();
            state.open.remove(&tag);
            state.acked.insert(tag);
        }
        self.wake.notify_one();
    }

    /// `tag` was nacked (its `basic.nack` sent, or the channel gone): it no longer holds back
    /// the acks above it.
    fn settled(&self, tag: u64) {
        self.state().open.remove(&tag);
        self.wake.notify_one();
    }

    /// Sends what is left, then stops the flusher.
    fn finish(&self) {
        self.state().finishing = true;
        self.wake.notify_one();
    }

    /// The flusher: sends the recorded acks, coalesced, until [`Acks::finish`].
    async fn run(self: Arc<Self>) {
        let mut lone_waiting = false;
        loop {
            let mut lone = false;
            if lone_waiting {
                tokio::select! {
                    () = self.wake.notified() => {}
                    () = tokio::time::sleep(LONE_ACK_WAIT) => lone = true,
                }
            } else {
                self.wake.notified().await;
            }
            // Let the tasks finishing at the same time record their acks first.
            tokio::task::yield_now().await;
            let batch = self.state().take(lone);
            lone_waiting = batch.waiting;
            let (multiple, singles, done) = (batch.multiple, batch.singles, batch.done);
            self.send(multiple, &singles).await;
            if done {
                return;
            }
        }
    }

    /// Sends one `multiple` ack up to `multiple` and one ack per tag of `singles`, pipelined.
    async fn send(&self, multiple: Option<u64>, singles: &[u64]) {
        if multiple.is_none() && singles.is_empty() {
            return;
        }
        let acks = multiple
            .map(|tag| (tag, true))
            .into_iter()
            .chain(singles.iter().map(|&tag| (tag, false)))
            .map(|(tag, multiple)| self.channel.basic_ack(tag, BasicAckOptions { multiple }));
        let sent = tokio::time::timeout(self.bound, futures_util::future::join_all(acks)).await;
        let failed = match sent {
            Ok(results) => results.into_iter().find_map(std::result::Result::err),
            // A connection that died without telling: RabbitMQ redelivers.
            Err(_) => None,
        };
        if let Some(e) = failed {
            let e = AmqpError::amqp("acknowledging", e);
            if e.is_outage() {
                self.outage.failed(&e);
            }
            debug!("{e}; RabbitMQ redelivers the messages");
        }
    }
}

/// What the forwarding task hands to the consumer: a delivery and the index of its queue.
type Incoming = (usize, Delivery);

/// A consumer of one or more queues; see [`AmqpBroker`].
struct AmqpConsumer {
    rx: mpsc::UnboundedReceiver<Incoming>,
    /// Fetched deliveries not handed out yet, per queue (the first queue first).
    buffers: Vec<VecDeque<Delivery>>,
    stop: CancellationToken,
    closed: CancellationToken,
    task: Option<JoinHandle<()>>,
    stopped: bool,
}

/// The background half of a consumer: owns the connection, forwards deliveries, reconnects.
struct ConsumerTask {
    inner: Arc<BrokerInner>,
    queues: Vec<String>,
    /// `queues`, shared with the deliveries' ackers.
    names: Vec<Arc<str>>,
    qos: u16,
    tag: String,
    tx: mpsc::UnboundedSender<Incoming>,
    stop: CancellationToken,
    outage: Arc<Outage>,
}

/// Why forwarding ended.
enum Ended {
    Stopped,
    /// The connection or channel failed: an outage.
    Failed(AmqpError),
    /// RabbitMQ cancelled a consumer (its queue was deleted): consume again at once.
    Cancelled(String),
}

/// One consumer stream's item: a delivery result, or the end of that queue's consumer.
enum Item {
    Delivery(usize, Box<lapin::Result<lapin::message::Delivery>>),
    End(usize),
}

impl AmqpConsumer {
    async fn start(
        inner: Arc<BrokerInner>,
        queues: Vec<String>,
        qos: u16,
    ) -> std::result::Result<Self, AmqpError> {
        let uuid = uuid::Uuid::new_v4().simple().to_string();
        let tag = format!(
            "{}-{}-{}",
            inner.options.connection_name,
            std::process::id(),
            &uuid[..12]
        );
        let (tx, rx) = mpsc::unbounded_channel();
        let stop = CancellationToken::new();
        let task = ConsumerTask {
            outage: Arc::clone(inner.shared.outage()),
            inner: Arc::clone(&inner),
            names: queues.iter().map(|q| Arc::from(q.as_str())).collect(),
            queues: queues.clone(),
            qos,
            tag,
            tx,
            stop: stop.clone(),
        };
        let first = task.open_bounded().await?;
        info!(queues = ?queues, prefetch = qos, "consuming");
        let closed = inner.shared.closed.clone();
        let handle = tokio::spawn(task.run(first));
        Ok(AmqpConsumer {
            rx,
            buffers: queues.iter().map(|_| VecDeque::new()).collect(),
            stop,
            closed,
            task: Some(handle),
            stopped: false,
        })
    }

    fn pop(&mut self) -> Option<Delivery> {
        self.buffers.iter_mut().find_map(VecDeque::pop_front)
    }

    fn take(&mut self, (queue, delivery): Incoming) {
        if let Some(buffer) = self.buffers.get_mut(queue) {
            buffer.push_back(delivery);
        }
    }
}

#[async_trait]
impl Consumer for AmqpConsumer {
    async fn next(&mut self) -> Result<Option<Delivery>> {
        loop {
            if self.stopped || self.closed.is_cancelled() {
                return Ok(None);
            }
            while let Ok(incoming) = self.rx.try_recv() {
                self.take(incoming);
            }
            if let Some(d) = self.pop() {
                return Ok(Some(d));
            }
            let incoming = tokio::select! {
                biased;
                () = self.closed.cancelled() => return Ok(None),
                m = self.rx.recv() => m,
            };
            match incoming {
                Some(incoming) => self.take(incoming),
                None => {
                    return Err(AmqpError::config("the AMQP consumer task ended").into_broker());
                }
            }
        }
    }

    async fn stop(&mut self) -> Result<()> {
        self.stopped = true;
        self.stop.cancel();
        if let Some(task) = self.task.take() {
            let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
        }
        self.rx.close();
        while let Ok(incoming) = self.rx.try_recv() {
            self.take(incoming);
        }
        let mut returned = 0;
        while let Some(d) = self.pop() {
            if d.nack(true).await.is_ok() {
                returned += 1;
            }
        }
        debug!(returned, "consumer stopped");
        Ok(())
    }
}

impl Drop for AmqpConsumer {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl ConsumerTask {
    /// [`ConsumerTask::open`], bounded by the operation timeout (plus the connect timeouts).
    async fn open_bounded(
        &self,
    ) -> std::result::Result<(Arc<Session>, Vec<(usize, lapin::Consumer)>), AmqpError> {
        let options = &self.inner.options;
        let bound = options.operation_timeout
            + options.connect_timeout * u32::try_from(options.urls.len()).unwrap_or(u32::MAX);
        tokio::time::timeout(bound, self.open())
            .await
            .unwrap_or(Err(AmqpError::Timeout {
                what: "starting a consumer".into(),
                after: bound,
            }))
    }

    /// Connects, declares, sets the prefetch and starts consuming every queue.
    async fn open(
        &self,
    ) -> std::result::Result<(Arc<Session>, Vec<(usize, lapin::Consumer)>), AmqpError> {
        let options = &self.inner.options;
        let conn = self.inner.shared.connector.connect("consumer").await?;
        let channel = conn
            .create_channel()
            .await
            .map_err(|e| AmqpError::amqp("opening the consumer channel", e))?;
        channel
            .basic_qos(self.qos, BasicQosOptions { global: false })
            .await
            .map_err(|e| AmqpError::amqp("setting the prefetch (basic.qos)", e))?;
        let mut op = OpChannel::detached(channel.clone());
        topology::declare_exchange(&mut op, options).await?;
        let mut consumers = Vec::new();
        for (i, queue) in self.queues.iter().enumerate() {
            topology::declare_task_queue(&mut op, options, queue, &options.binding_key).await?;
            let consumer = channel
                .basic_consume(
                    short(queue)?,
                    short(&format!("{}-{i}", self.tag))?,
                    BasicConsumeOptions::default(),
                    FieldTable::default(),
                )
                .await
                .map_err(|e| AmqpError::amqp(format!("consuming {queue:?}"), e))?;
            consumers.push((i, consumer));
        }
        let acks = Acks::new(
            channel.clone(),
            Arc::clone(&self.outage),
            options.operation_timeout,
        );
        let flusher = tokio::spawn(Arc::clone(&acks).run());
        Ok((
            Arc::new(Session {
                conn: Arc::new(conn),
                channel,
                acks,
                flusher: Mutex::new(Some(flusher)),
                closing: self.inner.closing.clone(),
            }),
            consumers,
        ))
    }

    async fn run(self, first: (Arc<Session>, Vec<(usize, lapin::Consumer)>)) {
        let mut session = Some(first);
        let mut backoff = Backoff::default();
        let mut last_error: Option<(String, Instant)> = None;
        loop {
            let (hold, consumers) = match session.take() {
                Some(s) => s,
                None => match self.open_bounded().await {
                    Ok(s) => {
                        self.outage.ok();
                        backoff.reset();
                        debug!(queues = ?self.queues, "consuming again");
                        s
                    }
                    Err(e) => {
                        if e.is_outage() {
                            self.outage.failed(&e);
                        } else {
                            // Not a connection problem (a 406 on a declaration …): once a
                            // minute, not every attempt.
                            let text = e.to_string();
                            let quiet = last_error.as_ref().is_some_and(|(t, at)| {
                                *t == text && at.elapsed() < Duration::from_secs(60)
                            });
                            if !quiet {
                                error!(queues = ?self.queues, "cannot consume: {text}");
                                last_error = Some((text, Instant::now()));
                            }
                        }
                        if self.pause(&mut backoff).await {
                            return;
                        }
                        continue;
                    }
                },
            };
            match self.forward(hold, consumers).await {
                Ended::Stopped => return,
                Ended::Failed(e) if e.is_outage() => {
                    self.outage.failed(&e);
                    if self.pause(&mut backoff).await {
                        return;
                    }
                }
                Ended::Failed(e) => {
                    // RabbitMQ closed the channel over something it refused (a 406 …): say
                    // what, and consume on a fresh channel.
                    warn!(queues = ?self.queues, "consumer channel closed: {e}; consuming again");
                    if self.pause(&mut backoff).await {
                        return;
                    }
                }
                Ended::Cancelled(queue) => {
                    warn!(queue = %queue, "RabbitMQ cancelled the consumer (queue deleted?); declaring and consuming again");
                    if self.pause(&mut backoff).await {
                        return;
                    }
                }
            }
        }
    }

    /// Sleeps the next back-off; true when stopped meanwhile.
    async fn pause(&self, backoff: &mut Backoff) -> bool {
        tokio::select! {
            () = self.stop.cancelled() => true,
            () = self.inner.shared.closed.cancelled() => true,
            () = tokio::time::sleep(backoff.next_delay()) => false,
        }
    }

    /// Forwards deliveries until stopped or the session fails.
    async fn forward(&self, hold: Arc<Session>, consumers: Vec<(usize, lapin::Consumer)>) -> Ended {
        let tags: Vec<ShortString> = consumers.iter().map(|(_, c)| c.tag()).collect();
        let mut merged = stream::select_all(consumers.into_iter().map(|(i, c)| {
            c.map(move |r| Item::Delivery(i, Box::new(r)))
                .chain(stream::once(async move { Item::End(i) }))
                .boxed()
        }));
        let stopping = async {
            tokio::select! {
                () = self.stop.cancelled() => {}
                () = self.inner.shared.closed.cancelled() => {}
            }
        };
        tokio::pin!(stopping);
        loop {
            let item = tokio::select! {
                biased;
                () = &mut stopping => break,
                item = merged.next() => item,
            };
            match item.map(|item| match item {
                Item::Delivery(i, r) => Ok((i, *r)),
                Item::End(i) => Err(i),
            }) {
                Some(Ok((i, Ok(d)))) => {
                    if !self.hand_out(&hold, i, d) {
                        return Ended::Stopped;
                    }
                }
                Some(Ok((i, Err(e)))) => {
                    return Ended::Failed(AmqpError::amqp(
                        format!("consuming {:?}", self.queue(i)),
                        e,
                    ));
                }
                Some(Err(i)) => return Ended::Cancelled(self.queue(i).to_owned()),
                None => {
                    return Ended::Failed(AmqpError::Connect("no consumer left".into()));
                }
            }
        }
        // Stopping: cancel the consumers, then hand over what arrived before the cancel-ok so
        // `stop()` returns it to the queue.
        for tag in tags {
            let _ = tokio::time::timeout(
                Duration::from_secs(2),
                hold.channel
                    .basic_cancel(tag, BasicCancelOptions::default()),
            )
            .await;
        }
        while let Ok(Some(item)) =
            tokio::time::timeout(Duration::from_millis(500), merged.next()).await
        {
            if let Item::Delivery(i, r) = item
                && let Ok(d) = *r
                && !self.hand_out(&hold, i, d)
            {
                break;
            }
        }
        Ended::Stopped
    }

    fn queue(&self, i: usize) -> &str {
        self.queues.get(i).map_or("", String::as_str)
    }

    /// Wraps a lapin delivery and sends it to the consumer; false when nobody listens.
    fn hand_out(&self, hold: &Arc<Session>, i: usize, d: lapin::message::Delivery) -> bool {
        let queue = Arc::clone(&self.names[i]);
        let body = Bytes::from(d.data);
        let membership = registry::membership(&body).map(|(task, group)| {
            let token = registry::hold(&task, &group);
            (task, token)
        });
        hold.acks.opened(d.delivery_tag);
        let acker = AmqpAcker {
            tag: d.delivery_tag,
            session: Arc::clone(hold),
            broker: Arc::clone(&self.inner),
            queue: Arc::clone(&queue),
            body: body.clone(),
            properties: d.properties,
            decided: AtomicBool::new(false),
            membership,
        };
        let mut delivery = Delivery::new(queue.as_ref().to_owned(), body, Box::new(acker));
        delivery.redeliveries = u32::from(d.redelivered);
        self.tx.send((i, delivery)).is_ok()
    }
}

/// Settles one delivery on the channel it came from: acks through the session's [`Acks`],
/// nacks directly.
struct AmqpAcker {
    tag: u64,
    session: Arc<Session>,
    broker: Arc<BrokerInner>,
    queue: Arc<str>,
    body: Bytes,
    properties: BasicProperties,
    decided: AtomicBool,
    /// `(task uuid, registry token)` while the task is known as a group member.
    membership: Option<(String, u64)>,
}

impl AmqpAcker {
    /// True for the first decision only.
    fn decide(&self) -> bool {
        let first = !self.decided.swap(true, Ordering::SeqCst);
        if first && let Some((task, token)) = &self.membership {
            registry::release(task, *token);
        }
        first
    }

    /// Sends a `basic.nack` for this delivery (bounded: on a connection that died mid-call
    /// lapin may never answer, and RabbitMQ redelivers the message anyway), then lets the acks
    /// above it go. A channel that died meanwhile means RabbitMQ already took the message back
    /// and redelivers it: said quietly.
    async fn send_nack(&self, requeue: bool) {
        let nack = nack(
            &self.session,
            self.tag,
            requeue,
            self.broker.shared.operation_timeout,
        );
        if let Err(e) = nack.await {
            if e.is_outage() {
                self.broker.shared.outage().failed(&e);
            }
            debug!(queue = %self.queue, "{e}; RabbitMQ redelivers the message");
        }
    }
}

/// A `basic.nack` of `tag` on the session's channel, bounded; the tag is settled afterwards
/// whatever happened.
async fn nack(
    session: &Session,
    tag: u64,
    requeue: bool,
    bound: Duration,
) -> std::result::Result<(), AmqpError> {
    let sent = tokio::time::timeout(
        bound,
        session.channel.basic_nack(
            tag,
            BasicNackOptions {
                multiple: false,
                requeue,
            },
        ),
    )
    .await;
    session.acks.settled(tag);
    match sent {
        Ok(result) => result.map_err(|e| AmqpError::amqp("nack", e)),
        Err(_) => Ok(()),
    }
}

#[async_trait]
impl Acknowledger for AmqpAcker {
    async fn ack(&self) -> Result<()> {
        if self.decide() {
            self.session.acks.ack(self.tag);
        }
        Ok(())
    }

    async fn nack(&self, requeue: bool) -> Result<()> {
        if self.decide() {
            self.send_nack(requeue).await;
        }
        Ok(())
    }

    /// Publishes the body to `<queue>.dead_letters` with the reason, waits for the confirm,
    /// then acknowledges the original (in that order: a crash in between leaves a copy rather
    /// than nothing). If the publish fails, the delivery stays undecided.
    async fn dead_letter(&self, reason: &str) -> Result<()> {
        if self.decided.load(Ordering::SeqCst) {
            return Ok(());
        }
        self.broker
            .publish_dead_letter(&self.queue, &self.body, &self.properties, reason)
            .await
            .map_err(AmqpError::into_broker)?;
        if self.decide() {
            self.session.acks.ack(self.tag);
        }
        Ok(())
    }
}

impl Drop for AmqpAcker {
    fn drop(&mut self) {
        // Dropped undecided: give it back now.
        if !self.decide() {
            return;
        }
        let session = Arc::clone(&self.session);
        let (tag, bound) = (self.tag, self.broker.shared.operation_timeout);
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            handle.spawn(async move {
                let _ = nack(&session, tag, true, bound).await;
            });
        } else {
            warn!(
                "a delivery was dropped outside a runtime; RabbitMQ redelivers it when the channel closes"
            );
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn acks_coalesce_below_the_oldest_undecided_delivery() {
        let mut s = AckState::default();
        for tag in 1..=5 {
            s.opened(tag);
        }
        // 2 and 3 done, 1 still running: nothing can go as `multiple`; they wait.
        for tag in [2, 3] {
            s.open.remove(&tag);
            s.acked.insert(tag);
        }
        let b = s.take(false);
        assert_eq!(
            (b.multiple, b.singles.as_slice(), b.waiting),
            (None, &[][..], true)
        );
        // 1 done: one `multiple` ack up to 3.
        s.open.remove(&1);
        s.acked.insert(1);
        let b = s.take(false);
        assert_eq!(
            (b.multiple, b.singles.as_slice(), b.waiting),
            (Some(3), &[][..], false)
        );
        // 5 done while 4 runs long: sent alone once it waited.
        s.open.remove(&5);
        s.acked.insert(5);
        assert_eq!(s.take(false).multiple, None);
        let b = s.take(true);
        assert_eq!(
            (b.multiple, b.singles.as_slice(), b.waiting),
            (None, &[5][..], false)
        );
        // 4 is being nacked (still open): 6 done cannot cover it.
        s.opened(6);
        s.open.remove(&6);
        s.acked.insert(6);
        assert_eq!(s.take(false).multiple, None);
        s.open.remove(&4); // its nack was sent
        assert_eq!(s.take(false).multiple, Some(6));
        // A tag handed out ahead of an older one (another queue's stream): no `multiple` ack
        // past the one not handed out.
        s.opened(8);
        s.open.remove(&8);
        s.acked.insert(8);
        assert_eq!(s.take(false).multiple, None);
        s.opened(7);
        assert_eq!(s.handed_out, 8);
        s.open.remove(&7);
        s.acked.insert(7);
        assert_eq!(s.take(false).multiple, Some(8));
        // Finishing sends whatever is left and stops.
        s.opened(9);
        s.open.remove(&9);
        s.acked.insert(9);
        s.finishing = true;
        let b = s.take(false);
        assert_eq!((b.multiple, b.done), (Some(9), true));
    }

    #[test]
    fn delays_round_up_to_whole_milliseconds() {
        let now = Utc::now();
        assert_eq!(delay_ms(now + chrono::Duration::microseconds(1), now), 50);
        assert_eq!(
            delay_ms(now + chrono::Duration::microseconds(7500), now),
            50
        );
        assert_eq!(
            delay_ms(now + chrono::Duration::microseconds(75_500), now),
            76
        );
        assert_eq!(
            delay_ms(now + chrono::Duration::milliseconds(100), now),
            100
        );
        assert_eq!(delay_ms(now - chrono::Duration::milliseconds(5), now), 50);
    }

    #[test]
    fn task_properties_follow_go() {
        let sig = Signature::new("add");
        let p = task_properties(&sig, true).unwrap();
        assert_eq!(
            p.content_type().as_ref().unwrap().as_str(),
            "application/json"
        );
        assert_eq!(*p.delivery_mode(), Some(2));
        assert_eq!(*p.priority(), None, "priority 0 is not sent");
        assert!(p.headers().is_none(), "empty headers are not sent");
        let mut sig = sig.priority(5);
        sig.headers = Some(machinist_core::Headers::new());
        sig.headers
            .as_mut()
            .unwrap()
            .insert("uber-trace-id", "abc:1");
        let p = task_properties(&sig, true).unwrap();
        assert_eq!(*p.priority(), Some(5));
        assert_eq!(
            p.headers().as_ref().unwrap().inner().get("uber-trace-id"),
            Some(&AMQPValue::LongString("abc:1".into()))
        );
        assert_eq!(*task_properties(&sig, false).unwrap().priority(), None);
    }
}
