//! # machinist (the command)
//!
//! A small first cut of the `machinist` binary: tools that need no broker. The full command
//! (`worker`, `send`, `inspect`, `bench`) comes with configuration and the real brokers.
//!
//! | command | what it does |
//! |---|---|
//! | `machinist tasks` | lists the example tasks and their Go signatures |
//! | `machinist encode NAME [TYPE:VALUE]...` | prints the exact JSON message a Go producer would send |
//! | `machinist decode [FILE]` | checks a message with Go's rules and prints a summary |
//! | `machinist demo` | runs Go Machinery's example flow in-process (the quickstart) |
//!
//! Exit codes: 0 success; 1 invalid message (`decode`) or failed run; 2 bad command line,
//! including a bad `TYPE:VALUE` (clap's convention).
//!
//! Layout: `main.rs` (commands and their options), `typed.rs` (parsing `TYPE:VALUE`),
//! `summary.rs` (validating and describing a decoded message).

mod summary;
mod typed;

use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use machinist::{Arg, Headers, Signature, id};
use tracing_subscriber::EnvFilter;

/// machinist: a distributed task queue for Rust, wire-compatible with Go Machinery.
///
/// This build has the message tools and an in-process demo; `worker`, `send`, `inspect` and
/// `bench` come with configuration and the real brokers.
#[derive(Debug, Parser)]
#[command(name = "machinist", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
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

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let result = match cli.command {
        Command::Tasks => tasks(),
        Command::Encode(args) => encode(args),
        Command::Decode { file } => decode(file),
        Command::Demo => demo(),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if is_broken_pipe(&e) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// `machinist tasks | head -1` should not end in an error.
fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
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
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    runtime.block_on(async {
        let mut out = std::io::stdout().lock();
        machinist_examples::run_demo(&mut out).await
    })
}
