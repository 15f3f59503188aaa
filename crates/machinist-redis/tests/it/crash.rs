//! A worker process killed with `kill -9` while its tasks run: its messages sit in its
//! processing list, its lease lapses, another consumer's reaper returns them, and they complete.
//! The killed worker is this test binary re-executed with `--exact crash::child_worker
//! --ignored`.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use machinist_core::{Signature, State, TaskContext, task};
use machinist_testkit::redis_server::RedisServer;
use redis::AsyncCommands;

use crate::common::{LEASE, config, options, poll_until, raw, server, unique, within};

const URL_VAR: &str = "MACHINIST_REDIS_CRASH_URL";
const QUEUE_VAR: &str = "MACHINIST_REDIS_CRASH_QUEUE";

/// `hold`: in the child it never finishes; in the parent it returns its argument.
fn register_hold(srv: &machinist_core::Server, forever: bool) {
    srv.register(
        "hold",
        task(move |_ctx: TaskContext, n: i64| async move {
            if forever {
                tokio::time::sleep(Duration::from_secs(3600)).await;
            }
            n
        }),
    );
}

/// The worker process the parent kills. Does nothing unless started by the parent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a child process of worker_killed_with_kill_9_loses_nothing"]
async fn child_worker() {
    let (Ok(url), Ok(queue)) = (std::env::var(URL_VAR), std::env::var(QUEUE_VAR)) else {
        return;
    };
    let cfg = config(&queue);
    let srv = server(options(&url, &queue, &cfg), &cfg).await;
    register_hold(&srv, true);
    let _worker = srv.new_worker("doomed", 4).launch_async();
    tokio::time::sleep(Duration::from_secs(600)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn worker_killed_with_kill_9_loses_nothing() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let queue = unique("crash");
    let cfg = config(&queue);
    let opts = options(&redis.url(), &queue, &cfg);
    let producer = server(opts.clone(), &cfg).await;
    let mut sent = Vec::new();
    for n in 1..=3i64 {
        sent.push(
            producer
                .send_task(Signature::new("hold").args(n))
                .await
                .unwrap(),
        );
    }

    let exe = std::env::current_exe().unwrap();
    let mut child = Command::new(exe)
        .args(["--exact", "crash::child_worker", "--ignored", "--nocapture"])
        .env(URL_VAR, redis.url())
        .env(QUEUE_VAR, &queue)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();

    // The child took all three and is running them.
    let backend = producer.backend().clone();
    let uuids: Vec<String> = sent.iter().map(|r| r.uuid().to_owned()).collect();
    poll_until(20, "the child to start all three tasks", || {
        let backend = backend.clone();
        let uuids = uuids.clone();
        async move {
            for u in &uuids {
                let s = backend.get_state(u).await.ok()??;
                if s.state != State::Started {
                    return None;
                }
            }
            Some(())
        }
    })
    .await;
    let mut c = raw(&redis.url()).await;
    let queued: usize = c.llen(&queue).await.unwrap();
    assert_eq!(queued, 0, "the messages left the queue");
    let registry: Vec<(String, String)> = c.hgetall("machinist:consumers").await.unwrap();
    assert_eq!(registry.len(), 1, "the child is registered: {registry:?}");
    let child_id = registry[0].0.clone();
    let held: usize = c
        .llen(format!("machinist:processing:{{{queue}}}:{child_id}"))
        .await
        .unwrap();
    assert_eq!(held, 3, "they sit in the child's processing list");

    child.kill().unwrap(); // SIGKILL: no cleanup runs
    child.wait().unwrap();
    let killed = Instant::now();

    let rescuer = server(opts, &cfg).await;
    register_hold(&rescuer, false);
    let worker = rescuer.new_worker("rescuer", 4).launch_async();
    for (i, r) in sent.iter_mut().enumerate() {
        let v: i64 = within(30, "a redelivered task", r.results(Duration::from_secs(30)))
            .await
            .unwrap();
        assert_eq!(v, i as i64 + 1);
    }
    let waited = killed.elapsed();
    assert!(
        waited >= LEASE / 2,
        "redelivered only once the lease lapsed ({waited:?})"
    );
    assert!(waited < LEASE * 5, "redelivered too late ({waited:?})");
    let registry: Vec<(String, String)> = c.hgetall("machinist:consumers").await.unwrap();
    assert!(
        registry.iter().all(|(id, _)| *id != child_id),
        "the dead consumer is unregistered"
    );
    let stranded: usize = c
        .llen(format!("machinist:processing:{{{queue}}}:{child_id}"))
        .await
        .unwrap();
    assert_eq!(stranded, 0);
    within(10, "quit", worker.quit()).await.unwrap();
}
