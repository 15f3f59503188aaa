//! The [`Server`]: the task registry and the producer side. It writes PENDING before it
//! publishes (as Go does), sends groups with bounded concurrency, chords and chains, and
//! creates workers that share its registry, broker, backend and lock.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use bytes::Bytes;
use chrono::Utc;
use futures_util::stream::{self, StreamExt, TryStreamExt};

use crate::backend::{Backend, StateContext};
use crate::broker::Broker;
use crate::config::Config;
use crate::error::{Error, Result};
use crate::id;
use crate::lock::Lock;
use crate::result::{AsyncResult, ChainAsyncResult, ChordAsyncResult};
use crate::signature::{Headers, Signature};
use crate::state::TaskState;
use crate::task::{Handler, Task};
use crate::trace;
use crate::worker::Worker;
use crate::workflow::{Chain, Chord, Group};

/// A hook called with every signature just before it is published (Go's
/// `Server.SetPreTaskHandler`).
pub type PrePublishHook = Arc<dyn Fn(&mut Signature) + Send + Sync>;

pub(crate) struct ServerInner {
    /// The configuration in effect; replaced as a whole by [`Server::set_config`], watched by
    /// workers for live changes (concurrency).
    pub(crate) config: tokio::sync::watch::Sender<Arc<Config>>,
    pub(crate) broker: Arc<dyn Broker>,
    pub(crate) backend: Arc<dyn Backend>,
    pub(crate) lock: Arc<dyn Lock>,
    registry: RwLock<HashMap<String, Task>>,
    pre_publish: RwLock<Option<PrePublishHook>>,
    /// The periodic scheduler's clock and stop token (see [`crate::periodic`]).
    pub(crate) periodic: crate::periodic::Registry,
}

/// The registry and the producer side of machinist. Cheap to clone.
#[derive(Clone)]
pub struct Server {
    pub(crate) inner: Arc<ServerInner>,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("broker", &self.inner.broker.describe())
            .field("backend", &self.inner.backend.describe())
            .field("lock", &self.inner.lock.describe())
            .finish()
    }
}

impl Server {
    /// A server on the given adapters.
    pub fn new(
        config: Config,
        broker: Arc<dyn Broker>,
        backend: Arc<dyn Backend>,
        lock: Arc<dyn Lock>,
    ) -> Self {
        Server {
            inner: Arc::new(ServerInner {
                config: tokio::sync::watch::Sender::new(Arc::new(config)),
                broker,
                backend,
                lock,
                registry: RwLock::new(HashMap::new()),
                pre_publish: RwLock::new(None),
                periodic: crate::periodic::Registry::default(),
            }),
        }
    }

    /// The configuration in effect.
    pub fn config(&self) -> Arc<Config> {
        self.inner.config.borrow().clone()
    }

    /// Replaces the configuration. Fields read per task (time limits, retry bounds, message
    /// size, poll intervals) apply to the next task; workers that follow the configuration
    /// ([`Worker::follow_config`]) resize to a new `concurrency`. Connections are not rebuilt:
    /// a new broker, backend or lock URL needs a restart.
    pub fn set_config(&self, config: Config) {
        self.inner.config.send_replace(Arc::new(config));
    }

    /// Applies every configuration the watcher publishes (see
    /// [`crate::config::ConfigWatcher`]), until the watcher is dropped. Needs a tokio runtime.
    pub fn follow_config(&self, mut updates: tokio::sync::watch::Receiver<Arc<Config>>) {
        let server = Arc::downgrade(&self.inner);
        tokio::spawn(async move {
            while updates.changed().await.is_ok() {
                let Some(inner) = server.upgrade() else {
                    return;
                };
                let next = updates.borrow_and_update().clone();
                inner.config.send_replace(next);
            }
        });
    }

    /// Receives every configuration [`Server::set_config`] installs.
    pub(crate) fn subscribe_config(&self) -> tokio::sync::watch::Receiver<Arc<Config>> {
        self.inner.config.subscribe()
    }
    /// The broker.
    pub fn broker(&self) -> &Arc<dyn Broker> {
        &self.inner.broker
    }
    /// The result backend.
    pub fn backend(&self) -> &Arc<dyn Backend> {
        &self.inner.backend
    }
    /// The lock.
    pub fn lock(&self) -> &Arc<dyn Lock> {
        &self.inner.lock
    }

    /// Registers `handler` (an `async fn`, or `blocking(fn)`) under `name`, replacing any task
    /// registered under that name before.
    pub fn register_task<H: Handler<M>, M: 'static>(&self, name: impl Into<String>, handler: H) {
        self.register(name, Task::new(handler));
    }

    /// Registers an already built [`Task`] (with options such as a time limit).
    pub fn register(&self, name: impl Into<String>, task: Task) {
        self.inner
            .registry
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(name.into(), task.registered());
    }

    /// Registers several tasks: `server.register_tasks([("add", task(add)), ("split", task(split))])`.
    pub fn register_tasks<N: Into<String>>(&self, tasks: impl IntoIterator<Item = (N, Task)>) {
        let mut reg = self
            .inner
            .registry
            .write()
            .unwrap_or_else(|e| e.into_inner());
        for (name, task) in tasks {
            reg.insert(name.into(), task.registered());
        }
    }

    /// True when a task is registered under `name`.
    pub fn is_task_registered(&self, name: &str) -> bool {
        self.get_task(name).is_some()
    }

    /// The task registered under `name`.
    pub fn get_task(&self, name: &str) -> Option<Task> {
        self.inner
            .registry
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(name)
            .cloned()
    }

    /// The registered names, sorted.
    pub fn registered_task_names(&self) -> Vec<String> {
        let mut v: Vec<String> = self
            .inner
            .registry
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .keys()
            .cloned()
            .collect();
        v.sort();
        v
    }

    /// Sets the hook called with every signature just before it is published.
    pub fn set_pre_publish_hook(&self, hook: impl Fn(&mut Signature) + Send + Sync + 'static) {
        *self
            .inner
            .pre_publish
            .write()
            .unwrap_or_else(|e| e.into_inner()) = Some(Arc::new(hook));
    }

    /// A worker consuming the default queue. `concurrency` bounds how many tasks run at once;
    /// 0 means twice the number of CPUs (on every broker).
    pub fn new_worker(&self, tag: impl Into<String>, concurrency: usize) -> Worker {
        Worker::new(self.clone(), tag.into(), concurrency, None)
    }

    /// A worker consuming `queue` instead of the default queue.
    pub fn new_custom_queue_worker(
        &self,
        tag: impl Into<String>,
        concurrency: usize,
        queue: impl Into<String>,
    ) -> Worker {
        Worker::new(self.clone(), tag.into(), concurrency, Some(queue.into()))
    }

    /// Fills what `send_task` fills (UUID, headers, routing key, the PENDING's `CreatedAt`) and
    /// runs the pre-publish hook.
    fn prepare(&self, sig: &mut Signature) {
        if sig.uuid.is_empty() {
            sig.uuid = id::task_id();
        }
        // The message carries the `CreatedAt` its PENDING is stored with (`pending_of`), so the
        // worker need not read the PENDING back to carry it over. A new send is a new PENDING.
        sig.created_at = Some(Utc::now());
        if sig.headers.is_none() {
            sig.headers = Some(Headers::new());
        }
        self.inner
            .broker
            .adjust_routing_key(sig, &self.config().default_queue);
        let hook = self
            .inner
            .pre_publish
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        if let Some(hook) = hook {
            hook(sig);
        }
    }

    /// Encodes a prepared signature and checks its size.
    fn encode(&self, sig: &Signature) -> Result<Bytes> {
        let body = sig.to_vec()?;
        let max = self.inner.config.borrow().max_message_size;
        if body.len() > max {
            return Err(Error::MessageTooLarge {
                size: body.len(),
                max,
            });
        }
        Ok(Bytes::from(body))
    }

    /// Encodes and publishes a prepared signature (no state written).
    pub(crate) async fn publish(&self, sig: &Signature) -> Result<()> {
        let body = self.encode(sig)?;
        self.inner.broker.publish(sig, body).await
    }

    /// The PENDING state of `sig`, with its [`StateContext`] (Go passes the signature): created
    /// when `prepare` stamped the signature, so message and state carry the same `CreatedAt`.
    fn pending_of(sig: &Signature) -> (TaskState, StateContext) {
        let mut pending = TaskState::pending(&sig.uuid, &sig.name);
        if sig.created_at.is_some() {
            pending.created_at = sig.created_at;
        }
        let mut ctx = StateContext::of(sig);
        ctx.created_at = pending.created_at;
        (pending, ctx)
    }

    /// Stores PENDING for `sig`.
    async fn store_pending(&self, sig: &Signature) -> Result<()> {
        let (pending, mut ctx) = Self::pending_of(sig);
        self.inner.backend.set_task_state(&mut ctx, &pending).await
    }

    /// Sends one task: stores PENDING, then publishes. A future ETA is kept by the broker.
    /// A message that cannot be encoded or is too large fails before anything is stored.
    pub async fn send_task(&self, mut sig: Signature) -> Result<AsyncResult> {
        self.prepare(&mut sig);
        let body = self.encode(&sig)?;
        let (pending, mut ctx) = Self::pending_of(&sig);
        self.inner
            .broker
            .publish_pending(&*self.inner.backend, &mut ctx, &pending, &sig, body)
            .await?;
        tracing::debug!(uuid = %sig.uuid, name = %sig.name, queue = %sig.routing_key, "sent task");
        Ok(AsyncResult::new(sig.uuid, self.inner.backend.clone()))
    }

    /// [`Server::send_task`] inside a producer span that is a child of `parent`; with the `otel`
    /// feature its W3C trace context is written to the headers (`traceparent`).
    pub async fn send_task_with_context(
        &self,
        parent: &tracing::Span,
        mut sig: Signature,
    ) -> Result<AsyncResult> {
        let span = tracing::info_span!(parent: parent, "send_task", task = %sig.name);
        trace::inject(&span, sig.headers.get_or_insert_with(Headers::new));
        let _entered = span.enter();
        self.send_task(sig).await
    }

    /// Sends a group: stores the group meta, every member's PENDING, then publishes the members
    /// with at most `send_concurrency` publishes in flight (0 = all at once). Every member is
    /// encoded and size-checked first, so a bad member fails the group before anything is stored.
    pub async fn send_group(
        &self,
        group: Group,
        send_concurrency: usize,
    ) -> Result<Vec<AsyncResult>> {
        let mut tasks = group.tasks;
        for t in &mut tasks {
            self.prepare(t);
        }
        let bodies = tasks
            .iter()
            .map(|t| self.encode(t))
            .collect::<Result<Vec<Bytes>>>()?;
        let uuids: Vec<String> = tasks.iter().map(|t| t.uuid.clone()).collect();
        self.inner
            .backend
            .init_group(&group.group_uuid, &uuids)
            .await?;
        for t in &tasks {
            self.store_pending(t).await?;
        }
        let limit = if send_concurrency == 0 {
            tasks.len().max(1)
        } else {
            send_concurrency
        };
        let broker = &self.inner.broker;
        // Collected first: a lazy `map` closure held across the await makes this future
        // impossible to prove `Send` inside a spawned task (rustc's higher-ranked lifetime
        // error), e.g. the periodic scheduler's.
        let publishes: Vec<_> = tasks
            .iter()
            .zip(bodies)
            .map(|(t, b)| broker.publish(t, b))
            .collect();
        stream::iter(publishes)
            .buffer_unordered(limit)
            .try_collect::<Vec<()>>()
            .await?;
        Ok(uuids
            .into_iter()
            .map(|u| AsyncResult::new(u, self.inner.backend.clone()))
            .collect())
    }

    /// [`Server::send_group`] with trace context injected into every member.
    pub async fn send_group_with_context(
        &self,
        parent: &tracing::Span,
        mut group: Group,
        send_concurrency: usize,
    ) -> Result<Vec<AsyncResult>> {
        let span = tracing::info_span!(parent: parent, "send_group", group = %group.group_uuid);
        for t in &mut group.tasks {
            trace::inject(&span, t.headers.get_or_insert_with(Headers::new));
        }
        let _entered = span.enter();
        self.send_group(group, send_concurrency).await
    }

    /// Sends a chord: its group (the callback travels inside every member) and a handle on the
    /// callback.
    pub async fn send_chord(
        &self,
        chord: Chord,
        send_concurrency: usize,
    ) -> Result<ChordAsyncResult> {
        let group = self.send_group(chord.group, send_concurrency).await?;
        Ok(ChordAsyncResult {
            group,
            callback: AsyncResult::new(chord.callback.uuid, self.inner.backend.clone()),
        })
    }

    /// [`Server::send_chord`] with trace context injected into every member and the callback.
    pub async fn send_chord_with_context(
        &self,
        parent: &tracing::Span,
        mut chord: Chord,
        send_concurrency: usize,
    ) -> Result<ChordAsyncResult> {
        let span =
            tracing::info_span!(parent: parent, "send_chord", group = %chord.group.group_uuid);
        trace::inject(
            &span,
            chord.callback.headers.get_or_insert_with(Headers::new),
        );
        let chord = Chord::new(chord.group, chord.callback);
        let _entered = span.enter();
        self.send_chord(chord, send_concurrency).await
    }

    /// Sends a chain: publishes its first task, which carries the others nested.
    pub async fn send_chain(&self, chain: Chain) -> Result<ChainAsyncResult> {
        let uuids = chain.task_uuids();
        let Some(first) = chain.tasks.into_iter().next() else {
            return Err(Error::Other("cannot send an empty chain".into()));
        };
        self.send_task(first).await?;
        Ok(ChainAsyncResult {
            results: uuids
                .into_iter()
                .map(|u| AsyncResult::new(u, self.inner.backend.clone()))
                .collect(),
        })
    }

    /// [`Server::send_chain`] with trace context injected into every task of the chain.
    pub async fn send_chain_with_context(
        &self,
        parent: &tracing::Span,
        chain: Chain,
    ) -> Result<ChainAsyncResult> {
        let span = tracing::info_span!(parent: parent, "send_chain");
        let tasks = chain
            .tasks
            .into_iter()
            .map(|mut t| {
                trace::inject(&span, t.headers.get_or_insert_with(Headers::new));
                t
            })
            .collect();
        let chain = Chain::new(tasks);
        let _entered = span.enter();
        self.send_chain(chain).await
    }

    /// A handle on the task `uuid`.
    pub fn async_result(&self, uuid: impl Into<String>) -> AsyncResult {
        AsyncResult::new(uuid, self.inner.backend.clone())
    }
}
