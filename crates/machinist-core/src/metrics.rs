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
//! producer cannot grow the label set with arbitrary names.

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

/// A task function starts: counts `started`, raises the running gauge; returns the start time
/// for [`task_ran`].
pub(crate) fn task_started(task: &str) -> Instant {
    #[cfg(feature = "metrics")]
    {
        metrics::counter!(TASKS_TOTAL, "task" => task.to_owned(), "state" => "started")
            .increment(1);
        metrics::gauge!(TASKS_RUNNING).increment(1.0);
    }
    #[cfg(not(feature = "metrics"))]
    let _ = task;
    Instant::now()
}

/// The task function started at `started` returned (or was stopped): records its run time and
/// lowers the running gauge.
pub(crate) fn task_ran(task: &str, started: Instant) {
    let took: Duration = started.elapsed();
    #[cfg(feature = "metrics")]
    {
        metrics::histogram!(TASK_DURATION_SECONDS, "task" => task.to_owned())
            .record(took.as_secs_f64());
        metrics::gauge!(TASKS_RUNNING).decrement(1.0);
    }
    #[cfg(not(feature = "metrics"))]
    let _ = (task, took);
}

/// A task's state `state` (`success`, `failure`, `retry`) was stored.
pub(crate) fn task_state(task: &str, state: &'static str) {
    #[cfg(feature = "metrics")]
    metrics::counter!(TASKS_TOTAL, "task" => task.to_owned(), "state" => state).increment(1);
    #[cfg(not(feature = "metrics"))]
    let _ = (task, state);
}

/// A message of `queue` was dead-lettered.
pub(crate) fn dead_lettered(queue: &str) {
    #[cfg(feature = "metrics")]
    metrics::counter!(DEAD_LETTERS_TOTAL, "queue" => queue.to_owned()).increment(1);
    #[cfg(not(feature = "metrics"))]
    let _ = queue;
}
