//! `machinist worker`: a worker running the example tasks, logging each task's start and
//! outcome, until SIGINT/SIGTERM. With `--config FILE` it follows the file: changes to
//! `concurrency` (unless `--concurrency` fixes it), `log_level` (unless `RUST_LOG` is set),
//! time limits and the other live settings apply without a restart. With `--metrics-addr` it
//! serves Prometheus metrics.

use std::net::SocketAddr;
use std::panic::AssertUnwindSafe;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use futures_util::FutureExt as _;
use machinist::config::{ConfigError, ConfigWatcher, PeriodicTaskConfig};
use machinist::task::{BoxFuture, Handler, TaskOutcome};
use machinist::{Arg, ArgError, Config, Error, Server, Stopped, Task, TaskContext, TaskError};
use tokio::sync::watch;
use tracing::{debug, error, info, warn};
use tracing_subscriber::EnvFilter;

use crate::LogHandle;
use crate::settings::ConfigArgs;

/// Options of `machinist worker`.
#[derive(Debug, clap::Args)]
pub struct WorkerArgs {
    #[command(flatten)]
    pub config: ConfigArgs,
    /// A queue to consume (repeat for several, in priority order; default: the config's
    /// `default_queue`, `machinery_tasks`).
    #[arg(long = "queue", value_name = "NAME")]
    pub queues: Vec<String>,
    /// How many tasks run at once (default: the config's `concurrency`, followed live when
    /// the --config file changes; 0 means twice the number of CPUs).
    #[arg(long, value_name = "N")]
    pub concurrency: Option<usize>,
    /// A periodic task to schedule, `'SPEC | NAME [TYPE:VALUE ...]'` (repeatable), e.g.
    /// `--periodic '*/10 * * * * * | add int64:1 int64:2'`. Fired once per tick across every
    /// worker sharing the lock; added to the config's `periodic_tasks`.
    #[arg(
        long = "periodic",
        value_name = "'SPEC | NAME [TYPE:VALUE ...]'",
        value_parser = PeriodicTaskConfig::parse_line
    )]
    pub periodic: Vec<PeriodicTaskConfig>,
    /// Runtime threads. The example tasks never block a thread, so one is the default, and
    /// one means a single-thread runtime (the fetch loop and the tasks share the thread): on a
    /// two-core machine shared with Redis it ran 20–50% more tasks per second than one thread
    /// per core, with a third less CPU per task, and the single-thread runtime another 16–27%
    /// less (fewer wake-ups between threads; see BENCHMARKS.md). More threads let more cores
    /// run task code; for more throughput on Redis, run more worker processes.
    #[arg(long, value_name = "N", env = "MACHINIST_THREADS", default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..))]
    pub threads: u64,
    /// The worker's name in logs (Go's consumer tag).
    #[arg(long, value_name = "NAME", default_value = "machinist_worker")]
    pub tag: String,
    /// Serve Prometheus metrics on this address (`127.0.0.1:9090`): tasks by state, run-time
    /// histogram, running tasks, queue depth.
    #[arg(long, value_name = "ADDR")]
    pub metrics_addr: Option<SocketAddr>,
    /// How often the --config file is re-read (default 10 s, as Go Machinery).
    #[arg(
        long,
        value_name = "DURATION",
        value_parser = parse_period,
        env = "MACHINIST_CONFIG_RELOAD_PERIOD",
        hide = true
    )]
    pub config_reload_period: Option<Duration>,
}

impl WorkerArgs {
    /// The configuration at start: file < environment < flags.
    pub fn load(&self) -> anyhow::Result<Config> {
        let mut config = self.config.load()?;
        self.apply_flags(&mut config);
        Ok(config)
    }

    /// The worker's own flags over a configuration.
    fn apply_flags(&self, config: &mut Config) {
        if let Some(n) = self.concurrency {
            config.concurrency = n;
        }
        config.periodic_tasks.extend(self.periodic.iter().cloned());
    }

    /// What is laid over the file after each reload: environment, then flags.
    fn overlay(&self) -> impl FnMut(&mut Config) -> Result<(), ConfigError> + Send + 'static {
        let config_args = self.config.clone();
        let concurrency = self.concurrency;
        let periodic = self.periodic.clone();
        move |config| {
            config_args.overlay(config)?;
            if let Some(n) = concurrency {
                config.concurrency = n;
            }
            config.periodic_tasks.extend(periodic.iter().cloned());
            Ok(())
        }
    }
}

/// A reload period: a duration above zero.
fn parse_period(s: &str) -> Result<Duration, String> {
    match crate::typed::parse_duration(s)? {
        d if d.is_zero() => Err("the period must be above zero".to_owned()),
        d => Ok(d),
    }
}

/// Runs the worker until it is stopped: exit 0 after a graceful stop, 1 when running tasks had
/// to be returned to the broker (shutdown timeout or second signal). `log` changes the log
/// filter when the followed file changes `log_level` (`None`: `RUST_LOG` decides).
pub async fn run(
    args: WorkerArgs,
    config: Config,
    log: Option<LogHandle>,
) -> anyhow::Result<ExitCode> {
    machinist_examples::hide_expected_panics();
    let watcher = match &args.config.config {
        Some(path) => {
            let period = args.config_reload_period.unwrap_or(Config::RELOAD_PERIOD);
            let watcher = ConfigWatcher::start_with(path, period, args.overlay())?;
            info!(file = %path.display(), every = ?period, "following the config file");
            Some(watcher)
        }
        None => None,
    };
    let config = watcher
        .as_ref()
        .map_or(config, |w| Config::clone(&w.current()));
    let follow_concurrency = args.concurrency.is_none();
    let server = machinist::server(config).await.context("connecting")?;
    if let Some(watcher) = &watcher {
        // The log level changes before the server (and so the worker's concurrency) sees the
        // new config: a task that a larger concurrency lets start is logged at the new level.
        server.follow_config(follow_live_settings(
            watcher.subscribe(),
            log,
            follow_concurrency,
        ));
    }
    machinist_examples::register(&server);
    log_every_task(&server);
    info!(tasks = ?server.registered_task_names(), "registered tasks");
    let scheduled = server
        .register_configured_periodic_tasks()
        .context("scheduling the periodic tasks")?;
    if scheduled > 0 {
        info!(count = scheduled, "periodic tasks scheduled");
    }

    let concurrency = server.config().concurrency;
    let mut queues = args.queues.into_iter();
    let mut worker = match queues.next() {
        Some(first) => server.new_custom_queue_worker(&args.tag, concurrency, first),
        None => server.new_worker(&args.tag, concurrency),
    };
    for queue in queues {
        worker.add_queue(queue);
    }
    if follow_concurrency {
        worker.follow_config();
    }
    worker.set_error_handler(|e| match e {
        // Already logged, with the task, by `Logged`.
        Error::TaskFailed(text) => debug!("{text}"),
        e => error!("{e}"),
    });
    if let Some(addr) = args.metrics_addr {
        crate::metrics::serve(addr, server.broker().clone(), worker.queues().to_vec())?;
    }
    let stopped = worker.launch().await;
    server.broker().close().await;
    server.backend().close().await;
    drop(watcher);
    match stopped.context("running the worker")? {
        Stopped::Gracefully => Ok(ExitCode::SUCCESS),
        Stopped::Abruptly => {
            eprintln!(
                "error: the worker stopped before its running tasks finished; their messages \
                 were returned to the broker"
            );
            Ok(ExitCode::FAILURE)
        }
    }
}

/// Applies what the server does not apply itself when the followed file changes: the log
/// level; and says when the worker's concurrency changes (the worker resizes on its own).
/// Returns the updates, passed on once the log level is applied, for the server to follow.
fn follow_live_settings(
    mut updates: watch::Receiver<Arc<Config>>,
    log: Option<LogHandle>,
    follow_concurrency: bool,
) -> watch::Receiver<Arc<Config>> {
    let mut current = updates.borrow_and_update().clone();
    let (applied, following) = watch::channel(current.clone());
    tokio::spawn(async move {
        while updates.changed().await.is_ok() {
            let next = updates.borrow_and_update().clone();
            if next.log_level != current.log_level {
                set_log_level(log.as_ref(), next.log_level.trim());
            }
            let n = next.effective_concurrency();
            if follow_concurrency && n != current.effective_concurrency() {
                info!("worker concurrency is now {n}");
            }
            if applied.send(next.clone()).is_err() {
                return;
            }
            current = next;
        }
    });
    following
}

/// Replaces the log filter by `level` (any `RUST_LOG`-style filter: `debug`,
/// `info,machinist=debug`).
fn set_log_level(log: Option<&LogHandle>, level: &str) {
    let Some(handle) = log else {
        info!("log_level is now {level:?}, but RUST_LOG decides what is logged");
        return;
    };
    let level = if level.is_empty() { "info" } else { level };
    match EnvFilter::try_new(level) {
        Ok(filter) => match handle.reload(filter) {
            Ok(()) => info!("log level is now {level}"),
            Err(e) => warn!("cannot change the log level: {e}"),
        },
        Err(e) => warn!("log_level {level:?} is not a valid filter ({e}); keeping the current one"),
    }
}

/// Wraps every registered task so that its start and outcome are logged at `info`.
fn log_every_task(server: &Server) {
    for name in server.registered_task_names() {
        if let Some(task) = server.get_task(&name) {
            server.register(name, Task::new(Logged(task)));
        }
    }
}

/// A task whose runs are logged: start (with its arguments), then success (with results and
/// run time), failure or panic. The worker's span already names the task and its UUID.
#[derive(Clone)]
struct Logged(Task);

/// [`Handler`] marker of [`Logged`].
struct LoggedMarker;

impl Handler<LoggedMarker> for Logged {
    fn call(&self, ctx: TaskContext, args: &[Arg]) -> Result<BoxFuture<TaskOutcome>, ArgError> {
        // Nothing of this is logged (`RUST_LOG=warn`, `log_level: warn`): run the task as it
        // is, without formatting its call for lines nobody sees (a few % of a worker's CPU per
        // task; checked per task, so a live change of the log level applies at once).
        if !tracing::enabled!(tracing::Level::INFO) {
            return self.0.call(ctx, args);
        }
        let attempt = ctx.attempt();
        let call = crate::summary::call(ctx.signature());
        let fut = match self.0.call(ctx, args) {
            Ok(fut) => fut,
            Err(e) => {
                info!(attempt, "task {call} not run: {e}");
                return Err(e);
            }
        };
        Ok(Box::pin(async move {
            info!(attempt, "task started: {call}");
            let started = Instant::now();
            let outcome = AssertUnwindSafe(fut).catch_unwind().await;
            let took = started.elapsed();
            match &outcome {
                Ok(Ok(results)) => {
                    info!(?took, "task succeeded: {call} = {}", results_text(results));
                }
                Ok(Err(TaskError::RetryLater { after, reason })) => {
                    info!(?took, "task asked to run again in {after:?}: {reason}");
                }
                Ok(Err(e)) => info!(?took, "task failed: {call}: {e}"),
                Err(panic) => info!(?took, "task panicked: {call}: {}", panic_text(&**panic)),
            }
            match outcome {
                Ok(outcome) => outcome,
                Err(panic) => std::panic::resume_unwind(panic),
            }
        }))
    }
}

/// Results as Go would print them: `3`, `"foo", "bar"`, `(no results)`.
pub fn results_text(results: &[machinist::TaskResult]) -> String {
    if results.is_empty() {
        return "(no results)".to_owned();
    }
    results
        .iter()
        .map(|r| match r.decode() {
            Ok(machinist::GoValue::String(s)) => format!("{s:?}"),
            Ok(v) => v.to_string(),
            Err(_) => r.value.to_string(),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn panic_text(payload: &(dyn std::any::Any + Send)) -> &str {
    if let Some(s) = payload.downcast_ref::<&str>() {
        s
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s
    } else {
        "(not a text)"
    }
}
