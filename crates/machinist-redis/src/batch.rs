//! Coalesced requests: the hot-path commands of every task (a producer's PENDING `SET` and
//! `RPUSH`, a worker's fetch `EVALSHA`, merge `GET`, state `SET`s and announcement `PUBLISH`,
//! its ack `LREM`) go through one [`Batcher`] per [`RedisConnection`](crate::RedisConnection),
//! which sends whatever callers have queued as **one pipeline per round**.
//!
//! Why: each redis-rs request costs the client its own future, channel hops, buffers, a
//! `write` and a reply read, and Redis a read and a write per request; at 64 tasks in flight
//! the client spent more CPU per task than Redis did. Queued together, the commands of all
//! concurrent tasks cost one request.
//!
//! How:
//!
//! * Idle (nothing queued, nothing in flight): the caller sends its commands itself, as a
//!   request of their own, exactly as without batching — no hop, no timer, no linger.
//! * Otherwise a caller appends its commands (one or a few, e.g. `SET` + `PUBLISH`, built
//!   beforehand) to the pipeline being filled, under a mutex, with a oneshot for its answer,
//!   and wakes the writer task if the queue was empty. The writer, woken or answered, first
//!   yields to the runtime once, so that every task ready at that moment (the callers its last
//!   round answered, above all) queues its commands too, then sends what it finds; nothing
//!   waits on a timer. Without the yield, a woken writer ran straight after the caller that
//!   woke it (tokio runs a task woken by the running one next) and sent rounds of one or two
//!   callers: 0.51 Redis reads per task in the two-worker-process end-to-end bench, 0.30 with
//!   it.
//! * The writer task (spawned on first use, respawned if its runtime dropped it) sends rounds,
//!   at most [`ROUNDS_IN_FLIGHT`] at once: a round is the oldest queued pipeline — everything
//!   callers queued since the last round left, up to [`MAX_COMMANDS`] commands — sent with
//!   `req_packed_commands`; when its replies come, each caller is answered from its own slice
//!   of them. While rounds are in flight, later callers fill the next pipeline: under load the
//!   batch grows with the round-trip time (about 33 commands from 25 callers per round in the
//!   64-task end-to-end bench, where fewer than 0.1% of the requests went alone). Two rounds
//!   in flight let Redis work on one while the client hands out the other's replies (the
//!   drain bench went 50,000 → 57,000 tasks/s on one runtime thread; four added nothing).
//! * Rounds leave in queue order and are answered in that order: a round's request is handed
//!   to the connection on its future's first poll, and the writer's in-flight set polls new
//!   futures in the order they were pushed; Redis answers one connection's requests in order,
//!   and the set completes them in the order their replies woke them. So everything queued
//!   before a `PING` is answered (its detached callbacks run) before the `PING`'s caller is
//!   (`Consumer::flush` relies on it).
//! * **Pushes are merged** ([`Push`], [`Batcher::run_with`]): a caller's `RPUSH` is not a
//!   command of its own but a value of the round's one `RPUSH` to that list, sent after the
//!   round's other commands, its values in queue order. Redis parses, runs and answers one
//!   command per queue and round instead of one per task (on a private server here a lone
//!   `RPUSH` of a 430-byte message cost it 1.9 µs, each more value of a variadic one about
//!   1 µs). The caller's outcome counts the `RPUSH`'s reply as its last; a failed `RPUSH`
//!   (`WRONGTYPE`) is the error of every caller whose message it carried, and of none other.
//! * A caller may also **detach** ([`Batcher::detach`]: the ack's `LREM`): its commands are
//!   queued the same way (never sent alone, so they are in the queue when the call returns),
//!   and a callback gets their outcome on the writer's task instead of a waiting caller.
//! * [`RequestStats`]: requests sent and the commands in them, for tests and metrics.
//! * Each caller keeps its own outcome: a command of a caller that fails (`WRONGTYPE` …) is an
//!   error for that caller only (the replies of a pipeline are per command); a connection
//!   failure or timeout is the error of every caller of that round, who handle it as before
//!   (an outage: settlements are kept for the heartbeat, state writes give the delivery back).
//! * Order: a caller's commands are contiguous and in order in one pipeline, and rounds go out
//!   in queue order on one connection. A task's PENDING and its push are one caller's two
//!   commands, in that order. Callers that depend on an earlier write (RECEIVED/STARTED before
//!   SUCCESS, a state before the ack) await it before queuing the next, as they would without
//!   batching.
//! * A caller that gives up waiting (its future dropped) does not withdraw its commands: they
//!   are sent with the round, as a request already written to a socket would be.
//! * Cluster: redis-rs sends a pipeline to one slot only, and concurrent tasks' keys live in
//!   different slots, so a cluster connection has no batcher: each caller's commands go out
//!   as their own request ([`direct`]).
//! * When the writer stops (its connection dropped), a debug line gives its rounds, commands,
//!   callers and the requests sent alone.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use futures_util::StreamExt as _;
use futures_util::stream::FuturesUnordered;
use redis::aio::ConnectionLike;
use redis::{Cmd, Pipeline, RedisResult, Value};
use tokio::sync::{Notify, oneshot};
use tracing::debug;

use crate::conn::Conn;

/// Rounds the writer keeps in flight at once.
pub(crate) const ROUNDS_IN_FLIGHT: usize = 2;

/// The most commands one pipeline carries (a caller's commands are never split; a caller that
/// alone brings more is sent as it is).
pub(crate) const MAX_COMMANDS: usize = 256;

/// Sends the commands callers queue, one pipeline per round; see the module docs.
pub(crate) struct Batcher {
    queue: Arc<Queue>,
    /// What the writer sends on (a clone of the shared connection).
    conn: Conn,
}

struct Queue {
    state: Mutex<State>,
    /// Wakes the writer when the queue goes from empty to not empty (and on close).
    wake: Notify,
    /// Requests in flight: the writer's round and lone requests sent by their callers.
    busy: AtomicUsize,
    /// Requests sent by their callers because nothing else was queued or in flight.
    alone: AtomicU64,
    /// Requests sent (rounds and lone ones) and the commands in them.
    sent: AtomicU64,
    sent_commands: AtomicU64,
}

/// How many requests a connection's write queue sent and how many commands they carried
/// ([`RedisConnection::requests`](crate::RedisConnection::requests)).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RequestStats {
    /// Requests written to the socket: pipelines of coalesced callers, and lone requests.
    pub requests: u64,
    /// Commands in those requests.
    pub commands: u64,
}

#[derive(Default)]
struct State {
    /// Pipelines waiting to be sent, oldest first; callers append to the last.
    segments: VecDeque<Segment>,
    /// Sent segments, cleared, kept for their allocations.
    spare: Vec<Segment>,
    /// A writer task exists.
    running: bool,
    /// The connection is gone: the writer stops once the queue is empty.
    closed: bool,
    /// Rounds sent, commands and callers in them (logged at debug level when a writer stops).
    rounds: u64,
    commands: u64,
    callers: u64,
}

#[derive(Default)]
struct Segment {
    pipe: Pipeline,
    waiters: Vec<Waiter>,
    /// The round's `RPUSH`es, one per list, sent after `pipe`'s commands ([`Push`]).
    shared: Vec<Merged>,
    /// Values in those: with `pipe`'s commands, what [`MAX_COMMANDS`] bounds.
    shared_values: usize,
}

impl Segment {
    fn size(&self) -> usize {
        self.pipe.len() + self.shared_values
    }

    /// Appends `push` to the round's `RPUSH` to its list (a new one if there is none);
    /// returns that command's index in `self.shared`.
    fn merge(&mut self, push: &Push<'_>) -> usize {
        self.shared_values += 1;
        if let Some(i) = self.shared.iter().position(|m| m.key == push.key) {
            self.shared[i].cmd.arg(push.value);
            return i;
        }
        // Room for several values at once (the round's pushes to one queue).
        let mut cmd = Cmd::with_capacity(8, 5 + push.key.len() + 8 * push.value.len());
        cmd.arg(&b"RPUSH"[..]).arg(push.key).arg(push.value);
        self.shared.push(Merged {
            key: push.key.to_vec(),
            cmd,
        });
        self.shared.len() - 1
    }
}

/// The round's `RPUSH` to one list: every [`Push`] of the round's callers to that list, its
/// values in queue order, each copied once, into the command.
struct Merged {
    key: Vec<u8>,
    cmd: Cmd,
}

/// A push a caller shares with the other callers of its round ([`Batcher::run_with`]): the
/// round sends one `RPUSH` per list with every value its callers push there, in queue order,
/// so Redis parses, runs and answers one command for all of them instead of one each. It goes
/// after the round's other commands, so after the caller's own (a task's `RPUSH` still follows
/// its PENDING's `SET`); the callers of one round are concurrent, so none of them can tell
/// that another's commands ran before its push.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Push<'a> {
    /// The list.
    pub(crate) key: &'a [u8],
    /// The value pushed to its tail.
    pub(crate) value: &'a [u8],
}

impl Push<'_> {
    /// The command this push is alone.
    pub(crate) fn cmd(&self) -> Cmd {
        command(&[b"RPUSH", self.key, self.value])
    }
}

/// One caller: its commands are `pipe[start..start + count]`, then, if it pushes, the round's
/// `RPUSH` `shared`.
struct Waiter {
    start: usize,
    count: usize,
    shared: Option<usize>,
    reply: Reply,
}

/// Where a caller's outcome goes.
enum Reply {
    /// To a caller awaiting it ([`Batcher::run`]).
    Waiting(oneshot::Sender<RedisResult<Value>>),
    /// To a callback run by the writer ([`Batcher::detach`]).
    Detached(Detached),
}

/// What a detached caller does with its outcome; run on the writer's task, so it must be quick
/// (record, log) and never block.
pub(crate) type Detached = Box<dyn FnOnce(RedisResult<Value>) + Send>;

impl Reply {
    fn send(self, out: RedisResult<Value>) {
        match self {
            Reply::Waiting(tx) => {
                let _ = tx.send(out);
            }
            Reply::Detached(done) => done(out),
        }
    }
}

impl Batcher {
    pub(crate) fn new(conn: Conn) -> Self {
        Batcher {
            queue: Arc::new(Queue {
                state: Mutex::new(State::default()),
                wake: Notify::new(),
                busy: AtomicUsize::new(0),
                alone: AtomicU64::new(0),
                sent: AtomicU64::new(0),
                sent_commands: AtomicU64::new(0),
            }),
            conn,
        }
    }

    /// Queues `cmds` and returns their outcome: the last command's reply, or the first error
    /// among them (a reply that is a server error, or the round's connection error).
    pub(crate) async fn run<I: IntoIterator<Item = Cmd>>(&self, cmds: I) -> RedisResult<Value> {
        self.run_with(cmds, None).await
    }

    /// [`Batcher::run`], then `push` merged with the round's other pushes to its list
    /// ([`Push`]): the outcome counts it as the caller's last command.
    pub(crate) async fn run_with<I: IntoIterator<Item = Cmd>>(
        &self,
        cmds: I,
        push: Option<Push<'_>>,
    ) -> RedisResult<Value> {
        let (tx, rx) = oneshot::channel();
        match self.enqueue(cmds, push, Reply::Waiting(tx), true) {
            Queued::Waiting => rx.await.unwrap_or_else(|_| Err(stopped())),
            Queued::Nothing => Ok(Value::Nil),
            Queued::Alone(cmds) => {
                let _busy = Busy::start(&self.queue);
                let pipe = pipeline_of(cmds.into_iter().chain(push.map(|p| p.cmd())));
                self.queue.count(pipe.len());
                send(self.conn.clone(), &pipe).await
            }
        }
    }

    /// Queues `cmds` without waiting: `done` gets their outcome (as [`Batcher::run`] would
    /// return it) once the round that carries them is answered, on the writer's task. The
    /// commands are in the queue when this returns, so whatever the same connection sends
    /// through the queue later goes after them, and a writer that stops first (connection
    /// gone, runtime shut down) answers `done` with an I/O error. Returns the commands when
    /// they cannot be queued (no runtime to run a writer on): the caller sends them itself.
    pub(crate) fn detach(&self, cmds: Vec<Cmd>, done: Detached) -> Option<Vec<Cmd>> {
        match self.enqueue(cmds, None, Reply::Detached(done), false) {
            Queued::Alone(cmds) => Some(cmds),
            Queued::Waiting | Queued::Nothing => None,
        }
    }

    /// Appends the caller's commands to the queue (starting the writer if there is none), or,
    /// when `alone_if_idle` and nothing is queued or in flight, leaves them to the caller.
    fn enqueue<I: IntoIterator<Item = Cmd>>(
        &self,
        cmds: I,
        push: Option<Push<'_>>,
        reply: Reply,
        alone_if_idle: bool,
    ) -> Queued<I> {
        let mut st = self.queue.state.lock().unwrap_or_else(|p| p.into_inner());
        if alone_if_idle && st.segments.is_empty() && self.queue.busy.load(Ordering::Acquire) == 0 {
            // Idle: a request sent by its caller has no writer hop on its way. Callers that
            // come while it is in flight queue for the writer.
            self.queue.alone.fetch_add(1, Ordering::Relaxed);
            self.queue.busy.fetch_add(1, Ordering::AcqRel);
            return Queued::Alone(cmds);
        }
        if !st.running {
            let Ok(runtime) = tokio::runtime::Handle::try_current() else {
                self.queue.busy.fetch_add(1, Ordering::AcqRel);
                return Queued::Alone(cmds);
            };
            st.running = true;
            runtime.spawn(write_rounds(Arc::clone(&self.queue), self.conn.clone()));
        }
        let was_empty = st.segments.is_empty();
        if st.segments.back().is_none_or(|s| s.size() >= MAX_COMMANDS) {
            let segment = st.spare.pop().unwrap_or_default();
            st.segments.push_back(segment);
        }
        let Some(segment) = st.segments.back_mut() else {
            // Unreachable: a segment was just ensured.
            self.queue.busy.fetch_add(1, Ordering::AcqRel);
            return Queued::Alone(cmds);
        };
        let start = segment.pipe.len();
        for cmd in cmds {
            segment.pipe.add_command(cmd);
        }
        let count = segment.pipe.len() - start;
        let shared = push.map(|p| segment.merge(&p));
        if count == 0 && shared.is_none() {
            if segment.size() == 0
                && let Some(empty) = st.segments.pop_back()
            {
                st.spare.push(empty);
            }
            return Queued::Nothing;
        }
        segment.waiters.push(Waiter {
            start,
            count,
            shared,
            reply,
        });
        if was_empty {
            self.queue.wake.notify_one();
        }
        Queued::Waiting
    }
}

impl Batcher {
    /// Requests sent so far and the commands in them.
    pub(crate) fn stats(&self) -> RequestStats {
        RequestStats {
            requests: self.queue.sent.load(Ordering::Relaxed),
            commands: self.queue.sent_commands.load(Ordering::Relaxed),
        }
    }
}

impl Queue {
    /// Counts one request of `commands` commands.
    fn count(&self, commands: usize) {
        self.sent.fetch_add(1, Ordering::Relaxed);
        self.sent_commands
            .fetch_add(commands as u64, Ordering::Relaxed);
    }
}

/// What [`Batcher::enqueue`] did with a caller's commands.
enum Queued<F> {
    /// Queued: the answer goes where the caller's [`Reply`] says.
    Waiting,
    /// There were no commands.
    Nothing,
    /// The caller sends them itself, as a request of their own: nothing was queued or in
    /// flight (or there is no runtime to run a writer on). Counted in `busy` already.
    Alone(F),
}

/// One request in flight, counted in [`Queue::busy`] until dropped (also when its future is
/// dropped mid-flight).
struct Busy<'a>(&'a Queue);

impl<'a> Busy<'a> {
    /// Counts a request the caller already added to `busy` ([`Queued::Alone`]).
    fn start(queue: &'a Queue) -> Self {
        Busy(queue)
    }
}

impl Drop for Busy<'_> {
    fn drop(&mut self) {
        self.0.busy.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Drop for Batcher {
    fn drop(&mut self) {
        self.queue
            .state
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .closed = true;
        self.queue.wake.notify_one();
    }
}

/// `cmds` sent as one request of their own (cluster, or no runtime to run a writer on), with
/// the same outcome rules as [`Batcher::run`].
pub(crate) async fn direct(conn: Conn, cmds: impl IntoIterator<Item = Cmd>) -> RedisResult<Value> {
    send(conn, &pipeline_of(cmds)).await
}

fn pipeline_of(cmds: impl IntoIterator<Item = Cmd>) -> Pipeline {
    let mut pipe = Pipeline::new();
    for cmd in cmds {
        pipe.add_command(cmd);
    }
    pipe
}

/// Sends `pipe` as one request; the outcome as [`Batcher::run`] gives it.
async fn send(mut conn: Conn, pipe: &Pipeline) -> RedisResult<Value> {
    if pipe.is_empty() {
        return Ok(Value::Nil);
    }
    let replies = conn.req_packed_commands(pipe, 0, pipe.len()).await?;
    outcome(replies.into_iter().take(pipe.len()), pipe.len())
}

/// A command with its arguments, its buffers allocated once at their final size (building one
/// argument by argument grows them several times).
pub(crate) fn command(args: &[&[u8]]) -> Cmd {
    let size = args.iter().map(|a| a.len()).sum();
    let mut cmd = Cmd::with_capacity(args.len(), size);
    for arg in args {
        cmd.arg(*arg);
    }
    cmd
}

/// The outcome of one caller's `count` replies: the first server error, else the last reply.
fn outcome(replies: impl Iterator<Item = Value>, count: usize) -> RedisResult<Value> {
    let mut out: Option<RedisResult<Value>> = None;
    let mut seen = 0;
    for reply in replies {
        seen += 1;
        match reply {
            Value::ServerError(e) => {
                if !matches!(out, Some(Err(_))) {
                    out = Some(Err(e.into()));
                }
            }
            v => {
                if !matches!(out, Some(Err(_))) {
                    out = Some(Ok(v));
                }
            }
        }
    }
    if seen < count {
        return Err(short_reply());
    }
    out.unwrap_or(Ok(Value::Nil))
}

/// Marks the writer gone when its task ends, also when its runtime drops it mid-round; fails
/// what is still queued then (those callers would otherwise wait for a writer that may never
/// come).
struct Running(Arc<Queue>);

impl Drop for Running {
    fn drop(&mut self) {
        let orphans = {
            let mut st = self.0.state.lock().unwrap_or_else(|p| p.into_inner());
            st.running = false;
            if st.rounds > 0 {
                #[allow(clippy::cast_precision_loss)]
                let per_round = st.commands as f64 / st.rounds as f64;
                debug!(
                    rounds = st.rounds,
                    commands = st.commands,
                    callers = st.callers,
                    alone = self.0.alone.load(Ordering::Relaxed),
                    "Redis request writer stopped ({per_round:.1} commands per round)"
                );
            }
            std::mem::take(&mut st.segments)
        };
        for segment in orphans {
            for w in segment.waiters {
                w.reply.send(Err(stopped()));
            }
        }
    }
}

/// The writer: sends the queued pipelines in order, up to [`ROUNDS_IN_FLIGHT`] at once (the
/// next round leaves when one is answered, so what callers queue meanwhile goes out
/// together), until the connection is gone and the queue empty.
async fn write_rounds(queue: Arc<Queue>, conn: Conn) {
    let _running = Running(Arc::clone(&queue));
    // First polls in push order (the set's ready queue is first in, first out): rounds are
    // handed to the connection in queue order.
    let mut in_flight = FuturesUnordered::new();
    loop {
        let mut closed = false;
        if in_flight.len() < ROUNDS_IN_FLIGHT {
            // Let every task that is ready now run first: the callers the last round just
            // answered, and those woken with them, queue their next commands into the pipeline
            // about to leave instead of the one after it. Costs one pass through the
            // scheduler's queue, no timer, so an idle connection's latency is unchanged.
            tokio::task::yield_now().await;
        }
        while in_flight.len() < ROUNDS_IN_FLIGHT {
            let next = {
                let mut st = queue.state.lock().unwrap_or_else(|p| p.into_inner());
                closed = st.closed;
                let next = st.segments.pop_front();
                if next.is_some() {
                    queue.busy.fetch_add(1, Ordering::AcqRel);
                }
                next
            };
            let Some(segment) = next else { break };
            queue.count(segment.pipe.len() + segment.shared.len());
            let mut conn = conn.clone();
            let queue = Arc::clone(&queue);
            in_flight.push(async move {
                let _busy = Busy::start(&queue);
                round(&mut conn, segment).await
            });
        }
        if in_flight.is_empty() {
            if closed {
                return;
            }
            // A caller that queues into an empty queue notifies; a notification sent while
            // this loop was busy is kept as a permit, so none is missed.
            queue.wake.notified().await;
            continue;
        }
        let answered = tokio::select! {
            biased;
            answered = in_flight.next() => answered,
            () = queue.wake.notified(), if in_flight.len() < ROUNDS_IN_FLIGHT => None,
        };
        if let Some((segment, commands, callers)) = answered {
            let mut st = queue.state.lock().unwrap_or_else(|p| p.into_inner());
            st.rounds += 1;
            st.commands += commands as u64;
            st.callers += callers as u64;
            if st.spare.len() < 4 {
                st.spare.push(segment);
            }
        }
    }
}

/// Sends one pipeline and answers its callers; returns the segment, emptied, for reuse, with
/// how many commands and callers it carried.
async fn round(conn: &mut Conn, mut segment: Segment) -> (Segment, usize, usize) {
    let own = segment.pipe.len();
    for merged in segment.shared.drain(..) {
        segment.pipe.add_command(merged.cmd);
    }
    segment.shared_values = 0;
    let total = segment.pipe.len();
    let callers = segment.waiters.len();
    let result = conn.req_packed_commands(&segment.pipe, 0, total).await;
    match result {
        Ok(mut replies) => {
            // The `RPUSH`es' replies, each read by all who pushed with it.
            let shared = replies.split_off(own.min(replies.len()));
            let mut replies = replies.into_iter();
            let mut at = 0;
            for w in segment.waiters.drain(..) {
                // Skip what belongs to nobody (never, unless a builder misbehaved).
                for _ in at..w.start {
                    replies.next();
                }
                let theirs = w.shared.map(|i| shared.get(i).cloned());
                let out = match theirs {
                    None => outcome(replies.by_ref().take(w.count), w.count),
                    Some(reply) => {
                        outcome(replies.by_ref().take(w.count).chain(reply), w.count + 1)
                    }
                };
                at = w.start + w.count;
                w.reply.send(out);
            }
        }
        Err(e) => {
            for w in segment.waiters.drain(..) {
                w.reply.send(Err(e.clone()));
            }
        }
    }
    segment.pipe.clear();
    (segment, total, callers)
}

/// The writer task ended before answering (its runtime shut down): an I/O-class error, so
/// callers treat it like a lost connection (settlements are kept and retried).
fn stopped() -> redis::RedisError {
    redis::RedisError::from(std::io::Error::new(
        std::io::ErrorKind::BrokenPipe,
        "the Redis request writer stopped before answering",
    ))
}

fn short_reply() -> redis::RedisError {
    redis::RedisError::from((
        redis::ErrorKind::Client,
        "Redis answered a pipeline with fewer replies than commands",
    ))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn server_error(code: &str) -> Value {
        redis::parse_redis_value(format!("-{code} boom\r\n").as_bytes()).unwrap()
    }

    #[test]
    fn a_caller_gets_its_last_reply_or_its_first_error() {
        let ok = vec![Value::Okay, Value::Int(1)];
        assert_eq!(outcome(ok.into_iter(), 2).unwrap(), Value::Int(1));
        let failed = vec![Value::Okay, server_error("WRONGTYPE"), server_error("ERR")];
        let e = outcome(failed.into_iter(), 3).unwrap_err();
        assert_eq!(e.code(), Some("WRONGTYPE"));
        assert!(outcome(vec![Value::Okay].into_iter(), 2).is_err(), "short");
        assert_eq!(outcome(std::iter::empty(), 0).unwrap(), Value::Nil);
    }

    #[test]
    fn commands_are_sized_once() {
        let cmd = command(&[b"SET", b"k", b"v", b"EX", b"60"]);
        assert_eq!(
            cmd.get_packed_command(),
            b"*5\r\n$3\r\nSET\r\n$1\r\nk\r\n$1\r\nv\r\n$2\r\nEX\r\n$2\r\n60\r\n"
        );
    }
}

/// Against a private server: what the write queue promises about order and coalescing.
#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod on_a_server {
    use std::sync::{Arc, Mutex};

    use machinist_testkit::redis_server::RedisServer;

    use super::command;
    use crate::{RedisConnection, RedisOptions};

    /// A private server and a connection to it (`None` without `redis-server` on PATH).
    async fn connected() -> Option<(RedisServer, RedisConnection)> {
        let server = RedisServer::start()?;
        let conn = RedisConnection::connect(RedisOptions::from_url(&server.url()).unwrap())
            .await
            .unwrap();
        Some((server, conn))
    }

    /// Thousands of `INCR`s queued in order from one task, as detached callers (so many rounds
    /// go out, up to two in flight): Redis ran them in queue order (each got the next number)
    /// and their callbacks ran in that order too; a `PING` queued last is answered after all.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn rounds_leave_and_are_answered_in_queue_order() {
        let Some((_server, conn)) = connected().await else {
            return;
        };
        const N: usize = 5000;
        let seen = Arc::new(Mutex::new(Vec::with_capacity(N)));
        for i in 0..N {
            let seen = Arc::clone(&seen);
            let left = conn.detach(
                vec![command(&[b"INCR", b"n"])],
                Box::new(move |out| {
                    let n: i64 = redis::from_redis_value(out.unwrap()).unwrap();
                    seen.lock().unwrap().push((i, n));
                }),
            );
            assert!(left.is_none(), "queued");
            if i % 97 == 0 {
                tokio::task::yield_now().await;
            }
        }
        conn.batched([command(&[b"PING"])]).await.unwrap();
        let seen = seen.lock().unwrap();
        assert_eq!(
            seen.len(),
            N,
            "every callback ran before the PING was answered"
        );
        for (k, &(i, n)) in seen.iter().enumerate() {
            assert_eq!(i, k, "callbacks in queue order");
            assert_eq!(
                n,
                i64::try_from(i).unwrap() + 1,
                "Redis ran them in queue order"
            );
        }
        let stats = conn.requests();
        assert!(stats.requests >= 20, "many rounds: {stats:?}");
    }

    /// Concurrent callers each queue a `SET` and a push, as producers do: every message
    /// arrives, each caller's in its order and after its `SET`; the round's pushes to one list
    /// went as one `RPUSH` (fewer commands than pushes); a push to a key of the wrong type
    /// fails its callers only.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn pushes_share_one_rpush_per_list_and_round() {
        let Some((_server, conn)) = connected().await else {
            return;
        };
        const CALLERS: usize = 32;
        const EACH: usize = 100;
        conn.batched([command(&[b"SET", b"not-a-list", b"x"])])
            .await
            .unwrap();
        let before = conn.requests();
        let mut callers = Vec::new();
        for i in 0..CALLERS {
            let conn = conn.clone();
            callers.push(tokio::spawn(async move {
                let mut failed = 0;
                for j in 0..EACH {
                    let key: &[u8] = if i % 4 == 3 { b"not-a-list" } else { b"q" };
                    let value = format!("{i}:{j}");
                    let out = conn
                        .batched_with(
                            [command(&[b"SET", value.as_bytes(), b"1"])],
                            super::Push {
                                key,
                                value: value.as_bytes(),
                            },
                        )
                        .await;
                    match out {
                        Ok(_) => assert_ne!(key, b"not-a-list"),
                        Err(e) => {
                            assert_eq!(key, b"not-a-list", "{e}");
                            assert_eq!(e.code(), Some("WRONGTYPE"));
                            failed += 1;
                        }
                    }
                }
                failed
            }));
        }
        let mut failed = 0;
        for c in callers {
            failed += c.await.unwrap();
        }
        assert_eq!(
            failed,
            CALLERS / 4 * EACH,
            "every push to the string failed"
        );
        let sent = conn.requests().commands - before.commands;
        let pushes = (CALLERS * EACH) as u64;
        assert!(
            sent < 2 * pushes * 9 / 10,
            "{sent} commands for {pushes} SETs and pushes: the pushes were not merged"
        );
        let mut c = conn.conn();
        let list: Vec<String> = redis::cmd("LRANGE")
            .arg("q")
            .arg(0)
            .arg(-1)
            .query_async(&mut c)
            .await
            .unwrap();
        assert_eq!(list.len(), CALLERS / 4 * 3 * EACH);
        let mut next = vec![0usize; CALLERS];
        for value in &list {
            let (i, j) = value.split_once(':').unwrap();
            let (i, j): (usize, usize) = (i.parse().unwrap(), j.parse().unwrap());
            assert_eq!(j, next[i], "caller {i}'s messages in its order");
            next[i] += 1;
            let set: Option<String> = redis::cmd("GET")
                .arg(value)
                .query_async(&mut c)
                .await
                .unwrap();
            assert_eq!(set.as_deref(), Some("1"), "{value}'s SET ran");
        }
    }

    /// Callers that send one request after another, as producers do, on one runtime thread:
    /// when a round is answered, the callers it answered queue their next request before the
    /// writer sends again, so each round carries all of them.
    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn answered_callers_share_the_next_round() {
        let Some((_server, conn)) = connected().await else {
            return;
        };
        const CALLERS: usize = 16;
        const EACH: usize = 200;
        let before = conn.requests();
        let mut callers = Vec::new();
        for _ in 0..CALLERS {
            let conn = conn.clone();
            callers.push(tokio::spawn(async move {
                for _ in 0..EACH {
                    conn.batched([command(&[b"INCR", b"n"])]).await.unwrap();
                }
            }));
        }
        for c in callers {
            c.await.unwrap();
        }
        let after = conn.requests();
        let requests = after.requests - before.requests;
        let per_request = (CALLERS * EACH) as f64 / requests as f64;
        // Two rounds in flight share the 16 callers: at best 8 per request (7.9 measured;
        // 5.5 without the yield, when the woken writer ran before the answered callers).
        assert!(
            per_request >= 7.0,
            "{requests} requests for {} calls: {per_request:.1} callers per request",
            CALLERS * EACH
        );
    }
}
