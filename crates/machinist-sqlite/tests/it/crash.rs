//! The crash test: two worker processes on one database file run 2,000 tasks of 5–20 ms; one
//! is killed with SIGKILL mid-run. Every task must end SUCCESS, none may be lost, and the
//! executions beyond 2,000 must be no more than the killed worker had in flight (each run is
//! logged when it starts, so runs cut short by the kill count as executions).
//!
//! The worker processes are this test binary run again (`--exact crash::worker_process
//! --ignored`), told by environment variables which database to use and where to log each
//! execution (one line with the task's UUID, appended with `O_APPEND`).

use std::collections::{HashMap, HashSet};
use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use machinist_core::{Backend, Server, Signature, TaskContext, task};
use machinist_sqlite::{SqliteOptions, SqliteStore};

use crate::common::{config, location, remove_db, temp_db};

const DB_ENV: &str = "MACHINIST_SQLITE_CRASH_DB";
const LOG_ENV: &str = "MACHINIST_SQLITE_CRASH_LOG";
const CHILD_TEST: &str = "crash::worker_process";
const TASKS: usize = 2000;
/// Each worker's concurrency, hence its prefetch: what a killed worker can have in flight.
const CONCURRENCY: usize = 4;
/// Short, so that the killed worker's messages come back quickly.
const LEASE: Duration = Duration::from_millis(1500);
const QUEUE: &str = "crash_tasks";

fn server(store: &SqliteStore) -> Server {
    Server::new(
        config(Some(QUEUE)),
        Arc::new(store.broker()),
        Arc::new(store.backend()),
        Arc::new(store.lock()),
    )
}

/// A worker process: runs until it is killed. Does nothing unless started by
/// [`two_workers_one_killed`].
#[test]
#[ignore = "a worker process of crash::two_workers_one_killed; does nothing on its own"]
fn worker_process() {
    let (Ok(db), Ok(log)) = (std::env::var(DB_ENV), std::env::var(LOG_ENV)) else {
        return;
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async move {
        let store = SqliteStore::open(&db, SqliteOptions::default().with_lease(LEASE)).unwrap();
        let server = server(&store);
        let log = Arc::new(
            OpenOptions::new()
                .create(true)
                .append(true)
                .open(&log)
                .unwrap(),
        );
        server.register(
            "work",
            task(move |ctx: TaskContext, ms: i64| {
                let log = Arc::clone(&log);
                async move {
                    // Logged when the run starts, so that runs cut short by the kill count.
                    // One write(2) of one line: atomic with O_APPEND.
                    (&*log)
                        .write_all(format!("{}\n", ctx.uuid()).as_bytes())
                        .unwrap();
                    tokio::time::sleep(Duration::from_millis(ms.unsigned_abs())).await;
                    ms
                }
            }),
        );
        let worker = server.new_worker("crash", CONCURRENCY).launch_async();
        let _ = worker.wait().await;
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

fn lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect()
}

fn messages_left(db: &Path) -> i64 {
    let conn = rusqlite::Connection::open(db).unwrap();
    conn.busy_timeout(Duration::from_secs(5)).unwrap();
    conn.query_row("SELECT count(*) FROM messages", [], |r| r.get(0))
        .unwrap()
}

#[test]
fn two_workers_one_killed() {
    let db = temp_db("crash");
    let logs: [PathBuf; 2] = [
        db.with_extension("victim.log"),
        db.with_extension("survivor.log"),
    ];
    for log in &logs {
        let _ = std::fs::remove_file(log);
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let store = SqliteStore::open(&location(&db), SqliteOptions::default()).unwrap();
    let producer = server(&store);
    let uuids: Vec<String> = runtime.block_on(async {
        let mut uuids = Vec::with_capacity(TASKS);
        for i in 0..TASKS {
            let ms = 5 + (i * 7919 % 16) as i64;
            let r = producer
                .send_task(Signature::new("work").args(ms))
                .await
                .unwrap();
            uuids.push(r.uuid().to_owned());
        }
        uuids
    });

    let started = Instant::now();
    let mut children = Children(vec![
        spawn_worker(&db, &logs[0]),
        spawn_worker(&db, &logs[1]),
    ]);

    // Kill the victim mid-run, once it has done a fair share.
    while lines(&logs[0]).len() < 200 {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the victim worker did not get going"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    children.0[0].kill().unwrap(); // SIGKILL
    children.0[0].wait().unwrap();
    let killed_after = started.elapsed();
    let victim_runs = lines(&logs[0]);
    assert!(
        victim_runs.len() < TASKS / 2,
        "killed too late to be mid-run ({} executions)",
        victim_runs.len()
    );

    // The survivor finishes everything, including what the victim held.
    while messages_left(&db) > 0 {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "{} messages still stored after 60 s",
            messages_left(&db)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let finished_after = started.elapsed();
    drop(children);

    let backend = store.backend();
    runtime.block_on(async {
        for uuid in &uuids {
            let state = backend.get_state(uuid).await.unwrap();
            assert!(
                state.as_ref().is_some_and(|s| s.is_success()),
                "task {uuid} not SUCCESS: {state:?}"
            );
        }
    });

    let victim: HashSet<&str> = victim_runs.iter().map(String::as_str).collect();
    let survivor_runs = lines(&logs[1]);
    let mut runs: HashMap<&str, usize> = HashMap::new();
    for uuid in victim_runs.iter().chain(&survivor_runs) {
        *runs.entry(uuid).or_default() += 1;
    }
    for uuid in &uuids {
        assert!(runs.contains_key(uuid.as_str()), "task {uuid} never ran");
    }
    let total = victim_runs.len() + survivor_runs.len();
    let extra = total - TASKS;
    for (uuid, n) in &runs {
        if *n > 1 {
            assert!(
                *n == 2 && victim.contains(uuid),
                "task {uuid} ran {n} times, not only because the victim died holding it"
            );
        }
    }
    assert!(
        extra <= CONCURRENCY,
        "{extra} executions beyond {TASKS}, more than the {CONCURRENCY} the killed worker could hold"
    );
    println!(
        "crash test: victim ran {} tasks and was killed at {killed_after:?}; survivor ran {}; \
         {extra} re-executions; all {TASKS} SUCCESS after {finished_after:?}",
        victim_runs.len(),
        survivor_runs.len()
    );
    for log in &logs {
        let _ = std::fs::remove_file(log);
    }
    drop(store);
    remove_db(&db);
}
