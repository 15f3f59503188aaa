//! # machinist (the command)
//!
//! Runs workers, sends tasks and looks into queues and results, on any broker and backend a
//! URL names: the embedded default (`sqlite://machinist.db` in the working directory),
//! `sqlite://FILE`, `redis://…` / `redis+socket://…` / Go's multi-host cluster form,
//! `amqp://…` (RabbitMQ: broker and results), or `memory`.
//!
//! | command | what it does |
//! |---|---|
//! | `machinist worker` | runs a worker with the example tasks (`add`, `sum_ints`, `long_running_task` …); `--config FILE` is followed live, `--metrics-addr ADDR` serves Prometheus metrics |
//! | `machinist send NAME [TYPE:VALUE]...` | sends a task; prints its UUID, or waits for its result |
//! | `machinist status UUID` | prints a task's stored state |
//! | `machinist inspect pending` / `delayed` | lists waiting / delayed messages |
//! | `machinist purge` | deletes the waiting messages of a queue |
//! | `machinist config check` | loads the configuration and prints it, redacted |
//! | `machinist tasks` | lists the example tasks and their Go signatures |
//! | `machinist encode NAME [TYPE:VALUE]...` | prints the exact JSON message a Go producer would send |
//! | `machinist decode [FILE]` | checks a message with Go's rules and prints a summary |
//! | `machinist demo` | runs Go Machinery's example flow in-process (the quickstart) |
//! | `machinist bench` | throughput, latency, RSS and CPU per scenario, beside the raw floor of the same server (see `bench.rs`) |
//!
//! Configuration: `--config FILE` (YAML, Go Machinery's keys), overridden by the environment
//! (`BROKER`, `RESULT_BACKEND`, `LOCK`, `DEFAULT_QUEUE` …), overridden by flags. `worker`
//! re-reads the file every 10 s (`MACHINIST_CONFIG_RELOAD_PERIOD` changes that) and applies
//! `concurrency`, `log_level` and the other live settings; `RUST_LOG`, when set, decides the
//! log level instead.
//!
//! Exit codes: 0 success; 1 failure (a task that failed, a state not found, a broker error, a
//! configuration that does not load, a worker that had to abort running tasks); 2 bad command
//! line (clap's convention, including a bad `TYPE:VALUE`) and `send --wait` timing out.
//!
//! Layout: `main.rs` (commands and their options, tracing), `settings.rs` (configuration
//! layers), `worker.rs` (the worker, following the config file), `metrics.rs` (the Prometheus
//! exporter and the queue-depth poller), `send.rs`, `inspect.rs` (`status`, `inspect`,
//! `purge`), `typed.rs` (parsing `TYPE:VALUE` and durations), `summary.rs` (validating and
//! describing a message).

mod bench;
mod inspect;
mod metrics;
mod send;
mod settings;
mod summary;
mod typed;
mod worker;

use std::future::Future;
use std::io::{IsTerminal as _, Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use machinist::{Adapter, Arg, Config, DEFAULT_URL, Headers, Role, Signature, id};
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::{EnvFilter, Registry, reload};

use crate::settings::ConfigArgs;

/// mimalloc for the whole command (feature `mimalloc`, on by default): a worker allocates and
/// frees a few dozen small blocks per task, and with glibc's allocator that was about a quarter
/// of its instructions. Only the binary sets an allocator; the library crates leave the choice
/// to the application.
#[cfg(feature = "mimalloc")]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// machinist: a distributed task queue for Rust, wire-compatible with Go Machinery.
///
/// With no broker configured everything lives in `machinist.db` in the working directory:
/// run `machinist worker` in one terminal and `machinist send add int64:1 int64:2 --wait`
/// in another.
#[derive(Debug, Parser)]
#[command(name = "machinist", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a worker with the example tasks until SIGINT/SIGTERM.
    ///
    /// With --config FILE the file is re-read every 10 s: `concurrency` (unless --concurrency
    /// is given), `log_level` (unless RUST_LOG is set), time limits and the other live
    /// settings apply without a restart; a changed URL or queue is logged as needing one.
    ///
    /// The first signal stops taking tasks and waits for the running ones (up to the shutdown
    /// timeout); a second one aborts them, returning their messages to the broker. Exits 0
    /// after a graceful stop, 1 when running tasks had to be given back.
    Worker(worker::WorkerArgs),
    /// Send a task; print its UUID, or with --wait its result.
    #[command(after_help = typed::SEND_HELP)]
    Send(send::SendArgs),
    /// Print the stored state of a task (exit 1 when none is stored).
    Status(inspect::StatusArgs),
    /// List messages waiting in a queue or for their ETA.
    Inspect(inspect::InspectArgs),
    /// Delete every waiting message of a queue.
    Purge(inspect::PurgeArgs),
    /// Configuration tools.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// List the example tasks (Go Machinery's) and their Go signatures.
    Tasks,
    /// Print the JSON message a Go producer would send for a task, byte for byte.
    #[command(after_help = typed::ENCODE_HELP)]
    Encode(EncodeArgs),
    /// Check a task message with Go's rules and print what it asks for.
    ///
    /// Exits 1 with the reasons when the message is not valid JSON, has no task name, or an
    /// argument does not decode as its declared type (the worker would fail or dead-letter it).
    Decode {
        /// A file holding the message; `-` or nothing reads standard input.
        file: Option<PathBuf>,
    },
    /// Run Go Machinery's example flow in this process (in-memory broker and backend) and
    /// check every result: the quickstart.
    Demo,
    /// Measure throughput, latency, memory and CPU on a broker, beside the raw floor of the
    /// same server in the same run (Machinery's `add` workload; every result is checked).
    ///
    /// Scenarios: enqueue, drain, end-to-end, no-results, latency, chord, backlog. Exits 1
    /// when a scenario's results do not all come back right.
    Bench(bench::BenchArgs),
}

#[derive(Debug, Subcommand)]
enum ConfigCommand {
    /// Load the configuration (file, then environment, then flags) and print it with URLs
    /// redacted; exit 1 with the error when it does not load.
    Check(ConfigArgs),
}

#[derive(Debug, clap::Args)]
struct EncodeArgs {
    /// The task name (`add`, `sum_ints` …).
    #[arg(value_parser = clap::builder::NonEmptyStringValueParser::new())]
    name: String,
    /// Arguments as TYPE:VALUE (`int64:1`, `string:foo`, `[]int64:[1,2]`).
    #[arg(value_name = "TYPE:VALUE", value_parser = typed::parse_arg)]
    args: Vec<Arg>,
    /// The task UUID (default: a new `task_<uuid4>`).
    #[arg(long)]
    uuid: Option<String>,
    /// The queue (`RoutingKey`); Go fills in its default queue when publishing.
    #[arg(long, default_value = "machinery_tasks")]
    routing_key: String,
    /// Do not run before this RFC 3339 instant (`2030-01-02T03:04:05Z`).
    #[arg(long, value_parser = typed::parse_eta, conflicts_with = "countdown")]
    eta: Option<String>,
    /// Do not run before this many seconds from now (sets `ETA`).
    #[arg(long, value_name = "SECONDS")]
    countdown: Option<u64>,
    /// Automatic retries on failure (`RetryCount`).
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(i64).range(0..))]
    retries: i64,
    /// Seed of the Fibonacci back-off, in seconds (`RetryTimeout`).
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(i64).range(0..))]
    retry_timeout: i64,
    /// Priority 0–255 (AMQP).
    #[arg(long, default_value_t = 0)]
    priority: u8,
    /// Callbacks do not receive this task's results (`Immutable`).
    #[arg(long)]
    immutable: bool,
    /// Drop the message instead of requeueing it when no worker knows the task.
    #[arg(long)]
    ignore_when_not_registered: bool,
}

/// An error in what the user typed, found after parsing (exit code 2, like clap's own).
#[derive(Debug)]
pub struct UsageError(pub String);

impl std::fmt::Display for UsageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UsageError {}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Worker(args) => worker_main(args),
        Command::Send(args) => with_config(&args.config.clone(), "warn", |config| {
            send::run(args, config)
        }),
        Command::Status(args) => with_config(&args.config.clone(), "warn", |config| {
            inspect::status(args, config)
        }),
        Command::Inspect(args) => with_config(&args.config.clone(), "warn", |config| {
            inspect::inspect(args, config)
        }),
        Command::Purge(args) => with_config(&args.config.clone(), "warn", |config| {
            inspect::purge(args, config)
        }),
        Command::Config(ConfigCommand::Check(args)) => config_check(&args),
        Command::Tasks => plain(tasks),
        Command::Encode(args) => plain(|| encode(args)),
        Command::Decode { file } => plain(|| decode(file)),
        Command::Demo => plain(demo),
        Command::Bench(args) => bench::main(args),
    };
    match result {
        Ok(code) => code,
        Err(e) if is_broken_pipe(&e) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", error_text(&e));
            if e.downcast_ref::<UsageError>().is_some() {
                ExitCode::from(2)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

/// A command that needs no configuration: tracing at `warn` unless `RUST_LOG` says otherwise.
fn plain(f: impl FnOnce() -> anyhow::Result<()>) -> anyhow::Result<ExitCode> {
    let _ = init_tracing(None, "warn");
    f().map(|()| ExitCode::SUCCESS)
}

/// Loads the configuration, sets up tracing (`RUST_LOG`, else the config's `log_level`, else
/// `default_level`) and runs `f` on a tokio runtime.
fn with_config<F, Fut>(args: &ConfigArgs, default_level: &str, f: F) -> anyhow::Result<ExitCode>
where
    F: FnOnce(Config) -> Fut,
    Fut: Future<Output = anyhow::Result<ExitCode>>,
{
    let config = args.load()?;
    let _ = init_tracing(config_log_level(&config), default_level);
    runtime()?.block_on(f(config))
}

/// The log level the configuration asks for: `log_level` when it is set to something else
/// than its default (`info`), so that `send` and the others stay quiet (`warn`) unless asked.
fn config_log_level(config: &Config) -> Option<&str> {
    let level = config.log_level.trim();
    (!level.is_empty() && level != Config::default().log_level).then_some(level)
}

/// `machinist worker`: tracing at the config's `log_level` (changed live when the config file
/// changes, unless `RUST_LOG` is set), then the worker.
fn worker_main(args: worker::WorkerArgs) -> anyhow::Result<ExitCode> {
    let config = args.load()?;
    let log = init_tracing(
        Some(config.log_level.trim()).filter(|l| !l.is_empty()),
        "info",
    );
    let threads = usize::try_from(args.threads).unwrap_or(usize::MAX);
    worker_runtime(threads)?.block_on(worker::run(args, config, log))
}

/// The worker's runtime: for one thread, tokio's current-thread runtime, where the fetch loop
/// and every task it spawns run on the calling thread; for more, a multi-thread runtime with
/// that many worker threads.
///
/// Why not a multi-thread runtime of one worker thread: there the fetch loop runs on the main
/// thread and the tasks on the worker thread, so every task handed out, and every reply that
/// wakes the loop, crosses threads (a futex wake, a park, a context switch). Worker processes
/// spent 16% (Redis) to 27% (AMQP) less CPU per task on the current-thread runtime, lower in
/// every alternating pair (BENCHMARKS.md, session 8). The bench's own process keeps the
/// multi-thread runtime: its in-process runs put the producers on the main thread beside the
/// worker's thread, and ran chords about 10% slower on one thread.
fn worker_runtime(threads: usize) -> anyhow::Result<tokio::runtime::Runtime> {
    if threads > 1 {
        return runtime_with(Some(threads));
    }
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the tokio runtime")
}

/// Changes the log filter of a running command.
pub type LogHandle = reload::Handle<EnvFilter, Registry>;

/// Sets up tracing to stderr: `RUST_LOG` when set, else `configured`, else `default_level`.
/// Returns a handle to change the filter later, or `None` when `RUST_LOG` decides.
fn init_tracing(configured: Option<&str>, default_level: &str) -> Option<LogHandle> {
    let rust_log = std::env::var_os(EnvFilter::DEFAULT_ENV).is_some();
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        EnvFilter::try_new(configured.unwrap_or(default_level))
            .unwrap_or_else(|_| EnvFilter::new(default_level))
    });
    let (filter, handle) = reload::Layer::new(filter);
    tracing_subscriber::registry()
        .with(filter)
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_ansi(std::io::stderr().is_terminal()),
        )
        .init();
    (!rust_log).then_some(handle)
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    runtime_with(None)
}

/// A multi-thread runtime with `threads` worker threads (`None`: tokio's default, one per CPU,
/// or `TOKIO_WORKER_THREADS`).
fn runtime_with(threads: Option<usize>) -> anyhow::Result<tokio::runtime::Runtime> {
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if let Some(n) = threads {
        builder.worker_threads(n.max(1));
    }
    builder
        .enable_all()
        .build()
        .context("starting the tokio runtime")
}

/// The error and its causes, `: `-separated, skipping a cause whose text the message already
/// holds (the library's errors show their source in their own text).
fn error_text(e: &anyhow::Error) -> String {
    let mut text = String::new();
    for cause in e.chain() {
        let part = cause.to_string();
        if text.contains(&part) {
            continue;
        }
        if !text.is_empty() {
            text.push_str(": ");
        }
        text.push_str(&part);
    }
    text
}

/// `machinist tasks | head -1` should not end in an error.
fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

/// Prints the effective configuration, redacted, then which adapter each URL chooses; exit 1
/// when the configuration does not load or a URL cannot be connected by this build.
fn config_check(args: &ConfigArgs) -> anyhow::Result<ExitCode> {
    let _ = init_tracing(None, "warn");
    let config = args.load()?;
    let mut out = std::io::stdout().lock();
    out.write_all(config.redacted().as_bytes())?;
    let mut ok = true;
    for (role, url) in [
        (Role::Broker, &config.broker),
        (Role::ResultBackend, &config.result_backend),
        (Role::Lock, &config.lock),
    ] {
        match Adapter::resolve(role, url) {
            Ok(adapter) if url.trim().is_empty() => {
                writeln!(out, "# {role}: {adapter} ({DEFAULT_URL}, the default)")?;
            }
            Ok(adapter) => writeln!(out, "# {role}: {adapter}")?,
            Err(e) => {
                ok = false;
                out.flush()?;
                eprintln!("error: {}: {e}", role.key());
            }
        }
    }
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn tasks() -> anyhow::Result<()> {
    let tasks = &machinist_examples::EXAMPLE_TASKS;
    let name_w = tasks.iter().map(|t| t.name.len()).max().unwrap_or(0);
    let sig_w = tasks
        .iter()
        .map(|t| t.go_signature.len())
        .max()
        .unwrap_or(0);
    let mut out = std::io::stdout().lock();
    for t in tasks {
        writeln!(
            out,
            "{:name_w$}  {:sig_w$}  {}",
            t.name, t.go_signature, t.about
        )?;
    }
    Ok(())
}

fn encode(a: EncodeArgs) -> anyhow::Result<()> {
    let mut sig = Signature::new(a.name)
        .with_uuid(a.uuid.unwrap_or_else(id::task_id))
        .routing_key(a.routing_key)
        .args(a.args)
        .retries(a.retries)
        .retry_timeout(a.retry_timeout)
        .priority(a.priority)
        .immutable(a.immutable)
        .ignore_when_not_registered(a.ignore_when_not_registered);
    if let Some(text) = a.eta {
        if let Some(eta) = machinist::time::parse(&text).context("--eta")? {
            sig = sig.eta(eta);
        }
    } else if let Some(secs) = a.countdown {
        sig = sig.countdown(std::time::Duration::from_secs(secs));
    }
    // Go's SendTask always publishes `"Headers":{}` at least.
    sig.headers = Some(Headers::new());
    let body = sig.to_vec().context("encoding the message")?;
    let mut out = std::io::stdout().lock();
    out.write_all(&body)?;
    out.write_all(b"\n")?;
    Ok(())
}

fn decode(file: Option<PathBuf>) -> anyhow::Result<()> {
    let bytes = match file.as_deref() {
        None => read_stdin()?,
        Some(p) if p.as_os_str() == "-" => read_stdin()?,
        Some(p) => std::fs::read(p).with_context(|| format!("reading {}", p.display()))?,
    };
    let summary = summary::check(&bytes)?;
    std::io::stdout().lock().write_all(summary.as_bytes())?;
    Ok(())
}

fn read_stdin() -> anyhow::Result<Vec<u8>> {
    let mut bytes = Vec::new();
    std::io::stdin()
        .lock()
        .read_to_end(&mut bytes)
        .context("reading standard input")?;
    Ok(bytes)
}

fn demo() -> anyhow::Result<()> {
    machinist_examples::hide_expected_panics();
    runtime()?.block_on(async {
        let mut out = std::io::stdout().lock();
        let config = Config {
            broker: "memory".into(),
            result_backend: "memory".into(),
            lock: "memory".into(),
            ..Config::default()
        };
        machinist_examples::run_demo(config, &mut out).await
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_text_does_not_repeat_sources() {
        let source = machinist::Error::broker(std::io::Error::other("disk full"));
        let e = anyhow::Error::new(source).context("sending the task");
        assert_eq!(error_text(&e), "sending the task: broker: disk full");
        let e = anyhow::anyhow!("inner").context("outer");
        assert_eq!(error_text(&e), "outer: inner");
    }

    #[test]
    fn the_command_line_is_consistent() {
        use clap::CommandFactory as _;
        Cli::command().debug_assert();
    }
}
