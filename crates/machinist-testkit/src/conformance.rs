//! The conformance scenarios: one `pub async fn` per behaviour, each taking the [`Factory`]
//! under test. [`crate::conformance_tests!`] turns them into tests.
//!
//! Each scenario asks the factory for adapters in its own namespace, builds `Server`s on them
//! (the backend wrapped in a [`RecordingBackend`] so the states written can be checked), starts
//! the workers it needs with `no_unix_signals`, and stops them before it returns. Waits are
//! bounded by [`WAIT`]; where something has no event to await (a broker's dead-letter list, a
//! key's expiry) the scenario polls every 20 ms up to the same bound.
//!
//! Expected values are Go Machinery's (`integration-tests/suite_test.go`, `wire-format.md` §11)
//! where Go has a scenario, and machinist's design (`design.md` §3, §4) elsewhere.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use chrono::Utc;
use machinist_core::{
    Arg, AsyncResult, Backend, Broker, Chain, Chord, Config, Delivery, Error, FromResults, Group,
    Server, Signature, State, Stopped, TaskState, WorkerHandle, id,
};
use tokio::time::Instant;

use crate::recording::RecordingBackend;
use crate::tasks::{self, Probes};
use crate::{Adapters, Factory};

/// The bound on every single wait in a scenario.
pub const WAIT: Duration = Duration::from_secs(10);

/// How often inspection calls are repeated while waiting for something that has no event.
const POLL: Duration = Duration::from_millis(20);

// ---------------------------------------------------------------------------------------------
// Harness.
// ---------------------------------------------------------------------------------------------

/// One scenario's world: adapters in its namespace, its config and the shared probes.
struct Env {
    namespace: String,
    queue: String,
    config: Config,
    adapters: Adapters,
    recorder: Arc<RecordingBackend>,
    probes: Probes,
}

/// A namespace unique to this scenario and run: `[a-z0-9_]` only.
fn namespace(scenario: &str) -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let nanos = tasks::unix_nanos(Utc::now());
    let seq = SEQ.fetch_add(1, Ordering::Relaxed);
    format!(
        "mt_{scenario}_{}_{:x}{seq}",
        std::process::id(),
        nanos.rem_euclid(1 << 40)
    )
}

/// Builds the scenario's world: a config (`no_unix_signals`, a namespaced default queue, a
/// bounded shutdown, then `tweak`) and the factory's adapters for it.
async fn setup<F: Factory>(factory: &F, scenario: &str, tweak: impl FnOnce(&mut Config)) -> Env {
    let namespace = namespace(scenario);
    let mut config = Config {
        no_unix_signals: true,
        default_queue: format!("{namespace}_tasks"),
        shutdown_timeout: WAIT,
        ..Config::default()
    };
    tweak(&mut config);
    let adapters = factory.adapters(&namespace, &config).await;
    let recorder = Arc::new(RecordingBackend::new(adapters.backend.clone()));
    Env {
        queue: config.default_queue.clone(),
        namespace,
        config,
        adapters,
        recorder,
        probes: Probes::new(),
    }
}

impl Env {
    /// A server on the shared adapters with no task registered.
    fn bare_server(&self) -> Server {
        let backend: Arc<dyn Backend> = self.recorder.clone();
        Server::new(
            self.config.clone(),
            self.adapters.broker.clone(),
            backend,
            self.adapters.lock.clone(),
        )
    }

    /// A server on the shared adapters with Go's test tasks and the probe tasks registered.
    fn server(&self) -> Server {
        let server = self.bare_server();
        tasks::register_all(&server);
        self.probes.register(&server);
        server
    }

    /// Launches a worker of `server` on the default queue.
    fn worker(&self, server: &Server, concurrency: usize) -> WorkerHandle {
        server
            .new_worker(format!("{}_worker", self.namespace), concurrency)
            .launch_async()
    }

    /// The broker.
    fn broker(&self) -> &Arc<dyn Broker> {
        &self.adapters.broker
    }

    /// Lets the factory clean up after a passed scenario.
    async fn finish<F: Factory>(self, factory: &F) {
        factory.teardown(&self.namespace, &self.adapters).await;
    }
}

/// Awaits `fut`, failing the scenario after [`WAIT`].
async fn within<T>(what: &str, fut: impl Future<Output = T>) -> T {
    match tokio::time::timeout(WAIT, fut).await {
        Ok(v) => v,
        Err(_) => panic!("timed out after {WAIT:?} waiting for {what}"),
    }
}

/// Calls `probe` every [`POLL`] until it returns `Some`, failing the scenario after [`WAIT`].
async fn poll_until<T, Fut>(what: &str, mut probe: impl FnMut() -> Fut) -> T
where
    Fut: Future<Output = Option<T>>,
{
    within(what, async {
        loop {
            if let Some(v) = probe().await {
                return v;
            }
            tokio::time::sleep(POLL).await;
        }
    })
    .await
}

/// Stops a worker gracefully (bounded) and returns how it stopped.
async fn quit(worker: WorkerHandle) -> Stopped {
    within("the worker to stop", worker.quit())
        .await
        .expect("worker stopped with an error")
}

/// Waits for a task's results, decoded as `T`.
async fn results<T: FromResults>(what: &str, r: &mut AsyncResult) -> T {
    match r.results::<T>(WAIT).await {
        Ok(v) => v,
        Err(e) => panic!("{what} ({}): expected results, got error: {e}", r.uuid()),
    }
}

/// Waits for a task to fail and returns its error text.
async fn failure(what: &str, r: &mut AsyncResult) -> String {
    match r.get_with_timeout(WAIT, POLL).await {
        Err(Error::TaskFailed(text)) => text,
        Ok(v) => panic!("{what} ({}): expected FAILURE, got results {v:?}", r.uuid()),
        Err(e) => panic!("{what} ({}): expected FAILURE, got {e}", r.uuid()),
    }
}

/// The stored state of `uuid`.
async fn state_of(backend: &dyn Backend, uuid: &str) -> Option<TaskState> {
    backend
        .get_state(uuid)
        .await
        .expect("backend get_state failed")
}

/// The UUID of the signature in `body`, if it decodes.
fn uuid_of(body: &[u8]) -> Option<String> {
    Signature::from_slice(body).ok().map(|s| s.uuid)
}

/// The UUIDs of the signatures in `bodies` (undecodable bodies are skipped).
fn uuids(bodies: &[Bytes]) -> Vec<String> {
    bodies.iter().filter_map(|b| uuid_of(b)).collect()
}

/// Messages waiting in `queue` (inspection is bounded to 1000).
async fn pending(broker: &dyn Broker, queue: &str) -> Vec<Bytes> {
    broker
        .pending(queue, 1000)
        .await
        .expect("broker pending failed")
}

/// `name(xs...)` with `int64` arguments.
fn ints(name: &str, xs: &[i64]) -> Signature {
    Signature::new(name).args(xs.iter().map(|&x| Arg::new(x)).collect::<Vec<Arg>>())
}

/// Sends `add(0, 0)` and waits for it: with FIFO queues and a worker of concurrency 1, every
/// message published before it has been fully handled when it returns.
async fn barrier(server: &Server) {
    let mut r = server
        .send_task(ints("add", &[0, 0]))
        .await
        .expect("send barrier");
    let v: i64 = results("barrier add(0, 0)", &mut r).await;
    assert_eq!(v, 0);
}

/// The group of Go's group and chord scenarios: add(1,1), add(2,2), add(5,6).
fn go_group() -> Group {
    Group::new(vec![
        ints("add", &[1, 1]),
        ints("add", &[2, 2]),
        ints("add", &[5, 6]),
    ])
}

/// Sends Go's group with `send_concurrency` and checks {2, 4, 11}.
async fn group_scenario<F: Factory>(factory: &F, name: &str, send_concurrency: usize) {
    let env = setup(factory, name, |_| {}).await;
    let server = env.server();
    let worker = env.worker(&server, 4);
    let mut members = server
        .send_group(go_group(), send_concurrency)
        .await
        .expect("send_group");
    let mut got = Vec::new();
    for m in &mut members {
        got.push(results::<i64>("group member", m).await);
    }
    assert_eq!(got, [2, 4, 11], "group results in group order");
    quit(worker).await;
    env.finish(factory).await;
}

// ---------------------------------------------------------------------------------------------
// Go Machinery's integration scenarios.
// ---------------------------------------------------------------------------------------------

/// `add(1, 1)` → `int64(2)`.
pub async fn send_task_add<F: Factory>(factory: &F) {
    let env = setup(factory, "add", |_| {}).await;
    let server = env.server();
    let worker = env.worker(&server, 2);
    let mut r = server.send_task(ints("add", &[1, 1])).await.expect("send");
    assert_eq!(results::<i64>("add(1, 1)", &mut r).await, 2);
    quit(worker).await;
    env.finish(factory).await;
}

/// `sum([]int64{1, 2})` → `int64(3)`.
pub async fn send_task_sum<F: Factory>(factory: &F) {
    let env = setup(factory, "sum", |_| {}).await;
    let server = env.server();
    let worker = env.worker(&server, 2);
    let mut r = server
        .send_task(Signature::new("sum").args(vec![1i64, 2]))
        .await
        .expect("send");
    assert_eq!(results::<i64>("sum([1, 2])", &mut r).await, 3);
    quit(worker).await;
    env.finish(factory).await;
}

/// Group add(1,1), add(2,2), add(5,6) sent with concurrency 0 → {2, 4, 11}.
pub async fn group_send_concurrency_0<F: Factory>(factory: &F) {
    group_scenario(factory, "group0", 0).await;
}

/// The same group sent with concurrency 2 → {2, 4, 11}.
pub async fn group_send_concurrency_2<F: Factory>(factory: &F) {
    group_scenario(factory, "group2", 2).await;
}

/// Chord of Go's group with callback `multiply()`, sent with concurrency 10 → 2·4·11 = 88.
pub async fn chord_multiply<F: Factory>(factory: &F) {
    let env = setup(factory, "chord", |_| {}).await;
    let server = env.server();
    let worker = env.worker(&server, 4);
    let chord = Chord::new(go_group(), Signature::new("multiply"));
    let mut r = server.send_chord(chord, 10).await.expect("send_chord");
    let v: i64 = within("chord result", r.results(WAIT))
        .await
        .expect("chord results");
    assert_eq!(v, 88);
    quit(worker).await;
    env.finish(factory).await;
}

/// Chain add(2,2) → add(5,6) → multiply(4) = multiply(4, add(5, 6, 4)) → 60.
pub async fn chain_add_add_multiply<F: Factory>(factory: &F) {
    let env = setup(factory, "chain", |_| {}).await;
    let server = env.server();
    let worker = env.worker(&server, 2);
    let chain = Chain::new(vec![
        ints("add", &[2, 2]),
        ints("add", &[5, 6]),
        ints("multiply", &[4]),
    ]);
    let mut r = server.send_chain(chain).await.expect("send_chain");
    let v: i64 = r.results(WAIT).await.expect("chain results");
    assert_eq!(v, 60);
    quit(worker).await;
    env.finish(factory).await;
}

/// `return_just_error("Test error", true)` fails with exactly "Test error" and no results;
/// `("", false)` succeeds with no results.
pub async fn return_just_error<F: Factory>(factory: &F) {
    let env = setup(factory, "just_error", |_| {}).await;
    let server = env.server();
    let worker = env.worker(&server, 2);

    let mut r = server
        .send_task(Signature::new("return_just_error").args(("Test error", true)))
        .await
        .expect("send");
    assert_eq!(failure("return_just_error", &mut r).await, "Test error");
    let stored = state_of(&*env.adapters.backend, r.uuid())
        .await
        .expect("state stored");
    assert!(stored.is_failure());
    assert!(
        stored.results.unwrap_or_default().is_empty(),
        "a failure has no results"
    );

    let mut r = server
        .send_task(Signature::new("return_just_error").args(("", false)))
        .await
        .expect("send");
    let v = r.get_with_timeout(WAIT, POLL).await.expect("success");
    assert!(v.is_empty(), "no results expected, got {v:?}");
    quit(worker).await;
    env.finish(factory).await;
}

/// `return_multiple_values("foo", "bar", false)` → ("foo", "bar"); with `true` → an error.
pub async fn return_multiple_values<F: Factory>(factory: &F) {
    let env = setup(factory, "multi", |_| {}).await;
    let server = env.server();
    let worker = env.worker(&server, 2);
    let mut r = server
        .send_task(Signature::new("return_multiple_values").args(("foo", "bar", false)))
        .await
        .expect("send");
    let v: (String, String) = results("return_multiple_values", &mut r).await;
    assert_eq!(v, ("foo".to_owned(), "bar".to_owned()));

    let mut r = server
        .send_task(Signature::new("return_multiple_values").args(("foo", "bar", true)))
        .await
        .expect("send");
    assert_eq!(
        failure("return_multiple_values", &mut r).await,
        "Test error"
    );
    quit(worker).await;
    env.finish(factory).await;
}

/// A panicking task ends FAILURE with the panic text "oops", and the worker goes on with the
/// next task.
pub async fn panic_fails_task_and_worker_survives<F: Factory>(factory: &F) {
    let env = setup(factory, "panic", |_| {}).await;
    let server = env.server();
    let worker = env.worker(&server, 1);
    let mut r = server
        .send_task(Signature::new("panic"))
        .await
        .expect("send");
    assert_eq!(failure("panic", &mut r).await, "oops");
    let mut r = server.send_task(ints("add", &[3, 4])).await.expect("send");
    assert_eq!(results::<i64>("add after panic", &mut r).await, 7);
    quit(worker).await;
    env.finish(factory).await;
}

/// `delay_test` with ETA now+100 ms returns a time ≥ the ETA (Go's scenario); a task with
/// ETA now+1 s is listed by `broker.delayed()` (not `pending`) until then, and also runs no
/// earlier than its ETA.
pub async fn eta_delays_task<F: Factory>(factory: &F) {
    let env = setup(factory, "eta", |_| {}).await;
    let server = env.server();
    let worker = env.worker(&server, 2);

    let later_eta = Utc::now() + chrono::Duration::seconds(1);
    let mut later = server
        .send_task(Signature::new("delay_test").eta(later_eta))
        .await
        .expect("send");
    let delayed = env
        .broker()
        .delayed(10_000)
        .await
        .expect("broker delayed failed");
    let listed = delayed
        .iter()
        .find(|(_, body)| uuid_of(body).as_deref() == Some(later.uuid()))
        .expect("a task with a future ETA is listed by delayed()");
    let skew = (listed.0 - later_eta).num_milliseconds().abs();
    assert!(
        skew <= 5,
        "delayed() reports ETA {} for {later_eta}",
        listed.0
    );
    let waiting = pending(&**env.broker(), &env.queue).await;
    assert!(
        !uuids(&waiting).iter().any(|u| u == later.uuid()),
        "a delayed task must not be pending"
    );

    let eta = Utc::now() + chrono::Duration::milliseconds(100);
    let mut r = server
        .send_task(Signature::new("delay_test").eta(eta))
        .await
        .expect("send");
    let ran_at: i64 = results("delay_test (100 ms)", &mut r).await;
    assert!(
        ran_at >= tasks::unix_nanos(eta),
        "ran at {ran_at} ns, before its ETA {} ns",
        tasks::unix_nanos(eta)
    );
    let ran_at: i64 = results("delay_test (1 s)", &mut later).await;
    assert!(
        ran_at >= tasks::unix_nanos(later_eta),
        "ran at {ran_at} ns, before its ETA {} ns",
        tasks::unix_nanos(later_eta)
    );
    quit(worker).await;
    env.finish(factory).await;
}

// ---------------------------------------------------------------------------------------------
// Retries.
// ---------------------------------------------------------------------------------------------

/// A task failing once with `retries(2)` succeeds on attempt 2 (the attempt number reaches the
/// task), passing through RETRY (and PENDING again, same UUID), and the first back-off is
/// Fibonacci's 1 s.
pub async fn retry_with_fibonacci_backoff<F: Factory>(factory: &F) {
    let env = setup(factory, "retry", |_| {}).await;
    let server = env.server();
    let worker = env.worker(&server, 2);
    let mut r = server
        .send_task(
            Signature::new(tasks::FAIL_THEN_SUCCEED)
                .args(1i64)
                .retries(2),
        )
        .await
        .expect("send");
    let attempt: i64 = results("fail_then_succeed(1)", &mut r).await;
    assert_eq!(attempt, 2, "the task succeeds on its second attempt");
    let runs = env.probes.runs_of(tasks::FAIL_THEN_SUCCEED);
    assert_eq!(
        runs.iter().map(|r| r.attempt).collect::<Vec<_>>(),
        [1, 2],
        "attempt numbers seen by the task"
    );
    assert!(
        runs.iter().all(|run| run.uuid == r.uuid()),
        "a retry keeps the UUID"
    );
    let gap = runs[1].at - runs[0].at;
    assert!(
        gap >= Duration::from_millis(950),
        "first Fibonacci back-off is 1 s, runs were {gap:?} apart"
    );
    assert_eq!(
        env.recorder.states_of(r.uuid()),
        [
            State::Pending,
            State::Received,
            State::Started,
            State::Retry,
            State::Pending,
            State::Received,
            State::Started,
            State::Success
        ],
        "states written for a task retried once"
    );
    quit(worker).await;
    env.finish(factory).await;
}

/// A task that always asks to be retried later, with `max_retry_later = 2`, ends FAILURE after
/// exactly 3 runs (Go would retry forever).
pub async fn retry_later_is_bounded<F: Factory>(factory: &F) {
    let env = setup(factory, "retry_later", |c| c.max_retry_later = 2).await;
    let server = env.server();
    let worker = env.worker(&server, 2);
    let mut r = server
        .send_task(Signature::new(tasks::ALWAYS_RETRY_LATER))
        .await
        .expect("send");
    failure("always_retry_later", &mut r).await;
    assert_eq!(env.probes.runs_of(tasks::ALWAYS_RETRY_LATER).len(), 3);
    let retries = env
        .recorder
        .states_of(r.uuid())
        .into_iter()
        .filter(|s| *s == State::Retry)
        .count();
    assert_eq!(retries, 2, "two RETRY states before the final FAILURE");
    quit(worker).await;
    env.finish(factory).await;
}

/// A fatal error is not retried even with `retries(5)`.
pub async fn fatal_error_is_not_retried<F: Factory>(factory: &F) {
    let env = setup(factory, "fatal", |_| {}).await;
    let server = env.server();
    let worker = env.worker(&server, 1);
    let mut r = server
        .send_task(Signature::new(tasks::FATAL_ERROR).retries(5))
        .await
        .expect("send");
    assert_eq!(failure("fatal_error", &mut r).await, "fatal error");
    barrier(&server).await;
    assert_eq!(env.probes.runs_of(tasks::FATAL_ERROR).len(), 1, "ran once");
    assert!(!env.recorder.states_of(r.uuid()).contains(&State::Retry));
    quit(worker).await;
    env.finish(factory).await;
}

// ---------------------------------------------------------------------------------------------
// Callbacks.
// ---------------------------------------------------------------------------------------------

/// `add(1, 1)` with `OnSuccess add(10)`: the callback gets the result appended → 12.
pub async fn on_success_gets_results_appended<F: Factory>(factory: &F) {
    let env = setup(factory, "on_success", |_| {}).await;
    let server = env.server();
    let worker = env.worker(&server, 2);
    let callback = ints("add", &[10]).with_uuid(id::task_id());
    let mut cb = server.async_result(callback.uuid.clone());
    let mut r = server
        .send_task(ints("add", &[1, 1]).on_success(callback))
        .await
        .expect("send");
    assert_eq!(results::<i64>("parent add(1, 1)", &mut r).await, 2);
    assert_eq!(results::<i64>("callback add(10, 2)", &mut cb).await, 12);
    quit(worker).await;
    env.finish(factory).await;
}

/// An immutable parent does not append its results: `add(1, 1)` immutable with
/// `OnSuccess add(10)` → 10.
pub async fn immutable_parent_does_not_append<F: Factory>(factory: &F) {
    let env = setup(factory, "immutable", |_| {}).await;
    let server = env.server();
    let worker = env.worker(&server, 2);
    let callback = ints("add", &[10]).with_uuid(id::task_id());
    let mut cb = server.async_result(callback.uuid.clone());
    server
        .send_task(ints("add", &[1, 1]).immutable(true).on_success(callback))
        .await
        .expect("send");
    assert_eq!(results::<i64>("callback add(10)", &mut cb).await, 10);
    quit(worker).await;
    env.finish(factory).await;
}

/// `OnError` callbacks get the error text prepended as a `string` argument.
pub async fn on_error_gets_error_text<F: Factory>(factory: &F) {
    let env = setup(factory, "on_error", |_| {}).await;
    let server = env.server();
    let worker = env.worker(&server, 2);
    let callback = Signature::new(tasks::RECORD_STRINGS)
        .args("extra")
        .with_uuid(id::task_id());
    let mut cb = server.async_result(callback.uuid.clone());
    let mut r = server
        .send_task(
            Signature::new("return_just_error")
                .args(("Test error", true))
                .on_error(callback),
        )
        .await
        .expect("send");
    assert_eq!(failure("return_just_error", &mut r).await, "Test error");
    let got: Vec<String> = results("on_error callback", &mut cb).await;
    assert_eq!(got, ["Test error", "extra"]);
    assert_eq!(
        env.probes.received_strings(),
        [vec!["Test error".to_owned(), "extra".to_owned()]]
    );
    quit(worker).await;
    env.finish(factory).await;
}

// ---------------------------------------------------------------------------------------------
// Chords under stress and failure.
// ---------------------------------------------------------------------------------------------

/// Two servers on the same adapters, each with a worker of concurrency 16, run chords of 60
/// members that finish at nearly the same time (all wait for one release time, then 0–5 ms):
/// the callback runs exactly once per chord and receives all 60 results. Three rounds.
pub async fn chord_exactly_once_under_concurrent_finishers<F: Factory>(factory: &F) {
    let env = setup(factory, "chord_once", |_| {}).await;
    let a = env.server();
    let b = env.server();
    let wa = env.worker(&a, 16);
    let wb = env.worker(&b, 16);
    let mut callbacks = Vec::new();
    for round in 1..=3 {
        let release = Utc::now().timestamp_millis() + 300;
        let members = (0..60)
            .map(|_| Signature::new(tasks::JITTER_ONE).args(release))
            .collect();
        let chord = Chord::new(Group::new(members), Signature::new(tasks::COUNT_CHORD));
        callbacks.push(chord.callback.uuid.clone());
        let sender = if round % 2 == 0 { &b } else { &a };
        let mut r = sender.send_chord(chord, 0).await.expect("send_chord");
        let v: i64 = r.results(WAIT).await.expect("chord results");
        assert_eq!(v, 60, "round {round}: the callback receives all 60 results");
    }
    // Anything a second trigger would have sent is queued before these.
    let barrier_group = Group::new((0..32).map(|_| ints("add", &[0, 0])).collect());
    let mut members = a.send_group(barrier_group, 0).await.expect("send_group");
    for m in &mut members {
        results::<i64>("barrier member", m).await;
    }
    let calls = env.probes.chord_calls();
    for (round, uuid) in callbacks.iter().enumerate() {
        assert_eq!(
            calls.get(uuid).copied().unwrap_or(0),
            1,
            "round {}: chord callback must run exactly once",
            round + 1
        );
    }
    assert_eq!(env.probes.chord_total(), 3);
    quit(wa).await;
    quit(wb).await;
    env.finish(factory).await;
}

/// A chord with a failing member: the callback never runs, waiting on the chord fails quickly
/// with an error naming the failed member, and the callback's state is FAILURE.
pub async fn chord_with_failed_member_fails_callback<F: Factory>(factory: &F) {
    let env = setup(factory, "chord_fail", |_| {}).await;
    let server = env.server();
    let worker = env.worker(&server, 1);
    let group = Group::new(vec![
        ints("add", &[1, 1]),
        Signature::new("return_just_error").args(("member failed", true)),
        ints("add", &[2, 2]),
    ]);
    let failed = group.tasks[1].uuid.clone();
    let chord = Chord::new(group, Signature::new(tasks::COUNT_CHORD));
    let callback = chord.callback.uuid.clone();
    let started = Instant::now();
    let mut r = server.send_chord(chord, 0).await.expect("send_chord");
    match r.get_with_timeout(WAIT, POLL).await {
        Err(Error::TaskFailed(text)) => assert!(
            text.contains(&failed),
            "the chord error names the failed member {failed}: {text:?}"
        ),
        other => panic!("expected the chord to fail, got {other:?}"),
    }
    assert!(started.elapsed() < WAIT / 2, "the chord failed slowly");
    for m in &mut r.group {
        let _ = m.get_with_timeout(WAIT, POLL).await;
    }
    barrier(&server).await;
    assert_eq!(env.probes.chord_total(), 0, "the callback must not run");
    let mut cb = server.async_result(callback);
    let text = failure("chord callback", &mut cb).await;
    assert!(
        text.contains(&failed),
        "the callback's error names the failed member {failed}: {text:?}"
    );
    quit(worker).await;
    env.finish(factory).await;
}

// ---------------------------------------------------------------------------------------------
// Bad messages.
// ---------------------------------------------------------------------------------------------

/// A task nobody registered is requeued (with back-off) at most `unregistered_max_requeues`
/// times, then dead-lettered with a reason naming it; the worker keeps running other tasks.
pub async fn unregistered_task_is_dead_lettered<F: Factory>(factory: &F) {
    let env = setup(factory, "unregistered", |c| {
        c.unregistered_max_requeues = 1;
        c.unregistered_max_backoff = Duration::from_millis(20);
    })
    .await;
    let server = env.server();
    let worker = env.worker(&server, 2);
    let r = server
        .send_task(Signature::new("nobody_registered_this"))
        .await
        .expect("send");
    let uuid = r.uuid().to_owned();
    let (reason, body) = poll_until("the unregistered task to be dead-lettered", || async {
        let dead = env
            .broker()
            .dead_letters(&env.queue, 100)
            .await
            .expect("broker dead_letters failed");
        dead.into_iter()
            .find(|(_, body)| uuid_of(body).as_ref() == Some(&uuid))
    })
    .await;
    assert!(
        reason.contains("nobody_registered_this"),
        "the reason names the task: {reason:?}"
    );
    let sig = Signature::from_slice(&body).expect("dead letter body decodes");
    assert_eq!(sig.name, "nobody_registered_this");
    let mut r = server.send_task(ints("add", &[2, 3])).await.expect("send");
    assert_eq!(results::<i64>("add after dead letter", &mut r).await, 5);
    assert!(!uuids(&pending(&**env.broker(), &env.queue).await).contains(&uuid));
    quit(worker).await;
    env.finish(factory).await;
}

/// An unregistered task marked `IgnoreWhenTaskNotRegistered` is dropped: not dead-lettered,
/// not pending, not requeued.
pub async fn unregistered_task_is_dropped_when_ignored<F: Factory>(factory: &F) {
    let env = setup(factory, "ignored", |c| {
        c.unregistered_max_backoff = Duration::from_millis(20);
    })
    .await;
    let server = env.server();
    let worker = env.worker(&server, 1);
    let r = server
        .send_task(Signature::new("nobody_registered_this").ignore_when_not_registered(true))
        .await
        .expect("send");
    barrier(&server).await;
    let dead = env
        .broker()
        .dead_letters(&env.queue, 100)
        .await
        .expect("broker dead_letters failed");
    assert!(dead.is_empty(), "nothing dead-lettered: {dead:?}");
    assert!(
        pending(&**env.broker(), &env.queue).await.is_empty(),
        "nothing pending"
    );
    let delayed = env.broker().delayed(10_000).await.expect("broker delayed");
    let delayed: Vec<Bytes> = delayed.into_iter().map(|(_, b)| b).collect();
    assert!(
        !uuids(&delayed).iter().any(|u| u == r.uuid()),
        "not requeued"
    );
    quit(worker).await;
    env.finish(factory).await;
}

/// Garbage bytes on the queue are dead-lettered with a reason; the worker survives.
pub async fn undecodable_message_is_dead_lettered<F: Factory>(factory: &F) {
    let env = setup(factory, "garbage", |_| {}).await;
    let server = env.server();
    let worker = env.worker(&server, 2);
    env.broker()
        .publish(
            &Signature::new("x").routing_key(env.queue.clone()),
            Bytes::from_static(b"{not json"),
        )
        .await
        .expect("publish garbage");
    let (reason, body) = poll_until("the garbage to be dead-lettered", || async {
        let dead = env
            .broker()
            .dead_letters(&env.queue, 100)
            .await
            .expect("broker dead_letters failed");
        dead.into_iter().next()
    })
    .await;
    assert!(!reason.is_empty(), "a dead letter carries a reason");
    assert_eq!(&body[..], b"{not json", "the dead letter keeps the bytes");
    let mut r = server.send_task(ints("add", &[1, 2])).await.expect("send");
    assert_eq!(results::<i64>("add after garbage", &mut r).await, 3);
    quit(worker).await;
    env.finish(factory).await;
}

/// `add("string")`: FAILURE whose text names the argument.
pub async fn wrong_argument_type_fails<F: Factory>(factory: &F) {
    let env = setup(factory, "wrong_type", |_| {}).await;
    let server = env.server();
    let worker = env.worker(&server, 2);
    let mut r = server
        .send_task(Signature::new("add").args("string"))
        .await
        .expect("send");
    let text = failure("add(\"string\")", &mut r).await;
    assert!(
        text.contains("argument #1"),
        "error names the argument: {text:?}"
    );
    quit(worker).await;
    env.finish(factory).await;
}

/// `sum([1], 5)`: FAILURE "too many arguments".
pub async fn too_many_arguments_fails<F: Factory>(factory: &F) {
    let env = setup(factory, "too_many", |_| {}).await;
    let server = env.server();
    let worker = env.worker(&server, 2);
    let mut r = server
        .send_task(Signature::new("sum").args((vec![1i64], 5i64)))
        .await
        .expect("send");
    let text = failure("sum with two arguments", &mut r).await;
    assert!(text.contains("too many arguments"), "{text:?}");
    quit(worker).await;
    env.finish(factory).await;
}

/// With `max_message_size = 1024`, sending a 2 KiB argument fails with `MessageTooLarge` and
/// publishes nothing.
pub async fn oversized_message_is_rejected<F: Factory>(factory: &F) {
    let env = setup(factory, "oversized", |c| c.max_message_size = 1024).await;
    let server = env.server();
    let big = "x".repeat(2048);
    let uuid = format!("task_{}_oversized", env.queue);
    match server
        .send_task(
            Signature::new(tasks::RECORD_STRINGS)
                .with_uuid(uuid.clone())
                .args(big),
        )
        .await
    {
        Err(Error::MessageTooLarge { size, max }) => {
            assert!(size > 2048);
            assert_eq!(max, 1024);
        }
        other => panic!("expected MessageTooLarge, got {other:?}"),
    }
    assert!(
        pending(&**env.broker(), &env.queue).await.is_empty(),
        "nothing published"
    );
    assert!(
        env.adapters
            .backend
            .get_state(&uuid)
            .await
            .expect("get_state")
            .is_none(),
        "no PENDING state left behind"
    );
    env.finish(factory).await;
}

// ---------------------------------------------------------------------------------------------
// Time limits and shutdown.
// ---------------------------------------------------------------------------------------------

/// A task with a 100 ms time limit that ignores cancellation and sleeps 10 s is dropped after
/// the grace (200 ms): FAILURE "time limit exceeded" within a few seconds.
pub async fn time_limit_drops_uncooperative_task<F: Factory>(factory: &F) {
    let env = setup(factory, "limit_drop", |c| {
        c.time_limit_grace = Duration::from_millis(200);
    })
    .await;
    let server = env.server();
    server.register(
        "ignore_cancellation",
        env.probes.sleep_ms().time_limit(Duration::from_millis(100)),
    );
    let worker = env.worker(&server, 2);
    let started = Instant::now();
    let mut r = server
        .send_task(Signature::new("ignore_cancellation").args(10_000i64))
        .await
        .expect("send");
    assert_eq!(
        failure("over its limit", &mut r).await,
        "time limit exceeded"
    );
    let took = started.elapsed();
    assert!(took < Duration::from_secs(3), "failed after {took:?}");
    assert!(
        took >= Duration::from_millis(250),
        "failed before limit + grace: {took:?}"
    );
    quit(worker).await;
    env.finish(factory).await;
}

/// A cooperative task sees its cancellation token fire at the time limit (without waiting for
/// the grace) and the task ends FAILURE "time limit exceeded".
pub async fn time_limit_cancels_cooperative_task<F: Factory>(factory: &F) {
    let env = setup(factory, "limit_coop", |c| c.time_limit_grace = WAIT).await;
    let server = env.server();
    server.register(
        tasks::COOPERATIVE,
        env.probes
            .cooperative()
            .time_limit(Duration::from_millis(100)),
    );
    let worker = env.worker(&server, 2);
    let started = Instant::now();
    let mut r = server
        .send_task(Signature::new(tasks::COOPERATIVE).args(10_000i64))
        .await
        .expect("send");
    assert_eq!(
        failure("over its limit", &mut r).await,
        "time limit exceeded"
    );
    assert!(env.probes.cancel_observed(), "the task saw its token fire");
    let took = started.elapsed();
    assert!(took < Duration::from_secs(3), "failed after {took:?}");
    quit(worker).await;
    env.finish(factory).await;
}

/// `quit()` while a 300 ms task runs waits for it: `Stopped::Gracefully`, task SUCCESS.
pub async fn graceful_shutdown_waits_for_running_task<F: Factory>(factory: &F) {
    let env = setup(factory, "graceful", |_| {}).await;
    let server = env.server();
    let worker = env.worker(&server, 2);
    let r = server
        .send_task(Signature::new(tasks::SLEEP_MS).args(300i64))
        .await
        .expect("send");
    env.probes.wait_for_runs(tasks::SLEEP_MS, 1, WAIT).await;
    assert_eq!(quit(worker).await, Stopped::Gracefully);
    let state = state_of(&*env.adapters.backend, r.uuid())
        .await
        .expect("state stored");
    assert_eq!(state.state, State::Success, "the running task finished");
    env.finish(factory).await;
}

/// With `shutdown_timeout = 100 ms`, `quit()` during a 5 s task stops abruptly, the task is not
/// SUCCESS, its message is back in the broker, and a new worker completes it.
pub async fn shutdown_timeout_returns_message<F: Factory>(factory: &F) {
    let env = setup(factory, "abrupt", |c| {
        c.shutdown_timeout = Duration::from_millis(100);
    })
    .await;
    let server = env.server();
    let worker = env.worker(&server, 2);
    let mut r = server
        .send_task(Signature::new(tasks::SLOW_FIRST_RUN).args(5_000i64))
        .await
        .expect("send");
    env.probes
        .wait_for_runs(tasks::SLOW_FIRST_RUN, 1, WAIT)
        .await;
    let started = Instant::now();
    assert_eq!(quit(worker).await, Stopped::Abruptly);
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "quit took too long"
    );
    let state = state_of(&*env.adapters.backend, r.uuid())
        .await
        .expect("state stored");
    assert_ne!(state.state, State::Success);
    let uuid = r.uuid().to_owned();
    poll_until("the interrupted task to be back in the queue", || async {
        uuids(&pending(&**env.broker(), &env.queue).await)
            .contains(&uuid)
            .then_some(())
    })
    .await;
    let again = env.server();
    let worker = env.worker(&again, 2);
    assert_eq!(results::<i64>("the returned task", &mut r).await, 5_000);
    assert_eq!(env.probes.runs_of(tasks::SLOW_FIRST_RUN).len(), 2);
    quit(worker).await;
    env.finish(factory).await;
}

/// Two workers on one queue, one knowing only `multiply`, the other only `add` (Go's
/// `worker_only_consumes_registered_tasks`): group {multiply(4, 5), add(2, 3)} → {20, 5}.
pub async fn workers_consume_only_registered_tasks<F: Factory>(factory: &F) {
    let env = setup(factory, "split_registry", |c| {
        c.unregistered_max_requeues = 1000;
        c.unregistered_max_backoff = Duration::from_millis(20);
    })
    .await;
    let multiplier = env.bare_server();
    multiplier.register_task("multiply", tasks::multiply);
    let adder = env.bare_server();
    adder.register_task("add", tasks::add);
    let wm = env.worker(&multiplier, 2);
    let wa = env.worker(&adder, 2);
    let group = Group::new(vec![ints("multiply", &[4, 5]), ints("add", &[2, 3])]);
    let mut members = multiplier.send_group(group, 0).await.expect("send_group");
    let mut got = Vec::new();
    for m in &mut members {
        got.push(results::<i64>("group member", m).await);
    }
    assert_eq!(got, [20, 5]);
    quit(wm).await;
    quit(wa).await;
    env.finish(factory).await;
}

// ---------------------------------------------------------------------------------------------
// Inspection.
// ---------------------------------------------------------------------------------------------

/// With no worker, add(1,2), add(3,5), add(6,7) are listed by `pending` (oldest first, equal in
/// name, arguments and UUID to what was sent); `purge` removes 3 and empties the queue.
pub async fn pending_tasks_and_purge<F: Factory>(factory: &F) {
    let env = setup(factory, "pending", |_| {}).await;
    let server = env.server();
    let sent: Vec<Signature> = [[1, 2], [3, 5], [6, 7]]
        .iter()
        .map(|xs| ints("add", xs).with_uuid(id::task_id()))
        .collect();
    for s in &sent {
        server.send_task(s.clone()).await.expect("send");
    }
    let listed: Vec<Signature> = pending(&**env.broker(), &env.queue)
        .await
        .iter()
        .map(|b| Signature::from_slice(b).expect("pending message decodes"))
        .collect();
    assert_eq!(listed.len(), 3, "three pending: {listed:?}");
    for (got, want) in listed.iter().zip(&sent) {
        assert_eq!(got.uuid, want.uuid);
        assert_eq!(got.name, want.name);
        assert_eq!(got.args, want.args);
    }
    assert_eq!(env.broker().purge(&env.queue).await.expect("purge"), 3);
    assert!(pending(&**env.broker(), &env.queue).await.is_empty());
    env.finish(factory).await;
}

// ---------------------------------------------------------------------------------------------
// Backend contract.
// ---------------------------------------------------------------------------------------------

/// A successful task's states are written PENDING → RECEIVED → STARTED → SUCCESS, and the
/// stored SUCCESS carries `TaskName` and `CreatedAt` over from PENDING.
pub async fn backend_state_sequence<F: Factory>(factory: &F) {
    let env = setup(factory, "states", |_| {}).await;
    let server = env.server();
    let worker = env.worker(&server, 1);
    let mut r = server.send_task(ints("add", &[1, 1])).await.expect("send");
    assert_eq!(results::<i64>("add(1, 1)", &mut r).await, 2);
    assert_eq!(
        env.recorder.states_of(r.uuid()),
        [
            State::Pending,
            State::Received,
            State::Started,
            State::Success
        ]
    );
    let written = env.recorder.written();
    let pending_state = written
        .iter()
        .find(|s| s.task_uuid == r.uuid() && s.state == State::Pending)
        .expect("PENDING written");
    let stored = state_of(&*env.adapters.backend, r.uuid())
        .await
        .expect("state stored");
    assert_eq!(stored.state, State::Success);
    assert_eq!(stored.task_name, "add", "TaskName carried over");
    let (Some(created), Some(stored_created)) = (pending_state.created_at, stored.created_at)
    else {
        panic!("CreatedAt missing: {stored:?}");
    };
    let drift = (stored_created - created)
        .num_microseconds()
        .unwrap_or(i64::MAX)
        .abs();
    assert!(
        drift < 1000,
        "CreatedAt carried over: {created} vs {stored_created}"
    );
    assert_eq!(
        stored.results.clone().unwrap_or_default(),
        [machinist_core::TaskResult::new(2i64)]
    );
    quit(worker).await;
    env.finish(factory).await;
}

/// With `results_expire_in = 1`, a state and a group meta are readable at once and gone within
/// a few seconds.
pub async fn backend_results_expire<F: Factory>(factory: &F) {
    let env = setup(factory, "expiry", |c| c.results_expire_in = 1).await;
    let backend = env.adapters.backend.clone();
    let uuid = id::task_id();
    let group = id::group_id();
    backend
        .set_state(&TaskState::pending(&uuid, "add"))
        .await
        .expect("set_state");
    backend
        .init_group(&group, std::slice::from_ref(&uuid))
        .await
        .expect("init_group");
    assert!(
        state_of(&*backend, &uuid).await.is_some(),
        "readable at once"
    );
    assert!(
        backend
            .get_group(&group)
            .await
            .expect("get_group")
            .is_some(),
        "group readable at once"
    );
    let written = Instant::now();
    poll_until("the state and group to expire", || async {
        let state = state_of(&*backend, &uuid).await;
        let meta = backend.get_group(&group).await.expect("get_group");
        (state.is_none() && meta.is_none()).then_some(())
    })
    .await;
    assert!(
        written.elapsed() >= Duration::from_millis(500),
        "expired too early ({:?})",
        written.elapsed()
    );
    env.finish(factory).await;
}

/// 50 concurrent `trigger_chord` calls on one group: exactly one gets `true`.
pub async fn backend_trigger_chord_exactly_once<F: Factory>(factory: &F) {
    let env = setup(factory, "trigger", |_| {}).await;
    let backend = env.adapters.backend.clone();
    let group = id::group_id();
    let members: Vec<String> = (0..3).map(|_| id::task_id()).collect();
    backend
        .init_group(&group, &members)
        .await
        .expect("init_group");
    let calls: Vec<_> = (0..50)
        .map(|_| {
            let backend = backend.clone();
            let group = group.clone();
            tokio::spawn(async move { backend.trigger_chord(&group).await })
        })
        .collect();
    let mut winners = 0;
    for call in calls {
        if within("trigger_chord", call)
            .await
            .expect("trigger_chord task panicked")
            .expect("trigger_chord failed")
        {
            winners += 1;
        }
    }
    assert_eq!(winners, 1, "trigger_chord returned true {winners} times");
    assert!(
        !backend.trigger_chord(&group).await.expect("trigger_chord"),
        "a later call gets false"
    );
    env.finish(factory).await;
}

/// `group_states` returns members in group order whatever order they finished in, and
/// `group_completed` turns true only when all are SUCCESS or FAILURE.
pub async fn backend_group_states_in_order<F: Factory>(factory: &F) {
    let env = setup(factory, "group_states", |_| {}).await;
    let backend = env.adapters.backend.clone();
    let group = id::group_id();
    let members: Vec<String> = (0..3).map(|_| id::task_id()).collect();
    backend
        .init_group(&group, &members)
        .await
        .expect("init_group");
    for m in &members {
        backend
            .set_state(&TaskState::pending(m, "add"))
            .await
            .expect("set_state");
    }
    let meta = backend
        .get_group(&group)
        .await
        .expect("get_group")
        .expect("group stored");
    assert_eq!(meta.task_uuids, members);
    let finish =
        |i: usize| TaskState::success(&members[i], vec![machinist_core::TaskResult::new(i as i64)]);
    backend.set_state(&finish(2)).await.expect("set_state");
    backend
        .set_state(&TaskState::failure(&members[0], "boom"))
        .await
        .expect("set_state");
    assert!(
        !backend
            .group_completed(&group, 3)
            .await
            .expect("group_completed"),
        "one member still PENDING"
    );
    backend.set_state(&finish(1)).await.expect("set_state");
    assert!(
        backend
            .group_completed(&group, 3)
            .await
            .expect("group_completed")
    );
    let states = backend.group_states(&group, 3).await.expect("group_states");
    assert_eq!(
        states
            .iter()
            .map(|s| s.task_uuid.as_str())
            .collect::<Vec<_>>(),
        members.iter().map(String::as_str).collect::<Vec<_>>(),
        "group order"
    );
    assert_eq!(
        states.iter().map(|s| s.state.clone()).collect::<Vec<_>>(),
        [State::Failure, State::Success, State::Success]
    );
    assert_eq!(states[0].error, "boom");
    assert_eq!(states[1].task_name, "add", "TaskName carried over");
    assert_eq!(
        states[2].results.clone().unwrap_or_default(),
        [machinist_core::TaskResult::new(2i64)]
    );
    env.finish(factory).await;
}

// ---------------------------------------------------------------------------------------------
// Lock contract.
// ---------------------------------------------------------------------------------------------

/// `try_lock` is exclusive, `unlock` frees the key, an expired holder loses it, and
/// `lock_with_retries` waits for the expiry.
pub async fn lock_contract<F: Factory>(factory: &F) {
    let env = setup(factory, "lock", |_| {}).await;
    let lock = env.adapters.lock.clone();
    let key = format!("{}_lock", env.namespace);
    let far = Utc::now() + chrono::Duration::seconds(30);
    assert!(
        lock.try_lock(&key, far).await.expect("try_lock"),
        "free key"
    );
    assert!(
        !lock.try_lock(&key, far).await.expect("try_lock"),
        "held key"
    );
    lock.unlock(&key).await.expect("unlock");
    assert!(
        lock.try_lock(&key, far).await.expect("try_lock"),
        "after unlock"
    );
    lock.unlock(&key).await.expect("unlock");

    let short = format!("{}_short", env.namespace);
    let until = Utc::now() + chrono::Duration::milliseconds(300);
    assert!(lock.try_lock(&short, until).await.expect("try_lock"));
    assert!(
        !lock.try_lock(&short, far).await.expect("try_lock"),
        "not yet expired"
    );
    let got = within(
        "lock_with_retries",
        lock.lock_with_retries(&short, far, 40, Duration::from_millis(50)),
    )
    .await
    .expect("lock_with_retries");
    assert!(got, "the key is free once its holder's time ran out");
    // Stores with millisecond expiry may free the key up to a millisecond early.
    assert!(
        Utc::now() >= until - chrono::Duration::milliseconds(10),
        "taken before the holder's expiry"
    );
    lock.unlock(&short).await.expect("unlock");
    env.finish(factory).await;
}

// ---------------------------------------------------------------------------------------------
// Broker contract.
// ---------------------------------------------------------------------------------------------

/// A test message for the broker scenarios: its signature (routed to `queue`) and body.
fn probe_message(queue: &str) -> (Signature, Bytes) {
    let sig = Signature::new("add")
        .args((1i64, 2i64))
        .with_uuid(id::task_id())
        .routing_key(queue);
    let body = Bytes::from(sig.to_vec().expect("encode"));
    (sig, body)
}

/// The next delivery of `consumer`, bounded.
async fn next(consumer: &mut Box<dyn machinist_core::Consumer>) -> Delivery {
    within("a delivery", consumer.next())
        .await
        .expect("consumer next failed")
        .expect("consumer stopped unexpectedly")
}

/// A delivery nacked with requeue comes back; one dropped undecided comes back (at-least-once);
/// an acknowledged one does not; a stopped consumer yields `None`.
pub async fn broker_redelivers_undecided_and_requeued<F: Factory>(factory: &F) {
    let env = setup(factory, "redeliver", |_| {}).await;
    let broker = env.broker().clone();
    let (sig, body) = probe_message(&env.queue);
    broker.publish(&sig, body.clone()).await.expect("publish");
    let mut consumer = broker
        .consume(std::slice::from_ref(&env.queue), 10)
        .await
        .expect("consume");
    let d = next(&mut consumer).await;
    assert_eq!(d.body, body);
    assert_eq!(d.queue, env.queue);
    d.nack(true).await.expect("nack");
    let d = next(&mut consumer).await;
    assert_eq!(d.body, body, "nacked with requeue: delivered again");
    drop(d);
    let d = next(&mut consumer).await;
    assert_eq!(d.body, body, "dropped undecided: delivered again");
    d.ack().await.expect("ack");
    assert!(
        pending(&*broker, &env.queue).await.is_empty(),
        "acked: gone"
    );
    consumer.stop().await.expect("stop");
    let after = within("next after stop", consumer.next())
        .await
        .expect("next after stop");
    assert!(after.is_none(), "a stopped consumer yields None");
    env.finish(factory).await;
}

/// `dead_letter(reason)` sets the message aside: listed by `dead_letters` with its reason and
/// bytes, no longer pending or delivered.
pub async fn broker_dead_letter_keeps_reason<F: Factory>(factory: &F) {
    let env = setup(factory, "dead_letter", |_| {}).await;
    let broker = env.broker().clone();
    let (sig, body) = probe_message(&env.queue);
    broker.publish(&sig, body.clone()).await.expect("publish");
    let mut consumer = broker
        .consume(std::slice::from_ref(&env.queue), 10)
        .await
        .expect("consume");
    let d = next(&mut consumer).await;
    d.dead_letter("conformance: set aside")
        .await
        .expect("dead_letter");
    drop(d);
    let dead = broker
        .dead_letters(&env.queue, 100)
        .await
        .expect("dead_letters");
    assert_eq!(dead, [("conformance: set aside".to_owned(), body)]);
    assert!(pending(&*broker, &env.queue).await.is_empty());
    consumer.stop().await.expect("stop");
    env.finish(factory).await;
}

/// A message with a future ETA is listed by `delayed` (not `pending`) and delivered no earlier
/// than its ETA.
pub async fn broker_eta_is_kept_by_broker<F: Factory>(factory: &F) {
    let env = setup(factory, "broker_eta", |_| {}).await;
    let broker = env.broker().clone();
    let eta = Utc::now() + chrono::Duration::milliseconds(300);
    let (sig, _) = probe_message(&env.queue);
    let sig = sig.eta(eta);
    let body = Bytes::from(sig.to_vec().expect("encode"));
    broker.publish(&sig, body.clone()).await.expect("publish");
    let delayed = broker.delayed(10_000).await.expect("delayed");
    assert!(
        delayed.iter().any(|(_, b)| *b == body),
        "listed by delayed()"
    );
    assert!(
        pending(&*broker, &env.queue).await.is_empty(),
        "not pending yet"
    );
    let mut consumer = broker
        .consume(std::slice::from_ref(&env.queue), 10)
        .await
        .expect("consume");
    let d = next(&mut consumer).await;
    assert!(Utc::now() >= eta, "delivered before its ETA");
    assert_eq!(d.body, body);
    d.ack().await.expect("ack");
    let delayed = broker.delayed(10_000).await.expect("delayed");
    assert!(
        !delayed.iter().any(|(_, b)| *b == body),
        "no longer delayed"
    );
    consumer.stop().await.expect("stop");
    env.finish(factory).await;
}

/// A consumer with prefetch 1 holds at most one unacknowledged delivery: the second message
/// comes only after the first is acknowledged.
pub async fn broker_prefetch_bounds_deliveries<F: Factory>(factory: &F) {
    let env = setup(factory, "prefetch", |_| {}).await;
    let broker = env.broker().clone();
    let (first, first_body) = probe_message(&env.queue);
    let (second, second_body) = probe_message(&env.queue);
    broker
        .publish(&first, first_body.clone())
        .await
        .expect("publish");
    broker
        .publish(&second, second_body.clone())
        .await
        .expect("publish");
    let mut consumer = broker
        .consume(std::slice::from_ref(&env.queue), 1)
        .await
        .expect("consume");
    let d = next(&mut consumer).await;
    assert_eq!(d.body, first_body, "FIFO");
    let early = tokio::time::timeout(Duration::from_millis(200), consumer.next()).await;
    assert!(early.is_err(), "a second delivery beyond prefetch 1");
    d.ack().await.expect("ack");
    let d = next(&mut consumer).await;
    assert_eq!(d.body, second_body);
    d.ack().await.expect("ack");
    consumer.stop().await.expect("stop");
    env.finish(factory).await;
}
