//! The [`Worker`]: takes deliveries from the broker and decides what happens to each one. This
//! is the only place that does: decode → registered? → decode arguments → RECEIVED and STARTED
//! (one [`Backend::set_task_states`](crate::Backend::set_task_states) call) → run (panic guard,
//! time limit, lease renewal) → SUCCESS / RETRY / FAILURE → callbacks and chords → acknowledge.
//! A delivery is acknowledged only after its outcome is stored, so a worker that dies loses
//! nothing. Every state goes to the backend with the task's
//! [`StateContext`], kept from RECEIVED to the final state.
//!
//! Concurrency is the same on every broker: at most `concurrency` tasks run at once and the
//! worker holds at most that many unacknowledged deliveries; 0 means twice the CPU count.
//!
//! Shutdown: the first SIGINT/SIGTERM (or [`ShutdownHandle::graceful`]) stops fetching and waits
//! up to `Config::shutdown_timeout` for running tasks; tasks still running then are cancelled and
//! their deliveries returned to the broker. A second signal ([`ShutdownHandle::abort`]) does that
//! at once.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::Poll;
use std::time::Duration;

use chrono::Utc;
use futures_util::FutureExt;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{Instrument, debug, error, info, warn};

use crate::arg::{Arg, TaskResult};
use crate::backend::{GroupProgress, StateContext};
use crate::broker::{Consumer, Delivery};
use crate::config::Config;
use crate::error::{Error, Result};
use crate::metrics::{self, Outcome, TaskMetrics};
use crate::retry;
use crate::server::Server;
use crate::signature::Signature;
use crate::state::TaskState;
use crate::task::{Task, TaskContext, TaskError, TaskOutcome};
use crate::trace;

/// Header counting runs of a task (1 on the first run); survives retries.
pub const ATTEMPT_HEADER: &str = "machinist_attempt";
/// Header counting how often a task asked to be retried later.
pub const RETRY_LATER_HEADER: &str = "machinist_retry_later";
/// Header counting how often a message was requeued because no worker knew its task.
pub const UNREGISTERED_HEADER: &str = "machinist_unregistered_requeues";

type ErrorHook = Arc<dyn Fn(&Error) + Send + Sync>;
type SignatureHook = Arc<dyn Fn(&Signature) + Send + Sync>;
type ConsumeHook = Arc<dyn Fn() -> bool + Send + Sync>;

#[derive(Clone, Default)]
struct Hooks {
    error: Option<ErrorHook>,
    pre_task: Option<SignatureHook>,
    post_task: Option<SignatureHook>,
    pre_consume: Option<ConsumeHook>,
}

/// Stops a running worker from elsewhere (another task, a test, a signal handler).
#[derive(Debug, Clone, Default)]
pub struct ShutdownHandle {
    stop: CancellationToken,
    abort: CancellationToken,
    /// Set just before `abort` is cancelled: read (without the token's lock) before a task's
    /// first poll.
    aborting: Arc<AtomicBool>,
}

impl ShutdownHandle {
    /// Stop fetching, let running tasks finish (up to the shutdown timeout).
    pub fn graceful(&self) {
        self.stop.cancel();
    }
    /// Stop at once: running tasks are cancelled and their messages returned to the broker.
    pub fn abort(&self) {
        self.stop.cancel();
        self.aborting.store(true, Ordering::Release);
        self.abort.cancel();
    }
    /// True once a shutdown was asked for.
    pub fn is_shutting_down(&self) -> bool {
        self.stop.is_cancelled()
    }
}

/// How a worker stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stopped {
    /// Every running task finished.
    Gracefully,
    /// Some tasks were cancelled and their messages returned (shutdown timeout or abort).
    Abruptly,
}

/// A running worker launched with [`Worker::launch_async`].
#[derive(Debug)]
pub struct WorkerHandle {
    /// Stops it.
    pub shutdown: ShutdownHandle,
    join: tokio::task::JoinHandle<Result<Stopped>>,
}

impl WorkerHandle {
    /// Waits for the worker to stop.
    pub async fn wait(self) -> Result<Stopped> {
        self.join
            .await
            .map_err(|e| Error::Other(format!("worker task failed: {e}")))?
    }

    /// Asks for a graceful stop and waits for it.
    pub async fn quit(self) -> Result<Stopped> {
        self.shutdown.graceful();
        self.wait().await
    }
}

/// Consumes tasks and runs them. Created by [`Server::new_worker`].
#[derive(Clone)]
pub struct Worker {
    server: Server,
    tag: String,
    concurrency: usize,
    queues: Vec<String>,
    hooks: Hooks,
    shutdown: ShutdownHandle,
    /// Set when a running task was interrupted by shutdown.
    interrupted: Arc<AtomicBool>,
    /// Resize to `Config::concurrency` when the server's configuration changes.
    follow_config: bool,
}

impl std::fmt::Debug for Worker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Worker")
            .field("tag", &self.tag)
            .field("concurrency", &self.concurrency)
            .field("queues", &self.queues)
            .finish()
    }
}

/// What a delivery is, once decoded ([`Worker::prepare`]).
enum Prepared {
    /// A registered task, ready to run.
    Run {
        ctx: TaskContext,
        task: Task,
        cancel: CancellationToken,
        span: tracing::Span,
    },
    /// No task of that name here (boxed: the rare case stays small).
    Unregistered {
        sig: Box<Signature>,
        span: tracing::Span,
    },
    /// Not a message a worker can run, with the reason.
    DeadLetter(String),
}

/// What the run of a task came to.
enum Ran {
    Done(TaskOutcome),
    /// The worker aborted while the task ran: give the message back.
    Aborted,
}

impl Worker {
    pub(crate) fn new(
        server: Server,
        tag: String,
        concurrency: usize,
        queue: Option<String>,
    ) -> Self {
        let concurrency = if concurrency == 0 {
            std::thread::available_parallelism().map_or(2, |n| n.get() * 2)
        } else {
            concurrency
        };
        let queue = queue.unwrap_or_else(|| server.config().default_queue.clone());
        Worker {
            server,
            tag,
            concurrency,
            queues: vec![queue],
            hooks: Hooks::default(),
            shutdown: ShutdownHandle::default(),
            interrupted: Arc::new(AtomicBool::new(false)),
            follow_config: false,
        }
    }

    /// Also consume `queue` (after the ones already listed).
    pub fn add_queue(&mut self, queue: impl Into<String>) -> &mut Self {
        self.queues.push(queue.into());
        self
    }

    /// Takes the concurrency from the configuration from now on: `Config::concurrency` at
    /// launch, and again whenever [`Server::set_config`] (or a followed config file) changes it.
    /// Lowering it lets running tasks finish; the worker takes new ones as slots free up.
    pub fn follow_config(&mut self) -> &mut Self {
        self.follow_config = true;
        self.concurrency = self.server.config().effective_concurrency();
        self
    }

    /// The queues consumed, in order.
    pub fn queues(&self) -> &[String] {
        &self.queues
    }

    /// The effective concurrency (0 resolved).
    pub fn concurrency(&self) -> usize {
        self.concurrency
    }

    /// Called with every task failure and every broker error (Go's `SetErrorHandler`).
    pub fn set_error_handler(&mut self, f: impl Fn(&Error) + Send + Sync + 'static) {
        self.hooks.error = Some(Arc::new(f));
    }
    /// Called before each task runs.
    pub fn set_pre_task_handler(&mut self, f: impl Fn(&Signature) + Send + Sync + 'static) {
        self.hooks.pre_task = Some(Arc::new(f));
    }
    /// Called after each task ran, whatever the outcome.
    pub fn set_post_task_handler(&mut self, f: impl Fn(&Signature) + Send + Sync + 'static) {
        self.hooks.post_task = Some(Arc::new(f));
    }
    /// Consulted before each fetch; `false` skips fetching for a moment.
    pub fn set_pre_consume_handler(&mut self, f: impl Fn() -> bool + Send + Sync + 'static) {
        self.hooks.pre_consume = Some(Arc::new(f));
    }

    /// A handle that stops this worker once launched.
    pub fn shutdown_handle(&self) -> ShutdownHandle {
        self.shutdown.clone()
    }

    /// Runs until shut down (by a signal unless `Config::no_unix_signals`, or by a
    /// [`ShutdownHandle`]).
    pub async fn launch(self) -> Result<Stopped> {
        let done = CancellationToken::new();
        if !self.server.config().no_unix_signals {
            // Registered before the first task is taken, so no signal finds the default action.
            match Signals::new() {
                Ok(signals) => spawn_signal_listener(signals, self.shutdown.clone(), done.clone()),
                Err(e) => error!("cannot listen for signals: {e}"),
            }
        }
        let stopped = self.run().await;
        done.cancel();
        stopped
    }

    /// Starts the worker on the tokio runtime and returns at once.
    pub fn launch_async(self) -> WorkerHandle {
        let shutdown = self.shutdown.clone();
        let join = tokio::spawn(self.launch());
        WorkerHandle { shutdown, join }
    }

    fn report(&self, e: &Error) {
        match &self.hooks.error {
            Some(h) => h(e),
            None => error!(worker = %self.tag, "{e}"),
        }
    }

    /// A consumer of the worker's queues, for its server's backend (`Broker::consume_for`).
    async fn consume(&self, prefetch: usize) -> Result<Box<dyn Consumer>> {
        let backend = self.server.backend().as_ref();
        self.server
            .broker()
            .consume_for(&self.queues, prefetch, backend)
            .await
    }

    async fn connect(&self) -> Option<Box<dyn Consumer>> {
        let mut attempt = 0u32;
        loop {
            let prefetch = if self.follow_config {
                self.server.config().effective_concurrency()
            } else {
                self.concurrency
            };
            match self.consume(prefetch).await {
                Ok(c) => return Some(c),
                Err(e) => {
                    self.report(&e);
                    let delay = retry::requeue_delay(attempt, Duration::from_secs(30));
                    attempt = attempt.saturating_add(1);
                    warn!(worker = %self.tag, "cannot consume, retrying in {delay:?}");
                    tokio::select! {
                        _ = self.shutdown.stop.cancelled() => return None,
                        _ = tokio::time::sleep(delay) => {}
                    }
                }
            }
        }
    }

    async fn run(self) -> Result<Stopped> {
        let this = Arc::new(self);
        this.run_loop().await
    }

    async fn run_loop(self: &Arc<Self>) -> Result<Stopped> {
        // A target of its own under this module's: a filter can let this line through and
        // nothing else of the worker's (the bench's children do, to see them ready without
        // the per-task span being enabled).
        info!(
            target: "machinist_core::worker::started",
            worker = %self.tag,
            broker = %self.server.broker().describe(),
            backend = %self.server.backend().describe(),
            queues = ?self.queues,
            concurrency = self.concurrency,
            "worker started"
        );
        // Shutdown's first step: the server's periodic scheduler stops.
        self.server.stop_periodic_on(self.shutdown.stop.clone());
        let slots = Arc::new(Semaphore::new(self.concurrency));
        let tracker = TaskTracker::new();
        let Some(mut consumer) = self.connect().await else {
            return Ok(Stopped::Gracefully);
        };
        let mut failures = 0u32;
        let mut config_updates = self.server.subscribe_config();
        let mut target = self.concurrency;
        let mut following = self.follow_config;
        loop {
            let permit = tokio::select! {
                biased;
                _ = self.shutdown.stop.cancelled() => break,
                changed = config_updates.changed(), if following => {
                    if changed.is_err() {
                        following = false;
                        continue;
                    }
                    let wanted = config_updates.borrow_and_update().effective_concurrency();
                    if wanted != target {
                        // A consumer's prefetch is fixed when it starts: take a new one.
                        if let Err(e) = consumer.stop().await {
                            self.report(&e);
                        }
                        match self.consume(wanted).await {
                            Ok(c) => consumer = c,
                            Err(e) => {
                                self.report(&e);
                                let Some(c) = self.connect().await else { break };
                                consumer = c;
                            }
                        }
                        target = resize(&slots, target, wanted);
                    }
                    continue;
                }
                p = slots.clone().acquire_owned() => match p {
                    Ok(p) => p,
                    Err(_) => break,
                },
            };
            if let Some(h) = &self.hooks.pre_consume
                && !h()
            {
                drop(permit);
                tokio::select! {
                    _ = self.shutdown.stop.cancelled() => break,
                    _ = tokio::time::sleep(Duration::from_millis(100)) => {}
                }
                continue;
            }
            let next = tokio::select! {
                biased;
                _ = self.shutdown.stop.cancelled() => break,
                d = consumer.next() => d,
            };
            match next {
                Ok(Some(delivery)) => {
                    failures = 0;
                    let me = Arc::clone(self);
                    // Boxed: the task's future is large, and tokio moves a spawned future
                    // several times before it first runs; a box moves as a pointer.
                    tracker.spawn(Box::pin(async move {
                        me.handle(&delivery).await;
                        drop((delivery, permit));
                    }));
                }
                Ok(None) => break,
                Err(e) => {
                    drop(permit);
                    self.report(&e);
                    let delay = retry::requeue_delay(failures, Duration::from_secs(30));
                    failures = failures.saturating_add(1);
                    tokio::select! {
                        _ = self.shutdown.stop.cancelled() => break,
                        _ = tokio::time::sleep(delay) => {}
                    }
                }
            }
        }
        info!(worker = %self.tag, running = tracker.len(), "stopping: no new tasks are taken");
        if let Err(e) = consumer.stop().await {
            self.report(&e);
        }
        tracker.close();
        let timeout = self.server.config().shutdown_timeout;
        let drained = tokio::select! {
            biased;
            _ = self.shutdown.abort.cancelled() => false,
            _ = tracker.wait() => true,
            _ = tokio::time::sleep(timeout) => false,
        };
        if !drained {
            warn!(worker = %self.tag, running = tracker.len(), "returning running tasks to the broker");
            self.shutdown.abort();
            tracker.wait().await;
        }
        if let Err(e) = consumer.flush().await {
            self.report(&e);
        }
        let stopped = if self.interrupted.load(Ordering::Relaxed) {
            Stopped::Abruptly
        } else {
            Stopped::Gracefully
        };
        info!(worker = %self.tag, ?stopped, "worker stopped");
        Ok(stopped)
    }

    /// Handles one delivery from start to acknowledgement. Never panics, whatever the message.
    async fn handle(&self, delivery: &Delivery) {
        // Read once per task: the fields used below apply to the next task when changed.
        let config = self.server.config();
        // Everything up to the first await happens in `prepare`, so that no decoded signature
        // is held in this future (it is moved into its tokio task whole, once per delivery).
        match self.prepare(delivery, &config) {
            Prepared::Run {
                ctx,
                task,
                cancel,
                span,
            } => {
                self.process(delivery, ctx, task, cancel, &config)
                    .instrument(span)
                    .await;
            }
            Prepared::Unregistered { sig, span } => {
                Box::pin(self.unregistered(delivery, *sig))
                    .instrument(span)
                    .await;
            }
            Prepared::DeadLetter(reason) => Box::pin(self.dead_letter(delivery, &reason)).await,
        }
    }

    /// Decodes the delivery and finds its task.
    fn prepare(&self, delivery: &Delivery, config: &Config) -> Prepared {
        let max = config.max_message_size;
        if delivery.body.len() > max {
            return Prepared::DeadLetter(
                Error::MessageTooLarge {
                    size: delivery.body.len(),
                    max,
                }
                .to_string(),
            );
        }
        let sig = match delivery.signature() {
            Ok(sig) if !sig.name.is_empty() => sig,
            Ok(_) => return Prepared::DeadLetter("message has no task name".to_owned()),
            Err(e) => return Prepared::DeadLetter(format!("undecodable message: {e}")),
        };
        let span = tracing::info_span!("task", name = %sig.name, uuid = %sig.uuid);
        trace::extract(sig.headers.as_ref(), &span);
        let Some(task) = self.server.get_task(&sig.name) else {
            return Prepared::Unregistered {
                sig: Box::new(sig),
                span,
            };
        };
        let attempt = header_u32(&sig, ATTEMPT_HEADER).max(1);
        // The task's own token (not a child of the worker's abort token, which would lock that
        // token's tree twice per task): `run_guarded` cancels it on a time limit and when the
        // worker aborts.
        let cancel = CancellationToken::new();
        // The signature moves into the context for the run (no copy per task), so the task's
        // future holds it behind the context's `Arc`.
        let ctx = TaskContext::new(sig, attempt, cancel.clone());
        Prepared::Run {
            ctx,
            task,
            cancel,
            span,
        }
    }

    async fn dead_letter(&self, delivery: &Delivery, reason: &str) {
        error!(worker = %self.tag, queue = %delivery.queue, "dead-lettering message: {reason}");
        metrics::dead_lettered(&delivery.queue);
        if let Err(e) = delivery.dead_letter(reason).await {
            self.report(&e);
            // Keep the message rather than lose it.
            let _ = delivery.nack(true).await;
        }
    }

    /// Settles a delivery whose outcome could not be stored: give it back after a pause, so a
    /// backend outage does not become a hot loop.
    async fn give_back(&self, delivery: &Delivery, e: &Error) {
        self.report(e);
        tokio::select! {
            _ = self.shutdown.abort.cancelled() => {}
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
        if let Err(e) = delivery.nack(true).await {
            self.report(&e);
        }
    }

    async fn ack(&self, delivery: &Delivery) {
        if let Err(e) = delivery.ack().await {
            self.report(&e);
        }
    }

    /// Runs a registered task from RECEIVED to its final state and settles its delivery.
    async fn process(
        &self,
        delivery: &Delivery,
        ctx: TaskContext,
        task: Task,
        cancel: CancellationToken,
        config: &Config,
    ) {
        let backend = self.server.backend().clone();
        let sig = ctx.signature();
        let task_metrics = task.metrics(&sig.name);
        let mut state_ctx = StateContext::of(sig);
        if let Some(stored) = &delivery.stored_state {
            state_ctx.learn_stored(&sig.uuid, stored);
        }
        // The arguments are decoded first, so that RECEIVED and STARTED, which follow each
        // other, go to the backend together (one round trip on Redis).
        let fut = match task.call(ctx.clone(), &sig.args) {
            Ok(fut) => fut,
            Err(e) => {
                // Go's order: RECEIVED, then the arguments fail the task.
                let received = TaskState::received(&sig.uuid);
                if let Err(e) = backend.set_task_state(&mut state_ctx, &received).await {
                    Box::pin(self.give_back(delivery, &e)).await;
                    return;
                }
                let text = format!("{}: {e}", sig.name);
                Box::pin(self.finish_failed(delivery, sig, &mut state_ctx, task_metrics, &text))
                    .await;
                return;
            }
        };
        let first = [
            TaskState::received(&sig.uuid),
            TaskState::started(&sig.uuid),
        ];
        if let Err(e) = backend.set_task_states(&mut state_ctx, &first).await {
            Box::pin(self.give_back(delivery, &e)).await;
            return;
        }
        drop(first);
        if let Some(h) = &self.hooks.pre_task {
            h(sig);
        }
        let limit = task.time_limit.or(config.task_time_limit);
        let timer = task_metrics.started();
        let ran = self
            .run_guarded(fut, delivery, limit, config.time_limit_grace, &cancel)
            .await;
        task_metrics.ran(timer);
        if let Some(h) = &self.hooks.post_task {
            h(sig);
        }
        let outcome = match ran {
            Ran::Done(o) => o,
            Ran::Aborted => {
                self.interrupted.store(true, Ordering::Relaxed);
                warn!(uuid = %sig.uuid, "task interrupted by shutdown; message returned");
                if let Err(e) = delivery.nack(true).await {
                    self.report(&e);
                }
                return;
            }
        };
        match outcome {
            Ok(results) => {
                self.finish_success(delivery, sig, &mut state_ctx, task_metrics, results)
                    .await;
            }
            Err(TaskError::RetryLater { after, reason }) => {
                let n = header_u32(sig, RETRY_LATER_HEADER);
                if n >= config.max_retry_later {
                    let text =
                        format!("{reason} (gave up after {n} retries requested by the task)");
                    Box::pin(self.finish_failed(
                        delivery,
                        sig,
                        &mut state_ctx,
                        task_metrics,
                        &text,
                    ))
                    .await;
                } else {
                    // The task's future (and with it its handles to the context) is gone: the
                    // signature comes back without a copy unless the task kept its context.
                    let mut sig = ctx.into_signature();
                    set_header(&mut sig, RETRY_LATER_HEADER, n + 1);
                    Box::pin(self.retry(delivery, sig, &mut state_ctx, task_metrics, after)).await;
                }
            }
            Err(TaskError::Failed(text)) if sig.retry_count > 0 => {
                let mut sig = ctx.into_signature();
                sig.retry_count -= 1;
                sig.retry_timeout = retry::fibonacci_next(sig.retry_timeout);
                let delay = Duration::from_secs(u64::try_from(sig.retry_timeout).unwrap_or(1));
                info!(uuid = %sig.uuid, error = %text, "task failed, retrying in {delay:?}");
                Box::pin(self.retry(delivery, sig, &mut state_ctx, task_metrics, delay)).await;
            }
            Err(TaskError::Fatal(text) | TaskError::Failed(text)) => {
                Box::pin(self.finish_failed(delivery, sig, &mut state_ctx, task_metrics, &text))
                    .await;
            }
        }
    }

    /// Runs the task future with a panic guard, the time limit and lease renewal.
    async fn run_guarded(
        &self,
        fut: crate::task::BoxFuture<TaskOutcome>,
        delivery: &Delivery,
        limit: Option<Duration>,
        grace: Duration,
        cancel: &CancellationToken,
    ) -> Ran {
        let mut fut = AssertUnwindSafe(fut).catch_unwind();
        let finished = |res: std::thread::Result<TaskOutcome>| {
            Ran::Done(match res {
                Ok(outcome) => outcome,
                Err(panic) => Err(TaskError::Failed(panic_text(panic.as_ref()))),
            })
        };
        let lease = delivery.lease();
        if lease.is_none() && limit.is_none() {
            // Nothing to renew, no time limit (the usual case): no timers at all, and a first
            // poll before waiting on the abort token (registering with it takes its lock
            // twice), which is where most tasks finish.
            if !self.shutdown.aborting.load(Ordering::Acquire)
                && let Poll::Ready(res) =
                    std::future::poll_fn(|cx| Poll::Ready(fut.poll_unpin(cx))).await
            {
                return finished(res);
            }
            return tokio::select! {
                biased;
                _ = self.shutdown.abort.cancelled() => {
                    // A blocking task's thread keeps running: tell it to stop.
                    cancel.cancel();
                    Ran::Aborted
                }
                res = &mut fut => finished(res),
            };
        }
        let mut renew = lease.map(|l| {
            let every = (l / 2)
                .max(Duration::from_millis(10))
                .min(Duration::from_secs(86_400 * 365));
            tokio::time::interval_at(tokio::time::Instant::now() + every, every)
        });
        let deadline = limit.map(|l| tokio::time::Instant::now() + l);
        let mut limit_hit = false;
        loop {
            let limit_sleep = async {
                match deadline {
                    Some(d) if !limit_hit => tokio::time::sleep_until(d).await,
                    Some(d) => tokio::time::sleep_until(d + grace).await,
                    None => std::future::pending::<()>().await,
                }
            };
            let renew_tick = async {
                match &mut renew {
                    Some(renew) => {
                        renew.tick().await;
                    }
                    None => std::future::pending::<()>().await,
                }
            };
            tokio::select! {
                biased;
                _ = self.shutdown.abort.cancelled() => {
                    cancel.cancel();
                    return Ran::Aborted;
                }
                res = &mut fut => {
                    if limit_hit {
                        return Ran::Done(Err(TaskError::Failed("time limit exceeded".into())));
                    }
                    return finished(res);
                }
                () = renew_tick => {
                    if let Some(l) = lease
                        && let Err(e) = delivery.extend(l).await
                    {
                        self.report(&e);
                    }
                }
                _ = limit_sleep => {
                    if limit_hit {
                        return Ran::Done(Err(TaskError::Failed("time limit exceeded".into())));
                    }
                    limit_hit = true;
                    cancel.cancel();
                }
            }
        }
    }

    /// Sends the task again with an ETA `after` from now: state RETRY, then (through
    /// `send_task`) PENDING, then the old delivery is acknowledged.
    async fn retry(
        &self,
        delivery: &Delivery,
        mut sig: Signature,
        state_ctx: &mut StateContext,
        task_metrics: &TaskMetrics,
        after: Duration,
    ) {
        let backend = self.server.backend();
        let attempt = header_u32(&sig, ATTEMPT_HEADER).max(1);
        set_header(&mut sig, ATTEMPT_HEADER, attempt + 1);
        sig.eta =
            Some(Utc::now() + chrono::Duration::from_std(after).unwrap_or(chrono::Duration::MAX));
        if let Err(e) = backend
            .set_task_state(state_ctx, &TaskState::retry(&sig.uuid))
            .await
        {
            Box::pin(self.give_back(delivery, &e)).await;
            return;
        }
        task_metrics.state(Outcome::Retry);
        if let Err(e) = self.server.send_task(sig).await {
            Box::pin(self.give_back(delivery, &e)).await;
            return;
        }
        self.ack(delivery).await;
    }

    async fn finish_success(
        &self,
        delivery: &Delivery,
        sig: &Signature,
        state_ctx: &mut StateContext,
        task_metrics: &TaskMetrics,
        results: Vec<TaskResult>,
    ) {
        let backend = self.server.backend();
        let success = TaskState::success(&sig.uuid, results);
        if let Err(e) = backend.set_task_state(state_ctx, &success).await {
            Box::pin(self.give_back(delivery, &e)).await;
            return;
        }
        task_metrics.state(Outcome::Success);
        debug!(uuid = %sig.uuid, "task succeeded");
        let results = success.results.as_deref().unwrap_or_default();
        let mut follow_up = Ok(());
        for cb in &sig.on_success {
            let mut cb = cb.clone();
            if !sig.immutable {
                cb.args.extend(results.iter().map(TaskResult::to_arg));
            }
            if let Err(e) = Box::pin(self.send_follow_up(cb)).await {
                follow_up = Err(e);
            }
        }
        // Boxed, as every path but the usual one: the task's future stays small (it is moved
        // into its tokio task whole).
        if follow_up.is_ok() && sig.chord_callback.is_some() {
            follow_up = Box::pin(self.maybe_trigger_chord(sig)).await;
        }
        match follow_up {
            Ok(()) => self.ack(delivery).await,
            // A callback or the chord could not be sent: keep the message, so the task runs
            // again (at-least-once) rather than the workflow stopping silently.
            Err(e) => Box::pin(self.give_back(delivery, &e)).await,
        }
    }

    /// Sends a callback, retrying a few times in place so a short broker or backend blip does
    /// not cost a whole task re-run.
    async fn send_follow_up(&self, sig: Signature) -> Result<()> {
        let mut attempt = 0u32;
        loop {
            match self.server.send_task(sig.clone()).await {
                Ok(_) => return Ok(()),
                Err(e) if attempt < 3 => {
                    self.report(&e);
                    let delay = Duration::from_millis(100 * 4u64.pow(attempt));
                    attempt += 1;
                    tokio::time::sleep(delay).await;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// After a group member succeeded: if the whole group is done, exactly one worker sends the
    /// chord callback (or, if a member failed, stores the callback as FAILURE naming it).
    async fn maybe_trigger_chord(&self, sig: &Signature) -> Result<()> {
        let Some(callback) = &sig.chord_callback else {
            return Ok(());
        };
        if sig.group_uuid.is_empty() {
            return Ok(());
        }
        let backend = self.server.backend();
        let count = usize::try_from(sig.group_task_count).unwrap_or(0);
        let states = match backend
            .group_member_completed(&sig.group_uuid, count, true)
            .await?
        {
            GroupProgress::Incomplete => return Ok(()),
            GroupProgress::Complete => {
                if !backend.trigger_chord(&sig.group_uuid).await? {
                    return Ok(());
                }
                backend.group_states(&sig.group_uuid, count).await?
            }
            GroupProgress::CompleteWith(states) => {
                if !backend.trigger_chord(&sig.group_uuid).await? {
                    return Ok(());
                }
                states
            }
        };
        if let Some(failed) = states.iter().find(|s| !s.is_success()) {
            let text = chord_failure_text(&failed.task_uuid, &failed.task_name, &failed.error);
            return backend
                .set_task_state(
                    &mut StateContext::of(callback),
                    &TaskState::failure(&callback.uuid, text),
                )
                .await;
        }
        let mut cb = (**callback).clone();
        if !cb.immutable {
            for s in &states {
                cb.args
                    .extend(s.results.iter().flatten().map(TaskResult::to_arg));
            }
        }
        info!(group = %sig.group_uuid, callback = %cb.uuid, "group complete, sending chord callback");
        self.send_follow_up(cb).await
    }

    async fn finish_failed(
        &self,
        delivery: &Delivery,
        sig: &Signature,
        state_ctx: &mut StateContext,
        task_metrics: &TaskMetrics,
        text: &str,
    ) {
        let backend = self.server.backend();
        if let Err(e) = backend
            .set_task_state(state_ctx, &TaskState::failure(&sig.uuid, text))
            .await
        {
            self.give_back(delivery, &e).await;
            return;
        }
        task_metrics.state(Outcome::Failure);
        self.report(&Error::TaskFailed(format!(
            "task {} ({}) failed: {text}",
            sig.name, sig.uuid
        )));
        for cb in &sig.on_error {
            let mut cb = cb.clone();
            cb.args.insert(0, Arg::new(text));
            if let Err(e) = self.send_follow_up(cb).await {
                self.report(&e);
            }
        }
        if let Some(callback) = &sig.chord_callback
            && !sig.group_uuid.is_empty()
        {
            let failure = TaskState::failure(
                &callback.uuid,
                chord_failure_text(&sig.uuid, &sig.name, text),
            );
            if let Err(e) = backend
                .set_task_state(&mut StateContext::of(callback), &failure)
                .await
            {
                self.report(&e);
            }
            // Counted like a success (a backend that counts completions reaches the group's
            // size only with the failures), but never fires the chord itself.
            let count = usize::try_from(sig.group_task_count).unwrap_or(0);
            if let Err(e) = backend
                .group_member_completed(&sig.group_uuid, count, false)
                .await
            {
                self.report(&e);
            }
        }
        self.ack(delivery).await;
    }

    /// No task of that name here: drop it if the message says so, else requeue it to its own
    /// routing key with back-off, and dead-letter it after `unregistered_max_requeues`.
    async fn unregistered(&self, delivery: &Delivery, mut sig: Signature) {
        if sig.ignore_when_task_not_registered {
            debug!(name = %sig.name, uuid = %sig.uuid, "dropping task nobody registered");
            self.ack(delivery).await;
            return;
        }
        let config = self.server.config();
        let n = header_u32(&sig, UNREGISTERED_HEADER);
        if n >= config.unregistered_max_requeues {
            let reason = format!("task {:?} is not registered (requeued {n} times)", sig.name);
            self.dead_letter(delivery, &reason).await;
            return;
        }
        let delay = retry::requeue_delay(n, config.unregistered_max_backoff);
        warn!(name = %sig.name, uuid = %sig.uuid, "task not registered here; requeued in {delay:?}");
        set_header(&mut sig, UNREGISTERED_HEADER, n + 1);
        sig.eta =
            Some(Utc::now() + chrono::Duration::from_std(delay).unwrap_or(chrono::Duration::MAX));
        if sig.routing_key.is_empty() {
            sig.routing_key.clone_from(&delivery.queue);
        }
        match self.server.publish(&sig).await {
            Ok(()) => self.ack(delivery).await,
            Err(e) => self.give_back(delivery, &e).await,
        }
    }
}

/// Moves the number of task slots from `current` to `wanted`: new permits at once when it grows;
/// when it shrinks, a background task takes the surplus permits as running tasks release them.
fn resize(slots: &Arc<Semaphore>, current: usize, wanted: usize) -> usize {
    use std::cmp::Ordering as Cmp;
    match wanted.cmp(&current) {
        Cmp::Greater => slots.add_permits(wanted - current),
        Cmp::Less => {
            // Free slots go at once; the rest as running tasks finish.
            let mut surplus = current - wanted;
            while surplus > 0 {
                match slots.try_acquire() {
                    Ok(p) => p.forget(),
                    Err(_) => break,
                }
                surplus -= 1;
            }
            if surplus > 0 {
                let surplus = u32::try_from(surplus).unwrap_or(u32::MAX);
                let slots = Arc::clone(slots);
                tokio::spawn(async move {
                    if let Ok(p) = slots.acquire_many_owned(surplus).await {
                        p.forget();
                    }
                });
            }
        }
        Cmp::Equal => return current,
    }
    info!(from = current, to = wanted, "worker concurrency changed");
    wanted
}

fn chord_failure_text(uuid: &str, name: &str, error: &str) -> String {
    format!("chord member {uuid} ({name}) failed: {error}")
}

fn header_u32(sig: &Signature, key: &str) -> u32 {
    sig.headers
        .as_ref()
        .and_then(|h| h.get(key))
        .and_then(|v| v.as_u64())
        .map_or(0, |n| u32::try_from(n).unwrap_or(u32::MAX))
}

fn set_header(sig: &mut Signature, key: &str, value: u32) {
    sig.headers
        .get_or_insert_with(Default::default)
        .insert(key, value);
}

/// The text of a panic payload: the message of `panic!("…")`, else a generic text.
fn panic_text(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else if let Some(e) = payload.downcast_ref::<Box<dyn std::error::Error + Send + Sync>>() {
        e.to_string()
    } else {
        "task panicked".to_owned()
    }
}

/// First SIGINT/SIGTERM: graceful; second: abort. Ends when the worker stopped (`done`).
fn spawn_signal_listener(mut signals: Signals, shutdown: ShutdownHandle, done: CancellationToken) {
    tokio::spawn(async move {
        let mut seen = 0;
        loop {
            tokio::select! {
                _ = done.cancelled() => return,
                () = signals.recv() => {}
            }
            seen += 1;
            if seen == 1 {
                info!("signal received: waiting for running tasks to finish (send again to abort)");
                shutdown.graceful();
            } else {
                warn!("second signal: aborting running tasks");
                shutdown.abort();
                return;
            }
        }
    });
}

/// SIGINT and SIGTERM, registered once so that no signal between two waits is missed.
#[cfg(unix)]
struct Signals {
    int: tokio::signal::unix::Signal,
    term: tokio::signal::unix::Signal,
}

#[cfg(unix)]
impl Signals {
    fn new() -> std::io::Result<Self> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Signals {
            int: signal(SignalKind::interrupt())?,
            term: signal(SignalKind::terminate())?,
        })
    }
    async fn recv(&mut self) {
        tokio::select! {
            _ = self.int.recv() => {}
            _ = self.term.recv() => {}
        }
    }
}

/// Ctrl-C, where there are no unix signals.
#[cfg(not(unix))]
struct Signals;

#[cfg(not(unix))]
impl Signals {
    fn new() -> std::io::Result<Self> {
        Ok(Signals)
    }
    async fn recv(&mut self) {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}
