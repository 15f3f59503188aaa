//! `machinist worker`: a worker running the example tasks, logging each task's start and
//! outcome, until SIGINT/SIGTERM.

use std::panic::AssertUnwindSafe;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::Context as _;
use futures_util::FutureExt as _;
use machinist::task::{BoxFuture, Handler, TaskOutcome};
use machinist::{Arg, ArgError, Config, Error, Server, Stopped, Task, TaskContext, TaskError};
use tracing::{debug, error, info};

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
    /// How many tasks run at once (default: the config's `concurrency`; 0 means twice the
    /// number of CPUs).
    #[arg(long, value_name = "N")]
    pub concurrency: Option<usize>,
    /// The worker's name in logs (Go's consumer tag).
    #[arg(long, value_name = "NAME", default_value = "machinist_worker")]
    pub tag: String,
}

/// Runs the worker until it is stopped: exit 0 after a graceful stop, 1 when running tasks had
/// to be returned to the broker (shutdown timeout or second signal).
pub async fn run(args: WorkerArgs, config: Config) -> anyhow::Result<ExitCode> {
    machinist_examples::hide_expected_panics();
    let concurrency = args.concurrency.unwrap_or(config.concurrency);
    let server = machinist::server(config).await.context("connecting")?;
    machinist_examples::register(&server);
    log_every_task(&server);
    info!(tasks = ?server.registered_task_names(), "registered tasks");

    let mut queues = args.queues.into_iter();
    let mut worker = match queues.next() {
        Some(first) => server.new_custom_queue_worker(&args.tag, concurrency, first),
        None => server.new_worker(&args.tag, concurrency),
    };
    for queue in queues {
        worker.add_queue(queue);
    }
    worker.set_error_handler(|e| match e {
        // Already logged, with the task, by `Logged`.
        Error::TaskFailed(text) => debug!("{text}"),
        e => error!("{e}"),
    });
    let stopped = worker.launch().await;
    server.broker().close().await;
    server.backend().close().await;
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
