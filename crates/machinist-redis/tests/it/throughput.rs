//! A rough end-to-end throughput figure (not a benchmark; the benchmark issue measures
//! properly): `cargo test -p machinist-redis --release --test it throughput -- --ignored --nocapture`.

use std::time::{Duration, Instant};

use bytes::Bytes;
use machinist_core::{Signature, State};
use machinist_testkit::redis_server::RedisServer;

use crate::common::{config, options, poll_until, server, unique};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a throughput measurement; run with --release --ignored --nocapture"]
async fn throughput() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let queue = unique("tp");
    let cfg = config(&queue);
    let srv = server(options(&redis.url(), &queue, &cfg), &cfg).await;
    let n = 20_000usize;
    let mut uuids = Vec::with_capacity(n);
    // Publish without PENDING (as a raw producer would), then time the worker alone.
    for i in 0..n {
        let uuid = format!("task_tp_{i}");
        let sig = Signature::new("add")
            .args((1i64, 2i64))
            .with_uuid(uuid.clone())
            .routing_key(queue.clone());
        srv.broker()
            .publish(&sig, Bytes::from(sig.to_vec().unwrap()))
            .await
            .unwrap();
        uuids.push(uuid);
    }
    let started = Instant::now();
    let worker = srv.new_worker("tp", 64).launch_async();
    let last = uuids[n - 1].clone();
    let backend = srv.backend().clone();
    poll_until(300, "the last task", || {
        let backend = backend.clone();
        let last = last.clone();
        async move {
            let s = backend.get_state(&last).await.ok()??;
            (s.state == State::Success).then_some(())
        }
    })
    .await;
    let pending = srv.broker().pending(&queue, 10).await.unwrap();
    while !srv.broker().pending(&queue, 1).await.unwrap().is_empty() {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let took = started.elapsed();
    println!(
        "{n} tasks (RECEIVED, STARTED, SUCCESS stored, acked) in {took:?}: {:.0}/s ({} left at the end)",
        n as f64 / took.as_secs_f64(),
        pending.len()
    );
    worker.quit().await.unwrap();
}
