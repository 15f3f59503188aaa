//! The tasks the conformance scenarios run.
//!
//! Two kinds:
//!
//! * **Go Machinery's integration-test tasks** (`integration-tests/suite_test.go`), as plain
//!   `async fn`s with the same names and behaviour, registered by [`register_all`]: `add`,
//!   `multiply`, `sum`, `return_just_error`, `return_multiple_values`, `panic`, `delay_test`.
//! * **Probe tasks**: tasks that report to a shared [`Probes`] what happened to them (each run
//!   with its attempt number and time, chord callback invocations, arguments received, whether a
//!   cancellation was observed), so a scenario can check what the worker did rather than only
//!   the final state. They are closures over the `Probes`, registered by [`Probes::register`];
//!   two servers registering the same `Probes` report into one place.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use chrono::Utc;
use machinist_core::{Server, Task, TaskContext, TaskError, Variadic, task};
use tokio::sync::Notify;
use tokio::time::Instant;

/// `add`: the sum of its variadic `int64` arguments.
pub async fn add(Variadic(xs): Variadic<i64>) -> i64 {
    xs.iter().sum()
}

/// `multiply`: the product of its variadic `int64` arguments (1 for none).
pub async fn multiply(Variadic(xs): Variadic<i64>) -> i64 {
    xs.iter().product()
}

/// `sum`: the sum of one `[]int64` argument.
pub async fn sum(xs: Vec<i64>) -> i64 {
    xs.iter().sum()
}

/// `return_just_error`: fails with `message` as the error text when `fail`, else succeeds with
/// no results.
pub async fn return_just_error(message: String, fail: bool) -> Result<(), TaskError> {
    if fail {
        Err(TaskError::msg(message))
    } else {
        Ok(())
    }
}

/// `return_multiple_values`: returns both strings, or fails with "Test error" when `fail`.
pub async fn return_multiple_values(
    a: String,
    b: String,
    fail: bool,
) -> Result<(String, String), TaskError> {
    if fail {
        Err(TaskError::msg("Test error"))
    } else {
        Ok((a, b))
    }
}

/// `panic`: panics with "oops" (Go: `panic(errors.New("oops"))`).
pub async fn panic_task() {
    panic!("oops");
}

/// `delay_test`: the wall-clock time it ran at, as Unix nanoseconds (Go's `time.Now().UnixNano()`).
pub async fn delay_test() -> i64 {
    unix_nanos(Utc::now())
}

/// Unix nanoseconds of `t` (saturating far outside ±292 years, which tests never reach).
pub fn unix_nanos(t: chrono::DateTime<Utc>) -> i64 {
    t.timestamp_nanos_opt().unwrap_or(i64::MAX)
}

/// Registers Go Machinery's test tasks under their Go names.
pub fn register_all(server: &Server) {
    server.register_tasks([
        ("add", task(add)),
        ("multiply", task(multiply)),
        ("sum", task(sum)),
        ("return_just_error", task(return_just_error)),
        ("return_multiple_values", task(return_multiple_values)),
        ("panic", task(panic_task)),
        ("delay_test", task(delay_test)),
    ]);
}

/// `fail_then_succeed(failures int64)`: fails (retryably) while its attempt number is at most
/// `failures`, then returns the attempt number.
pub const FAIL_THEN_SUCCEED: &str = "fail_then_succeed";
/// `always_retry_later()`: always asks to be run again in 10 ms.
pub const ALWAYS_RETRY_LATER: &str = "always_retry_later";
/// `fatal_error()`: always fails with a fatal (never retried) "fatal error".
pub const FATAL_ERROR: &str = "fatal_error";
/// `count_chord(args ...int64)`: a chord callback that counts its invocations per UUID and
/// returns the sum of its arguments.
pub const COUNT_CHORD: &str = "count_chord";
/// `jitter_one(release int64)`: waits until the wall-clock time `release` (Unix milliseconds),
/// then 0–5 ms more (derived from its UUID), and returns 1. Members of a group sharing one
/// `release` finish a few at a time in the same millisecond: concurrent finishers.
pub const JITTER_ONE: &str = "jitter_one";
/// `sleep_ms(ms int64)`: sleeps `ms` milliseconds (ignoring cancellation) and returns `ms`.
pub const SLEEP_MS: &str = "sleep_ms";
/// `slow_first_run(ms int64)`: sleeps `ms` on the first run of this name only, returns `ms`.
pub const SLOW_FIRST_RUN: &str = "slow_first_run";
/// `cooperative(ms int64)`: sleeps `ms` unless its cancellation token fires first, in which
/// case it records that it saw the token and fails.
pub const COOPERATIVE: &str = "cooperative";
/// `record_strings(args ...string)`: records its arguments and returns them as `[]string`.
pub const RECORD_STRINGS: &str = "record_strings";

/// One run of a probe task.
#[derive(Debug, Clone)]
pub struct Run {
    /// The task name.
    pub task: String,
    /// The task UUID.
    pub uuid: String,
    /// The attempt number the worker gave the task (1 for the first run).
    pub attempt: u32,
    /// When the run began.
    pub at: Instant,
}

#[derive(Default)]
struct ProbeState {
    runs: Mutex<Vec<Run>>,
    /// Woken on every recorded run.
    changed: Notify,
    chord_calls: Mutex<HashMap<String, usize>>,
    chord_total: AtomicUsize,
    cancel_observed: AtomicBool,
    strings: Mutex<Vec<Vec<String>>>,
}

/// What probe tasks report. Cheap to clone; clones share the reports.
#[derive(Clone, Default)]
pub struct Probes {
    inner: Arc<ProbeState>,
}

impl std::fmt::Debug for Probes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Probes")
            .field("runs", &lock(&self.inner.runs).len())
            .field("chord_total", &self.chord_total())
            .finish()
    }
}

/// Locks a mutex, ignoring poisoning (a panicking task must not hide the reports).
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Probes {
    /// Empty reports.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records a run of the task `ctx` describes; returns how many runs of that name came before.
    fn record(&self, ctx: &TaskContext) -> usize {
        let mut runs = lock(&self.inner.runs);
        let before = runs.iter().filter(|r| r.task == ctx.name()).count();
        runs.push(Run {
            task: ctx.name().to_owned(),
            uuid: ctx.uuid().to_owned(),
            attempt: ctx.attempt(),
            at: Instant::now(),
        });
        drop(runs);
        self.inner.changed.notify_waiters();
        before
    }

    /// Every recorded run of `task`, in the order they began.
    pub fn runs_of(&self, task: &str) -> Vec<Run> {
        lock(&self.inner.runs)
            .iter()
            .filter(|r| r.task == task)
            .cloned()
            .collect()
    }

    /// Waits until `task` ran at least `n` times; panics after `timeout`.
    pub async fn wait_for_runs(&self, task: &str, n: usize, timeout: Duration) -> Vec<Run> {
        let wait = async {
            loop {
                let changed = self.inner.changed.notified();
                tokio::pin!(changed);
                changed.as_mut().enable();
                let runs = self.runs_of(task);
                if runs.len() >= n {
                    return runs;
                }
                changed.await;
            }
        };
        match tokio::time::timeout(timeout, wait).await {
            Ok(runs) => runs,
            Err(_) => panic!(
                "{task} ran {} time(s), expected at least {n} within {timeout:?}",
                self.runs_of(task).len()
            ),
        }
    }

    /// How often each chord callback UUID ran.
    pub fn chord_calls(&self) -> HashMap<String, usize> {
        lock(&self.inner.chord_calls).clone()
    }

    /// How many chord callback runs there were in all.
    pub fn chord_total(&self) -> usize {
        self.inner.chord_total.load(Ordering::SeqCst)
    }

    /// True once a `cooperative` task saw its cancellation token fire.
    pub fn cancel_observed(&self) -> bool {
        self.inner.cancel_observed.load(Ordering::SeqCst)
    }

    /// The arguments every `record_strings` run received.
    pub fn received_strings(&self) -> Vec<Vec<String>> {
        lock(&self.inner.strings).clone()
    }

    /// Registers every probe task under its name (see the constants of this module).
    pub fn register(&self, server: &Server) {
        server.register_tasks([
            (FAIL_THEN_SUCCEED, self.fail_then_succeed()),
            (ALWAYS_RETRY_LATER, self.always_retry_later()),
            (FATAL_ERROR, self.fatal_error()),
            (COUNT_CHORD, self.count_chord()),
            (JITTER_ONE, self.jitter_one()),
            (SLEEP_MS, self.sleep_ms()),
            (SLOW_FIRST_RUN, self.slow_first_run()),
            (COOPERATIVE, self.cooperative()),
            (RECORD_STRINGS, self.record_strings()),
        ]);
    }

    /// The [`FAIL_THEN_SUCCEED`] task.
    pub fn fail_then_succeed(&self) -> Task {
        let p = self.clone();
        task(move |ctx: TaskContext, failures: i64| {
            let p = p.clone();
            async move {
                p.record(&ctx);
                let attempt = i64::from(ctx.attempt());
                if attempt <= failures {
                    Err(TaskError::msg(format!(
                        "failing on purpose (attempt {attempt})"
                    )))
                } else {
                    Ok(attempt)
                }
            }
        })
    }

    /// The [`ALWAYS_RETRY_LATER`] task.
    pub fn always_retry_later(&self) -> Task {
        let p = self.clone();
        task(move |ctx: TaskContext| {
            let p = p.clone();
            async move {
                p.record(&ctx);
                Err::<(), _>(TaskError::retry_after(Duration::from_millis(10)))
            }
        })
    }

    /// The [`FATAL_ERROR`] task.
    pub fn fatal_error(&self) -> Task {
        let p = self.clone();
        task(move |ctx: TaskContext| {
            let p = p.clone();
            async move {
                p.record(&ctx);
                Err::<(), _>(TaskError::fatal("fatal error"))
            }
        })
    }

    /// The [`COUNT_CHORD`] task.
    pub fn count_chord(&self) -> Task {
        let p = self.clone();
        task(move |ctx: TaskContext, Variadic(xs): Variadic<i64>| {
            let p = p.clone();
            async move {
                p.record(&ctx);
                *lock(&p.inner.chord_calls)
                    .entry(ctx.uuid().to_owned())
                    .or_default() += 1;
                p.inner.chord_total.fetch_add(1, Ordering::SeqCst);
                xs.iter().sum::<i64>()
            }
        })
    }

    /// The [`JITTER_ONE`] task.
    pub fn jitter_one(&self) -> Task {
        let p = self.clone();
        task(move |ctx: TaskContext, release: i64| {
            let p = p.clone();
            async move {
                p.record(&ctx);
                let jitter = ctx.uuid().bytes().map(i64::from).sum::<i64>() % 6;
                let wait = release + jitter - Utc::now().timestamp_millis();
                tokio::time::sleep(millis(wait)).await;
                1i64
            }
        })
    }

    /// The [`SLEEP_MS`] task.
    pub fn sleep_ms(&self) -> Task {
        let p = self.clone();
        task(move |ctx: TaskContext, ms: i64| {
            let p = p.clone();
            async move {
                p.record(&ctx);
                tokio::time::sleep(millis(ms)).await;
                ms
            }
        })
    }

    /// The [`SLOW_FIRST_RUN`] task.
    pub fn slow_first_run(&self) -> Task {
        let p = self.clone();
        task(move |ctx: TaskContext, ms: i64| {
            let p = p.clone();
            async move {
                if p.record(&ctx) == 0 {
                    tokio::time::sleep(millis(ms)).await;
                }
                ms
            }
        })
    }

    /// The [`COOPERATIVE`] task.
    pub fn cooperative(&self) -> Task {
        let p = self.clone();
        task(move |ctx: TaskContext, ms: i64| {
            let p = p.clone();
            async move {
                p.record(&ctx);
                tokio::select! {
                    () = ctx.cancellation().cancelled() => {
                        p.inner.cancel_observed.store(true, Ordering::SeqCst);
                        Err(TaskError::fatal("cancelled"))
                    }
                    () = tokio::time::sleep(millis(ms)) => Ok(ms),
                }
            }
        })
    }

    /// The [`RECORD_STRINGS`] task.
    pub fn record_strings(&self) -> Task {
        let p = self.clone();
        task(move |ctx: TaskContext, Variadic(xs): Variadic<String>| {
            let p = p.clone();
            async move {
                p.record(&ctx);
                lock(&p.inner.strings).push(xs.clone());
                xs
            }
        })
    }
}

/// `ms` milliseconds, negative counting as zero.
fn millis(ms: i64) -> Duration {
    Duration::from_millis(u64::try_from(ms).unwrap_or(0))
}
