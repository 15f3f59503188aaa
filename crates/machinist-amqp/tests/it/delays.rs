//! Many short delays: every delayed task must reach its queue. A per-delay queue
//! (`delay.<ms>.<exchange>.<routing key>`, Go's) expires 2×delay after its last declaration and
//! takes its messages with it, while a message's own delay starts only when the queue process
//! enqueues it; on a loaded RabbitMQ the two can cross and a message is lost (Go's
//! declare-then-publish: 5–20 % of 400 tasks with 5–20 ms delays on this CI machine under
//! load). machinist pipelines the declaration with the publish, renews the lease after it,
//! publishes again when the queue lapsed first, and delays by at least 50 ms.
//!
//! What is left is the race inherent to Go's expiring queues: a publish that lands on a queue
//! at the very moment its lease lapses (another publish to the same delay about 2×delay
//! earlier) goes down with the queue, although confirmed. `one_publish_per_delay_queue` covers
//! what machinist guarantees and runs in CI; `publishes_at_lease_boundaries` provokes the race
//! (run it with `--ignored`, on a loaded machine it loses a few in a thousand); the
//! single `delayed_queue` option has no lease and no such race.
//!
//! `MACHINIST_DELAY_TASKS` (default 400) sets how many tasks each sends.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::StreamExt;
use lapin::options::QueueDeclareOptions;
use lapin::types::FieldTable;
use machinist_amqp::AmqpBroker;
use machinist_core::{Broker, Signature};

use crate::common::{cleanup, config, options, rabbit, raw, unique};

/// Routing keys (each its own queue on the direct exchange, so its own delay queues).
const KEYS: usize = 4;

/// Each task its own delay queue (50–449 ms over four routing keys): the queue is declared,
/// published to and renewed by one publisher, so its lease cannot lapse under the message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_publish_per_delay_queue_always_arrives() {
    send_and_count("delays1", |i| 50 + i as i64).await;
}

/// ETAs 35–65 ms ahead over four routing keys (64 delay queues), so publishes to one queue
/// come about 2×delay apart: some land as the queue's lease lapses.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "provokes the lease race of Go's delay queues: loses a few in a thousand under load"]
async fn publishes_at_lease_boundaries() {
    // 35..=65 ms (below 50 rounds up to 50), spread so that neighbours use different queues.
    send_and_count("delays2", |i| 35 + (i * 7 % 31) as i64).await;
}

/// Sends `MACHINIST_DELAY_TASKS` tasks, task `i` delayed by `delay_ms(i)` on routing key
/// `i % KEYS`, 32 publishes in flight, and checks that every one arrives.
async fn send_and_count(tag: &str, delay_ms: fn(usize) -> i64) {
    let Some(url) = rabbit() else { return };
    let n: usize = std::env::var("MACHINIST_DELAY_TASKS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(400);
    let ns = unique(tag);
    let keys: Vec<String> = (0..KEYS).map(|k| format!("{ns}_k{k}")).collect();
    let cfg = config(&keys[0]);
    let broker: Arc<dyn Broker> = Arc::new(
        AmqpBroker::connect(options(&url, &ns, &cfg))
            .await
            .expect("connect the broker"),
    );
    let started = Instant::now();
    futures_util::stream::iter((0..n).map(|i| {
        let broker = Arc::clone(&broker);
        let key = keys[i % KEYS].clone();
        async move {
            let ms = delay_ms(i);
            let sig = Signature::new("add")
                .args((1i64, 2i64))
                .with_uuid(format!("delayed_{i}"))
                .routing_key(key)
                .eta(chrono::Utc::now() + chrono::Duration::milliseconds(ms));
            broker
                .publish(&sig, Bytes::from(sig.to_vec().expect("encode")))
                .await
                .expect("publish a delayed task");
        }
    }))
    .buffer_unordered(32)
    .collect::<Vec<()>>()
    .await;
    let published = started.elapsed();

    // Count arrivals until all are there, or nothing has moved for 5 s (a lost message never
    // comes; the longest delay is under half a second).
    let conn = raw(&url).await;
    let ch = conn.create_channel().await.expect("a channel");
    let mut arrived = 0;
    let mut last_change = Instant::now();
    while last_change.elapsed() < Duration::from_secs(5) {
        let mut count = 0;
        for key in &keys {
            let q = ch
                .queue_declare(
                    key.as_str().into(),
                    QueueDeclareOptions {
                        passive: true,
                        ..QueueDeclareOptions::default()
                    },
                    FieldTable::default(),
                )
                .await
                .expect("the destination queue exists");
            count += q.message_count() as usize;
        }
        if count != arrived {
            arrived = count;
            last_change = Instant::now();
        }
        if arrived >= n {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = conn.close(200, "bye".into()).await;
    println!("{arrived} of {n} delayed tasks arrived (published in {published:?})");
    broker.close().await;
    cleanup(&url, &keys, &[format!("{ns}_ex")]).await;
    assert_eq!(
        arrived,
        n,
        "{} delayed task(s) lost: their delay queue expired before they did",
        n - arrived
    );
}
