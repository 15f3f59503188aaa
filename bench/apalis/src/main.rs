//! apalis on Redis, the add workload of `machinist bench`, the same fields as the other peers
//! (bench/lib/peer.py, bench/bullmq/bench_bullmq.cjs). Run by run.sh (which builds this crate
//! and starts the private redis-server); by hand:
//!
//!   BENCH_REDIS_URL=redis://127.0.0.1:PORT/0 machinist-bench-apalis --tasks 20000 --json
//!
//! One binary, two modes. `machinist-bench-apalis worker` is the worker: one process, apalis's
//! Redis storage (`apalis_redis::RedisStorage`) as the queue, `--concurrency` in-flight jobs
//! (apalis's `concurrency` layer), apalis's defaults otherwise; started per scenario by the
//! bench, its memory and CPU are those of its process tree. Without `worker` it is the bench.
//!
//! Results: the job is `Add { i }`, whose handler computes i + 1 and stores it itself with a
//! plain `SET apalis_bench:<run>:<scenario>:r:<i> <value> EX 3600`. Storing every result where
//! the producer can read it is part of the workload every other peer does (machinist, Celery,
//! huey, BullMQ keep results); apalis has no result backend to read them by job, so the worker
//! writes them (the JSON says so: `note_results`). Completion is seen in those keys: first the
//! active list empties, then the last jobs sent are polled until their results exist, then every
//! result is read back and checked (count, sum).

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use apalis::prelude::*;
use apalis_redis::{Config, ConnectionManager, RedisStorage};
use serde::{Deserialize, Serialize};
use serde_json::Value;

const PEER_VERSION: &str = env!("APALIS_VERSION");
const ALL: [&str; 7] = [
    "enqueue",
    "drain",
    "end-to-end",
    "no-results",
    "latency",
    "chord",
    "backlog",
];
const NOTE_RESULTS: &str = "worker SETs each result itself (apalis's own result persistence off)";

type Res<T> = Result<T, String>;

/// The job: add(i, 1).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Add {
    i: i64,
}

// ---------------------------------------------------------------------------------------------
// Worker mode
// ---------------------------------------------------------------------------------------------

/// The result key prefix, given to the worker in BENCH_RESULT_PREFIX.
#[derive(Clone)]
struct ResultPrefix(String);

/// The task: i + 1, stored by the worker itself with a `SET … EX` that the bench reads back by
/// the task's number (storing the result is part of every peer's workload). apalis-redis could
/// keep the return value in the task's meta hash instead; that is switched off in the worker
/// (`persist_results(false)`), so each task has one result write, as with the other peers.
async fn add(
    job: Add,
    conn: Data<ConnectionManager>,
    prefix: Data<ResultPrefix>,
) -> Result<i64, BoxDynError> {
    let value = job.i + 1;
    let mut conn = (*conn).clone();
    redis::cmd("SET")
        .arg(format!("{}{}", (*prefix).0, job.i))
        .arg(value)
        .arg("EX")
        .arg(3600)
        .query_async::<()>(&mut conn)
        .await?;
    Ok(value)
}

fn env_var(name: &str) -> Res<String> {
    std::env::var(name).map_err(|_| format!("{name} is not set"))
}

async fn worker_main() -> Res<()> {
    let url = env_var("BENCH_REDIS_URL")?;
    let queue = env_var("BENCH_QUEUE")?;
    let prefix = env_var("BENCH_RESULT_PREFIX")?;
    let ready_file = PathBuf::from(env_var("BENCH_READY_FILE")?);
    let concurrency: usize = env_var("BENCH_CONCURRENCY")?
        .parse()
        .map_err(|e| format!("BENCH_CONCURRENCY: {e}"))?;

    // SIGTERM: stop gracefully (in-flight jobs finish). Installed before anything can send it.
    let sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|e| format!("cannot handle SIGTERM: {e}"))?;

    let conn = apalis_redis::connect(url.as_str())
        .await
        .map_err(|e| format!("no Redis at {url}: {e}"))?;
    let results = conn.clone();
    // apalis-redis 1.0.0's push puts every job in the scheduled set (run_at = now), which the
    // worker promotes on its next fetch; after an empty fetch the worker only fetches again when
    // woken: by default by its heartbeat, every 30 s (the "available" pubsub fires only for the
    // active list, which push does not use). So the worker polls: every APALIS_POLL_MS ms
    // (default 10) while idle; a fetch that returns jobs is followed by another at once.
    let poll_ms: u64 = match std::env::var("APALIS_POLL_MS") {
        Ok(v) => v.parse().map_err(|e| format!("APALIS_POLL_MS: {e}"))?,
        Err(_) => 10,
    };
    let storage = RedisStorage::<Add>::new(conn)
        .with_config(Config::default().queue(&queue).persist_results(false))
        .poll_with_interval(Duration::from_millis(poll_ms));

    // If the bench dies without stopping us, exit rather than linger.
    let parent = std::os::unix::process::parent_id();
    std::thread::spawn(move || loop {
        std::thread::sleep(Duration::from_secs(1));
        if std::os::unix::process::parent_id() != parent {
            std::process::exit(1);
        }
    });

    // Ready once the worker has registered with the backend (its first heartbeat event comes
    // right after registration), i.e. it is about to fetch.
    let written = Arc::new(AtomicBool::new(false));
    let worker = WorkerBuilder::new(format!("apalis-bench-{}", std::process::id()))
        .backend(storage)
        .data(results)
        .data(ResultPrefix(prefix))
        .concurrency(concurrency)
        .on_event(move |_ctx, ev| match ev {
            Event::HeartBeat if !written.swap(true, Ordering::SeqCst) => {
                if let Err(e) = std::fs::write(&ready_file, std::process::id().to_string()) {
                    eprintln!("apalis worker: cannot write the ready file: {e}");
                    std::process::exit(2);
                }
            }
            Event::Error(e) => eprintln!("apalis worker: {e}"),
            _ => {}
        })
        .build(add);

    let mut sigterm = Some(sigterm);
    worker
        .run_with_ctx(move |ctx| {
            let sig = sigterm.take();
            async move {
                match sig {
                    Some(mut sig) => {
                        sig.recv().await;
                    }
                    None => std::future::pending::<()>().await,
                }
                ctx.stop()
            }
        })
        .await
        .map_err(|e| format!("worker: {e}"))
}

// ---------------------------------------------------------------------------------------------
// Measurement: the same as peer.py's TreeMeter
// ---------------------------------------------------------------------------------------------

fn ticks() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as f64
    } else {
        100.0
    }
}

fn stat_fields(pid: u32) -> Option<Vec<String>> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let at = text.rfind(')')?;
    Some(
        text.get(at + 2..)?
            .split_whitespace()
            .map(str::to_string)
            .collect(),
    )
}

/// `pid` and all its descendants.
fn tree(pid: u32) -> Vec<u32> {
    let mut children: std::collections::HashMap<u32, Vec<u32>> = Default::default();
    if let Ok(dir) = std::fs::read_dir("/proc") {
        for entry in dir.flatten() {
            let Some(p) = entry
                .file_name()
                .to_str()
                .and_then(|s| s.parse::<u32>().ok())
            else {
                continue;
            };
            let Some(ppid) = stat_fields(p).and_then(|f| f.get(1)?.parse::<u32>().ok()) else {
                continue;
            };
            children.entry(ppid).or_default().push(p);
        }
    }
    let mut out = Vec::new();
    let mut todo = vec![pid];
    while let Some(p) = todo.pop() {
        out.push(p);
        if let Some(c) = children.get(&p) {
            todo.extend(c);
        }
    }
    out
}

fn rss_mb(pid: u32) -> f64 {
    let Ok(text) = std::fs::read_to_string(format!("/proc/{pid}/status")) else {
        return 0.0;
    };
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("VmRSS:") {
            return rest
                .split_whitespace()
                .next()
                .and_then(|kb| kb.parse::<f64>().ok())
                .map_or(0.0, |kb| kb / 1024.0);
        }
    }
    0.0
}

fn tree_rss(pid: u32) -> f64 {
    tree(pid).into_iter().map(rss_mb).sum()
}

fn cpu_s(pids: &[u32]) -> f64 {
    let mut total = 0u64;
    for &p in pids {
        if let Some(f) = stat_fields(p) {
            let u = f.get(11).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
            let s = f.get(12).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
            total += u + s;
        }
    }
    total as f64 / ticks()
}

/// Samples the RSS of a process tree every 20 ms until stopped; measures its CPU over the
/// window. A thread, so that walking /proc does not stall the producers.
struct TreeMeter {
    pid: u32,
    cpu0: f64,
    stop: Arc<AtomicBool>,
    peak: Arc<Mutex<f64>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl TreeMeter {
    fn new(pid: u32) -> Self {
        let cpu0 = cpu_s(&tree(pid));
        let stop = Arc::new(AtomicBool::new(false));
        let peak = Arc::new(Mutex::new(0.0f64));
        let (s, pk) = (stop.clone(), peak.clone());
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::SeqCst) {
                let rss = tree_rss(pid);
                if let Ok(mut p) = pk.lock() {
                    *p = p.max(rss);
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        });
        TreeMeter {
            pid,
            cpu0,
            stop,
            peak,
            thread: Some(thread),
        }
    }

    /// (peak RSS MB, CPU seconds over the window)
    fn stop(mut self) -> (f64, f64) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let sampled = self.peak.lock().map(|p| *p).unwrap_or(0.0);
        let peak = sampled.max(tree_rss(self.pid));
        (peak, cpu_s(&tree(self.pid)) - self.cpu0)
    }
}

/// This process's own user + system CPU seconds.
fn self_cpu_s() -> f64 {
    cpu_s(&[std::process::id()])
}

/// p50, p99, max in ms, nearest rank.
fn percentiles(samples: &[f64]) -> Option<(f64, f64, f64)> {
    if samples.is_empty() {
        return None;
    }
    let mut s = samples.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    let n = s.len();
    let at = |q: f64| {
        let rank = ((q * n as f64).ceil() as usize).clamp(1, n);
        s[rank - 1] * 1000.0
    };
    Some((at(0.50), at(0.99), s[n - 1] * 1000.0))
}

fn round(v: f64, d: i32) -> f64 {
    let m = 10f64.powi(d);
    (v * m).round() / m
}

// ---------------------------------------------------------------------------------------------
// The bench
// ---------------------------------------------------------------------------------------------

struct Args {
    tasks: usize,
    concurrency: usize,
    producers: usize,
    latency_tasks: usize,
    backlog_tasks: Option<usize>,
    payload: usize,
    scenario: Option<Vec<String>>,
    json: bool,
}

const USAGE: &str =
    "usage: machinist-bench-apalis [worker] [--tasks N] [--concurrency N] [--producers N]\n\
\x20                                [--latency-tasks N] [--backlog-tasks N] [--chord-size N]\n\
\x20                                [--payload N] [--scenario NAME]... [--json]";

fn bad(msg: &str) -> ! {
    eprintln!("{USAGE}\nmachinist-bench-apalis: error: {msg}");
    std::process::exit(2);
}

fn parse_args(argv: &[String]) -> Args {
    let mut a = Args {
        tasks: 20000,
        concurrency: 64,
        producers: 16,
        latency_tasks: 1000,
        backlog_tasks: None,
        payload: 0,
        scenario: None,
        json: false,
    };
    let mut k = 0;
    while k < argv.len() {
        let arg = &argv[k];
        let (opt, inline) = match arg.split_once('=') {
            Some((o, v)) => (o.to_string(), Some(v.to_string())),
            None => (arg.clone(), None),
        };
        match opt.as_str() {
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            "--json" => {
                a.json = true;
                k += 1;
                continue;
            }
            "--tasks" | "--concurrency" | "--producers" | "--latency-tasks" | "--backlog-tasks"
            | "--chord-size" | "--payload" | "--scenario" => {}
            _ => bad(&format!("unrecognized argument: {arg}")),
        }
        let val = match inline {
            Some(v) => v,
            None => {
                k += 1;
                match argv.get(k) {
                    Some(v) => v.clone(),
                    None => bad(&format!("argument {opt}: expected one argument")),
                }
            }
        };
        k += 1;
        if opt == "--scenario" {
            a.scenario.get_or_insert_with(Vec::new).push(val);
            continue;
        }
        let n: usize = match val.trim().parse() {
            Ok(n) => n,
            Err(_) => bad(&format!("argument {opt}: invalid int value: '{val}'")),
        };
        match opt.as_str() {
            "--tasks" => a.tasks = n,
            "--concurrency" => a.concurrency = n,
            "--producers" => a.producers = n,
            "--latency-tasks" => a.latency_tasks = n,
            "--backlog-tasks" => a.backlog_tasks = Some(n),
            "--payload" => a.payload = n,
            _ => {} // --chord-size: accepted, ignored (no chords here)
        }
    }
    if a.producers == 0 || a.concurrency == 0 {
        bad("--producers and --concurrency must be at least 1");
    }
    a
}

/// The worker child of the scenario in progress, killed if the bench dies.
static LIVE: Mutex<Option<u32>> = Mutex::new(None);

fn die(msg: &str) -> ! {
    eprintln!("apalis: {msg}");
    if let Ok(live) = LIVE.lock() {
        if let Some(pid) = *live {
            // SAFETY: kill(2) on our own child.
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
        }
    }
    std::process::exit(2);
}

fn random_hex(bytes: usize) -> String {
    let mut out = String::new();
    while out.len() < bytes * 2 {
        let mut h = RandomState::new().build_hasher();
        h.write_u128(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos()),
        );
        h.write_u32(std::process::id());
        out.push_str(&format!("{:016x}", h.finish()));
    }
    out.truncate(bytes * 2);
    out
}

struct WorkerProc {
    child: Child,
    ready_file: PathBuf,
}

impl WorkerProc {
    fn spawn(url: &str, sc: &Scenario, concurrency: usize) -> Res<Self> {
        let exe = std::env::current_exe().map_err(|e| format!("cannot find this binary: {e}"))?;
        let ready_file = std::env::temp_dir().join(format!("apalis-ready-{}", random_hex(6)));
        let child = Command::new(exe)
            .arg("worker")
            .env("BENCH_REDIS_URL", url)
            .env("BENCH_QUEUE", &sc.queue)
            .env("BENCH_RESULT_PREFIX", &sc.result_prefix)
            .env("BENCH_CONCURRENCY", concurrency.to_string())
            .env("BENCH_READY_FILE", &ready_file)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| format!("cannot start the worker: {e}"))?;
        if let Ok(mut live) = LIVE.lock() {
            *live = Some(child.id());
        }
        Ok(WorkerProc { child, ready_file })
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    async fn ready(&mut self, timeout: Duration) -> Res<()> {
        let deadline = Instant::now() + timeout;
        while !self.ready_file.exists() {
            self.check_running("before it was ready")?;
            if Instant::now() > deadline {
                return Err("the worker did not become ready".into());
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Ok(())
    }

    fn check_running(&mut self, when: &str) -> Res<()> {
        match self.child.try_wait() {
            Ok(Some(status)) => Err(format!("the worker exited with {status} {when}")),
            Ok(None) => Ok(()),
            Err(e) => Err(format!("cannot watch the worker: {e}")),
        }
    }

    /// Graceful stop (SIGTERM), then SIGKILL if it lingers.
    async fn stop(mut self, timeout: Duration) {
        if let Ok(None) = self.child.try_wait() {
            // SAFETY: kill(2) on our own, not yet reaped, child.
            unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
            let deadline = Instant::now() + timeout;
            loop {
                match self.child.try_wait() {
                    Ok(None) if Instant::now() < deadline => {
                        tokio::time::sleep(Duration::from_millis(10)).await
                    }
                    Ok(None) => {
                        let _ = self.child.kill();
                        let _ = self.child.wait();
                        break;
                    }
                    _ => break,
                }
            }
        }
        if let Ok(mut live) = LIVE.lock() {
            *live = None;
        }
        let _ = std::fs::remove_file(&self.ready_file);
    }
}

async fn start_worker(url: &str, sc: &Scenario, concurrency: usize) -> Res<WorkerProc> {
    let mut w = WorkerProc::spawn(url, sc, concurrency)?;
    if let Err(e) = w.ready(Duration::from_secs(60)).await {
        w.stop(Duration::from_secs(5)).await;
        return Err(e);
    }
    Ok(w)
}

/// One scenario's names: the apalis queue and the result keys, all under `prefix`.
struct Scenario {
    name: String,
    prefix: String,
    queue: String,
    result_prefix: String,
}

impl Scenario {
    fn new(run: &str, name: &str) -> Self {
        let prefix = format!("apalis_bench:{run}:{name}:");
        Scenario {
            name: name.to_string(),
            queue: format!("{prefix}q"),
            result_prefix: format!("{prefix}r:"),
            prefix,
        }
    }

    fn key(&self, i: i64) -> String {
        format!("{}{}", self.result_prefix, i)
    }

    fn storage(&self, conn: &ConnectionManager) -> RedisStorage<Add> {
        RedisStorage::<Add>::new(conn.clone()).with_config(Config::default().queue(&self.queue))
    }

    fn config(&self) -> Config {
        Config::default().queue(&self.queue)
    }
}

fn rerr(what: &str) -> impl Fn(redis::RedisError) -> String + '_ {
    move |e| format!("Redis {what}: {e}")
}

/// Jobs waiting in the queue: apalis's active list and its scheduled set (where apalis-redis
/// 1.0.0's push puts every job, due at once; the worker moves due jobs to the active list).
async fn pending(conn: &mut ConnectionManager, sc: &Scenario) -> Res<usize> {
    let config = sc.config();
    let (active, scheduled): (usize, usize) = redis::pipe()
        .cmd("LLEN")
        .arg(config.active_jobs_list())
        .cmd("ZCARD")
        .arg(config.scheduled_jobs_set())
        .query_async(conn)
        .await
        .map_err(rerr("LLEN/ZCARD"))?;
    Ok(active + scheduled)
}

async fn mget(conn: &mut ConnectionManager, keys: &[String]) -> Res<Vec<Option<String>>> {
    if keys.is_empty() {
        return Ok(Vec::new());
    }
    redis::cmd("MGET")
        .arg(keys)
        .query_async::<Vec<Option<String>>>(conn)
        .await
        .map_err(rerr("MGET"))
}

/// Deletes this scenario's keys (SCAN MATCH its prefix: only this run's) and its entry in
/// apalis's global queue registry.
async fn cleanup(conn: &mut ConnectionManager, sc: &Scenario) -> Res<()> {
    let mut cursor: u64 = 0;
    loop {
        let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(format!("{}*", sc.prefix))
            .arg("COUNT")
            .arg(1000)
            .query_async(conn)
            .await
            .map_err(rerr("SCAN"))?;
        if !keys.is_empty() {
            redis::cmd("UNLINK")
                .arg(&keys)
                .query_async::<()>(conn)
                .await
                .map_err(rerr("UNLINK"))?;
        }
        if next == 0 {
            break;
        }
        cursor = next;
    }
    redis::cmd("ZREM")
        .arg("core:apalis:queues:list")
        .arg(sc.config().workers_set())
        .query_async::<()>(conn)
        .await
        .map_err(rerr("ZREM"))
}

/// apalis-redis 1.0.0 queues every pushed job in the scheduled set, and its fetch (fetch_next.lua)
/// moves all due ones to the active list with one `rpush(…, unpack(ids))`: with more than about
/// 8,000 due jobs that fails ("too many results to unpack", Lua's stack limit) and the worker
/// dies. So before the worker starts on a backlog, the bench does that move itself, the same
/// commands in chunks of 1,000 (untimed): the jobs are then where apalis's own fetch would have
/// put them. Returns how many jobs were moved.
const PROMOTE_LUA: &str = r#"
local ids = redis.call("zrangebyscore", KEYS[1], "-inf", "+inf", "LIMIT", 0, 1000)
if #ids > 0 then
    redis.call("rpush", KEYS[2], unpack(ids))
    redis.call("zrem", KEYS[1], unpack(ids))
    redis.call("del", KEYS[3])
    redis.call("lpush", KEYS[3], 1)
end
return #ids
"#;

async fn promote_backlog(conn: &mut ConnectionManager, sc: &Scenario) -> Res<usize> {
    let config = sc.config();
    let mut moved = 0;
    loop {
        let k: usize = redis::cmd("EVAL")
            .arg(PROMOTE_LUA)
            .arg(3)
            .arg(config.scheduled_jobs_set())
            .arg(config.active_jobs_list())
            .arg(config.signal_list())
            .query_async(conn)
            .await
            .map_err(rerr("EVAL (moving the backlog to the active list)"))?;
        if k == 0 {
            return Ok(moved);
        }
        moved += k;
    }
}

const NOTE_BACKLOG: &str = "the bench moved the backlog from apalis's scheduled set to its active \
list (1000 at a time, untimed): apalis-redis 1.0.0's fetch moves all due jobs with one Lua \
unpack, which fails above ~8000 jobs (too many results to unpack)";

/// Sends add(i) for i in 0..n from --producers tasks (i = p, p + producers, …), each awaiting
/// its push before the next; returns the push durations.
async fn produce(args: &Args, conn: &ConnectionManager, sc: &Scenario, n: usize) -> Res<Vec<f64>> {
    let mut handles = Vec::new();
    for p in 0..args.producers {
        let mut storage = sc.storage(conn);
        let producers = args.producers;
        handles.push(tokio::spawn(async move {
            let mut took = Vec::with_capacity(n / producers + 1);
            let mut k = p;
            while k < n {
                let t = Instant::now();
                storage
                    .push(Add { i: k as i64 })
                    .await
                    .map_err(|e| format!("push: {e}"))?;
                took.push(t.elapsed().as_secs_f64());
                k += producers;
            }
            Ok::<_, String>(took)
        }));
    }
    let mut took = Vec::with_capacity(n);
    for h in handles {
        took.extend(h.await.map_err(|e| format!("producer: {e}"))??);
    }
    Ok(took)
}

/// Until the active list is empty and the results of the last `tail` jobs exist; that instant.
async fn wait_done(
    conn: &mut ConnectionManager,
    sc: &Scenario,
    n: usize,
    tail: usize,
    worker: &mut WorkerProc,
) -> Res<Instant> {
    let deadline = Instant::now() + Duration::from_secs(120);
    while pending(conn, sc).await? > 0 {
        worker.check_running("")?;
        if Instant::now() > deadline {
            return Err("the queue never emptied".into());
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let mut watch: Vec<String> = (n - tail..n).map(|i| sc.key(i as i64)).collect();
    loop {
        let got = mget(conn, &watch).await?;
        let now = Instant::now();
        watch = watch
            .into_iter()
            .zip(got)
            .filter(|(_, v)| v.is_none())
            .map(|(k, _)| k)
            .collect();
        if watch.is_empty() {
            return Ok(now);
        }
        worker.check_running("")?;
        if now > deadline {
            return Err(format!("{} jobs never completed", watch.len()));
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// Reads every result back in MGETs of 1000: succeeded, verified (count and sum), note.
async fn verify(
    conn: &mut ConnectionManager,
    sc: &Scenario,
    n: usize,
) -> Res<Vec<(&'static str, Value)>> {
    let mut ok = 0usize;
    let mut total: i64 = 0;
    let mut start = 0;
    while start < n {
        let end = (start + 1000).min(n);
        let keys: Vec<String> = (start..end).map(|i| sc.key(i as i64)).collect();
        for v in mget(conn, &keys).await?.into_iter().flatten() {
            if let Ok(x) = v.parse::<i64>() {
                ok += 1;
                total += x;
            }
        }
        start = end;
    }
    let expected: i64 = (0..n as i64).map(|i| i + 1).sum();
    let verified = ok == n && total == expected;
    let mut out = vec![
        ("succeeded", Value::from(ok)),
        ("verified", Value::from(verified)),
    ];
    if !verified {
        out.push((
            "note",
            Value::from(format!(
                "{ok} of {n} succeeded; sum {total}, expected {expected}"
            )),
        ));
    }
    Ok(out)
}

type Fields = Vec<(&'static str, Value)>;

fn base(args: &Args, scenario: &str, tasks: usize, seconds: f64) -> Fields {
    vec![
        ("scenario", scenario.into()),
        ("peer", "apalis".into()),
        ("peer_version", PEER_VERSION.into()),
        ("broker", "redis".into()),
        ("tasks", tasks.into()),
        ("seconds", round(seconds, 4).into()),
        (
            "tasks_per_sec",
            if seconds > 0.0 {
                round(tasks as f64 / seconds, 1)
            } else {
                0.0
            }
            .into(),
        ),
        ("concurrency", args.concurrency.into()),
        ("producers", args.producers.into()),
        ("cpu_scope", "worker process tree".into()),
    ]
}

fn lat_fields(samples: &[f64]) -> Fields {
    match percentiles(samples) {
        None => vec![],
        Some((p50, p99, max)) => vec![
            ("p50_ms", round(p50, 3).into()),
            ("p99_ms", round(p99, 3).into()),
            ("max_ms", round(max, 3).into()),
        ],
    }
}

fn set(fields: &mut Fields, key: &'static str, v: Value) {
    match fields.iter_mut().find(|(k, _)| *k == key) {
        Some(slot) => slot.1 = v,
        None => fields.push((key, v)),
    }
}

/// The scenario's fields and the CPU seconds measured (None: not measured).
type Outcome = (Fields, Option<f64>);

async fn scenario_enqueue(
    args: &Args,
    conn: &mut ConnectionManager,
    sc: &Scenario,
) -> Res<Outcome> {
    let n = args.tasks;
    let cpu0 = self_cpu_s();
    let t0 = Instant::now();
    let took = produce(args, conn, sc, n).await?;
    let seconds = t0.elapsed().as_secs_f64();
    let cpu = self_cpu_s() - cpu0;
    let queued = pending(conn, sc).await?;
    let mut out = base(args, "enqueue", n, seconds);
    out.extend(lat_fields(&took));
    out.push(("succeeded", queued.into()));
    out.push(("verified", (queued == n).into()));
    set(&mut out, "cpu_scope", "producer".into());
    Ok((out, Some(cpu)))
}

async fn scenario_drain(
    args: &Args,
    url: &str,
    conn: &mut ConnectionManager,
    sc: &Scenario,
    n: usize,
) -> Res<Outcome> {
    produce(args, conn, sc, n).await?;
    promote_backlog(conn, sc).await?;
    let mut worker = start_worker(url, sc, args.concurrency).await?;
    let meter = TreeMeter::new(worker.pid());
    let rss_start = tree_rss(worker.pid());
    let t0 = Instant::now();
    let end = wait_done(conn, sc, n, n.min(200), &mut worker).await;
    let (peak, cpu) = meter.stop();
    worker.stop(Duration::from_secs(60)).await;
    let end = end?;
    let mut out = base(args, &sc.name, n, (end - t0).as_secs_f64());
    out.push(("peak_rss_mb", round(peak, 1).into()));
    if sc.name == "backlog" {
        out.push(("rss_start_mb", round(rss_start, 1).into()));
    }
    out.extend(verify(conn, sc, n).await?);
    out.push(("note_backlog", NOTE_BACKLOG.into()));
    Ok((out, Some(cpu)))
}

async fn scenario_end_to_end(
    args: &Args,
    url: &str,
    conn: &mut ConnectionManager,
    sc: &Scenario,
) -> Res<Outcome> {
    let n = args.tasks;
    let mut worker = start_worker(url, sc, args.concurrency).await?;
    let meter = TreeMeter::new(worker.pid());
    let t0 = Instant::now();
    let end = match produce(args, conn, sc, n).await {
        Ok(_) => wait_done(conn, sc, n, n.min(200), &mut worker).await,
        Err(e) => Err(e),
    };
    let (peak, cpu) = meter.stop();
    worker.stop(Duration::from_secs(60)).await;
    let end = end?;
    let mut out = base(args, "end-to-end", n, (end - t0).as_secs_f64());
    out.push(("peak_rss_mb", round(peak, 1).into()));
    out.extend(verify(conn, sc, n).await?);
    Ok((out, Some(cpu)))
}

/// Yields to the runtime until `d` has passed (tokio's timer cannot wait 50 µs).
async fn pause(d: Duration) {
    let until = Instant::now() + d;
    while Instant::now() < until {
        tokio::task::yield_now().await;
    }
}

async fn latency_loop(
    n: usize,
    conn: &mut ConnectionManager,
    sc: &Scenario,
    worker: &mut WorkerProc,
) -> Res<(Vec<f64>, Option<(TreeMeter, Instant)>)> {
    let mut storage = sc.storage(conn);
    let warm = 10;
    let mut samples = Vec::with_capacity(n);
    let mut meter = None;
    for k in 0..n + warm {
        if k == warm {
            meter = Some((TreeMeter::new(worker.pid()), Instant::now()));
        }
        let i = if k >= warm { k - warm } else { n + k } as i64;
        let key = sc.key(i);
        let sent = Instant::now();
        storage
            .push(Add { i })
            .await
            .map_err(|e| format!("push: {e}"))?;
        let deadline = sent + Duration::from_secs(60);
        loop {
            let got: Option<String> = redis::cmd("GET")
                .arg(&key)
                .query_async(conn)
                .await
                .map_err(rerr("GET"))?;
            if got.is_some() {
                break;
            }
            worker.check_running("")?;
            if Instant::now() > deadline {
                return Err(format!("job {i} never completed"));
            }
            pause(Duration::from_micros(50)).await;
        }
        if k >= warm {
            samples.push(sent.elapsed().as_secs_f64());
        }
    }
    Ok((samples, meter))
}

async fn scenario_latency(
    args: &Args,
    url: &str,
    conn: &mut ConnectionManager,
    sc: &Scenario,
) -> Res<Outcome> {
    let n = args.tasks.min(args.latency_tasks);
    let mut worker = start_worker(url, sc, args.concurrency).await?;
    let run = latency_loop(n, conn, sc, &mut worker).await;
    let (samples, meter) = match run {
        Ok(r) => r,
        Err(e) => {
            worker.stop(Duration::from_secs(60)).await;
            return Err(e);
        }
    };
    let (seconds, peak, cpu) = match meter {
        Some((m, t0)) => {
            let seconds = t0.elapsed().as_secs_f64();
            let (peak, cpu) = m.stop();
            (seconds, Some(peak), Some(cpu))
        }
        None => (0.0, None, None),
    };
    worker.stop(Duration::from_secs(60)).await;
    let mut out = base(args, "latency", n, seconds);
    out.extend(lat_fields(&samples));
    if let Some(peak) = peak {
        out.push(("peak_rss_mb", round(peak, 1).into()));
    }
    out.extend(verify(conn, sc, n).await?);
    Ok((out, cpu))
}

// Python's json.dumps: ", " and ": " separators, floats with a decimal point.
fn py_json(fields: &Fields) -> String {
    let items: Vec<String> = fields
        .iter()
        .map(|(k, v)| format!("{}: {}", Value::from(*k), v))
        .collect();
    format!("{{{}}}", items.join(", "))
}

fn get_f64(fields: &Fields, key: &str) -> Option<f64> {
    fields
        .iter()
        .find(|(k, _)| *k == key)
        .and_then(|(_, v)| v.as_f64())
}

/// One scenario's line: JSON (`--json`) or a table row, the same fields as machinist.
fn emit(args: &Args, mut fields: Fields, cpu: Option<f64>) {
    let tasks = fields
        .iter()
        .find(|(k, _)| *k == "tasks")
        .and_then(|(_, v)| v.as_u64())
        .unwrap_or(0);
    let per_1000 = match cpu {
        Some(c) if tasks > 0 => Value::from(round(c * 1000.0 / tasks as f64, 4)),
        _ => Value::Null,
    };
    fields.push(("cpu_s_per_1000", per_1000));
    for k in [
        "floor_tasks_per_sec",
        "ratio",
        "p50_ms",
        "p99_ms",
        "max_ms",
        "start_p50_ms",
        "start_p99_ms",
        "peak_rss_mb",
    ] {
        if !fields.iter().any(|(f, _)| *f == k) {
            fields.push((k, Value::Null));
        }
    }
    if args.json {
        println!("{}", py_json(&fields));
        return;
    }
    let field = |k: &str| fields.iter().find(|(f, _)| *f == k).map(|(_, v)| v.clone());
    let scenario = field("scenario")
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default();
    if let Some(Value::String(why)) = field("skipped") {
        println!("{scenario:<11} skipped: {why}");
        return;
    }
    let f = |k: &str, d: usize| match get_f64(&fields, k) {
        Some(v) => format!("{v:.d$}"),
        None => "-".to_string(),
    };
    let check = if field("verified") == Some(Value::Bool(true)) {
        "ok".to_string()
    } else {
        format!(
            "FAILED {}",
            field("note")
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default()
        )
    };
    println!(
        "{scenario:<11} {tasks:>8} {:>10.0} {:>8} {:>8} {:>8} {:>7} {:>9}  {check}",
        get_f64(&fields, "tasks_per_sec").unwrap_or(0.0),
        f("p50_ms", 3),
        f("p99_ms", 3),
        f("max_ms", 3),
        f("peak_rss_mb", 1),
        f("cpu_s_per_1000", 3),
    );
}

fn table_header(args: &Args) {
    if !args.json {
        println!(
            "{:<11} {:>8} {:>10} {:>8} {:>8} {:>8} {:>7} {:>9}  check",
            "scenario", "tasks", "tasks/s", "p50 ms", "p99 ms", "max ms", "RSS MB", "CPU s/1k"
        );
    }
}

async fn bench_main(argv: &[String]) -> Res<bool> {
    let args = parse_args(argv);
    let url = env_var("BENCH_REDIS_URL")?;
    let scenarios: Vec<String> = args
        .scenario
        .clone()
        .unwrap_or_else(|| ALL.iter().map(|s| s.to_string()).collect());
    for name in &scenarios {
        if !ALL.contains(&name.as_str()) {
            return Err(format!("unknown scenario {name}"));
        }
    }
    let _ = args.payload; // accepted; the job carries no padding
    let mut conn =
        tokio::time::timeout(Duration::from_secs(10), apalis_redis::connect(url.as_str()))
            .await
            .map_err(|_| format!("no Redis at {url}: timed out"))?
            .map_err(|e| format!("no Redis at {url}: {e}"))?;
    let run = random_hex(4);
    table_header(&args);
    let mut failed = false;
    for name in &scenarios {
        eprintln!("apalis: {name} …");
        let (mut out, cpu) = if name == "no-results" || name == "chord" {
            let mut out = base(&args, name, 0, 0.0);
            out.push((
                "skipped",
                if name == "no-results" {
                    "results are the worker's own SET; no results-off mode to compare"
                } else {
                    "apalis has no chords in this comparison"
                }
                .into(),
            ));
            (out, None)
        } else {
            let sc = Scenario::new(&run, name);
            let res = match name.as_str() {
                "enqueue" => scenario_enqueue(&args, &mut conn, &sc).await,
                "drain" => scenario_drain(&args, &url, &mut conn, &sc, args.tasks).await,
                "backlog" => {
                    let n = args.backlog_tasks.unwrap_or(args.tasks);
                    scenario_drain(&args, &url, &mut conn, &sc, n).await
                }
                "end-to-end" => scenario_end_to_end(&args, &url, &mut conn, &sc).await,
                _ => scenario_latency(&args, &url, &mut conn, &sc).await,
            };
            let cleaned = cleanup(&mut conn, &sc).await;
            let (mut out, cpu) = res?;
            cleaned?;
            out.push(("note_results", NOTE_RESULTS.into()));
            (out, cpu)
        };
        if out
            .iter()
            .any(|(k, v)| *k == "verified" && *v == Value::Bool(false))
        {
            failed = true;
        }
        // note_results after verified/note, before the fields emit appends.
        for note in ["note_results", "note_backlog"] {
            if let Some(pos) = out.iter().position(|(k, _)| *k == note) {
                let item = out.remove(pos);
                out.push(item);
            }
        }
        emit(&args, std::mem::take(&mut out), cpu);
    }
    Ok(!failed)
}

#[tokio::main]
async fn main() {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    if argv.first().map(String::as_str) == Some("worker") {
        if let Err(e) = worker_main().await {
            eprintln!("apalis worker: {e}");
            std::process::exit(2);
        }
        return;
    }
    match bench_main(&argv).await {
        Ok(true) => {}
        Ok(false) => std::process::exit(1),
        Err(e) => die(&e),
    }
}
