//! Rough throughput figures beside the raw AMQP floor (not a benchmark; the benchmark issue
//! measures properly):
//! `cargo test -p machinist-amqp --release --test it throughput -- --ignored --nocapture`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::StreamExt;
use lapin::options::{BasicAckOptions, BasicConsumeOptions, BasicQosOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use machinist_amqp::AmqpBroker;
use machinist_core::memory::{MemoryBackend, MemoryLock};
use machinist_core::{Backend, Broker, Server, Signature, State};

use crate::common::{adapters, cleanup, config, options, poll_until, rabbit, raw, unique};

const N: usize = 10_000;
const CONCURRENCY: usize = 64;

/// Publishes `N` tasks to `queue` through `broker`, 64 publishes in flight.
async fn fill(broker: &Arc<dyn Broker>, queue: &str, tag: &str) -> Vec<String> {
    let sigs: Vec<Signature> = (0..N)
        .map(|i| {
            Signature::new("add")
                .args((1i64, 2i64))
                .with_uuid(format!("task_{tag}_{i}"))
                .routing_key(queue.to_owned())
        })
        .collect();
    futures_util::stream::iter(sigs.iter().map(|s| {
        let broker = Arc::clone(broker);
        async move {
            broker
                .publish(s, Bytes::from(s.to_vec().expect("encode")))
                .await
                .expect("publish")
        }
    }))
    .buffer_unordered(64)
    .collect::<Vec<()>>()
    .await;
    sigs.into_iter().map(|s| s.uuid).collect()
}

/// Runs a worker over the filled queue and returns tasks per second.
async fn drain(srv: &Server, uuids: &[String]) -> f64 {
    let started = Instant::now();
    let worker = srv.new_worker("tp", CONCURRENCY).launch_async();
    let backend = srv.backend().clone();
    let last_ok = |backend: Arc<dyn Backend>, uuids: Vec<String>| async move {
        for u in uuids.iter().rev() {
            let s = backend.get_state(u).await.ok()??;
            if s.state != State::Success {
                return None;
            }
        }
        Some(())
    };
    let tail: Vec<String> = uuids.iter().rev().take(20).cloned().collect();
    poll_until(600, "the last tasks", || {
        last_ok(backend.clone(), tail.clone())
    })
    .await;
    let took = started.elapsed();
    worker.quit().await.expect("quit");
    N as f64 / took.as_secs_f64()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a throughput measurement; run with --release --ignored --nocapture"]
async fn throughput() {
    let Some(url) = rabbit() else { return };

    // The floor: lapin alone consuming and acknowledging persistent messages.
    let ns = unique("tp_raw");
    let queue = format!("{ns}_tasks");
    let cfg = config(&queue);
    let a = adapters(options(&url, &ns, &cfg)).await;
    fill(&a.broker, &queue, &ns).await;
    let conn = raw(&url).await;
    let ch = conn.create_channel().await.unwrap();
    ch.basic_qos(CONCURRENCY as u16, BasicQosOptions::default())
        .await
        .unwrap();
    let q = ch
        .queue_declare(
            queue.as_str().into(),
            QueueDeclareOptions {
                passive: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();
    assert_eq!(q.message_count() as usize, N);
    let started = Instant::now();
    let mut consumer = ch
        .basic_consume(
            queue.as_str().into(),
            "tp".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    for _ in 0..N {
        let d = consumer.next().await.unwrap().unwrap();
        d.ack(BasicAckOptions::default()).await.unwrap();
    }
    let floor = N as f64 / started.elapsed().as_secs_f64();
    println!("raw lapin consume + ack: {floor:.0}/s");
    let _ = conn.close(200, "bye".into()).await;
    cleanup(&url, &[queue], &[format!("{ns}_ex")]).await;

    // machinist, AMQP broker, in-memory results.
    let ns = unique("tp_mem");
    let queue = format!("{ns}_tasks");
    let cfg = config(&queue);
    let broker: Arc<dyn Broker> =
        Arc::new(AmqpBroker::connect(options(&url, &ns, &cfg)).await.unwrap());
    let srv = Server::new(
        cfg,
        Arc::clone(&broker),
        Arc::new(MemoryBackend::new(Duration::from_secs(600))),
        Arc::new(MemoryLock::new()),
    );
    machinist_testkit::tasks::register_all(&srv);
    let uuids = fill(&broker, &queue, &ns).await;
    let rate = drain(&srv, &uuids).await;
    println!(
        "machinist worker, AMQP broker + memory results: {rate:.0}/s ({:.0} % of the floor)",
        100.0 * rate / floor
    );
    cleanup(&url, &[queue], &[format!("{ns}_ex")]).await;

    // machinist, AMQP broker and AMQP results (Go's shape: four state messages per task).
    let ns = unique("tp_amqp");
    let queue = format!("{ns}_tasks");
    let cfg = config(&queue);
    let a = adapters(options(&url, &ns, &cfg)).await;
    let srv = Server::new(cfg, a.broker.clone(), a.backend, a.lock);
    machinist_testkit::tasks::register_all(&srv);
    let uuids = fill(&a.broker, &queue, &ns).await;
    let rate = drain(&srv, &uuids).await;
    println!(
        "machinist worker, AMQP broker + AMQP results: {rate:.0}/s ({:.0} % of the floor)",
        100.0 * rate / floor
    );
    cleanup(&url, &[queue], &[format!("{ns}_ex")]).await;
}
