//! [`MemoryBroker`]: a [`Broker`] that lives in the process's memory.
//!
//! It exists so that unit tests, the quickstart and users' own tests can run the whole
//! producer → worker path without a network service (Go Machinery's "eager" mode), with the same
//! contract as the real brokers: ETAs kept by the broker, acknowledgements, at-least-once
//! redelivery of anything not acknowledged, prefetch bounds and dead letters.
//!
//! ## How it works
//!
//! * One `std::sync::Mutex` guards every queue; it is never held across an `.await`. Queues are
//!   `VecDeque`s addressed by an index resolved once per consumer, so a pop is O(1).
//! * Each queue has a [`Notify`]. A publish wakes one waiting consumer (`notify_one`); consumers
//!   register interest (`Notified::enable`) before looking at the queues, so no wake-up is lost.
//! * Messages with a future ETA sit in a `BTreeMap` ordered by due time (O(log n)). One
//!   background task, spawned on first use and holding only a `Weak` reference, sleeps until the
//!   earliest due time (woken early when an earlier message arrives) and moves due messages to
//!   their queues in ETA order. It ends when the broker is closed or dropped.
//! * ETAs are turned into [`tokio::time::Instant`]s when published (`now + (eta - Utc::now())`),
//!   so tests with a paused tokio clock see them become visible after `advance`.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::future::poll_fn;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::task::Poll;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use tokio::sync::futures::Notified;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, TryAcquireError};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::broker::{Acknowledger, Broker, Consumer, Delivery};
use crate::error::{Error, Result};
use crate::signature::Signature;

/// The longest delay honoured exactly; later ETAs are clamped (about a century).
const MAX_DELAY: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// An in-memory [`Broker`] for tests and single-process use.
///
/// Cloning is cheap and every clone shares the same queues. Messages are kept until consumed
/// and acknowledged; [`Broker::close`] stops consumers (their `next()` returns `Ok(None)`) and
/// rejects further publishes, but keeps what is stored.
///
/// Behaviour, per operation:
///
/// * `publish`: an ETA in the future parks the message until then, otherwise it is appended to
///   the queue named by `signature.routing_key`.
/// * `consume(queues, prefetch)`: each `next()` pops from the first non-empty queue of `queues`
///   (earlier ones first), waiting without polling. `prefetch` bounds the unacknowledged
///   deliveries the consumer holds; `0` means unbounded.
/// * Each delivery must be decided: `ack` forgets it, `nack(true)` puts it back at the *front*
///   of its queue, `nack(false)` drops it, `dead_letter` sets it aside (see
///   [`Broker::dead_letters`]). A delivery dropped undecided is requeued at the front (at-least-
///   once). Deciding twice is a no-op. Requeued messages count a redelivery.
#[derive(Clone)]
pub struct MemoryBroker {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for MemoryBroker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryBroker")
            .field("in_flight", &self.in_flight())
            .field("closed", &self.inner.closed.load(Ordering::Relaxed))
            .finish()
    }
}

impl Default for MemoryBroker {
    fn default() -> Self {
        Self::new()
    }
}

struct Inner {
    state: Mutex<State>,
    /// Set by `close()`; checked by consumers after they registered for wake-ups.
    closed: AtomicBool,
    /// Cancelled by `close()`: wakes every waiting consumer.
    shutdown: CancellationToken,
    /// Wakes the ETA task: an earlier message arrived, or the broker closed or dropped.
    timer_wake: Arc<Notify>,
    /// Deliveries handed out and not yet decided.
    in_flight: AtomicUsize,
}

#[derive(Default)]
struct State {
    /// Queue name → index into `queues`. Queues are never removed, so indices are stable.
    index: HashMap<String, usize, super::FastHash>,
    queues: Vec<Queue>,
    /// Messages waiting for their ETA, by (due time, publish sequence).
    delayed: BTreeMap<(Instant, u64), Delayed>,
    /// Publish sequence: breaks ties between equal due times and equal ETAs.
    seq: u64,
    /// The ETA task, if started.
    timer: Option<JoinHandle<()>>,
}

struct Queue {
    messages: VecDeque<Message>,
    dead: Vec<(String, Bytes)>,
    notify: Arc<Notify>,
}

struct Message {
    body: Bytes,
    redeliveries: u32,
}

struct Delayed {
    queue: usize,
    eta: DateTime<Utc>,
    body: Bytes,
}

impl State {
    /// The index of queue `name`, created empty if needed.
    fn queue_index(&mut self, name: &str) -> usize {
        if let Some(&i) = self.index.get(name) {
            return i;
        }
        let i = self.queues.len();
        self.queues.push(Queue {
            messages: VecDeque::new(),
            dead: Vec::new(),
            notify: Arc::new(Notify::new()),
        });
        self.index.insert(name.to_owned(), i);
        i
    }

    fn queue(&self, name: &str) -> Option<&Queue> {
        self.index.get(name).map(|&i| &self.queues[i])
    }

    /// Appends to queue `i` and wakes one consumer.
    fn push_back(&mut self, i: usize, message: Message) {
        let queue = &mut self.queues[i];
        queue.messages.push_back(message);
        queue.notify.notify_one();
    }

    /// Moves every message due at `now` to its queue, in ETA order; returns the next due time.
    fn promote_due(&mut self, now: Instant) -> Option<Instant> {
        let mut due = Vec::new();
        while let Some(entry) = self.delayed.first_entry() {
            if entry.key().0 > now {
                break;
            }
            let ((_, seq), delayed) = entry.remove_entry();
            due.push((seq, delayed));
        }
        // Due times come from ETAs converted at publish time; order the batch by the ETAs
        // themselves so that messages becoming due together keep their ETA order.
        due.sort_by_key(|(seq, d)| (d.eta, *seq));
        for (_, d) in due {
            self.push_back(
                d.queue,
                Message {
                    body: d.body,
                    redeliveries: 0,
                },
            );
        }
        self.delayed.keys().next().map(|(at, _)| *at)
    }
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, State> {
        // No code path panics while holding the lock with the state half-updated.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        let state = self.state.get_mut().unwrap_or_else(|e| e.into_inner());
        if let Some(timer) = state.timer.take() {
            timer.abort();
        }
        self.timer_wake.notify_one();
    }
}

/// The ETA task: sleeps until the earliest due time and moves due messages to their queues.
/// Holds only a `Weak` reference between rounds, so it ends once the broker is gone.
async fn run_timer(broker: Weak<Inner>, wake: Arc<Notify>) {
    loop {
        let notified = wake.notified();
        tokio::pin!(notified);
        // Registered before reading the delayed set: a wake sent after this is not lost.
        notified.as_mut().enable();
        let next = {
            let Some(inner) = broker.upgrade() else {
                return;
            };
            if inner.is_closed() {
                return;
            }
            inner.lock().promote_due(Instant::now())
        };
        match next {
            Some(at) => {
                tokio::select! {
                    () = tokio::time::sleep_until(at) => {}
                    () = &mut notified => {}
                }
            }
            None => notified.await,
        }
    }
}

impl MemoryBroker {
    /// An empty broker.
    pub fn new() -> Self {
        MemoryBroker {
            inner: Arc::new(Inner {
                state: Mutex::new(State::default()),
                closed: AtomicBool::new(false),
                shutdown: CancellationToken::new(),
                timer_wake: Arc::new(Notify::new()),
                in_flight: AtomicUsize::new(0),
            }),
        }
    }

    /// How many messages wait in `queue` (not counting delayed or in-flight ones).
    pub fn len(&self, queue: &str) -> usize {
        self.inner
            .lock()
            .queue(queue)
            .map_or(0, |q| q.messages.len())
    }

    /// How many messages wait for their ETA, over all queues.
    pub fn delayed_len(&self) -> usize {
        self.inner.lock().delayed.len()
    }

    /// How many deliveries are handed out and not yet acknowledged, nacked or dead-lettered.
    pub fn in_flight(&self) -> usize {
        self.inner.in_flight.load(Ordering::Acquire)
    }

    /// Parks a message until `due`, starting the ETA task if it is not running.
    fn park(&self, queue: &str, eta: DateTime<Utc>, due: Instant, body: Bytes) -> Result<()> {
        let mut state = self.inner.lock();
        let needs_timer = state.timer.as_ref().is_none_or(JoinHandle::is_finished);
        if needs_timer {
            let runtime = tokio::runtime::Handle::try_current().map_err(Error::broker)?;
            let task = run_timer(
                Arc::downgrade(&self.inner),
                Arc::clone(&self.inner.timer_wake),
            );
            state.timer = Some(runtime.spawn(task));
        }
        let queue = state.queue_index(queue);
        state.seq += 1;
        let key = (due, state.seq);
        let earliest = state.delayed.keys().next().is_none_or(|first| key < *first);
        state.delayed.insert(key, Delayed { queue, eta, body });
        drop(state);
        if earliest && !needs_timer {
            self.inner.timer_wake.notify_one();
        }
        Ok(())
    }
}

#[async_trait]
impl Broker for MemoryBroker {
    async fn publish(&self, signature: &Signature, body: Bytes) -> Result<()> {
        if self.inner.is_closed() {
            return Err(Error::Shutdown);
        }
        if let Some(eta) = signature.eta {
            // A negative or zero delay means "now".
            if let Ok(delay) = (eta - Utc::now()).to_std()
                && !delay.is_zero()
            {
                let due = Instant::now() + delay.min(MAX_DELAY);
                return self.park(&signature.routing_key, eta, due, body);
            }
        }
        let mut state = self.inner.lock();
        let queue = state.queue_index(&signature.routing_key);
        state.push_back(
            queue,
            Message {
                body,
                redeliveries: 0,
            },
        );
        Ok(())
    }

    async fn consume(&self, queues: &[String], prefetch: usize) -> Result<Box<dyn Consumer>> {
        if queues.is_empty() {
            return Err(Error::Config("consume needs at least one queue".into()));
        }
        let mut state = self.inner.lock();
        let mut watched = Vec::with_capacity(queues.len());
        for name in queues {
            let i = state.queue_index(name);
            if !watched.iter().any(|w: &Watched| w.index == i) {
                watched.push(Watched {
                    index: i,
                    name: name.clone(),
                    notify: Arc::clone(&state.queues[i].notify),
                });
            }
        }
        drop(state);
        let permits = if prefetch == 0 {
            Semaphore::MAX_PERMITS
        } else {
            prefetch.min(Semaphore::MAX_PERMITS)
        };
        Ok(Box::new(MemoryConsumer {
            inner: Arc::clone(&self.inner),
            queues: watched,
            permits: Arc::new(Semaphore::new(permits)),
            stopped: false,
        }))
    }

    async fn pending(&self, queue: &str, limit: usize) -> Result<Vec<Bytes>> {
        let state = self.inner.lock();
        Ok(state.queue(queue).map_or_else(Vec::new, |q| {
            q.messages
                .iter()
                .take(limit)
                .map(|m| m.body.clone())
                .collect()
        }))
    }

    async fn delayed(&self, limit: usize) -> Result<Vec<(DateTime<Utc>, Bytes)>> {
        let state = self.inner.lock();
        let mut all: Vec<_> = state
            .delayed
            .iter()
            .map(|((_, seq), d)| (d.eta, *seq, d.body.clone()))
            .collect();
        drop(state);
        all.sort_unstable_by_key(|(eta, seq, _)| (*eta, *seq));
        Ok(all
            .into_iter()
            .take(limit)
            .map(|(eta, _, body)| (eta, body))
            .collect())
    }

    async fn dead_letters(&self, queue: &str, limit: usize) -> Result<Vec<(String, Bytes)>> {
        let state = self.inner.lock();
        Ok(state
            .queue(queue)
            .map_or_else(Vec::new, |q| q.dead.iter().take(limit).cloned().collect()))
    }

    async fn purge(&self, queue: &str) -> Result<u64> {
        let mut state = self.inner.lock();
        let Some(&i) = state.index.get(queue) else {
            return Ok(0);
        };
        let messages = &mut state.queues[i].messages;
        let count = messages.len() as u64;
        messages.clear();
        Ok(count)
    }

    fn describe(&self) -> String {
        "memory".to_owned()
    }

    async fn close(&self) {
        self.inner.closed.store(true, Ordering::Release);
        self.inner.shutdown.cancel();
        self.inner.timer_wake.notify_one();
    }
}

/// A queue a consumer reads, resolved once.
struct Watched {
    index: usize,
    name: String,
    notify: Arc<Notify>,
}

struct MemoryConsumer {
    inner: Arc<Inner>,
    /// In priority order, without duplicates.
    queues: Vec<Watched>,
    /// One permit per delivery held unacknowledged.
    permits: Arc<Semaphore>,
    stopped: bool,
}

impl MemoryConsumer {
    /// Pops from the first non-empty queue. After a wake-up (`woken`), re-wakes the queues
    /// still holding messages: the notification consumed may have been meant for a queue this
    /// consumer did not pop from, and another consumer may be waiting for it.
    fn try_pop(&self, woken: bool) -> Option<(usize, Message)> {
        let mut state = self.inner.lock();
        for (pos, watched) in self.queues.iter().enumerate() {
            if let Some(message) = state.queues[watched.index].messages.pop_front() {
                if woken {
                    for other in &self.queues {
                        if !state.queues[other.index].messages.is_empty() {
                            other.notify.notify_one();
                        }
                    }
                }
                return Some((pos, message));
            }
        }
        None
    }

    fn deliver(&self, pos: usize, message: Message, permit: OwnedSemaphorePermit) -> Delivery {
        let watched = &self.queues[pos];
        self.inner.in_flight.fetch_add(1, Ordering::AcqRel);
        let acker = MemoryAcker {
            inner: Arc::clone(&self.inner),
            queue: watched.index,
            held: Mutex::new(Some(Held {
                body: message.body.clone(),
                redeliveries: message.redeliveries,
                _permit: permit,
            })),
        };
        let mut delivery = Delivery::new(watched.name.clone(), message.body, Box::new(acker));
        delivery.redeliveries = message.redeliveries;
        delivery
    }
}

#[async_trait]
impl Consumer for MemoryConsumer {
    async fn next(&mut self) -> Result<Option<Delivery>> {
        if self.stopped || self.inner.is_closed() {
            return Ok(None);
        }
        // Room first, so that a message is only taken by a consumer that can hold it.
        let permit = match Arc::clone(&self.permits).try_acquire_owned() {
            Ok(permit) => permit,
            Err(TryAcquireError::Closed) => return Ok(None),
            Err(TryAcquireError::NoPermits) => {
                tokio::select! {
                    biased;
                    () = self.inner.shutdown.cancelled() => return Ok(None),
                    permit = Arc::clone(&self.permits).acquire_owned() => match permit {
                        Ok(permit) => permit,
                        Err(_) => return Ok(None),
                    },
                }
            }
        };
        if self.inner.is_closed() {
            return Ok(None);
        }
        if let Some((pos, message)) = self.try_pop(false) {
            return Ok(Some(self.deliver(pos, message, permit)));
        }
        if let [only] = self.queues.as_slice() {
            // One queue (the usual case): the same steps without a list of boxed waits.
            let notify = Arc::clone(&only.notify);
            loop {
                let wait = notify.notified();
                tokio::pin!(wait);
                wait.as_mut().enable();
                if self.inner.is_closed() {
                    return Ok(None);
                }
                if let Some((pos, message)) = self.try_pop(true) {
                    return Ok(Some(self.deliver(pos, message, permit)));
                }
                tokio::select! {
                    biased;
                    () = self.inner.shutdown.cancelled() => return Ok(None),
                    () = &mut wait => {}
                }
            }
        }
        loop {
            // Register interest in every queue *before* looking, then look, then wait.
            let mut waits: Vec<Pin<Box<Notified<'_>>>> = self
                .queues
                .iter()
                .map(|w| Box::pin(w.notify.notified()))
                .collect();
            for wait in &mut waits {
                wait.as_mut().enable();
            }
            if self.inner.is_closed() {
                return Ok(None);
            }
            if let Some((pos, message)) = self.try_pop(true) {
                return Ok(Some(self.deliver(pos, message, permit)));
            }
            let any = poll_fn(|cx| {
                for wait in &mut waits {
                    if wait.as_mut().poll(cx).is_ready() {
                        return Poll::Ready(());
                    }
                }
                Poll::Pending
            });
            tokio::select! {
                biased;
                () = self.inner.shutdown.cancelled() => return Ok(None),
                () = any => {}
            }
        }
    }

    async fn stop(&mut self) -> Result<()> {
        // Nothing is fetched ahead: messages stay in their queue until `next()` pops them.
        self.stopped = true;
        Ok(())
    }
}

/// What an undecided delivery holds: enough to requeue it, and its prefetch permit.
struct Held {
    body: Bytes,
    redeliveries: u32,
    _permit: OwnedSemaphorePermit,
}

struct MemoryAcker {
    inner: Arc<Inner>,
    queue: usize,
    /// `None` once decided: later decisions and the drop do nothing.
    held: Mutex<Option<Held>>,
}

impl MemoryAcker {
    /// Takes the delivery for a decision; `None` if already decided.
    fn decide(&self) -> Option<Held> {
        let held = self.held.lock().unwrap_or_else(|e| e.into_inner()).take()?;
        self.inner.in_flight.fetch_sub(1, Ordering::AcqRel);
        Some(held)
    }

    /// Puts the message back at the front of its queue and wakes a consumer.
    fn requeue(&self, held: Held) {
        let mut state = self.inner.lock();
        let queue = &mut state.queues[self.queue];
        queue.messages.push_front(Message {
            body: held.body,
            redeliveries: held.redeliveries.saturating_add(1),
        });
        queue.notify.notify_one();
        // The permit in `held` is released here, when it drops.
    }
}

#[async_trait]
impl Acknowledger for MemoryAcker {
    async fn ack(&self) -> Result<()> {
        self.decide();
        Ok(())
    }

    async fn nack(&self, requeue: bool) -> Result<()> {
        if let Some(held) = self.decide()
            && requeue
        {
            self.requeue(held);
        }
        Ok(())
    }

    async fn dead_letter(&self, reason: &str) -> Result<()> {
        if let Some(held) = self.decide() {
            let mut state = self.inner.lock();
            state.queues[self.queue]
                .dead
                .push((reason.to_owned(), held.body));
        }
        Ok(())
    }
}

impl Drop for MemoryAcker {
    fn drop(&mut self) {
        // Dropped undecided (the worker died or forgot): at-least-once means it comes back.
        if let Some(held) = self.decide() {
            self.requeue(held);
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use tokio::time::timeout;

    fn sig(queue: &str) -> Signature {
        Signature::new("t").routing_key(queue)
    }

    async fn put(b: &MemoryBroker, queue: &str, body: &'static str) {
        b.publish(&sig(queue), Bytes::from_static(body.as_bytes()))
            .await
            .unwrap();
    }

    async fn put_at(b: &MemoryBroker, queue: &str, body: &'static str, ms: i64) {
        let s = sig(queue).eta(Utc::now() + chrono::Duration::milliseconds(ms));
        b.publish(&s, Bytes::from_static(body.as_bytes()))
            .await
            .unwrap();
    }

    async fn take(c: &mut Box<dyn Consumer>) -> Delivery {
        timeout(Duration::from_secs(5), c.next())
            .await
            .expect("no delivery in time")
            .unwrap()
            .expect("consumer stopped")
    }

    fn q(names: &[&str]) -> Vec<String> {
        names.iter().map(|s| (*s).to_owned()).collect()
    }

    #[tokio::test]
    async fn fifo_order_and_queue_priority() {
        let b = MemoryBroker::new();
        put(&b, "low", "l1").await;
        for body in ["a", "b", "c"] {
            put(&b, "q", body).await;
        }
        assert_eq!(b.len("q"), 3);
        assert_eq!(b.pending("q", 2).await.unwrap(), vec!["a", "b"]);
        let mut c = b.consume(&q(&["q", "low"]), 10).await.unwrap();
        for body in ["a", "b", "c", "l1"] {
            let d = take(&mut c).await;
            assert_eq!(d.body, body);
            d.ack().await.unwrap();
        }
        assert_eq!(b.in_flight(), 0);
        assert_eq!(b.describe(), "memory");
    }

    #[tokio::test]
    async fn waiting_consumer_is_woken_by_publish() {
        let b = MemoryBroker::new();
        let mut c = b.consume(&q(&["q"]), 1).await.unwrap();
        let b2 = b.clone();
        let waiter = tokio::spawn(async move { take(&mut c).await.body });
        tokio::task::yield_now().await;
        put(&b2, "q", "x").await;
        assert_eq!(waiter.await.unwrap(), "x");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn many_consumers_get_every_message_once() {
        let b = MemoryBroker::new();
        let mut handles = Vec::new();
        for _ in 0..4 {
            let mut c = b.consume(&q(&["a", "b"]), 3).await.unwrap();
            handles.push(tokio::spawn(async move {
                let mut got = 0usize;
                while let Some(d) = c.next().await.unwrap() {
                    d.ack().await.unwrap();
                    got += 1;
                }
                got
            }));
        }
        for i in 0..2000 {
            put(&b, if i % 2 == 0 { "a" } else { "b" }, "m").await;
        }
        while b.len("a") + b.len("b") + b.in_flight() > 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        b.close().await;
        let mut total = 0;
        for h in handles {
            total += h.await.unwrap();
        }
        assert_eq!(total, 2000);
    }

    #[tokio::test(start_paused = true)]
    async fn eta_hidden_before_and_visible_after() {
        let b = MemoryBroker::new();
        put_at(&b, "q", "later", 100).await;
        assert_eq!(b.len("q"), 0);
        let delayed = b.delayed(10).await.unwrap();
        assert_eq!(delayed.len(), 1);
        assert_eq!(delayed[0].1, "later");

        let mut c = b.consume(&q(&["q"]), 1).await.unwrap();
        assert!(timeout(Duration::from_millis(99), c.next()).await.is_err());
        assert_eq!(b.len("q"), 0);
        let d = timeout(Duration::from_millis(2), c.next())
            .await
            .expect("visible after its ETA")
            .unwrap()
            .unwrap();
        assert_eq!(d.body, "later");
        assert!(b.delayed(10).await.unwrap().is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn eta_order_and_earlier_eta_wakes_timer() {
        let b = MemoryBroker::new();
        put_at(&b, "q", "c", 300).await;
        put_at(&b, "q", "b", 200).await;
        put_at(&b, "q", "a", 100).await;
        put_at(&b, "q", "past", -100).await;
        let etas: Vec<_> = b.delayed(10).await.unwrap();
        assert_eq!(
            etas.iter().map(|(_, m)| m.clone()).collect::<Vec<_>>(),
            vec!["a", "b", "c"]
        );
        assert!(etas.windows(2).all(|w| w[0].0 <= w[1].0));
        assert_eq!(b.delayed(1).await.unwrap().len(), 1);
        assert_eq!(b.len("q"), 1, "a past ETA is published at once");

        let mut c = b.consume(&q(&["q"]), 10).await.unwrap();
        let start = Instant::now();
        for (body, at) in [("past", 0), ("a", 100), ("b", 200), ("c", 300)] {
            let d = take(&mut c).await;
            assert_eq!(d.body, body);
            let waited = start.elapsed();
            assert!(
                waited >= Duration::from_millis(at.max(1) - 1)
                    && waited <= Duration::from_millis(at + 1),
                "{body} at {waited:?}"
            );
            d.ack().await.unwrap();
        }
    }

    #[tokio::test]
    async fn nack_requeues_to_front_and_drop_requeues() {
        let b = MemoryBroker::new();
        for body in ["a", "b"] {
            put(&b, "q", body).await;
        }
        let mut c = b.consume(&q(&["q"]), 10).await.unwrap();
        let d = take(&mut c).await;
        assert_eq!((d.body.as_ref(), d.redeliveries), (&b"a"[..], 0));
        assert_eq!(b.in_flight(), 1);
        d.nack(true).await.unwrap();
        d.ack().await.unwrap(); // already decided: no effect
        assert_eq!(b.in_flight(), 0);
        assert_eq!(b.pending("q", 10).await.unwrap(), vec!["a", "b"]);

        let d = take(&mut c).await;
        assert_eq!((d.body.as_ref(), d.redeliveries), (&b"a"[..], 1));
        drop(d);
        assert_eq!(b.in_flight(), 0);
        let d = take(&mut c).await;
        assert_eq!((d.body.as_ref(), d.redeliveries), (&b"a"[..], 2));
        d.nack(false).await.unwrap();
        drop(d);
        assert_eq!(b.pending("q", 10).await.unwrap(), vec!["b"]);
    }

    #[tokio::test]
    async fn dead_letter_keeps_reason() {
        let b = MemoryBroker::new();
        put(&b, "q", "bad").await;
        let mut c = b.consume(&q(&["q"]), 1).await.unwrap();
        let d = take(&mut c).await;
        d.dead_letter("undecodable").await.unwrap();
        drop(d);
        assert_eq!(b.len("q"), 0);
        assert_eq!(b.in_flight(), 0);
        let dead = b.dead_letters("q", 10).await.unwrap();
        assert_eq!(dead, vec![("undecodable".to_owned(), Bytes::from("bad"))]);
        assert!(b.dead_letters("other", 10).await.unwrap().is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn prefetch_bounds_unacked_deliveries() {
        let b = MemoryBroker::new();
        for body in ["1", "2", "3"] {
            put(&b, "q", body).await;
        }
        let mut c = b.consume(&q(&["q"]), 2).await.unwrap();
        let d1 = take(&mut c).await;
        let _d2 = take(&mut c).await;
        assert!(timeout(Duration::from_millis(50), c.next()).await.is_err());
        assert_eq!(b.len("q"), 1, "the third message was not taken");
        d1.ack().await.unwrap();
        assert_eq!(take(&mut c).await.body, "3");
    }

    #[tokio::test]
    async fn stop_and_close_end_consumers() {
        let b = MemoryBroker::new();
        put(&b, "q", "x").await;
        let mut c = b.consume(&q(&["q"]), 1).await.unwrap();
        c.stop().await.unwrap();
        assert!(c.next().await.unwrap().is_none());
        assert_eq!(b.len("q"), 1);

        let mut c2 = b.consume(&q(&["empty"]), 1).await.unwrap();
        let waiter = tokio::spawn(async move { c2.next().await.unwrap().is_none() });
        tokio::task::yield_now().await;
        b.close().await;
        assert!(waiter.await.unwrap());
        assert!(matches!(
            b.publish(&sig("q"), Bytes::new()).await,
            Err(Error::Shutdown)
        ));
        assert_eq!(b.len("q"), 1, "close keeps stored messages");
    }

    #[tokio::test]
    async fn purge_counts_and_keeps_delayed() {
        let b = MemoryBroker::new();
        put(&b, "q", "a").await;
        put(&b, "q", "b").await;
        put_at(&b, "q", "later", 60_000).await;
        assert_eq!(b.purge("q").await.unwrap(), 2);
        assert_eq!(b.purge("nope").await.unwrap(), 0);
        assert_eq!(b.len("q"), 0);
        assert_eq!(b.delayed_len(), 1);
    }

    #[tokio::test]
    async fn timer_task_ends_when_broker_dropped() {
        let b = MemoryBroker::new();
        put_at(&b, "q", "later", 60_000).await;
        let timer = b.inner.lock().timer.take().unwrap();
        let weak = Arc::downgrade(&b.inner);
        drop(b);
        assert!(weak.upgrade().is_none());
        assert!(timeout(Duration::from_secs(1), timer).await.is_ok());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    #[ignore = "throughput measurement; run with --release --ignored --nocapture"]
    async fn throughput() {
        let b = MemoryBroker::new();
        let n = 400_000usize;
        let mut handles = Vec::new();
        for _ in 0..4 {
            let mut c = b.consume(&q(&["q"]), 64).await.unwrap();
            handles.push(tokio::spawn(async move {
                let mut got = 0usize;
                while let Some(d) = c.next().await.unwrap() {
                    d.ack().await.unwrap();
                    got += 1;
                }
                got
            }));
        }
        let start = std::time::Instant::now();
        let body = Bytes::from_static(b"{}");
        let s = sig("q");
        for _ in 0..n {
            b.publish(&s, body.clone()).await.unwrap();
        }
        while b.len("q") + b.in_flight() > 0 {
            tokio::task::yield_now().await;
        }
        let elapsed = start.elapsed();
        b.close().await;
        let mut total = 0;
        for h in handles {
            total += h.await.unwrap();
        }
        assert_eq!(total, n);
        println!(
            "{n} messages in {elapsed:?}: {:.0}/s",
            n as f64 / elapsed.as_secs_f64()
        );
    }
}
