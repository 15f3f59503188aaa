//! `machinist bench`: throughput, latency, memory and CPU of machinist on a broker, beside the
//! raw floor of the same server measured in the same run.
//!
//! The workload is Go Machinery's `add(int64, int64)`: task `i` is `add(i, 1)`, so every result
//! is known and the bench checks them all (count of SUCCESS, sum of results) after each
//! scenario; a scenario whose results do not add up makes the command exit 1.
//!
//! | scenario | what is timed |
//! |---|---|
//! | `enqueue` | `send_task` only (PENDING stored, message published), no worker |
//! | `drain` | workers consuming a queue filled beforehand |
//! | `end-to-end` | producers and workers at once, results stored |
//! | `no-results` | as `end-to-end` with a backend that discards (in-process workers only) |
//! | `latency` | one task at a time: send→STARTED stored, send→SUCCESS stored |
//! | `chord` | groups of `--chord-size` (100) members, each with a chord callback |
//! | `backlog` | `--backlog-tasks` queued beforehand (1,000,000 for the real test), then drained |
//!
//! Workers run in this process (`--worker-processes 0`, the default), or as `machinist worker`
//! child processes on the same URLs. In-process, completions are seen by a probe wrapped around
//! the result backend (exact, no polling, per-task latencies); with child processes the bench
//! waits for the queue to empty and then polls the states of the last tasks sent.
//!
//! Layout: `bench.rs` (options, scenarios, report), `bench/probe.rs` (the probe, the null
//! backend), `bench/floor.rs` (the raw floors), `bench/workers.rs` (in-process and child
//! workers), `bench/sys.rs` (`/proc` readings, percentiles).

mod floor;
mod probe;
mod sys;
mod workers;

use std::io::Write as _;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use futures_util::stream::{self, StreamExt as _};
use machinist::memory::{MemoryBackend, MemoryBroker};
use machinist::{
    Adapter, Backend, Broker, Chord, Config, Group, Role, Server, Signature, State, TaskResult,
    TaskState,
};
use serde_json::{Value, json};

use self::floor::{Floor, FloorServer, ServerUse};
use self::probe::{NullBackend, Probe, ProbeBackend, first_result};
use self::sys::{Percentiles, Pid};
use self::workers::{ChildSpec, Workers};

/// A scenario stalls when no task completes for this long.
const STALL: Duration = Duration::from_secs(60);
/// Reads in flight when the bench reads states back.
const READ_CONCURRENCY: usize = 64;

/// Options of `machinist bench`.
#[derive(Debug, clap::Args)]
pub struct BenchArgs {
    /// The broker URL: `memory`, `sqlite://FILE`, `redis://HOST:PORT/DB`, `amqp://…` …
    #[arg(long, value_name = "URL", default_value = "memory")]
    pub broker: String,
    /// The result backend URL (default: the broker's URL); `null` discards results.
    #[arg(long, value_name = "URL")]
    pub result_backend: Option<String>,
    /// Tasks per scenario.
    #[arg(long, value_name = "N", default_value_t = 20_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub tasks: u64,
    /// Tasks each worker runs at once (its prefetch too).
    #[arg(long, value_name = "N", default_value_t = 64, value_parser = clap::value_parser!(u64).range(1..))]
    pub concurrency: u64,
    /// Concurrent producers (each awaits its `send_task` before the next).
    #[arg(long, value_name = "N", default_value_t = 16, value_parser = clap::value_parser!(u64).range(1..))]
    pub producers: u64,
    /// Run the workers as this many `machinist worker` processes (0: one worker in this
    /// process).
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub worker_processes: u64,
    /// Extra bytes in every message (a `bench_payload` header).
    #[arg(long, value_name = "BYTES", default_value_t = 0)]
    pub payload: u64,
    /// A scenario to run (repeat for several; default: all, in the order listed).
    #[arg(long = "scenario", value_name = "NAME")]
    pub scenarios: Vec<Scenario>,
    /// Tasks of the `latency` scenario (at most --tasks), sent one at a time.
    #[arg(long, value_name = "N", default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..))]
    pub latency_tasks: u64,
    /// Tasks queued before the `backlog` scenario drains them (default: --tasks; the real test
    /// is 1000000).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub backlog_tasks: Option<u64>,
    /// Members per group in the `chord` scenario.
    #[arg(long, value_name = "N", default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..))]
    pub chord_size: u64,
    /// Skip the raw floor measurement.
    #[arg(long)]
    pub no_floor: bool,
    /// One JSON object per scenario per line on stdout instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Runtime threads of the bench process (producers, in-process worker, floor) and of each
    /// worker process; one by default, as `machinist worker`.
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..))]
    pub threads: u64,
}

/// A bench scenario.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Scenario {
    /// Publish only (PENDING stored, message published).
    Enqueue,
    /// Consume a queue filled beforehand.
    Drain,
    /// Producers and workers at once, results stored.
    EndToEnd,
    /// Producers and workers at once, results discarded.
    NoResults,
    /// One task at a time: send→start and send→result.
    Latency,
    /// Groups with a chord callback.
    Chord,
    /// A large queue filled beforehand, then drained.
    Backlog,
}

impl Scenario {
    const ALL: [Scenario; 7] = [
        Scenario::Enqueue,
        Scenario::Drain,
        Scenario::EndToEnd,
        Scenario::NoResults,
        Scenario::Latency,
        Scenario::Chord,
        Scenario::Backlog,
    ];

    fn name(self) -> &'static str {
        match self {
            Scenario::Enqueue => "enqueue",
            Scenario::Drain => "drain",
            Scenario::EndToEnd => "end-to-end",
            Scenario::NoResults => "no-results",
            Scenario::Latency => "latency",
            Scenario::Chord => "chord",
            Scenario::Backlog => "backlog",
        }
    }

    /// Short, key-safe, for queue names and UUID prefixes.
    fn code(self) -> &'static str {
        match self {
            Scenario::Enqueue => "enq",
            Scenario::Drain => "drn",
            Scenario::EndToEnd => "e2e",
            Scenario::NoResults => "nor",
            Scenario::Latency => "lat",
            Scenario::Chord => "chd",
            Scenario::Backlog => "blg",
        }
    }
}

/// `machinist bench`: tracing at `warn` (unless `RUST_LOG`), then the scenarios.
pub fn main(args: BenchArgs) -> anyhow::Result<ExitCode> {
    let _ = crate::init_tracing(None, "warn");
    crate::runtime_with(Some(usize_of(args.threads)))?.block_on(run(args))
}

async fn run(args: BenchArgs) -> anyhow::Result<ExitCode> {
    let bench = Bench::new(args)?;
    bench.header();
    let floor = bench.measure_floor().await;
    let mut out = std::io::stdout().lock();
    if !bench.args.json {
        bench.print_floor(&mut out, floor.as_ref())?;
        writeln!(out, "{}", Outcome::table_header())?;
        out.flush()?;
    }
    let mut all_verified = true;
    for &scenario in &bench.scenarios {
        eprintln!("bench: {} …", scenario.name());
        let mut outcome = match bench.scenario(scenario).await {
            Ok(outcome) => outcome,
            Err(e) => Outcome::failed(&bench, scenario, &e),
        };
        outcome.apply_floor(floor.as_ref());
        all_verified &= outcome.verified || outcome.skipped.is_some();
        if bench.args.json {
            writeln!(out, "{}", outcome.json(&bench, floor.as_ref()))?;
        } else {
            writeln!(out, "{}", outcome.table_row())?;
        }
        out.flush()?;
    }
    if !bench.args.json {
        bench.print_notes(&mut out)?;
    }
    Ok(if all_verified {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// What every scenario shares.
struct Bench {
    args: BenchArgs,
    scenarios: Vec<Scenario>,
    /// Distinguishes this run's queues and UUIDs from other runs on the same server.
    run_id: String,
    broker_url: String,
    backend_url: String,
    broker_kind: Adapter,
    null_backend: bool,
    config: Config,
    /// The `bench_payload` header's value (empty: no header).
    padding: Arc<str>,
}

impl Bench {
    fn new(args: BenchArgs) -> anyhow::Result<Self> {
        let broker_url = args.broker.trim().to_owned();
        let backend_url = args
            .result_backend
            .clone()
            .unwrap_or_else(|| broker_url.clone())
            .trim()
            .to_owned();
        let null_backend = matches!(backend_url.as_str(), "null" | "none");
        let broker_kind = Adapter::resolve(Role::Broker, &broker_url).context("--broker")?;
        if !null_backend {
            Adapter::resolve(Role::ResultBackend, &backend_url).context("--result-backend")?;
        }
        let children = args.worker_processes > 0;
        if children && broker_kind == Adapter::Memory {
            return Err(crate::UsageError(
                "--worker-processes needs a broker other processes can reach (sqlite:// or \
                 redis://), not memory"
                    .into(),
            )
            .into());
        }
        let backend_kind = Adapter::detect(&backend_url);
        if children && (null_backend || backend_kind == Some(Adapter::Memory)) {
            return Err(crate::UsageError(
                "--worker-processes needs a result backend other processes can reach (sqlite:// \
                 or redis://)"
                    .into(),
            )
            .into());
        }
        let mut config = Config::default();
        config
            .apply_env()
            .context("the configuration's environment variables")?;
        config.broker.clone_from(&broker_url);
        config.result_backend = if null_backend {
            "memory".to_owned()
        } else {
            backend_url.clone()
        };
        config.lock = "memory".to_owned();
        config.no_unix_signals = true;
        config.concurrency = usize_of(args.concurrency);
        let scenarios = if args.scenarios.is_empty() {
            Scenario::ALL.to_vec()
        } else {
            args.scenarios.clone()
        };
        let run_id: String = machinist::id::task_id()
            .trim_start_matches("task_")
            .chars()
            .filter(char::is_ascii_hexdigit)
            .take(8)
            .collect();
        let padding: Arc<str> = "x".repeat(usize_of(args.payload)).into();
        Ok(Bench {
            args,
            scenarios,
            run_id,
            broker_url,
            backend_url,
            broker_kind,
            null_backend,
            config,
            padding,
        })
    }

    fn tasks(&self) -> usize {
        usize_of(self.args.tasks)
    }

    fn producers(&self) -> usize {
        usize_of(self.args.producers)
    }

    fn children(&self) -> usize {
        usize_of(self.args.worker_processes)
    }

    fn workers_text(&self) -> String {
        match self.children() {
            0 => format!("in-process (concurrency {})", self.args.concurrency),
            n => format!(
                "{n} process{} (concurrency {} each)",
                if n == 1 { "" } else { "es" },
                self.args.concurrency
            ),
        }
    }

    fn header(&self) {
        eprintln!(
            "machinist bench: broker {} · results {} · workers {} · producers {} · payload {} B · \
             {} tasks per scenario · runtime threads {}",
            redact(&self.broker_url),
            if self.null_backend {
                "null".to_owned()
            } else {
                redact(&self.backend_url)
            },
            self.workers_text(),
            self.args.producers,
            self.args.payload,
            self.args.tasks,
            self.args.threads,
        );
    }

    /// A message as the scenarios send it, for the floor to push the same bytes.
    fn sample_message(&self) -> anyhow::Result<(Vec<u8>, Vec<u8>)> {
        let uuid = format!("task_bench{}_floor_0", self.run_id);
        let mut sig = self.add_sig(&uuid, "machinery_tasks", 123_456, 1);
        sig.headers.get_or_insert_with(Default::default);
        let body = sig.to_vec()?;
        let mut state = TaskState::success(&uuid, vec![TaskResult::new(123_457i64)]);
        state.task_name = "add".to_owned();
        // The same length as the `CreatedAt` a real state carries.
        state.created_at = machinist::time::parse("2026-01-02T03:04:05.123456789Z")?;
        Ok((body, state.to_vec()?))
    }

    /// The Redis broker's counters now ([`ServerUse`]; `None`: not a Redis broker with a
    /// floor, or unreadable). Read just outside a scenario's timed window, on a connection of
    /// its own.
    async fn server_use(&self) -> Option<ServerUse> {
        if self.broker_kind != Adapter::Redis || !floor::redis_floor_supported(&self.broker_url) {
            return None;
        }
        let url = self.broker_url.clone();
        tokio::task::spawn_blocking(move || {
            let client = redis::Client::open(url).ok()?;
            ServerUse::read(&mut client.get_connection().ok()?)
        })
        .await
        .ok()
        .flatten()
    }

    /// What the Redis server did since `before` was read (the reads themselves excluded).
    async fn server_use_since(&self, before: Option<ServerUse>) -> Option<ServerUse> {
        let before = before?;
        Some(self.server_use().await?.since(before))
    }

    async fn measure_floor(&self) -> Option<Floor> {
        if self.args.no_floor {
            return None;
        }
        if self.broker_kind == Adapter::Amqp {
            return self.measure_amqp_floor().await;
        }
        if self.broker_kind != Adapter::Redis {
            return None;
        }
        if !floor::redis_floor_supported(&self.broker_url) {
            eprintln!("bench: no raw floor for this Redis URL form (only redis://HOST:PORT/DB)");
            return None;
        }
        let (body, result) = match self.sample_message() {
            Ok(m) => m,
            Err(e) => {
                eprintln!("bench: no raw floor: {e}");
                return None;
            }
        };
        let url = self.broker_url.clone();
        let tasks = self.tasks().max(20_000);
        let serial = self.tasks().clamp(1000, 5000);
        let prefix = format!("machinist_bench_floor_{}_", self.run_id);
        eprintln!("bench: raw floor …");
        let measured = tokio::task::spawn_blocking(move || {
            floor::redis_floor(&url, tasks, serial, &body, &result, &prefix)
        })
        .await;
        match measured {
            Ok(Ok(floor)) => Some(floor),
            Ok(Err(e)) => {
                eprintln!("bench: no raw floor: {e:#}");
                None
            }
            Err(e) => {
                eprintln!("bench: no raw floor: {e}");
                None
            }
        }
    }

    /// The AMQP floor ([`floor::amqp_floor`]) on the broker URL, through a queue of this run.
    async fn measure_amqp_floor(&self) -> Option<Floor> {
        if !floor::amqp_floor_supported(&self.broker_url, &self.config.multiple_broker_separator) {
            eprintln!("bench: no raw floor for this AMQP URL form (only one amqp:// URL)");
            return None;
        }
        let (body, _) = match self.sample_message() {
            Ok(m) => m,
            Err(e) => {
                eprintln!("bench: no raw floor: {e}");
                return None;
            }
        };
        let tasks = self.tasks().max(20_000);
        let serial = self.tasks().clamp(1000, 5000);
        let queue = format!("machinist_bench_floor_{}", self.run_id);
        eprintln!("bench: raw floor …");
        match floor::amqp_floor(&self.broker_url, tasks, serial, &body, &queue).await {
            Ok(floor) => Some(floor),
            Err(e) => {
                eprintln!("bench: no raw floor: {e:#}");
                None
            }
        }
    }

    fn print_floor(
        &self,
        out: &mut impl std::io::Write,
        floor: Option<&Floor>,
    ) -> std::io::Result<()> {
        writeln!(
            out,
            "broker {} · results {} · workers {} · producers {} · payload {} B",
            redact(&self.broker_url),
            if self.null_backend {
                "null".to_owned()
            } else {
                redact(&self.backend_url)
            },
            self.workers_text(),
            self.args.producers,
            self.args.payload
        )?;
        if let Some(f) = floor.filter(|f| f.server == FloorServer::Amqp) {
            writeln!(
                out,
                "raw AMQP floor (lapin, a publisher and a consumer connection; publish with \
                 confirm, consume, ack per task): {:.0} tasks/s confirms awaited ×{} with the consumer running, {:.0} \
                 tasks/s one task at a time (p50 {:.3} ms a task); enqueue floor (publish with \
                 confirm ×{}): {:.0} tasks/s",
                f.pipelined,
                floor::BATCH,
                f.serial,
                f.serial_latency.map_or(f64::NAN, |p| p.p50),
                floor::BATCH,
                f.enqueue,
            )?;
        } else if let Some(f) = floor {
            writeln!(
                out,
                "raw Redis floor (redis-rs, one connection; RPUSH, LPOP, SET EX per task): {:.0} \
                 tasks/s pipelined ×{}, {:.0} tasks/s one command at a time (p50 {:.3} ms a \
                 task); enqueue floor (SET EX + RPUSH pipelined): {:.0} tasks/s",
                f.pipelined,
                floor::BATCH,
                f.serial,
                f.serial_latency.map_or(f64::NAN, |p| p.p50),
                f.enqueue,
            )?;
        }
        Ok(())
    }

    fn print_notes(&self, out: &mut impl std::io::Write) -> std::io::Result<()> {
        writeln!(
            out,
            "p50/p99/max: send→SUCCESS stored (enqueue: send_task; chord: group sent→callback \
             stored); start: send→STARTED stored."
        )?;
        if self.children() == 0 {
            writeln!(
                out,
                "RSS and CPU: this whole process (producers and worker) during the timed part."
            )?;
        } else {
            writeln!(
                out,
                "RSS: the largest peak of one worker process; CPU: all worker processes."
            )?;
        }
        Ok(())
    }

    fn add_sig(&self, uuid: &str, queue: &str, a: i64, b: i64) -> Signature {
        add_sig(uuid, queue, a, b, &self.padding)
    }

    async fn scenario(&self, scenario: Scenario) -> anyhow::Result<Outcome> {
        let n = self.tasks();
        match scenario {
            Scenario::Enqueue => self.enqueue(n).await,
            Scenario::Drain => self.drain(scenario, n).await,
            Scenario::Backlog => {
                let b = self.args.backlog_tasks.map_or(n, usize_of);
                self.drain(scenario, b).await
            }
            Scenario::EndToEnd => self.end_to_end(scenario, n).await,
            Scenario::NoResults => {
                if self.children() > 0 {
                    return Ok(Outcome::skipped(
                        self,
                        scenario,
                        "worker processes keep their results in a backend of their own URL; \
                         no-results runs with in-process workers only",
                    ));
                }
                self.end_to_end(scenario, n).await
            }
            Scenario::Latency => self.latency(n.min(usize_of(self.args.latency_tasks))).await,
            Scenario::Chord => self.chord(n).await,
        }
    }

    /// Fresh adapters for one scenario (a new in-memory broker and backend each time, so no
    /// scenario pays for another's stored results), with the probe around the backend when the
    /// workers run here.
    async fn env(&self, scenario: Scenario, slots: usize, latencies: bool) -> anyhow::Result<Env> {
        let adapters = machinist::connect(&self.config)
            .await
            .context("connecting")?;
        let broker: Arc<dyn Broker> = if self.broker_kind == Adapter::Memory {
            Arc::new(MemoryBroker::new())
        } else {
            adapters.broker
        };
        let null = self.null_backend || scenario == Scenario::NoResults;
        let backend: Arc<dyn Backend> = if null {
            Arc::new(NullBackend)
        } else if Adapter::detect(&self.backend_url) == Some(Adapter::Memory) {
            Arc::new(MemoryBackend::new(self.config.results_ttl()))
        } else {
            adapters.backend
        };
        let prefix = format!("task_bench{}_{}_", self.run_id, scenario.code());
        let queue = format!("machinist_bench_{}_{}", self.run_id, scenario.code());
        let probe = (self.children() == 0)
            .then(|| Arc::new(Probe::new(Arc::clone(&backend), &prefix, slots, latencies)));
        let server_backend: Arc<dyn Backend> = match &probe {
            Some(p) => Arc::new(ProbeBackend(Arc::clone(p))),
            None => Arc::clone(&backend),
        };
        let server = Server::new(
            self.config.clone(),
            Arc::clone(&broker),
            server_backend,
            adapters.lock,
        );
        server.register_task("add", machinist_examples::add);
        Ok(Env {
            server,
            broker,
            backend,
            probe,
            prefix,
            queue,
            null,
            slots,
        })
    }

    async fn start_workers(&self, env: &Env) -> anyhow::Result<Workers> {
        match self.children() {
            0 => Ok(Workers::in_process(
                &env.server,
                &env.queue,
                usize_of(self.args.concurrency),
            )),
            n => {
                let spec = ChildSpec {
                    broker: self.broker_url.clone(),
                    backend: self.backend_url.clone(),
                    queue: env.queue.clone(),
                    concurrency: usize_of(self.args.concurrency),
                    threads: self.args.threads,
                };
                Workers::spawn_children(n, &spec).await
            }
        }
    }

    /// Sends tasks `0..n` (`add(i, 1)`) from `--producers` concurrent producers; returns how
    /// long each `send_task` took when `record`.
    async fn produce(&self, env: &Env, n: usize, record: bool) -> anyhow::Result<Vec<Duration>> {
        let producers = self.producers().min(n).max(1);
        let mut handles = Vec::with_capacity(producers);
        for p in 0..producers {
            let server = env.server.clone();
            let probe = env.probe.clone();
            let prefix = env.prefix.clone();
            let queue = env.queue.clone();
            let padding = Arc::clone(&self.padding);
            // Each message is built just before it is sent: a million prepared signatures
            // would be the bench's own memory, not machinist's.
            handles.push(tokio::spawn(async move {
                let mut took = Vec::with_capacity(if record { n / producers + 1 } else { 0 });
                for i in (p..n).step_by(producers) {
                    let uuid = task_uuid(&prefix, i);
                    let sig = add_sig(&uuid, &queue, index_i64(i), 1, &padding);
                    if let Some(probe) = &probe {
                        probe.mark_sent(i);
                    }
                    let t = Instant::now();
                    server.send_task(sig).await?;
                    if record {
                        took.push(t.elapsed());
                    }
                }
                anyhow::Ok(took)
            }));
        }
        let mut all = Vec::with_capacity(if record { n } else { 0 });
        for h in handles {
            all.extend(h.await.context("a producer")??);
        }
        Ok(all)
    }

    /// Waits until every one of `slots` tasks completed; returns when that was seen.
    async fn wait_done(&self, env: &Env, slots: usize, watch: &[usize]) -> anyhow::Result<Instant> {
        if let Some(probe) = &env.probe {
            probe.wait_for(slots, STALL).await?;
            return Ok(Instant::now());
        }
        // Worker processes: the queue empties, then the tasks sent last complete.
        let mut last_head = None;
        let mut since = Instant::now();
        loop {
            let head = env.broker.pending(&env.queue, 1).await?;
            if head.is_empty() {
                break;
            }
            if last_head.as_ref() == head.first() {
                anyhow::ensure!(
                    since.elapsed() < STALL,
                    "stalled: the queue did not move for {STALL:?}"
                );
            } else {
                last_head = head.first().cloned();
                since = Instant::now();
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        let read = env.read_back(watch, true).await?;
        anyhow::ensure!(
            read.missing == 0,
            "{} of the last tasks never completed",
            read.missing
        );
        Ok(read.last_completed.unwrap_or_else(Instant::now))
    }

    /// The last tasks to watch with worker processes: what they can hold at once, twice over.
    fn tail(&self, n: usize) -> Vec<usize> {
        let k = (usize_of(self.args.concurrency) * self.children().max(1) * 2 + 100).min(n);
        (n - k..n).collect()
    }

    async fn enqueue(&self, n: usize) -> anyhow::Result<Outcome> {
        let env = self.env(Scenario::Enqueue, n, false).await?;
        let server_before = self.server_use().await;
        let meter = Meter::start();
        let t0 = Instant::now();
        let mut took = self.produce(&env, n, true).await?;
        let elapsed = t0.elapsed();
        let (peak_rss_mb, cpu_s) = meter.finish(None);
        let server = self.server_use_since(server_before).await;
        let purged = env.broker.purge(&env.queue).await?;
        let mut outcome = Outcome::new(self, Scenario::Enqueue, n, elapsed);
        outcome.server = server;
        outcome.latency = Percentiles::of(&mut took);
        outcome.peak_rss_mb = peak_rss_mb;
        outcome.cpu_s = cpu_s;
        outcome.cpu_scope = "producers";
        outcome.succeeded = usize::try_from(purged).unwrap_or(usize::MAX);
        outcome.verified = outcome.succeeded == n;
        if !outcome.verified {
            outcome.note = format!("{purged} messages were queued, {n} sent");
        }
        env.finish(self).await;
        Ok(outcome)
    }

    /// `drain` and `backlog`: fill the queue, then time the workers emptying it.
    async fn drain(&self, scenario: Scenario, n: usize) -> anyhow::Result<Outcome> {
        let backlog = scenario == Scenario::Backlog;
        let env = self.env(scenario, n, false).await?;
        let filled = Instant::now();
        self.produce(&env, n, false).await?;
        eprintln!("bench: {} tasks queued in {:.1?}", n, filled.elapsed());
        let server_before = self.server_use().await;
        let meter = Meter::start();
        let rss_before = sys::rss_mb(Pid::Current);
        let t0 = Instant::now();
        let workers = self.start_workers(&env).await?;
        let t0 = if self.children() > 0 {
            Instant::now()
        } else {
            t0
        };
        let child_rss_start = match &workers {
            Workers::Children(_) => workers.child_usage().peak_rss_mb,
            Workers::InProcess(_) => None,
        };
        let end = self.wait_done(&env, n, &self.tail(n)).await?;
        let elapsed = end.duration_since(t0);
        let usage = workers.child_usage();
        let (peak_rss_mb, cpu_s) = meter.finish(Some(&usage));
        let server = self.server_use_since(server_before).await;
        workers.stop().await?;
        let mut outcome = Outcome::new(self, scenario, n, elapsed);
        outcome.server = server;
        outcome.peak_rss_mb = peak_rss_mb;
        outcome.cpu_s = cpu_s;
        if backlog {
            outcome.rss_start_mb = if self.children() > 0 {
                child_rss_start
            } else {
                rss_before
            };
        }
        self.verify_members(&env, n, &mut outcome).await?;
        env.finish(self).await;
        Ok(outcome)
    }

    /// `end-to-end` and `no-results`: workers first, then producers, timed until the last
    /// result.
    async fn end_to_end(&self, scenario: Scenario, n: usize) -> anyhow::Result<Outcome> {
        let env = self.env(scenario, n, true).await?;
        let workers = self.start_workers(&env).await?;
        let server_before = self.server_use().await;
        let meter = Meter::start();
        let t0 = Instant::now();
        self.produce(&env, n, false).await?;
        let end = self.wait_done(&env, n, &self.tail(n)).await?;
        let elapsed = end.duration_since(t0);
        let usage = workers.child_usage();
        let (peak_rss_mb, cpu_s) = meter.finish(Some(&usage));
        let own_cpu_s = meter.own_cpu();
        let server = self.server_use_since(server_before).await;
        workers.stop().await?;
        let mut outcome = Outcome::new(self, scenario, n, elapsed);
        outcome.server = server;
        outcome.peak_rss_mb = peak_rss_mb;
        outcome.cpu_s = cpu_s;
        if self.children() > 0 {
            outcome.producer_cpu_s = own_cpu_s;
        }
        outcome.set_probe_latencies(env.probe.as_deref(), 0..n);
        self.verify_members(&env, n, &mut outcome).await?;
        env.finish(self).await;
        Ok(outcome)
    }

    /// One task at a time; ten more first, untimed, to warm connections up.
    async fn latency(&self, n: usize) -> anyhow::Result<Outcome> {
        let warm = 10;
        let env = self.env(Scenario::Latency, n + warm, true).await?;
        let workers = self.start_workers(&env).await?;
        for i in n..n + warm {
            self.one_task(&env, i).await?;
        }
        let meter = Meter::start();
        let mut polled = Vec::new();
        let t0 = Instant::now();
        for i in 0..n {
            if let Some(times) = self.one_task(&env, i).await? {
                polled.push(times);
            }
        }
        let elapsed = t0.elapsed();
        let usage = workers.child_usage();
        let (peak_rss_mb, cpu_s) = meter.finish(Some(&usage));
        workers.stop().await?;
        let mut outcome = Outcome::new(self, Scenario::Latency, n, elapsed);
        outcome.peak_rss_mb = peak_rss_mb;
        outcome.cpu_s = cpu_s;
        if env.probe.is_some() {
            outcome.set_probe_latencies(env.probe.as_deref(), 0..n);
        } else {
            let mut to_result: Vec<Duration> = polled.iter().map(|t| t.to_result).collect();
            let mut to_start: Vec<Duration> = polled.iter().filter_map(|t| t.to_start).collect();
            outcome.latency = Percentiles::of(&mut to_result);
            outcome.start_latency = Percentiles::of(&mut to_start);
            outcome.note = "latencies polled from the backend (worker processes)".to_owned();
        }
        self.verify_members(&env, n + warm, &mut outcome).await?;
        // Report the timed tasks; the warm-up ones were checked all the same.
        outcome.succeeded = outcome.succeeded.saturating_sub(warm);
        env.finish(self).await;
        Ok(outcome)
    }

    /// Sends task `i` and waits for its result. With worker processes the state is polled
    /// (about every 50 µs) and the times seen are returned.
    async fn one_task(&self, env: &Env, i: usize) -> anyhow::Result<Option<probe::TaskTimes>> {
        let sig = self.add_sig(&env.uuid(i), &env.queue, index_i64(i), 1);
        if let Some(probe) = &env.probe {
            let target = probe.completed() + 1;
            probe.mark_sent(i);
            env.server.send_task(sig).await?;
            probe.wait_for(target, STALL).await?;
            return Ok(None);
        }
        let sent = Instant::now();
        env.server.send_task(sig).await?;
        let uuid = env.uuid(i);
        let mut to_start = None;
        loop {
            if let Some(state) = env.backend.get_state(&uuid).await? {
                if state.state == State::Started && to_start.is_none() {
                    to_start = Some(sent.elapsed());
                }
                if state.is_completed() {
                    let to_result = sent.elapsed();
                    return Ok(Some(probe::TaskTimes {
                        to_start: Some(to_start.unwrap_or(to_result)),
                        to_result,
                    }));
                }
            }
            anyhow::ensure!(sent.elapsed() < STALL, "task {uuid} did not complete");
            tokio::task::block_in_place(|| std::thread::sleep(Duration::from_micros(50)));
        }
    }

    /// Groups of `--chord-size` members, each group with an `add` callback that sums them.
    async fn chord(&self, n: usize) -> anyhow::Result<Outcome> {
        let size = usize_of(self.args.chord_size).min(n);
        let groups = n / size;
        let members = groups * size;
        let slots = members + groups;
        let env = self.env(Scenario::Chord, slots, true).await?;
        anyhow::ensure!(
            !env.null,
            "the chord scenario needs a result backend, not null"
        );
        let workers = self.start_workers(&env).await?;
        let meter = Meter::start();
        let t0 = Instant::now();
        let producers = self.producers().min(groups).max(1);
        let mut handles = Vec::with_capacity(producers);
        for p in 0..producers {
            let server = env.server.clone();
            let probe = env.probe.clone();
            let prefix = env.prefix.clone();
            let queue = env.queue.clone();
            let padding = Arc::clone(&self.padding);
            // Each chord is built just before it is sent (see `produce`).
            handles.push(tokio::spawn(async move {
                for g in (p..groups).step_by(producers) {
                    let members_of = g * size..(g + 1) * size;
                    let sigs = members_of
                        .clone()
                        .map(|i| add_sig(&task_uuid(&prefix, i), &queue, index_i64(i), 1, &padding))
                        .collect();
                    let callback = Signature::new("add")
                        .with_uuid(task_uuid(&prefix, members + g))
                        .routing_key(&*queue);
                    if let Some(probe) = &probe {
                        for i in members_of {
                            probe.mark_sent(i);
                        }
                        probe.mark_sent(members + g);
                    }
                    server
                        .send_chord(Chord::new(Group::new(sigs), callback), 0)
                        .await?;
                }
                anyhow::Ok(())
            }));
        }
        for h in handles {
            h.await.context("a producer")??;
        }
        let callbacks: Vec<usize> = (members..slots).collect();
        let end = self.wait_done(&env, slots, &callbacks).await?;
        let elapsed = end.duration_since(t0);
        let usage = workers.child_usage();
        let (peak_rss_mb, cpu_s) = meter.finish(Some(&usage));
        workers.stop().await?;
        let mut outcome = Outcome::new(self, Scenario::Chord, members, elapsed);
        outcome.peak_rss_mb = peak_rss_mb;
        outcome.cpu_s = cpu_s;
        outcome.chords = Some(groups);
        outcome.set_probe_latencies(env.probe.as_deref(), members..slots);
        // Members: add(i, 1). Callbacks: the sum of their group's results.
        self.verify_members(&env, members, &mut outcome).await?;
        let read = env.read_back(&callbacks, false).await?;
        let mut wrong = 0;
        for (g, result) in read.results.iter().enumerate() {
            let expected = sum_of_adds(g * size, (g + 1) * size);
            if *result != Some(expected) {
                wrong += 1;
            }
        }
        if wrong > 0 || read.success != groups {
            outcome.verified = false;
            outcome.note = format!(
                "{} of {groups} chord callbacks succeeded, {wrong} with a wrong sum",
                read.success
            );
        }
        env.finish(self).await;
        Ok(outcome)
    }

    /// Checks tasks `0..n`: SUCCESS, and results summing to Σ(i + 1). Reads every state back
    /// from the backend, or (null backend) trusts the probe's count of SUCCESS writes.
    async fn verify_members(
        &self,
        env: &Env,
        n: usize,
        outcome: &mut Outcome,
    ) -> anyhow::Result<()> {
        let expected = sum_of_adds(0, n);
        let (succeeded, sum, failed) = if env.null {
            let Some(probe) = &env.probe else {
                anyhow::bail!("results cannot be checked: null backend and no probe");
            };
            (
                probe.completed() - probe.failures(),
                probe.sum(),
                probe.failures(),
            )
        } else {
            let indices: Vec<usize> = (0..n).collect();
            let read = env.read_back(&indices, false).await?;
            let sum = read
                .results
                .iter()
                .flatten()
                .fold(0i64, |a, b| a.wrapping_add(*b));
            (read.success, sum, read.failure)
        };
        outcome.succeeded = succeeded;
        outcome.duplicates = env.probe.as_ref().map(|p| p.duplicates());
        outcome.verified = succeeded == n && sum == expected;
        if !outcome.verified {
            outcome.note = format!(
                "{succeeded} of {n} succeeded ({failed} failed); sum of results {sum}, expected \
                 {expected}"
            );
        }
        Ok(())
    }
}

/// One scenario's adapters, server and names.
struct Env {
    server: Server,
    broker: Arc<dyn Broker>,
    /// The backend itself (not through the probe).
    backend: Arc<dyn Backend>,
    probe: Option<Arc<Probe>>,
    prefix: String,
    queue: String,
    null: bool,
    /// Task UUIDs `<prefix>0` … `<prefix><slots - 1>` may have been used.
    slots: usize,
}

/// States read back.
struct ReadBack {
    success: usize,
    failure: usize,
    /// Never completed (with `wait`: not within the stall time).
    missing: usize,
    /// The first result of each task read, in the order asked (`None`: none or not SUCCESS).
    results: Vec<Option<i64>>,
    /// With `wait`: when the last task that was not yet complete at the first read completed.
    last_completed: Option<Instant>,
}

impl Env {
    fn uuid(&self, index: usize) -> String {
        task_uuid(&self.prefix, index)
    }

    /// Reads the states of `indices`; with `wait`, reads the incomplete ones again until they
    /// complete (or stall).
    async fn read_back(&self, indices: &[usize], wait: bool) -> anyhow::Result<ReadBack> {
        let mut states: Vec<Option<TaskState>> = self.read_states(indices).await?;
        let mut last_completed = None;
        if wait {
            let mut since = Instant::now();
            loop {
                let open: Vec<usize> = (0..indices.len())
                    .filter(|&k| !states[k].as_ref().is_some_and(TaskState::is_completed))
                    .collect();
                if open.is_empty() {
                    break;
                }
                if since.elapsed() > STALL {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(1)).await;
                let again: Vec<usize> = open.iter().map(|&k| indices[k]).collect();
                let fresh = self.read_states(&again).await?;
                let mut progressed = false;
                for (k, state) in open.into_iter().zip(fresh) {
                    if state.as_ref().is_some_and(TaskState::is_completed) {
                        progressed = true;
                    }
                    states[k] = state;
                }
                if progressed {
                    since = Instant::now();
                    last_completed = Some(since);
                }
            }
        }
        let mut read = ReadBack {
            success: 0,
            failure: 0,
            missing: 0,
            results: Vec::with_capacity(indices.len()),
            last_completed,
        };
        for state in &states {
            match state {
                Some(s) if s.state == State::Success => {
                    read.success += 1;
                    read.results.push(first_result(s));
                }
                Some(s) if s.state == State::Failure => {
                    read.failure += 1;
                    read.results.push(None);
                }
                _ => {
                    read.missing += 1;
                    read.results.push(None);
                }
            }
        }
        Ok(read)
    }

    async fn read_states(&self, indices: &[usize]) -> anyhow::Result<Vec<Option<TaskState>>> {
        let backend = &self.backend;
        stream::iter(indices.iter().map(|&i| {
            let uuid = self.uuid(i);
            async move { backend.get_state(&uuid).await }
        }))
        .buffered(READ_CONCURRENCY)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .map(|r| r.context("reading a state back"))
        .collect()
    }

    /// Empties the queue, deletes this scenario's states from Redis (they would otherwise stay
    /// an hour in the server the next scenarios measure), closes the adapters.
    async fn finish(self, bench: &Bench) {
        let _ = self.broker.purge(&self.queue).await;
        if !self.null && Adapter::detect(&bench.backend_url) == Some(Adapter::Redis) {
            let backend = &self.backend;
            stream::iter((0..self.slots).map(|i| {
                let uuid = self.uuid(i);
                async move { backend.purge_state(&uuid).await }
            }))
            .buffer_unordered(READ_CONCURRENCY)
            .for_each(|_| async {})
            .await;
        }
        self.broker.close().await;
        self.backend.close().await;
    }
}

/// CPU and peak memory over a scenario's timed part.
struct Meter {
    cpu_before: Option<f64>,
}

impl Meter {
    /// Resets this process's peak RSS and notes its CPU time.
    fn start() -> Self {
        sys::reset_peak_rss();
        Meter {
            cpu_before: sys::cpu_seconds(Pid::Current),
        }
    }

    /// This process's CPU seconds since [`Meter::start`].
    fn own_cpu(&self) -> Option<f64> {
        match (self.cpu_before, sys::cpu_seconds(Pid::Current)) {
            (Some(a), Some(b)) => Some(b - a),
            _ => None,
        }
    }

    /// Peak RSS (MB) and CPU seconds: the worker processes' when there are some (`children`
    /// with figures), else this process's since [`Meter::start`].
    fn finish(&self, children: Option<&workers::ChildUsage>) -> (Option<f64>, Option<f64>) {
        if let Some(usage) = children
            && usage.cpu_s.is_some()
        {
            return (usage.peak_rss_mb, usage.cpu_s);
        }
        (sys::peak_rss_mb(Pid::Current), self.own_cpu())
    }
}

/// One scenario's figures.
struct Outcome {
    scenario: Scenario,
    tasks: usize,
    seconds: f64,
    tasks_per_sec: f64,
    floor_tasks_per_sec: Option<f64>,
    latency: Option<Percentiles>,
    start_latency: Option<Percentiles>,
    peak_rss_mb: Option<f64>,
    rss_start_mb: Option<f64>,
    cpu_s: Option<f64>,
    cpu_scope: &'static str,
    /// End to end with worker processes: this process's CPU seconds in the timed part (the
    /// producers, and the bench watching the queue empty), which `cpu_s` (the workers') leaves
    /// out.
    producer_cpu_s: Option<f64>,
    chords: Option<usize>,
    succeeded: usize,
    /// What the Redis server did during the timed window: commands (every client's) and CPU
    /// time (Redis brokers only).
    server: Option<ServerUse>,
    /// Completions stored again for a task already completed (a task run twice), when the
    /// probe saw them.
    duplicates: Option<usize>,
    verified: bool,
    skipped: Option<String>,
    note: String,
}

impl Outcome {
    fn new(bench: &Bench, scenario: Scenario, tasks: usize, elapsed: Duration) -> Self {
        let seconds = elapsed.as_secs_f64();
        Outcome {
            scenario,
            tasks,
            seconds,
            tasks_per_sec: if seconds > 0.0 {
                tasks as f64 / seconds
            } else {
                0.0
            },
            floor_tasks_per_sec: None,
            server: None,
            latency: None,
            start_latency: None,
            peak_rss_mb: None,
            rss_start_mb: None,
            cpu_s: None,
            cpu_scope: if bench.children() > 0 {
                "worker processes"
            } else {
                "process"
            },
            producer_cpu_s: None,
            chords: None,
            succeeded: 0,
            duplicates: None,
            verified: false,
            skipped: None,
            note: String::new(),
        }
    }

    fn skipped(bench: &Bench, scenario: Scenario, why: &str) -> Self {
        let mut o = Outcome::new(bench, scenario, 0, Duration::ZERO);
        o.skipped = Some(why.to_owned());
        o
    }

    fn failed(bench: &Bench, scenario: Scenario, e: &anyhow::Error) -> Self {
        let mut o = Outcome::new(bench, scenario, 0, Duration::ZERO);
        o.note = format!("error: {}", crate::error_text(e));
        eprintln!("bench: {}: {}", scenario.name(), o.note);
        o
    }

    fn set_probe_latencies(&mut self, probe: Option<&Probe>, slots: std::ops::Range<usize>) {
        let Some(probe) = probe else { return };
        let times: Vec<probe::TaskTimes> = slots.filter_map(|i| probe.task_times(i)).collect();
        let mut to_result: Vec<Duration> = times.iter().map(|t| t.to_result).collect();
        let mut to_start: Vec<Duration> = times.iter().filter_map(|t| t.to_start).collect();
        self.latency = Percentiles::of(&mut to_result);
        self.start_latency = Percentiles::of(&mut to_start);
    }

    fn apply_floor(&mut self, floor: Option<&Floor>) {
        let Some(f) = floor else { return };
        if self.skipped.is_some() || self.tasks == 0 {
            return;
        }
        self.floor_tasks_per_sec = Some(match self.scenario {
            Scenario::Enqueue => f.enqueue,
            Scenario::Latency => f.serial,
            _ => f.pipelined,
        });
    }

    fn ratio(&self) -> Option<f64> {
        self.floor_tasks_per_sec
            .filter(|f| *f > 0.0)
            .map(|f| self.tasks_per_sec / f)
    }

    fn cpu_per_1000(&self) -> Option<f64> {
        self.cpu_s
            .filter(|_| self.tasks > 0)
            .map(|c| c * 1000.0 / self.tasks as f64)
    }

    fn json(&self, bench: &Bench, floor: Option<&Floor>) -> Value {
        let lat = |p: Option<Percentiles>, f: fn(&Percentiles) -> f64| p.as_ref().map(f);
        let mut v = json!({
            "scenario": self.scenario.name(),
            "broker": adapter_name(bench.broker_kind),
            "broker_url": redact(&bench.broker_url),
            "result_backend": if self.scenario == Scenario::NoResults || bench.null_backend {
                "null".to_owned()
            } else {
                redact(&bench.backend_url)
            },
            "workers": bench.workers_text(),
            "worker_processes": bench.children(),
            "concurrency": bench.args.concurrency,
            "threads": bench.args.threads,
            "producers": bench.args.producers,
            "payload_bytes": bench.args.payload,
            "tasks": self.tasks,
            "succeeded": self.succeeded,
            "verified": self.verified,
            "seconds": round(self.seconds, 4),
            "tasks_per_sec": round(self.tasks_per_sec, 1),
            "floor_tasks_per_sec": self.floor_tasks_per_sec.map(|f| round(f, 1)),
            "ratio": self.ratio().map(|r| round(r, 3)),
            "p50_ms": lat(self.latency, |p| round(p.p50, 3)),
            "p99_ms": lat(self.latency, |p| round(p.p99, 3)),
            "max_ms": lat(self.latency, |p| round(p.max, 3)),
            "start_p50_ms": lat(self.start_latency, |p| round(p.p50, 3)),
            "start_p99_ms": lat(self.start_latency, |p| round(p.p99, 3)),
            "start_max_ms": lat(self.start_latency, |p| round(p.max, 3)),
            "peak_rss_mb": self.peak_rss_mb.map(|m| round(m, 1)),
            "cpu_s_per_1000": self.cpu_per_1000().map(|c| round(c, 4)),
            "cpu_scope": self.cpu_scope,
        });
        if let Value::Object(map) = &mut v {
            if let Some(chords) = self.chords {
                map.insert("chords".into(), json!(chords));
            }
            if let Some(d) = self.duplicates {
                map.insert("duplicates".into(), json!(d));
            }
            if let Some(rss) = self.rss_start_mb {
                map.insert("rss_start_mb".into(), json!(round(rss, 1)));
            }
            if let Some(cpu) = self.producer_cpu_s.filter(|_| self.tasks > 0) {
                #[allow(clippy::cast_precision_loss)]
                let per_1000 = cpu * 1000.0 / self.tasks as f64;
                map.insert("producer_cpu_s_per_1000".into(), json!(round(per_1000, 4)));
            }
            if let Some(server) = self.server.filter(|_| self.tasks > 0) {
                #[allow(clippy::cast_precision_loss)]
                let (commands, tasks) = (server.commands as f64, self.tasks as f64);
                map.insert(
                    "server_commands_per_task".into(),
                    json!(round(commands / tasks, 2)),
                );
                if self.seconds > 0.0 {
                    map.insert(
                        "server_commands_per_sec".into(),
                        json!(round(commands / self.seconds, 0)),
                    );
                }
                if let Some(rate) = floor.and_then(|f| f.server_commands_per_sec) {
                    map.insert(
                        "floor_server_commands_per_sec".into(),
                        json!(round(rate, 0)),
                    );
                }
                if let Some(us) = server.cpu_us_per_task(self.tasks) {
                    map.insert("server_cpu_us_per_task".into(), json!(round(us, 2)));
                }
                if let Some(us) = floor.and_then(|f| f.server_cpu_us_per_task) {
                    map.insert("floor_server_cpu_us_per_task".into(), json!(round(us, 2)));
                }
            }
            if self.scenario == Scenario::Latency
                && let Some(p) = floor.and_then(|f| f.serial_latency)
            {
                map.insert("floor_p50_ms".into(), json!(round(p.p50, 3)));
                map.insert("floor_p99_ms".into(), json!(round(p.p99, 3)));
            }
            if let Some(why) = &self.skipped {
                map.insert("skipped".into(), json!(why));
            }
            if !self.note.is_empty() {
                map.insert("note".into(), json!(self.note));
            }
        }
        v
    }

    fn table_header() -> String {
        format!(
            "{:<11} {:>8} {:>10} {:>10} {:>6} {:>8} {:>8} {:>8} {:>9} {:>7} {:>9}  {}",
            "scenario",
            "tasks",
            "tasks/s",
            "floor/s",
            "ratio",
            "p50 ms",
            "p99 ms",
            "max ms",
            "start p50",
            "RSS MB",
            "CPU s/1k",
            "check"
        )
    }

    fn table_row(&self) -> String {
        if let Some(why) = &self.skipped {
            return format!("{:<11} skipped: {why}", self.scenario.name());
        }
        let opt = |v: Option<f64>, digits: usize| {
            v.map_or_else(|| "-".to_owned(), |v| format!("{v:.digits$}"))
        };
        let check = if self.verified {
            match self.duplicates {
                Some(d) if d > 0 => format!("ok ({} SUCCESS, {d} ran twice)", self.succeeded),
                _ => format!("ok ({} SUCCESS)", self.succeeded),
            }
        } else {
            format!("FAILED {}", self.note)
        };
        format!(
            "{:<11} {:>8} {:>10.0} {:>10} {:>6} {:>8} {:>8} {:>8} {:>9} {:>7} {:>9}  {}",
            self.scenario.name(),
            self.tasks,
            self.tasks_per_sec,
            opt(self.floor_tasks_per_sec, 0),
            opt(self.ratio(), 2),
            opt(self.latency.map(|p| p.p50), 3),
            opt(self.latency.map(|p| p.p99), 3),
            opt(self.latency.map(|p| p.max), 3),
            opt(self.start_latency.map(|p| p.p50), 3),
            opt(self.peak_rss_mb, 1),
            opt(self.cpu_per_1000(), 3),
            check
        )
    }
}

/// `add(a, b)` as the scenarios send it, with the `bench_payload` header when `padding` is not
/// empty.
fn add_sig(uuid: &str, queue: &str, a: i64, b: i64, padding: &str) -> Signature {
    let sig = Signature::new("add")
        .args((a, b))
        .with_uuid(uuid)
        .routing_key(queue);
    if padding.is_empty() {
        sig
    } else {
        sig.header("bench_payload", padding)
    }
}

/// `<prefix><index>`, the UUID of task `index`, in one allocation (`format!` grows its string
/// once per piece, and the bench's own cost should stay small beside machinist's).
fn task_uuid(prefix: &str, index: usize) -> String {
    use std::fmt::Write as _;
    let mut uuid = String::with_capacity(prefix.len() + 20);
    uuid.push_str(prefix);
    let _ = write!(uuid, "{index}");
    uuid
}

/// Σ (i + 1) for i in `from..to`: the sum of the results of `add(i, 1)`.
fn sum_of_adds(from: usize, to: usize) -> i64 {
    (from..to).fold(0i64, |a, i| a.wrapping_add(index_i64(i).wrapping_add(1)))
}

fn index_i64(i: usize) -> i64 {
    i64::try_from(i).unwrap_or(i64::MAX)
}

fn usize_of(n: u64) -> usize {
    usize::try_from(n).unwrap_or(usize::MAX)
}

fn round(v: f64, digits: i32) -> f64 {
    let scale = 10f64.powi(digits);
    (v * scale).round() / scale
}

/// A URL as the report shows it: without credentials (a SQLite path has none and is shown
/// whole).
fn redact(url: &str) -> String {
    if Adapter::detect(url) == Some(Adapter::Sqlite) {
        url.to_owned()
    } else {
        machinist::config::redact_url(url)
    }
}

fn adapter_name(a: Adapter) -> &'static str {
    match a {
        Adapter::Memory => "memory",
        Adapter::Sqlite => "sqlite",
        Adapter::Redis => "redis",
        Adapter::Amqp => "amqp",
        _ => "other",
    }
}
