//! Periodic tasks across processes: three worker processes on one database file each register
//! the same every-second periodic task (`* * * * * *`) and run for ten seconds. Every tick must
//! be sent exactly once (one task UUID per tick), with no gap between the first and the last
//! tick sent, and every sent task must run or still be queued.
//!
//! The workers are this test binary run again (`--exact periodic::scheduler_process
//! --ignored`). Each appends `sent <tick> <uuid> <pid>` from its pre-publish hook and `ran <uuid>`
//! from the task, one `write(2)` per line on an `O_APPEND` file.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::fs::OpenOptions;
use std::io::Write;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use machinist_core::periodic::PERIODIC_TICK_HEADER;
use machinist_core::{Server, Signature, TaskContext, task};
use machinist_sqlite::{SqliteOptions, SqliteStore};

use crate::common::{config, location, remove_db, temp_db};

const DB_ENV: &str = "MACHINIST_SQLITE_PERIODIC_DB";
const LOG_ENV: &str = "MACHINIST_SQLITE_PERIODIC_LOG";
const CHILD_TEST: &str = "periodic::scheduler_process";
const QUEUE: &str = "periodic_tasks";
const SPEC: &str = "* * * * * *";
const RUN: Duration = Duration::from_secs(10);
const PROCESSES: usize = 3;

/// A worker process with the periodic task. Does nothing unless started by
/// [`three_processes_send_each_tick_once`].
#[test]
#[ignore = "a worker process of periodic::three_processes_send_each_tick_once"]
fn scheduler_process() {
    let (Ok(db), Ok(log)) = (std::env::var(DB_ENV), std::env::var(LOG_ENV)) else {
        return;
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async move {
        let store = SqliteStore::open(&db, SqliteOptions::default()).unwrap();
        let server = Server::new(
            config(Some(QUEUE)),
            Arc::new(store.broker()),
            Arc::new(store.backend()),
            Arc::new(store.lock()),
        );
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
                (&*sent_log)
                    .write_all(
                        format!("sent {tick} {} {}\n", sig.uuid, std::process::id()).as_bytes(),
                    )
                    .unwrap();
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
    });
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

fn spawn_worker(db: &Path, log: &Path) -> Child {
    Command::new(std::env::current_exe().unwrap())
        .args(["--exact", CHILD_TEST, "--nocapture", "--ignored"])
        .env(DB_ENV, db)
        .env(LOG_ENV, log)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap()
}

fn messages_left(db: &Path) -> usize {
    let conn = rusqlite::Connection::open(db).unwrap();
    conn.busy_timeout(Duration::from_secs(5)).unwrap();
    let n: i64 = conn
        .query_row("SELECT count(*) FROM messages", [], |r| r.get(0))
        .unwrap();
    usize::try_from(n).unwrap()
}

#[test]
fn three_processes_send_each_tick_once() {
    let db = temp_db("periodic");
    let log = db.with_extension("log");
    let _ = std::fs::remove_file(&log);
    // Created here, so the children open an existing file.
    drop(SqliteStore::open(&location(&db), SqliteOptions::default()).unwrap());

    let started = Instant::now();
    let mut children = Children((0..PROCESSES).map(|_| spawn_worker(&db, &log)).collect());
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
            std::thread::sleep(Duration::from_millis(50));
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
    report_and_check(&per_tick, &ran, messages_left(&db));
    remove_db(&db);
    let _ = std::fs::remove_file(&log);
}

/// Each tick once, no gap, at least the run minus its first and last second; every sent task
/// ran (once) or is still queued.
fn report_and_check(
    per_tick: &BTreeMap<DateTime<Utc>, Vec<String>>,
    ran: &[String],
    queued: usize,
) {
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
}
