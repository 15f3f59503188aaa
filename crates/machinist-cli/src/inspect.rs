//! `machinist status`, `machinist inspect` and `machinist purge`: reading states and queues.

use std::io::Write;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::Subcommand;
use machinist::{Config, Signature};

use crate::settings::ConfigArgs;

/// How many messages `inspect` lists unless told otherwise.
const DEFAULT_LIMIT: usize = 1000;

/// Options of `machinist status`.
#[derive(Debug, clap::Args)]
pub struct StatusArgs {
    #[command(flatten)]
    pub config: ConfigArgs,
    /// The task's UUID (as `send` printed it).
    pub uuid: String,
    /// Print the state as Machinery's JSON.
    #[arg(long)]
    pub json: bool,
}

/// Options of `machinist inspect`.
#[derive(Debug, clap::Args)]
pub struct InspectArgs {
    #[command(flatten)]
    pub config: ConfigArgs,
    #[command(subcommand)]
    pub what: Inspect,
}

/// What `inspect` lists.
#[derive(Debug, Subcommand)]
pub enum Inspect {
    /// Messages waiting in a queue, oldest first (not the delayed ones, not those running).
    Pending {
        /// The queue; default: the config's `default_queue`.
        #[arg(long, value_name = "NAME")]
        queue: Option<String>,
        /// Print a JSON array of the messages, exactly as stored.
        #[arg(long)]
        json: bool,
        /// List at most this many.
        #[arg(long, value_name = "N", default_value_t = DEFAULT_LIMIT)]
        limit: usize,
    },
    /// Messages waiting for their ETA, over all queues, earliest first.
    Delayed {
        /// Print a JSON array of the messages, exactly as stored.
        #[arg(long)]
        json: bool,
        /// List at most this many.
        #[arg(long, value_name = "N", default_value_t = DEFAULT_LIMIT)]
        limit: usize,
    },
}

/// Options of `machinist purge`.
#[derive(Debug, clap::Args)]
pub struct PurgeArgs {
    #[command(flatten)]
    pub config: ConfigArgs,
    /// The queue; default: the config's `default_queue`.
    #[arg(long, value_name = "NAME")]
    pub queue: Option<String>,
}

/// Prints the stored state of a task; exit 1 when none is stored.
pub async fn status(args: StatusArgs, config: Config) -> anyhow::Result<ExitCode> {
    let adapters = machinist::connect(&config).await.context("connecting")?;
    let state = adapters
        .backend
        .get_state(&args.uuid)
        .await
        .with_context(|| format!("reading the state of {}", args.uuid))?;
    adapters.close().await;
    let Some(state) = state else {
        eprintln!(
            "error: no state stored for {} (never sent, expired or purged)",
            args.uuid
        );
        return Ok(ExitCode::FAILURE);
    };
    let mut out = std::io::stdout().lock();
    if args.json {
        out.write_all(&state.to_vec().context("encoding the state")?)?;
        out.write_all(b"\n")?;
        return Ok(ExitCode::SUCCESS);
    }
    let results = match &state.results {
        None => "null".to_owned(),
        Some(r) => {
            let typed: Vec<String> = r
                .iter()
                .map(|r| {
                    format!(
                        "{} ({})",
                        crate::worker::results_text(std::slice::from_ref(r)),
                        r.type_name
                    )
                })
                .collect();
            if typed.is_empty() {
                "(no results)".to_owned()
            } else {
                typed.join(", ")
            }
        }
    };
    let created = state
        .created_at
        .as_ref()
        .map_or_else(|| "-".to_owned(), machinist::time::display);
    writeln!(out, "UUID       {}", state.task_uuid)?;
    writeln!(out, "Name       {}", or_dash(&state.task_name))?;
    writeln!(out, "State      {}", state.state)?;
    writeln!(out, "Results    {results}")?;
    writeln!(out, "Error      {}", or_dash(&state.error))?;
    writeln!(out, "CreatedAt  {created}")?;
    Ok(ExitCode::SUCCESS)
}

/// Lists pending or delayed messages.
pub async fn inspect(args: InspectArgs, config: Config) -> anyhow::Result<ExitCode> {
    let adapters = machinist::connect(&config).await.context("connecting")?;
    let mut out = std::io::stdout().lock();
    match args.what {
        Inspect::Pending { queue, json, limit } => {
            let queue = queue.unwrap_or_else(|| config.default_queue.clone());
            let bodies = adapters
                .broker
                .pending(&queue, limit)
                .await
                .with_context(|| format!("listing the pending messages of {queue}"))?;
            if json {
                write_json_array(&mut out, bodies.iter().map(|b| b.as_ref()))?;
            } else {
                for body in &bodies {
                    writeln!(out, "{}", describe(body))?;
                }
                eprintln!(
                    "{} pending in {queue}{}",
                    bodies.len(),
                    more(bodies.len(), limit)
                );
            }
        }
        Inspect::Delayed { json, limit } => {
            let delayed = adapters
                .broker
                .delayed(limit)
                .await
                .context("listing the delayed messages")?;
            if json {
                write_json_array(&mut out, delayed.iter().map(|(_, b)| b.as_ref()))?;
            } else {
                for (eta, body) in &delayed {
                    writeln!(out, "{}  {}", machinist::time::display(eta), describe(body))?;
                }
                eprintln!("{} delayed{}", delayed.len(), more(delayed.len(), limit));
            }
        }
    }
    adapters.close().await;
    Ok(ExitCode::SUCCESS)
}

/// Deletes the waiting messages of a queue and says how many.
pub async fn purge(args: PurgeArgs, config: Config) -> anyhow::Result<ExitCode> {
    let adapters = machinist::connect(&config).await.context("connecting")?;
    let queue = args.queue.unwrap_or_else(|| config.default_queue.clone());
    let n = adapters
        .broker
        .purge(&queue)
        .await
        .with_context(|| format!("purging {queue}"))?;
    adapters.close().await;
    println!("purged {n} message(s) from {queue}");
    Ok(ExitCode::SUCCESS)
}

/// `UUID  queue  add(1, 2)` for a message, or what is wrong with it.
fn describe(body: &[u8]) -> String {
    match Signature::from_slice(body) {
        Ok(sig) => format!(
            "{}  {}  {}",
            or_dash(&sig.uuid),
            or_dash(&sig.routing_key),
            crate::summary::call(&sig)
        ),
        Err(e) => format!("(undecodable message of {} bytes: {e})", body.len()),
    }
}

/// Writes `[body, body …]`: each stored message as it is, or as a JSON string when it is not
/// JSON at all (so that the array stays valid).
fn write_json_array<'a>(
    out: &mut impl Write,
    bodies: impl Iterator<Item = &'a [u8]>,
) -> anyhow::Result<()> {
    out.write_all(b"[")?;
    for (i, body) in bodies.enumerate() {
        out.write_all(if i == 0 { b"\n" } else { b",\n" })?;
        out.write_all(&body_json(body))?;
    }
    out.write_all(b"\n]\n")?;
    Ok(())
}

fn more(shown: usize, limit: usize) -> &'static str {
    if shown >= limit {
        " (the limit; there may be more: --limit)"
    } else {
        ""
    }
}

fn or_dash(s: &str) -> &str {
    if s.is_empty() { "-" } else { s }
}

/// A stored message as a JSON value: itself when it is JSON, else its text as a string.
fn body_json(body: &[u8]) -> Vec<u8> {
    if serde_json::from_slice::<serde_json::Value>(body).is_ok() {
        return body.to_vec();
    }
    serde_json::to_vec(&String::from_utf8_lossy(body)).unwrap_or_else(|_| b"null".to_vec())
}
