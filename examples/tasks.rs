//! # machinist-examples
//!
//! Go Machinery's example tasks (`v2/example/tasks/tasks.go`) as plain Rust functions, registered
//! under the names Go's example workers use, so a Go producer's `add`, `sum_ints` … run on a
//! machinist worker and the other way round.
//!
//! | name | Go signature | Rust |
//! |---|---|---|
//! | `add` | `func(args ...int64) (int64, error)` | [`add`] |
//! | `multiply` | `func(args ...int64) (int64, error)` | [`multiply`] |
//! | `sum_ints` | `func(numbers []int64) (int64, error)` | [`sum_ints`] |
//! | `sum_floats` | `func(numbers []float64) (float64, error)` | [`sum_floats`] |
//! | `concat` | `func(strs []string) (string, error)` | [`concat()`] |
//! | `split` | `func(str string) ([]string, error)` | [`split`] |
//! | `panic_task` | `func() (string, error)` | [`panic_task`] |
//! | `long_running_task` | `func() error` | [`long_running_task`] |
//! | `flaky` | (machinist's own) | [`flaky`] |
//! | `return_just_error` | `func(msg string, fail bool) error` | [`return_just_error`] |
//! | `return_multiple_values` | `func(a, b string, fail bool) (string, string, error)` | [`return_multiple_values`] |
//! | `delay_test` | `func() (int64, error)` | [`delay_test`] |
//! | `sleep` | (machinist's own) `func(ms int64) (int64, error)` | [`sleep`] |
//! | `echo` | (machinist's own) | [`echo`] |
//!
//! `return_just_error`, `return_multiple_values` and `delay_test` are the tasks of Go
//! Machinery's integration tests (`integration-tests/suite_test.go`).
//! [`register`] registers them all on a [`Server`]; [`send_flow`] runs Machinery's example
//! `send` flow and checks every result; [`run_demo`] runs it with a worker in the same process
//! (the `quickstart` example on an SQLite file, `machinist demo` in memory).
//!
//! The example binaries, one worker and one sender per broker, run Go Machinery's example as
//! two processes (module [`pair`]):
//!
//! | example | what |
//! |---|---|
//! | `quickstart` | the flow with its worker in one process, on an SQLite file in the temp directory |
//! | `sqlite_worker`, `sqlite_send` | worker and sender on the embedded default (`sqlite://machinist.db` in the working directory) or the URL given |
//! | `redis_worker`, `redis_send` | the same on Redis (`redis://127.0.0.1:6379/0` or the URL given; crate feature `redis`) |

use std::io::Write;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use machinist::{
    AsyncResult, Chain, Chord, Config, Error, FromResults, GoValue, Group, Server, Signature,
    Stopped, TaskContext, TaskError, TaskResult, Variadic,
};

pub mod pair;

/// What [`panic_task`] panics with (Go's example panics with `errors.New("oops")`).
pub const PANIC_MESSAGE: &str = "oops";

/// One example task: the name it is registered under, its Go signature and what it does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExampleTask {
    /// The registered name (the `Name` of a message).
    pub name: &'static str,
    /// The Go function's signature, as in Go Machinery's example (`flaky` has no Go twin: its
    /// signature is what a Go version would have).
    pub go_signature: &'static str,
    /// One line on what it does.
    pub about: &'static str,
}

/// Every task [`register`] registers: Go's examples in Go's order, machinist's `flaky`, Go's
/// integration-test tasks, then machinist's `sleep` and `echo`.
pub const EXAMPLE_TASKS: [ExampleTask; 14] = [
    ExampleTask {
        name: "add",
        go_signature: "func(args ...int64) (int64, error)",
        about: "sum of its arguments",
    },
    ExampleTask {
        name: "multiply",
        go_signature: "func(args ...int64) (int64, error)",
        about: "product of its arguments (1 for none)",
    },
    ExampleTask {
        name: "sum_ints",
        go_signature: "func(numbers []int64) (int64, error)",
        about: "sum of a []int64",
    },
    ExampleTask {
        name: "sum_floats",
        go_signature: "func(numbers []float64) (float64, error)",
        about: "sum of a []float64",
    },
    ExampleTask {
        name: "concat",
        go_signature: "func(strs []string) (string, error)",
        about: "the strings joined",
    },
    ExampleTask {
        name: "split",
        go_signature: "func(str string) ([]string, error)",
        about: "the string's characters, one per element",
    },
    ExampleTask {
        name: "panic_task",
        go_signature: "func() (string, error)",
        about: "panics with \"oops\" (the task fails with that error)",
    },
    ExampleTask {
        name: "long_running_task",
        go_signature: "func() error",
        about: "logs a 10 s countdown; stops early when cancelled",
    },
    ExampleTask {
        name: "flaky",
        go_signature: "func(ctx context.Context) (string, error)",
        about: "machinist's own: fails on attempt 1, succeeds on the next (send with retries)",
    },
    ExampleTask {
        name: "return_just_error",
        go_signature: "func(msg string, fail bool) error",
        about: "fails with msg when fail is true, else succeeds with no results",
    },
    ExampleTask {
        name: "return_multiple_values",
        go_signature: "func(a, b string, fail bool) (string, string, error)",
        about: "returns a and b, or fails with \"some error\" when fail is true",
    },
    ExampleTask {
        name: "delay_test",
        go_signature: "func() (int64, error)",
        about: "the time it ran, in Unix nanoseconds (send with an ETA)",
    },
    ExampleTask {
        name: "sleep",
        go_signature: "func(ms int64) (int64, error)",
        about: "machinist's own: sleeps ms milliseconds and returns ms; stops early when cancelled",
    },
    ExampleTask {
        name: "echo",
        go_signature: "func(args ...interface{}) (...interface{}, error)",
        about: "machinist's own: returns its arguments as results, Go types and all",
    },
];

/// Go's `Add`: the sum of all arguments. Overflow wraps, as Go's `int64` addition does.
pub async fn add(Variadic(args): Variadic<i64>) -> i64 {
    args.into_iter().fold(0, i64::wrapping_add)
}

/// Go's `Multiply`: the product of all arguments (1 for none). Overflow wraps, as in Go.
pub async fn multiply(Variadic(args): Variadic<i64>) -> i64 {
    args.into_iter().fold(1, i64::wrapping_mul)
}

/// Go's `SumInts`: the sum of a `[]int64`. Overflow wraps, as in Go.
pub async fn sum_ints(numbers: Vec<i64>) -> i64 {
    numbers.into_iter().fold(0, i64::wrapping_add)
}

/// Go's `SumFloats`: the sum of a `[]float64`, added left to right as Go does.
pub async fn sum_floats(numbers: Vec<f64>) -> f64 {
    numbers.into_iter().fold(0.0, |sum, x| sum + x)
}

/// Go's `Concat`: the strings joined with nothing between them.
pub async fn concat(strs: Vec<String>) -> String {
    strs.concat()
}

/// Go's `Split`: `strings.Split(str, "")`, i.e. one element per character (an empty string
/// gives an empty list).
pub async fn split(s: String) -> Vec<String> {
    s.chars().map(String::from).collect()
}

/// Go's `PanicTask`: panics with [`PANIC_MESSAGE`]. The worker catches the panic and stores the
/// task as FAILURE with the panic's text as its error.
pub async fn panic_task() -> String {
    panic!("oops")
}

/// Go's `LongRunningTask`: logs a countdown from 10, one step a second, then finishes. When the
/// task's cancellation fires (time limit reached, worker aborting) it stops at once and fails
/// with "cancelled", where Go's version would sleep on.
pub async fn long_running_task(ctx: TaskContext) -> Result<(), TaskError> {
    tracing::info!(uuid = %ctx.uuid(), "long running task started");
    for left in (1..=10).rev() {
        tracing::info!(uuid = %ctx.uuid(), "{left}");
        tokio::select! {
            () = ctx.cancellation().cancelled() => {
                tracing::info!(uuid = %ctx.uuid(), left, "long running task cancelled");
                return Err(TaskError::fatal(format!("cancelled with {left} s to go")));
            }
            () = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
    tracing::info!(uuid = %ctx.uuid(), "long running task finished");
    Ok(())
}

/// Fails on its first attempt and succeeds on any later one, to show retries: sent with
/// `.retries(n)` for `n >= 1`, it succeeds on attempt 2 (after Go's first Fibonacci back-off,
/// 1 s). Its result says which attempt succeeded: `"succeeded on attempt 2"`.
pub async fn flaky(ctx: TaskContext) -> Result<String, TaskError> {
    let attempt = ctx.attempt();
    if attempt < 2 {
        return Err(TaskError::msg(format!(
            "flaky fails on attempt {attempt}, on purpose"
        )));
    }
    Ok(format!("succeeded on attempt {attempt}"))
}

/// The error text of [`return_multiple_values`] when asked to fail (Go's test task's).
pub const MULTIPLE_VALUES_ERROR: &str = "some error";

/// Go's integration-test `return_just_error`: fails with `msg` when `fail` is true, otherwise
/// succeeds with no results.
pub async fn return_just_error(msg: String, fail: bool) -> Result<(), TaskError> {
    if fail {
        return Err(TaskError::msg(msg));
    }
    Ok(())
}

/// Go's integration-test `return_multiple_values`: returns `(a, b)`, or fails with
/// [`MULTIPLE_VALUES_ERROR`] when `fail` is true.
pub async fn return_multiple_values(
    a: String,
    b: String,
    fail: bool,
) -> Result<(String, String), TaskError> {
    if fail {
        return Err(TaskError::msg(MULTIPLE_VALUES_ERROR));
    }
    Ok((a, b))
}

/// Go's integration-test `delay_test`: the wall-clock time it ran, in Unix nanoseconds, so a
/// sender can check it did not run before its ETA.
pub async fn delay_test() -> Result<i64, TaskError> {
    unix_nanos()
        .ok_or_else(|| TaskError::fatal("the clock is out of the range of Unix nanoseconds"))
}

/// Now, in Unix nanoseconds (`None` before 1970 or after 2262).
fn unix_nanos() -> Option<i64> {
    let since = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .ok()?;
    i64::try_from(since.as_nanos()).ok()
}

/// Sleeps `ms` milliseconds (a negative value counts as 0) and returns `ms`. When the task's
/// cancellation fires (time limit, worker aborting) it stops at once and fails without retries.
pub async fn sleep(ctx: TaskContext, ms: i64) -> Result<i64, TaskError> {
    let wanted = Duration::from_millis(u64::try_from(ms).unwrap_or(0));
    tokio::select! {
        () = ctx.cancellation().cancelled() => {
            Err(TaskError::fatal(format!("sleep({ms}) cancelled")))
        }
        () = tokio::time::sleep(wanted) => Ok(ms),
    }
}

/// Returns its arguments as its results, each with its Go type (`int8:1` comes back as an
/// `int8` 1, `[]byte` as base64): a way to see how values travel through a broker and a
/// backend.
pub async fn echo(Variadic(values): Variadic<GoValue>) -> Vec<TaskResult> {
    values.into_iter().map(TaskResult::new).collect()
}

/// Registers every example task under Go's name (see [`EXAMPLE_TASKS`]).
pub fn register(server: &Server) {
    server.register_task("add", add);
    server.register_task("multiply", multiply);
    server.register_task("sum_ints", sum_ints);
    server.register_task("sum_floats", sum_floats);
    server.register_task("concat", concat);
    server.register_task("split", split);
    server.register_task("panic_task", panic_task);
    server.register_task("long_running_task", long_running_task);
    server.register_task("flaky", flaky);
    server.register_task("return_just_error", return_just_error);
    server.register_task("return_multiple_values", return_multiple_values);
    server.register_task("delay_test", delay_test);
    server.register_task("sleep", sleep);
    server.register_task("echo", echo);
}

/// Keeps the demo's terminal output clean: the panic [`panic_task`] raises on purpose is
/// reported by the worker as the task's error, so the default panic hook's message on stderr is
/// only noise. Every other panic still goes to the previous hook. Call it from a binary, once.
pub fn hide_expected_panics() {
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if info.payload().downcast_ref::<&str>() == Some(&PANIC_MESSAGE) {
            tracing::debug!("panic_task panicked, as expected: {PANIC_MESSAGE}");
            return;
        }
        previous(info);
    }));
}

/// How long the demo waits for any one result before it calls the run a failure.
const RESULT_TIMEOUT: Duration = Duration::from_secs(10);

/// Runs Go Machinery's example `send` flow ([`send_flow`], without the long-running task) on
/// the server `config`'s URLs choose ([`machinist::server()`]), with a worker in this process;
/// writes one line per result to `out` (`add(1, 1) = 2` …) and fails if any result is wrong, so
/// CI can run it as a check. It takes about a second. Signals are left to the caller
/// (`no_unix_signals` is set).
pub async fn run_demo(config: Config, out: &mut impl Write) -> anyhow::Result<()> {
    let config = Config {
        no_unix_signals: true,
        ..config
    };
    let server = machinist::server(config).await.context("connecting")?;
    register(&server);

    let mut worker = server.new_worker("machinist_worker", 0);
    worker.set_error_handler(|e| match e {
        // Task failures are part of the demo (panic_task); the demo prints them itself.
        Error::TaskFailed(text) => tracing::info!("{text}"),
        e => tracing::error!("worker: {e}"),
    });
    let worker = worker.launch_async();

    let outcome = send_flow(&server, out, Flow::Quick).await;
    let stopped = worker.quit().await.context("stopping the worker")?;
    server.broker().close().await;
    server.backend().close().await;
    outcome?;
    if stopped != Stopped::Gracefully {
        bail!("the worker did not stop gracefully: {stopped:?}");
    }
    Ok(())
}

/// Which tasks [`send_flow`] sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    /// Everything but the long-running task (about a second).
    Quick,
    /// Everything, with Go's `long_running_task` (a 10 s countdown) sent first and awaited
    /// last, as Go's example sender does.
    Full,
}

/// Go Machinery's example `send` flow against the workers of `server`'s broker (in this
/// process or elsewhere): a single task, `sum_ints`, `sum_floats`, `concat`, `split`, a group,
/// a chord, a chain, a delayed task, a retried task, a panicking task and, with
/// [`Flow::Full`], the long-running task. Writes one line per result to `out` and fails at the
/// first wrong result. The slow tasks are sent first, so their waits overlap the rest.
pub async fn send_flow(server: &Server, out: &mut impl Write, flow: Flow) -> anyhow::Result<()> {
    let long_running = match flow {
        Flow::Full => Some(
            server
                .send_task(Signature::new("long_running_task"))
                .await?,
        ),
        Flow::Quick => None,
    };
    let delay = Duration::from_secs(1);
    let delayed_sent = Instant::now();
    let mut delayed = server
        .send_task(Signature::new("add").args((2i64, 3i64)).countdown(delay))
        .await?;
    let mut retried = server.send_task(Signature::new("flaky").retries(3)).await?;

    let sum: i64 = result(server.send_task(add_sig(1, 1)).await?, "add").await?;
    show(out, "add(1, 1)", sum, 2)?;

    let sig = Signature::new("sum_ints").args(vec![1i64, 2, 3]);
    let sum: i64 = result(server.send_task(sig).await?, "sum_ints").await?;
    show(out, "sum_ints([1, 2, 3])", sum, 6)?;

    let sig = Signature::new("sum_floats").args(vec![1.5f64, 2.7]);
    let sum: f64 = result(server.send_task(sig).await?, "sum_floats").await?;
    show(out, "sum_floats([1.5, 2.7])", sum, 4.2)?;

    let sig = Signature::new("concat").args(vec!["foo", "bar"]);
    let joined: String = result(server.send_task(sig).await?, "concat").await?;
    show_debug(
        out,
        r#"concat(["foo", "bar"])"#,
        joined,
        "foobar".to_owned(),
    )?;

    let sig = Signature::new("split").args("foo");
    let parts: Vec<String> = result(server.send_task(sig).await?, "split").await?;
    let want: Vec<String> = vec!["f".into(), "o".into(), "o".into()];
    show_debug(out, r#"split("foo")"#, parts, want)?;

    let group = Group::new(vec![add_sig(1, 1), add_sig(2, 2), add_sig(5, 6)]);
    let mut sums = Vec::new();
    for r in server.send_group(group, 0).await? {
        sums.push(result::<i64>(r, "group member").await?);
    }
    show_debug(
        out,
        "group(add(1, 1), add(2, 2), add(5, 6))",
        sums,
        vec![2, 4, 11],
    )?;

    let group = Group::new(vec![add_sig(1, 1), add_sig(2, 2), add_sig(5, 6)]);
    let chord = Chord::new(group, Signature::new("multiply"));
    let product: i64 = server
        .send_chord(chord, 10)
        .await?
        .results(RESULT_TIMEOUT)
        .await
        .context("chord")?;
    show(
        out,
        "chord(add(1, 1), add(2, 2), add(5, 6) -> multiply)",
        product,
        88,
    )?;

    let chain = Chain::new(vec![
        add_sig(1, 1),
        add_sig(2, 2),
        add_sig(5, 6),
        Signature::new("multiply").args(4i64),
    ]);
    let product: i64 = server
        .send_chain(chain)
        .await?
        .results(RESULT_TIMEOUT)
        .await
        .context("chain")?;
    show(
        out,
        "chain(add(1, 1) -> add(2, 2) -> add(5, 6) -> multiply(4))",
        product,
        68,
    )?;

    let sum: i64 = delayed
        .results(RESULT_TIMEOUT)
        .await
        .context("delayed task")?;
    let waited = delayed_sent.elapsed();
    writeln!(
        out,
        "add(2, 3) with ETA +{delay:?} = {sum} (result after {:.2} s)",
        waited.as_secs_f64()
    )?;
    check("delayed add(2, 3)", sum, 5)?;
    // The ETA is wall-clock time; allow a little slack between the two clocks.
    if waited + Duration::from_millis(50) < delay {
        bail!("the delayed task ran after {waited:?}, before its ETA (+{delay:?})");
    }

    let text: String = retried
        .results(RESULT_TIMEOUT)
        .await
        .context("retried task")?;
    writeln!(
        out,
        "flaky() with .retries(3) = {text:?} (failed once, 2 attempts)"
    )?;
    check("flaky()", text.as_str(), "succeeded on attempt 2")?;

    let panicked = server.send_task(Signature::new("panic_task")).await?;
    match result::<String>(panicked, "panic_task").await {
        Err(e) => match e.downcast_ref::<Error>() {
            Some(Error::TaskFailed(text)) => {
                writeln!(out, "panic_task() failed as expected: {text}")?;
                check("panic_task() error", text.as_str(), PANIC_MESSAGE)?;
            }
            _ => return Err(e),
        },
        Ok(v) => bail!("panic_task() returned {v:?}; it should have failed with {PANIC_MESSAGE:?}"),
    }

    if let Some(mut long_running) = long_running {
        long_running
            .results::<()>(LONG_RUNNING_TIMEOUT)
            .await
            .context("long_running_task")?;
        writeln!(out, "long_running_task() finished (a 10 s countdown)")?;
    }
    Ok(())
}

/// How long [`send_flow`] waits for the long-running task (a 10 s countdown).
const LONG_RUNNING_TIMEOUT: Duration = Duration::from_secs(60);

/// `add(a, b)`.
fn add_sig(a: i64, b: i64) -> Signature {
    Signature::new("add").args((a, b))
}

/// Waits for one task's results, decoded as `T`. The error keeps the library's
/// [`machinist::Error`] reachable with `downcast_ref`.
async fn result<T: FromResults>(mut r: AsyncResult, what: &str) -> anyhow::Result<T> {
    let uuid = r.uuid().to_owned();
    r.results(RESULT_TIMEOUT)
        .await
        .with_context(|| format!("{what} ({uuid})"))
}

/// Prints `what = got` and fails if `got` is not `want`.
fn show<T>(out: &mut impl Write, what: &str, got: T, want: T) -> anyhow::Result<()>
where
    T: PartialEq + std::fmt::Display + std::fmt::Debug,
{
    writeln!(out, "{what} = {got}")?;
    check(what, got, want)
}

/// Like [`show`], printing with `{:?}` (strings quoted, lists bracketed).
fn show_debug<T>(out: &mut impl Write, what: &str, got: T, want: T) -> anyhow::Result<()>
where
    T: PartialEq + std::fmt::Debug,
{
    writeln!(out, "{what} = {got:?}")?;
    check(what, got, want)
}

/// Fails with both values when `got` is not `want`.
fn check<T: PartialEq + std::fmt::Debug>(what: &str, got: T, want: T) -> anyhow::Result<()> {
    if got != want {
        bail!("{what}: got {got:?}, expected {want:?}");
    }
    Ok(())
}

/// The README's Rust code blocks, compiled and run as doctests of this crate.
#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| (*s).to_owned()).collect()
    }

    #[tokio::test]
    async fn arithmetic_matches_go() {
        assert_eq!(add(Variadic(vec![1, 1])).await, 2);
        assert_eq!(add(Variadic(vec![])).await, 0);
        assert_eq!(add(Variadic(vec![i64::MAX, 1])).await, i64::MIN);
        assert_eq!(multiply(Variadic(vec![2, 4, 11])).await, 88);
        assert_eq!(multiply(Variadic(vec![])).await, 1);
        assert_eq!(sum_ints(vec![1, 2, 3]).await, 6);
        assert_eq!(sum_ints(vec![]).await, 0);
    }

    #[tokio::test]
    async fn sum_floats_is_go_exact() {
        assert_eq!(sum_floats(vec![1.5, 2.7]).await, 4.2);
        assert_eq!(sum_floats(vec![]).await, 0.0);
    }

    #[tokio::test]
    async fn strings_like_go() {
        assert_eq!(concat(strings(&["foo", "bar"])).await, "foobar");
        assert_eq!(concat(vec![]).await, "");
        assert_eq!(split("foo".into()).await, strings(&["f", "o", "o"]));
        assert_eq!(split("héé".into()).await, strings(&["h", "é", "é"]));
        assert!(split(String::new()).await.is_empty());
    }

    fn context(attempt: u32) -> TaskContext {
        TaskContext::new(Signature::new("t"), attempt, Default::default())
    }

    #[tokio::test]
    async fn flaky_fails_once() {
        assert!(matches!(flaky(context(1)).await, Err(TaskError::Failed(_))));
        assert_eq!(
            flaky(context(2)).await.expect("attempt 2"),
            "succeeded on attempt 2"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn long_running_task_counts_down_or_stops_when_cancelled() {
        let started = tokio::time::Instant::now();
        long_running_task(context(1)).await.expect("finishes");
        assert_eq!(started.elapsed(), Duration::from_secs(10));

        let ctx = context(1);
        let cancel = ctx.cancellation().clone();
        let run = tokio::spawn(long_running_task(ctx));
        tokio::time::sleep(Duration::from_millis(3500)).await;
        cancel.cancel();
        let err = run.await.expect("join").expect_err("cancelled");
        assert_eq!(err, TaskError::fatal("cancelled with 7 s to go"));
    }

    #[tokio::test]
    async fn go_integration_test_tasks() {
        assert_eq!(
            return_just_error("Test error".into(), true).await,
            Err(TaskError::msg("Test error"))
        );
        assert_eq!(return_just_error(String::new(), false).await, Ok(()));
        assert_eq!(
            return_multiple_values("foo".into(), "bar".into(), false).await,
            Ok(("foo".to_owned(), "bar".to_owned()))
        );
        assert_eq!(
            return_multiple_values("foo".into(), "bar".into(), true).await,
            Err(TaskError::msg(MULTIPLE_VALUES_ERROR))
        );
        let before = unix_nanos().expect("in range");
        let ran = delay_test().await.expect("now");
        assert!(ran >= before, "{ran} < {before}");
    }

    #[tokio::test(start_paused = true)]
    async fn sleep_sleeps_or_stops_when_cancelled() {
        let started = tokio::time::Instant::now();
        assert_eq!(sleep(context(1), 1500).await, Ok(1500));
        assert_eq!(started.elapsed(), Duration::from_millis(1500));
        assert_eq!(sleep(context(1), -5).await, Ok(-5));

        let ctx = context(1);
        let cancel = ctx.cancellation().clone();
        let run = tokio::spawn(sleep(ctx, 60_000));
        tokio::time::sleep(Duration::from_millis(10)).await;
        cancel.cancel();
        let err = run.await.expect("join").expect_err("cancelled");
        assert_eq!(err, TaskError::fatal("sleep(60000) cancelled"));
    }

    #[tokio::test]
    async fn echo_keeps_go_types() {
        let values = vec![
            GoValue::Int("int8", -3),
            GoValue::Uint("uint", 7),
            GoValue::Bytes("[]byte", vec![1, 2, 3]),
            GoValue::String("hi".into()),
        ];
        let results = echo(Variadic(values)).await;
        let types: Vec<&str> = results.iter().map(|r| r.type_name.as_str()).collect();
        assert_eq!(types, ["int8", "uint", "[]byte", "string"]);
        assert_eq!(
            results[2].decode().expect("bytes"),
            GoValue::Bytes("[]byte", vec![1, 2, 3])
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn demo_passes_on_sqlite() {
        let path =
            std::env::temp_dir().join(format!("machinist-examples-demo-{}.db", std::process::id()));
        let url = format!("sqlite://{}", path.display());
        let config = Config {
            broker: url.clone(),
            result_backend: url.clone(),
            lock: url,
            ..Config::default()
        };
        let mut out = Vec::new();
        let outcome = run_demo(config, &mut out).await;
        pair::remove_sqlite_files(&path);
        outcome.expect("demo");
        let text = String::from_utf8(out).expect("utf-8");
        assert!(text.contains("= 88\n"), "{text}");
        assert!(!path.exists());
    }

    #[test]
    fn check_reports_both_values() {
        let err = check("add(1, 1)", 3, 2).expect_err("wrong");
        assert_eq!(err.to_string(), "add(1, 1): got 3, expected 2");
        assert!(check("add(1, 1)", 2, 2).is_ok());
    }

    #[test]
    fn registers_every_listed_task() {
        use std::sync::Arc;

        use machinist::memory::{MemoryBackend, MemoryBroker, MemoryLock};

        let config = Config::default();
        let server = Server::new(
            config.clone(),
            Arc::new(MemoryBroker::new()),
            Arc::new(MemoryBackend::new(config.results_ttl())),
            Arc::new(MemoryLock::new()),
        );
        register(&server);
        let mut listed: Vec<String> = EXAMPLE_TASKS.iter().map(|t| t.name.to_owned()).collect();
        listed.sort();
        assert_eq!(server.registered_task_names(), listed);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn demo_passes() {
        let mut out = Vec::new();
        let config = Config {
            broker: "memory://demo".into(),
            result_backend: "memory://demo".into(),
            lock: "memory://demo".into(),
            ..Config::default()
        };
        run_demo(config, &mut out).await.expect("demo");
        let text = String::from_utf8(out).expect("utf-8");
        assert!(text.contains("add(1, 1) = 2\n"), "{text}");
        assert!(text.contains("= 88\n"), "{text}");
        assert!(text.contains("= 68\n"), "{text}");
        assert!(text.contains("failed as expected: oops\n"), "{text}");
    }
}
