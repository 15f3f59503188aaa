//! The [`Broker`] role: moving task messages from producers to workers.
//!
//! A broker stores messages (including ones with a future ETA: the broker keeps them, never the
//! worker's memory) and hands them out as [`Delivery`]s. A delivery stays owned by the worker
//! until it is acknowledged — after the task's state is stored — so every broker is
//! at-least-once: a worker that dies loses nothing, its unacknowledged messages come back.
//!
//! The trait is object-safe (`Arc<dyn Broker>`) because the adapter is chosen at run time from a
//! URL. Bodies are raw bytes: the worker decodes them (`codec.rs`), so an undecodable message is
//! still a delivery the worker can dead-letter.

use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use chrono::{DateTime, Utc};

use crate::backend::{Backend, StateContext};
use crate::error::Result;
use crate::signature::Signature;
use crate::state::TaskState;

/// Moves messages between producers and workers.
#[async_trait]
pub trait Broker: Send + Sync + 'static {
    /// Stores one message. `body` is `signature` encoded (the server encodes once and checks
    /// the size); the broker reads routing key, ETA, priority and headers from `signature`.
    /// The routing key is already resolved ([`Broker::adjust_routing_key`]). With an ETA in the
    /// future the message becomes visible at the ETA.
    async fn publish(&self, signature: &Signature, body: Bytes) -> Result<()>;

    /// Stores a task's PENDING `state` with `backend`, then publishes its message (as
    /// [`Broker::publish`]): the message is never visible before its PENDING is stored, or a
    /// fast worker's RECEIVED could be overwritten by it. The default awaits the state write,
    /// then publishes. A broker that shares a connection with `backend` may send both in one
    /// request, in that order: the Redis broker does, when `backend` is a Redis backend on its
    /// own connection ([`Backend::as_any`]), so sending a task costs one round trip, not two.
    async fn publish_pending(
        &self,
        backend: &dyn Backend,
        ctx: &mut StateContext,
        state: &TaskState,
        signature: &Signature,
        body: Bytes,
    ) -> Result<()> {
        backend.set_task_state(ctx, state).await?;
        self.publish(signature, body).await
    }

    /// Fills an empty routing key. The default (Go's base rule) uses `default_queue`; AMQP
    /// overrides it (binding key for direct exchanges).
    fn adjust_routing_key(&self, signature: &mut Signature, default_queue: &str) {
        if signature.routing_key.is_empty() {
            signature.routing_key = default_queue.to_owned();
        }
    }

    /// Starts consuming `queues` (in priority order). `prefetch` bounds how many deliveries the
    /// consumer holds unacknowledged at once, including those being processed.
    async fn consume(&self, queues: &[String], prefetch: usize) -> Result<Box<dyn Consumer>>;

    /// [`Broker::consume`] for a worker whose task states go to `backend` (what the worker
    /// calls). The default ignores `backend`. A broker that can read a task's stored state in
    /// the same request that fetches its message may do so and hand it out with the delivery
    /// ([`Delivery::stored_state`]), so the worker's first state write needs no read of its
    /// own: the Redis broker does when `backend` is a Redis backend on its own connection.
    async fn consume_for(
        &self,
        queues: &[String],
        prefetch: usize,
        backend: &dyn Backend,
    ) -> Result<Box<dyn Consumer>> {
        let _ = backend;
        self.consume(queues, prefetch).await
    }

    /// Messages waiting in `queue` (not the delayed ones), oldest first, at most `limit`.
    async fn pending(&self, queue: &str, limit: usize) -> Result<Vec<Bytes>>;

    /// Messages waiting for their ETA, with it, earliest first, at most `limit`.
    async fn delayed(&self, limit: usize) -> Result<Vec<(DateTime<Utc>, Bytes)>>;

    /// Messages set aside by [`Delivery::dead_letter`] for `queue`, with their reasons.
    async fn dead_letters(&self, queue: &str, limit: usize) -> Result<Vec<(String, Bytes)>>;

    /// Deletes every waiting message of `queue`; returns how many.
    async fn purge(&self, queue: &str) -> Result<u64>;

    /// A short name for logs (`memory`, `redis://host` …), with no credentials.
    fn describe(&self) -> String;

    /// Releases connections. Pending messages stay stored.
    async fn close(&self) {}
}

/// A stream of deliveries from one or more queues.
#[async_trait]
pub trait Consumer: Send {
    /// The next delivery, waiting for one. `Ok(None)` means the consumer was stopped.
    /// The caller asks for the next delivery only when it has room to process it.
    async fn next(&mut self) -> Result<Option<Delivery>>;

    /// Stops fetching and returns anything fetched but not yet handed out to the broker.
    async fn stop(&mut self) -> Result<()>;

    /// Waits until the settlements (acks, nacks …) of the deliveries this consumer handed out
    /// have reached the broker, for brokers that send some without waiting (Redis queues its
    /// acks). The worker calls it after its last task finished, so that a process that exits
    /// once the worker returns leaves nothing to be redelivered. The default does nothing.
    async fn flush(&mut self) -> Result<()> {
        Ok(())
    }
}

/// What a worker does with a delivery when it is done with it. Implemented by each broker.
#[async_trait]
pub trait Acknowledger: Send + Sync {
    /// Done: remove the message for good.
    async fn ack(&self) -> Result<()>;
    /// Give the message back: visible again at once (`requeue`) or dropped.
    async fn nack(&self, requeue: bool) -> Result<()>;
    /// Set the message aside with a reason (undecodable, unregistered too many times …),
    /// inspectable with [`Broker::dead_letters`].
    async fn dead_letter(&self, reason: &str) -> Result<()>;
    /// Extends the visibility lease by `by` (brokers with leases: SQLite, Redis, SQS). The
    /// worker calls it periodically while a task runs.
    async fn extend(&self, by: Duration) -> Result<()> {
        let _ = by;
        Ok(())
    }
    /// The lease a delivery gets before it is redelivered, if this broker has leases.
    fn lease(&self) -> Option<Duration> {
        None
    }
}

/// One message handed to a worker.
pub struct Delivery {
    /// The queue it came from.
    pub queue: String,
    /// The encoded signature, exactly as stored.
    pub body: Bytes,
    /// How many times it was delivered before, where the broker knows (AMQP `redelivered`,
    /// SQS receive count …); 0 otherwise.
    pub redeliveries: u32,
    /// The task's state (Go's `TaskState` JSON) as the broker read it from the worker's result
    /// backend when it fetched the message ([`Broker::consume_for`]); `None` when the broker
    /// did not read it. The worker takes the stored `CreatedAt` and `TaskName` from it (for
    /// the same task UUID only) instead of the backend reading them again.
    pub stored_state: Option<Bytes>,
    acker: Box<dyn Acknowledger>,
}

impl std::fmt::Debug for Delivery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Delivery")
            .field("queue", &self.queue)
            .field("bytes", &self.body.len())
            .field("redeliveries", &self.redeliveries)
            .finish()
    }
}

impl Delivery {
    /// A delivery whose fate `acker` carries out.
    pub fn new(queue: String, body: Bytes, acker: Box<dyn Acknowledger>) -> Self {
        Delivery {
            queue,
            body,
            redeliveries: 0,
            stored_state: None,
            acker,
        }
    }

    /// This delivery with the task's stored state the broker read with it
    /// ([`Delivery::stored_state`]).
    #[must_use]
    pub fn with_stored_state(mut self, state: Bytes) -> Self {
        self.stored_state = Some(state);
        self
    }

    /// Decodes the body.
    pub fn signature(&self) -> Result<Signature> {
        Signature::from_slice(&self.body)
    }

    /// See [`Acknowledger::ack`].
    pub async fn ack(&self) -> Result<()> {
        self.acker.ack().await
    }
    /// See [`Acknowledger::nack`].
    pub async fn nack(&self, requeue: bool) -> Result<()> {
        self.acker.nack(requeue).await
    }
    /// See [`Acknowledger::dead_letter`].
    pub async fn dead_letter(&self, reason: &str) -> Result<()> {
        self.acker.dead_letter(reason).await
    }
    /// See [`Acknowledger::extend`].
    pub async fn extend(&self, by: Duration) -> Result<()> {
        self.acker.extend(by).await
    }
    /// See [`Acknowledger::lease`].
    pub fn lease(&self) -> Option<Duration> {
        self.acker.lease()
    }
}
