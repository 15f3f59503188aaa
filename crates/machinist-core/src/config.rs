//! [`Config`]: Go Machinery's settings (field names follow Go's YAML keys) plus what machinist
//! adds (shutdown timeout, time limits, message size, retry bounds). Defaults are Go's, except
//! where a field is machinist's own. Loading from YAML and the environment comes with the
//! configuration work; this is the shape the core reads.

use std::time::Duration;

/// Settings read by the server and the worker.
///
/// Build one with struct update syntax:
/// `Config { no_unix_signals: true, ..Config::default() }`.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// `broker`: the broker URL (adapters are chosen by scheme in the `machinist` crate).
    pub broker: String,
    /// `result_backend`: the result backend URL.
    pub result_backend: String,
    /// `lock`: the lock URL.
    pub lock: String,
    /// `default_queue`: where tasks with no routing key go (`machinery_tasks`).
    pub default_queue: String,
    /// `results_expire_in`: seconds states and group metas live (Go: 3600; 0 means 3600).
    pub results_expire_in: u64,
    /// `no_unix_signals`: when true the worker does not trap SIGINT/SIGTERM.
    pub no_unix_signals: bool,
    /// machinist: how long a graceful shutdown waits for running tasks before it returns them to
    /// the broker (default 30 s).
    pub shutdown_timeout: Duration,
    /// machinist: the default time limit of every task (`None`: no limit). When it passes the
    /// task's cancellation token fires; after `time_limit_grace` the task is dropped and fails
    /// with "time limit exceeded" (retries apply).
    pub task_time_limit: Option<Duration>,
    /// machinist: grace between the cancellation token and dropping the task (default 5 s).
    pub time_limit_grace: Duration,
    /// machinist: the largest encoded message accepted, sent or received (default 16 MiB).
    pub max_message_size: usize,
    /// machinist: how many times a task may ask to be retried later
    /// ([`crate::TaskError::retry_after`]) before it fails (Go retries forever; default 100).
    pub max_retry_later: u32,
    /// machinist: how many times a message whose task no worker registered is requeued (with
    /// Fibonacci back-off capped at `unregistered_max_backoff`) before it is dead-lettered
    /// (default 20).
    pub unregistered_max_requeues: u32,
    /// machinist: the longest back-off between requeues of an unregistered task (default 60 s).
    pub unregistered_max_backoff: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            broker: String::new(),
            result_backend: String::new(),
            lock: String::new(),
            default_queue: "machinery_tasks".to_owned(),
            results_expire_in: 3600,
            no_unix_signals: false,
            shutdown_timeout: Duration::from_secs(30),
            task_time_limit: None,
            time_limit_grace: Duration::from_secs(5),
            max_message_size: 16 * 1024 * 1024,
            max_retry_later: 100,
            unregistered_max_requeues: 20,
            unregistered_max_backoff: Duration::from_secs(60),
        }
    }
}

impl Config {
    /// `results_expire_in` as a duration, with Go's rule that 0 means 3600 s.
    pub fn results_ttl(&self) -> Duration {
        Duration::from_secs(if self.results_expire_in == 0 {
            3600
        } else {
            self.results_expire_in
        })
    }
}
