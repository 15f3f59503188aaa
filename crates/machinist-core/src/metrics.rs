//! Metrics of the worker, recorded through the [`metrics`](https://docs.rs/metrics) facade when
//! the `metrics` feature is on, so any exporter installed by the application (Prometheus,
//! StatsD …) sees them. Without the feature every function here is an empty no-op.
//!
//! | name | kind | labels | what |
//! |---|---|---|---|
//! | `machinist_tasks_total` | counter | `task`, `state` | tasks that reached a state: `started`, `success`, `failure`, `retry` |
//! | `machinist_task_duration_seconds` | histogram | `task` | run time of the task function (panics, failures and time limits included) |
//! | `machinist_tasks_running` | gauge | — | task functions running in this process |
//! | `machinist_dead_letters_total` | counter | `queue` | messages dead-lettered (undecodable, oversized, unregistered too often) |
//! | `machinist_queue_depth` | gauge | `queue` | messages waiting, as last counted by whoever calls [`queue_depth`] (the `machinist worker --metrics-addr` poller) |
//!
//! `task` is the registered task name: only tasks this worker knows are counted, so a
//! producer cannot grow the label set with arbitrary names. The handles of a task's metrics are
//! resolved on its first run and kept with its registration (`TaskMetrics`), so a task's run
//! builds no labels and looks nothing up: install the exporter before the worker takes tasks.

#[cfg(feature = "metrics")]
use std::time::{Duration, Instant};

/// `machinist_tasks_total`.
pub const TASKS_TOTAL: &str = "machinist_tasks_total";
/// `machinist_task_duration_seconds`.
pub const TASK_DURATION_SECONDS: &str = "machinist_task_duration_seconds";
/// `machinist_tasks_running`.
pub const TASKS_RUNNING: &str = "machinist_tasks_running";
/// `machinist_dead_letters_total`.
pub const DEAD_LETTERS_TOTAL: &str = "machinist_dead_letters_total";
/// `machinist_queue_depth`.
pub const QUEUE_DEPTH: &str = "machinist_queue_depth";

/// Registers the help text and unit of each metric with the installed recorder. Call it once
/// after installing an exporter; without the `metrics` feature it does nothing.
pub fn describe() {
    #[cfg(feature = "metrics")]
    {
        use metrics::Unit;
        metrics::describe_counter!(
            TASKS_TOTAL,
            Unit::Count,
            "Tasks that reached a state (started, success, failure, retry)"
        );
        metrics::describe_histogram!(
            TASK_DURATION_SECONDS,
            Unit::Seconds,
            "Run time of task functions"
        );
        metrics::describe_gauge!(
            TASKS_RUNNING,
            Unit::Count,
            "Task functions running in this process"
        );
        metrics::describe_counter!(
            DEAD_LETTERS_TOTAL,
            Unit::Count,
            "Messages dead-lettered by this worker"
        );
        metrics::describe_gauge!(QUEUE_DEPTH, Unit::Count, "Messages waiting in a queue");
    }
}

/// Records `value` as the number of messages waiting in `queue`.
pub fn queue_depth(queue: &str, value: usize) {
    #[cfg(feature = "metrics")]
    {
        #[allow(clippy::cast_precision_loss)]
        metrics::gauge!(QUEUE_DEPTH, "queue" => queue.to_owned()).set(value as f64);
    }
    #[cfg(not(feature = "metrics"))]
    let _ = (queue, value);
}

/// A final (or retry) state a task reached, as counted in `machinist_tasks_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// `success`.
    Success,
    /// `failure`.
    Failure,
    /// `retry`.
    Retry,
}

/// The metric handles of one registered task, resolved once (on the task's first run) instead
/// of building label sets and looking the metric up in the recorder for every run: with no
/// recorder installed that lookup cost about as much as the rest of the worker's bookkeeping.
///
/// A recorder installed after a task's first run is not seen by that task's handles: install
/// the exporter before the worker takes tasks (as `machinist worker --metrics-addr` does).
/// Without the `metrics` feature this is empty and every method does nothing (no clock read).
pub(crate) struct TaskMetrics {
    #[cfg(feature = "metrics")]
    started: metrics::Counter,
    #[cfg(feature = "metrics")]
    success: metrics::Counter,
    #[cfg(feature = "metrics")]
    failure: metrics::Counter,
    #[cfg(feature = "metrics")]
    retry: metrics::Counter,
    #[cfg(feature = "metrics")]
    duration: metrics::Histogram,
    #[cfg(feature = "metrics")]
    running: metrics::Gauge,
}

/// When a task function started ([`TaskMetrics::started`]); empty without the `metrics`
/// feature.
pub(crate) struct RunTimer {
    #[cfg(feature = "metrics")]
    at: Instant,
}

impl TaskMetrics {
    /// The handles of the task registered as `task`.
    pub(crate) fn new(task: &str) -> Self {
        #[cfg(feature = "metrics")]
        {
            let counter = |state: &'static str| metrics::counter!(TASKS_TOTAL, "task" => task.to_owned(), "state" => state);
            TaskMetrics {
                started: counter("started"),
                success: counter("success"),
                failure: counter("failure"),
                retry: counter("retry"),
                duration: metrics::histogram!(TASK_DURATION_SECONDS, "task" => task.to_owned()),
                running: metrics::gauge!(TASKS_RUNNING),
            }
        }
        #[cfg(not(feature = "metrics"))]
        {
            let _ = task;
            TaskMetrics {}
        }
    }

    /// The task function starts: counts `started`, raises the running gauge; returns the timer
    /// for [`TaskMetrics::ran`].
    pub(crate) fn started(&self) -> RunTimer {
        #[cfg(feature = "metrics")]
        {
            self.started.increment(1);
            self.running.increment(1.0);
            RunTimer { at: Instant::now() }
        }
        #[cfg(not(feature = "metrics"))]
        RunTimer {}
    }

    /// The task function started at `timer` returned (or was stopped): records its run time and
    /// lowers the running gauge.
    pub(crate) fn ran(&self, timer: RunTimer) {
        #[cfg(feature = "metrics")]
        {
            let took: Duration = timer.at.elapsed();
            self.duration.record(took.as_secs_f64());
            self.running.decrement(1.0);
        }
        #[cfg(not(feature = "metrics"))]
        let _ = timer;
    }

    /// The task's state `outcome` was stored.
    pub(crate) fn state(&self, outcome: Outcome) {
        #[cfg(feature = "metrics")]
        match outcome {
            Outcome::Success => self.success.increment(1),
            Outcome::Failure => self.failure.increment(1),
            Outcome::Retry => self.retry.increment(1),
        }
        #[cfg(not(feature = "metrics"))]
        let _ = outcome;
    }
}

/// A message of `queue` was dead-lettered.
pub(crate) fn dead_lettered(queue: &str) {
    #[cfg(feature = "metrics")]
    metrics::counter!(DEAD_LETTERS_TOTAL, "queue" => queue.to_owned()).increment(1);
    #[cfg(not(feature = "metrics"))]
    let _ = queue;
}
