//! End-to-end throughput with one worker: not a test of correctness, a measurement.
//! `cargo test --release -p machinist-sqlite -- --ignored throughput --nocapture`

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use machinist_core::{Server, Signature};
use machinist_sqlite::{SqliteOptions, SqliteStore};

use crate::common::{config, location, remove_db, temp_db};

const TASKS: usize = 20_000;
const PRODUCERS: usize = 32;

#[test]
#[ignore = "a measurement; run with --release --ignored throughput --nocapture"]
fn throughput() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let db = temp_db("throughput");
    runtime.block_on(async {
        let store = SqliteStore::open(&location(&db), SqliteOptions::default()).unwrap();
        let server = Server::new(
            config(None),
            Arc::new(store.broker()),
            Arc::new(store.backend()),
            Arc::new(store.lock()),
        );
        machinist_testkit::tasks::register_all(&server);
        let worker = server.new_worker("throughput", 64).launch_async();
        let conn = rusqlite::Connection::open(&db).unwrap();
        let sent = Arc::new(AtomicUsize::new(0));

        let start = Instant::now();
        let mut producers = Vec::new();
        for p in 0..PRODUCERS {
            let server = server.clone();
            let sent = Arc::clone(&sent);
            producers.push(tokio::spawn(async move {
                let mut last = None;
                for i in (p..TASKS).step_by(PRODUCERS) {
                    let r = server
                        .send_task(Signature::new("add").args((i as i64, 1i64)))
                        .await
                        .unwrap();
                    sent.fetch_add(1, Ordering::Relaxed);
                    last = Some(r);
                }
                last
            }));
        }
        let mut lasts = Vec::new();
        for p in producers {
            lasts.extend(p.await.unwrap());
        }
        let published = start.elapsed();
        // Every message acknowledged = every result stored (the worker acks after storing).
        loop {
            let left: i64 = conn
                .query_row("SELECT count(*) FROM messages", [], |r| r.get(0))
                .unwrap();
            if left == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        let elapsed = start.elapsed();
        for r in &mut lasts {
            let _: i64 = r.results(Duration::from_secs(5)).await.unwrap();
        }
        let successes: i64 = conn
            .query_row(
                "SELECT count(*) FROM states WHERE body LIKE '%\"State\":\"SUCCESS\"%'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(successes, TASKS as i64);
        worker.quit().await.unwrap();
        println!(
            "sqlite end to end: {TASKS} tasks (send + PENDING, RECEIVED, STARTED, SUCCESS \
             stored, ack) in {elapsed:.2?} = {:.0} tasks/s (all published after {published:.2?})",
            TASKS as f64 / elapsed.as_secs_f64()
        );
    });
    remove_db(&db);
}
