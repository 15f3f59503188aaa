//! Periodic tasks across processes on Redis: three worker processes on one spawned
//! `redis-server` each register the same every-second periodic task (`@every 1s`) and run for
//! ten seconds. Every tick must be sent exactly once (one task UUID per tick), with no gap
//! between the first and the last tick sent; every sent task must run or still be queued; the
//! lock keys are Go's (`machinery_lock_` + program + name + spec).
//!
//! The workers are this test binary run again (`--exact periodic::scheduler_process
//! --ignored`). Each appends `sent <tick> <uuid> <pid>` from its pre-publish hook and
//! `ran <uuid>` from the task, one `write(2)` per line on an `O_APPEND` file.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::fs::OpenOptions;
use std::io::Write;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use machinist_core::periodic::PERIODIC_TICK_HEADER;
use machinist_core::{Server, Signature, TaskContext, task};
use machinist_testkit::redis_server::RedisServer;
use redis::AsyncCommands;

use crate::common::{adapters, config, options, raw, unique};

const URL_VAR: &str = "MACHINIST_REDIS_PERIODIC_URL";
const QUEUE_VAR: &str = "MACHINIST_REDIS_PERIODIC_QUEUE";
const LOG_VAR: &str = "MACHINIST_REDIS_PERIODIC_LOG";
const CHILD_TEST: &str = "periodic::scheduler_process";
const SPEC: &str = "@every 1s";
const RUN: Duration = Duration::from_secs(10);
const PROCESSES: usize = 3;

/// A worker process with the periodic task. Does nothing unless started by
/// [`three_processes_send_each_tick_once`].
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a worker process of periodic::three_processes_send_each_tick_once"]
async fn scheduler_process() {
    let (Ok(url), Ok(queue), Ok(log)) = (
        std::env::var(URL_VAR),
        std::env::var(QUEUE_VAR),
        std::env::var(LOG_VAR),
    ) else {
        return;
    };
    let cfg = config(&queue);
    let a = adapters(options(&url, &queue, &cfg)).await;
    let server = Server::new(cfg, a.broker, a.backend, a.lock);
    let log = Arc::new(
        OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .unwrap(),
    );
    let sent_log = Arc::clone(&log);
    server.set_pre_publish_hook(move |sig| {
        if let Some(tick) = sig
            .headers
            .as_ref()
            .and_then(|h| h.get_str(PERIODIC_TICK_HEADER))
        {
            let line = format!("sent {tick} {} {}\n", sig.uuid, std::process::id());
            (&*sent_log).write_all(line.as_bytes()).unwrap();
        }
    });
    server.register(
        "beat",
        task(move |ctx: TaskContext| {
            let log = Arc::clone(&log);
            async move {
                (&*log)
                    .write_all(format!("ran {}\n", ctx.uuid()).as_bytes())
                    .unwrap();
            }
        }),
    );
    server
        .register_periodic_task(SPEC, "beat", Signature::new("beat"))
        .unwrap();
    let worker = server.new_worker("periodic", 2).launch_async();
    tokio::time::sleep(RUN).await;
    // Graceful shutdown: the scheduler stops first, then the worker drains.
    worker.quit().await.unwrap();
}

/// Kills the children when the test ends, however it ends.
struct Children(Vec<Child>);

impl Drop for Children {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_processes_send_each_tick_once() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let queue = unique("periodic");
    let log = std::env::temp_dir().join(format!("machinist-redis-{queue}.log"));
    let _ = std::fs::remove_file(&log);

    let started = Instant::now();
    let exe = std::env::current_exe().unwrap();
    let mut children = Children(
        (0..PROCESSES)
            .map(|_| {
                Command::new(&exe)
                    .args(["--exact", CHILD_TEST, "--ignored", "--nocapture"])
                    .env(URL_VAR, redis.url())
                    .env(QUEUE_VAR, &queue)
                    .env(LOG_VAR, &log)
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(Stdio::inherit())
                    .spawn()
                    .unwrap()
            })
            .collect(),
    );
    for child in &mut children.0 {
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                assert!(status.success(), "a worker process failed: {status}");
                break;
            }
            assert!(
                started.elapsed() < RUN + Duration::from_secs(15),
                "the worker processes did not finish"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    drop(children);

    let text = std::fs::read_to_string(&log).unwrap();
    let mut per_tick: BTreeMap<DateTime<Utc>, Vec<String>> = BTreeMap::new();
    let mut by_process: BTreeMap<String, usize> = BTreeMap::new();
    let mut ran = Vec::new();
    for line in text.lines() {
        let words: Vec<&str> = line.split(' ').collect();
        match words[..] {
            ["sent", tick, uuid, pid] => {
                per_tick
                    .entry(machinist_core::time::parse(tick).unwrap().unwrap())
                    .or_default()
                    .push(uuid.to_owned());
                *by_process.entry(pid.to_owned()).or_default() += 1;
            }
            ["ran", uuid] => ran.push(uuid.to_owned()),
            _ => panic!("unexpected log line {line:?}"),
        }
    }
    eprintln!(
        "periodic: {} ticks sent once each, by process: {by_process:?}; {} ran",
        per_tick.len(),
        ran.len()
    );
    let mut c = raw(&redis.url()).await;
    let queued: usize = c.llen(&queue).await.unwrap();

    let twice: Vec<_> = per_tick.iter().filter(|(_, u)| u.len() > 1).collect();
    assert!(twice.is_empty(), "ticks sent more than once: {twice:?}");
    let (Some(first), Some(last)) = (per_tick.keys().next(), per_tick.keys().last()) else {
        panic!("no tick was sent");
    };
    let span = (*last - *first).num_seconds() + 1;
    assert_eq!(
        usize::try_from(span).unwrap(),
        per_tick.len(),
        "ticks missed between {first} and {last}: {:?}",
        per_tick.keys().collect::<Vec<_>>()
    );
    assert!(
        span >= i64::try_from(RUN.as_secs()).unwrap() - 2,
        "only {span} ticks in a {RUN:?} run"
    );
    let sent: HashSet<&String> = per_tick.values().flatten().collect();
    let ran_set: BTreeSet<&String> = ran.iter().collect();
    assert_eq!(ran_set.len(), ran.len(), "a task ran twice");
    assert!(
        ran_set.iter().all(|u| sent.contains(u)),
        "a task ran that no tick sent"
    );
    assert_eq!(
        ran.len() + queued,
        sent.len(),
        "sent tasks neither ran nor queued"
    );

    // Go's key (and the fences beside it): `machinery_lock_` + basename(argv[0]) + name + spec.
    let program = machinist_core::periodic::program_name();
    let go_key = format!("machinery_lock_{program}beat{SPEC}");
    let keys: Vec<String> = c.keys("machinery_lock_*").await.unwrap();
    assert!(!keys.is_empty());
    assert!(
        keys.iter()
            .all(|k| k == &go_key || k.starts_with(&format!("{go_key}#tick:"))),
        "{keys:?}"
    );
    let _ = std::fs::remove_file(&log);
}
