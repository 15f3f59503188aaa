//! `machinist send`: sending tasks and, with `--wait`, waiting for their results.
//!
//! Output: without `--wait`, one UUID per line on stdout. With `--wait`, one line per task:
//! the stored `TaskState` as Machinery JSON with `--json`, else `UUID STATE results-or-error`.
//! Exit code: 0 when every task succeeded, 1 when one failed, 2 when one gave no result
//! before `--timeout` (timeouts win over failures). A progress bar with tasks/s goes to stderr
//! when it is a terminal and more than one task is sent.

use std::io::{IsTerminal as _, Write};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use futures_util::stream::{self, StreamExt as _};
use indicatif::{ProgressBar, ProgressStyle};
use machinist::{Arg, AsyncResult, Config, Error, Signature, TaskState};

use crate::settings::ConfigArgs;
use crate::typed;

/// How many sends (and waits) are in flight at once with `--count`.
const IN_FLIGHT: usize = 32;

/// Options of `machinist send`.
#[derive(Debug, clap::Args)]
pub struct SendArgs {
    #[command(flatten)]
    pub config: ConfigArgs,
    /// The task name (`add`, `sum_ints` …).
    #[arg(value_parser = clap::builder::NonEmptyStringValueParser::new())]
    pub name: String,
    /// Arguments as TYPE:VALUE (`int64:1`, `string:foo`, `[]int64:[1,2]`).
    #[arg(value_name = "TYPE:VALUE", value_parser = typed::parse_arg)]
    pub args: Vec<Arg>,
    /// The queue (routing key); default: the config's `default_queue`.
    #[arg(long, value_name = "NAME")]
    pub queue: Option<String>,
    /// Do not run before this RFC 3339 instant (`2030-01-02T03:04:05Z`).
    #[arg(long, value_name = "RFC3339", value_parser = typed::parse_eta, conflicts_with = "delay")]
    pub eta: Option<String>,
    /// Do not run before this long from now (`30s`, `1m30s`, `500ms`).
    #[arg(long, value_name = "DURATION", value_parser = typed::parse_duration)]
    pub delay: Option<Duration>,
    /// Automatic retries on failure (Fibonacci back-off: 1 s, 2 s, 3 s, 5 s …).
    #[arg(
        long,
        value_name = "N",
        default_value_t = 0,
        allow_negative_numbers = true,
        value_parser = clap::value_parser!(i64).range(0..)
    )]
    pub retry: i64,
    /// Send N copies, each with its own UUID.
    #[arg(
        long,
        value_name = "N",
        default_value_t = 1,
        allow_negative_numbers = true,
        value_parser = clap::value_parser!(u64).range(1..)
    )]
    pub count: u64,
    /// Wait for the results and print them.
    #[arg(long)]
    pub wait: bool,
    /// Give up waiting after this long (exit 2); default: wait without limit.
    #[arg(long, value_name = "DURATION", value_parser = typed::parse_duration, requires = "wait")]
    pub timeout: Option<Duration>,
    /// With --wait: print each final state as Machinery's JSON.
    #[arg(long, requires = "wait")]
    pub json: bool,
}

/// How waiting for one task ended.
enum Waited {
    /// SUCCESS or FAILURE, as stored.
    Done(TaskState),
    /// The timeout passed first; the state last read, if any.
    TimedOut(String, Option<TaskState>),
}

/// Sends the task(s) and prints UUIDs or results (see the module documentation).
pub async fn run(args: SendArgs, config: Config) -> anyhow::Result<ExitCode> {
    let eta = match &args.eta {
        Some(text) => machinist::time::parse(text).context("--eta")?,
        None => None,
    };
    let mut template = Signature::new(args.name.clone())
        .args(args.args.clone())
        .retries(args.retry);
    if let Some(queue) = &args.queue {
        template = template.routing_key(queue.clone());
    }
    if let Some(eta) = eta {
        template = template.eta(eta);
    }

    // How often a wait re-reads a backend that cannot notify.
    let poll = config.result_poll_interval.max(Duration::from_millis(1));
    let server = machinist::server(config).await.context("connecting")?;
    let progress = Progress::new(args.count, "sent");
    let mut out = std::io::stdout().lock();
    let delay = args.delay;
    let sends = stream::iter(0..args.count)
        .map(|_| {
            let mut sig = template.clone();
            // The countdown runs from each send, not from the command's start.
            if let Some(delay) = delay {
                sig = sig.countdown(delay);
            }
            server.send_task(sig)
        })
        .buffered(IN_FLIGHT);
    futures_util::pin_mut!(sends);
    let mut sent = Vec::new();
    while let Some(result) = sends.next().await {
        let result = result.context("sending the task")?;
        if !args.wait {
            writeln!(out, "{}", result.uuid())?;
        }
        sent.push(result);
        progress.inc();
    }
    progress.finish();
    out.flush()?;
    if !args.wait {
        return Ok(ExitCode::SUCCESS);
    }

    let deadline = args.timeout.map(|t| Instant::now() + t);
    let progress = Progress::new(args.count, "done");
    let waits = stream::iter(sent)
        .map(|r| wait(r, deadline, poll))
        .buffered(IN_FLIGHT);
    futures_util::pin_mut!(waits);
    let (mut failed, mut timed_out) = (false, false);
    while let Some(waited) = waits.next().await {
        progress.inc();
        match waited? {
            Waited::Done(state) => {
                failed |= !state.is_success();
                if args.json {
                    out.write_all(&state.to_vec().context("encoding the state")?)?;
                    out.write_all(b"\n")?;
                } else {
                    writeln!(out, "{}", human_line(&state))?;
                }
            }
            Waited::TimedOut(uuid, last) => {
                timed_out = true;
                let state = last.map_or_else(|| "no state".to_owned(), |s| s.state.to_string());
                let after = args.timeout.unwrap_or_default();
                if args.json {
                    progress.suspend(|| {
                        eprintln!("error: {uuid}: no result after {after:?} (last state: {state})");
                    });
                } else {
                    writeln!(
                        out,
                        "{uuid} TIMEOUT no result after {after:?} (last state: {state})"
                    )?;
                }
            }
        }
        out.flush()?;
    }
    progress.finish();
    Ok(if timed_out {
        ExitCode::from(2)
    } else if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

/// Waits until the task is SUCCESS or FAILURE, or the deadline passes.
async fn wait(
    mut result: AsyncResult,
    deadline: Option<Instant>,
    poll: Duration,
) -> anyhow::Result<Waited> {
    let outcome = match deadline {
        Some(deadline) => {
            let left = deadline.saturating_duration_since(Instant::now());
            result.get_with_timeout(left, poll).await.map(drop)
        }
        None => result.get(poll).await.map(drop),
    };
    let uuid = result.uuid().to_owned();
    match outcome {
        Ok(()) | Err(Error::TaskFailed(_)) => {}
        Err(Error::Timeout(_)) => {
            let last = result.get_state().await.ok().flatten();
            return Ok(Waited::TimedOut(uuid, last));
        }
        Err(e) => {
            return Err(e).with_context(|| format!("waiting for {uuid}"));
        }
    }
    let state = result
        .get_state()
        .await
        .with_context(|| format!("reading the state of {uuid}"))?
        .ok_or_else(|| anyhow::anyhow!("the state of {uuid} disappeared"))?;
    Ok(Waited::Done(state))
}

/// `UUID SUCCESS 3`, `UUID SUCCESS "foo", "bar"`, `UUID FAILURE oops`.
pub fn human_line(state: &TaskState) -> String {
    if state.is_success() {
        let results = state.results.as_deref().unwrap_or_default();
        format!(
            "{} {} {}",
            state.task_uuid,
            state.state,
            crate::worker::results_text(results)
        )
    } else {
        format!("{} {} {}", state.task_uuid, state.state, state.error)
    }
}

/// A progress bar on stderr, drawn only when stderr is a terminal and there is more than one
/// task; otherwise nothing at all.
struct Progress {
    bar: Option<ProgressBar>,
    started: Instant,
    what: &'static str,
}

impl Progress {
    fn new(total: u64, what: &'static str) -> Self {
        let bar = (total > 1 && std::io::stderr().is_terminal()).then(|| {
            let bar = ProgressBar::new(total);
            let style = ProgressStyle::with_template(&format!(
                "{{bar:40}} {{pos}}/{{len}} {what} ({{rate}} tasks/s, {{elapsed}})"
            ))
            .map(|style| {
                style.with_key(
                    "rate",
                    |state: &indicatif::ProgressState, w: &mut dyn std::fmt::Write| {
                        let _ = write!(w, "{:.0}", state.per_sec());
                    },
                )
            })
            .unwrap_or_else(|_| ProgressStyle::default_bar());
            bar.set_style(style);
            bar
        });
        Progress {
            bar,
            started: Instant::now(),
            what,
        }
    }

    fn inc(&self) {
        if let Some(bar) = &self.bar {
            bar.inc(1);
        }
    }

    fn suspend(&self, f: impl FnOnce()) {
        match &self.bar {
            Some(bar) => bar.suspend(f),
            None => f(),
        }
    }

    fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
            let secs = self.started.elapsed().as_secs_f64();
            let n = bar.position();
            let rate = if secs > 0.0 { n as f64 / secs } else { 0.0 };
            eprintln!("{n} tasks {} in {secs:.2} s ({rate:.0} tasks/s)", self.what);
        }
    }
}

#[cfg(test)]
mod tests {
    use machinist::TaskResult;

    use super::*;

    #[test]
    fn human_lines() {
        let ok = TaskState::success("task_1", vec![TaskResult::new(3i64)]);
        assert_eq!(human_line(&ok), "task_1 SUCCESS 3");
        let two = TaskState::success(
            "task_2",
            vec![TaskResult::new("foo"), TaskResult::new(vec![1i64, 2])],
        );
        assert_eq!(human_line(&two), r#"task_2 SUCCESS "foo", [1, 2]"#);
        let none = TaskState::success("task_3", vec![]);
        assert_eq!(human_line(&none), "task_3 SUCCESS (no results)");
        let failed = TaskState::failure("task_4", "oops");
        assert_eq!(human_line(&failed), "task_4 FAILURE oops");
    }
}
