//! The hot path's round trips: a task sent with its PENDING in one request when broker and
//! backend share a connection (and in two, in order, when they do not), and acks that the
//! worker does not wait for but that still land before the consumer's cleanup. Requests are
//! counted by the connection's own write queue ([`RedisConnection::requests`]); what is
//! stored is read back with a plain client, on a private server.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use machinist_core::{Broker, Consumer, Delivery, Server, Signature, State, TaskState};
use machinist_redis::{RedisBackend, RedisBroker, RedisConnection, RedisLock};
use machinist_testkit::redis_server::RedisServer;
use redis::AsyncCommands;

use crate::common::{config, options, poll_until, raw, server, unique, within};

/// Sends `add(1, 2)` and checks what it stored: a PENDING under the task's UUID, with
/// `TaskName`, `CreatedAt` and the results expiry, and the message on the queue.
async fn send_and_check(server: &Server, c: &mut redis::aio::MultiplexedConnection, queue: &str) {
    let sent = server
        .send_task(Signature::new("add").args((1i64, 2i64)))
        .await
        .unwrap();
    let uuid = sent.uuid().to_owned();
    let raw: String = c.get(&uuid).await.unwrap();
    let stored = TaskState::from_slice(raw.as_bytes()).unwrap();
    assert_eq!(stored.state, State::Pending);
    assert_eq!(stored.task_name, "add");
    assert!(stored.created_at.is_some(), "CreatedAt stored: {raw}");
    let ttl: i64 = c.ttl(&uuid).await.unwrap();
    assert!(
        (3500..=3600).contains(&ttl),
        "EX results_expire_in, got {ttl}"
    );
    let queued: Vec<String> = c.lrange(queue, 0, -1).await.unwrap();
    assert_eq!(queued.len(), 1, "one message on {queue}");
    assert!(
        queued[0].contains(&uuid),
        "the task's message: {}",
        queued[0]
    );
    let _: () = c.del(queue).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_and_its_pending_go_in_one_request_on_a_shared_connection() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let queue = unique("sends");
    let cfg = config(&queue);
    let mut c = raw(&redis.url()).await;

    // One connection for broker and backend (what `machinist::connect` does for one URL).
    let shared = RedisConnection::connect(options(&redis.url(), &queue, &cfg))
        .await
        .unwrap();
    let server = Server::new(
        cfg.clone(),
        Arc::new(RedisBroker::new(shared.clone())),
        Arc::new(RedisBackend::new(shared.clone())),
        Arc::new(RedisLock::new(shared.clone())),
    );
    let before = shared.requests();
    send_and_check(&server, &mut c, &queue).await;
    let after = shared.requests();
    assert_eq!(
        after.requests - before.requests,
        1,
        "SET and RPUSH in one request"
    );
    assert_eq!(after.commands - before.commands, 2);

    // Two connections: the PENDING is awaited, then the message sent.
    let backend_conn = RedisConnection::connect(options(&redis.url(), &queue, &cfg))
        .await
        .unwrap();
    let broker_conn = RedisConnection::connect(options(&redis.url(), &queue, &cfg))
        .await
        .unwrap();
    let server = Server::new(
        cfg.clone(),
        Arc::new(RedisBroker::new(broker_conn.clone())),
        Arc::new(RedisBackend::new(backend_conn.clone())),
        Arc::new(RedisLock::new(broker_conn.clone())),
    );
    let (b0, p0) = (backend_conn.requests(), broker_conn.requests());
    send_and_check(&server, &mut c, &queue).await;
    assert_eq!(
        backend_conn.requests().requests - b0.requests,
        1,
        "the PENDING"
    );
    assert_eq!(
        broker_conn.requests().requests - p0.requests,
        1,
        "the message"
    );
}

/// `n` messages published to a fresh queue and all handed out to one consumer, with the key
/// of its processing list (which holds them all) and a plain client.
struct Held {
    queue: String,
    consumer: Box<dyn Consumer>,
    deliveries: Vec<Delivery>,
    processing: String,
    c: redis::aio::MultiplexedConnection,
}

async fn held(redis: &RedisServer, n: usize) -> Held {
    let queue = unique("acks");
    let cfg = config(&queue);
    let mut c = raw(&redis.url()).await;
    let conn = RedisConnection::connect(options(&redis.url(), &queue, &cfg))
        .await
        .unwrap();
    let broker = RedisBroker::new(conn);
    for i in 0..n {
        let mut sig = Signature::new("add").args((i as i64, 1i64));
        sig.routing_key.clone_from(&queue);
        let body = sig.to_vec().unwrap();
        broker.publish(&sig, body.into()).await.unwrap();
    }
    let mut consumer = broker
        .consume(std::slice::from_ref(&queue), n)
        .await
        .unwrap();
    let mut deliveries = Vec::with_capacity(n);
    while deliveries.len() < n {
        let d = within(10, "a delivery", consumer.next())
            .await
            .unwrap()
            .unwrap();
        deliveries.push(d);
    }
    // A private server: the only consumer's keys (default prefix `machinist`).
    let mut processing: Vec<String> = c.keys("machinist:processing:*").await.unwrap();
    assert_eq!(processing.len(), 1, "one processing list: {processing:?}");
    let processing = processing.remove(0);
    let len: usize = c.llen(&processing).await.unwrap();
    assert_eq!(len, n, "every delivery held in the processing list");
    Held {
        queue,
        consumer,
        deliveries,
        processing,
        c,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acks_land_before_the_consumer_cleans_up() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let Held {
        queue,
        mut consumer,
        deliveries,
        processing,
        mut c,
    } = held(&redis, 200).await;
    // Every ack returns at once; then the consumer goes away at once. Its cleanup returns
    // whatever is still in its processing list to the queue: an ack that had not landed yet
    // would bring its message back.
    for d in &deliveries {
        d.ack().await.unwrap();
    }
    consumer.stop().await.unwrap();
    drop(deliveries);
    drop(consumer);
    poll_until(10, "the consumer's cleanup", || {
        let mut c = c.clone();
        let key = processing.clone();
        async move {
            let exists: bool = c.exists(&key).await.unwrap();
            let registered: usize = c.hlen("machinist:consumers").await.unwrap();
            (!exists && registered == 0).then_some(())
        }
    })
    .await;
    let back: usize = c.llen(&queue).await.unwrap();
    assert_eq!(back, 0, "no acked message came back to the queue");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flush_returns_once_every_queued_ack_landed() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let Held {
        mut consumer,
        deliveries,
        processing,
        mut c,
        ..
    } = held(&redis, 500).await;
    // What a worker does as it stops: the last tasks ack (queued, not waited for), then it
    // flushes; a process may exit right after, so nothing may be left to redeliver.
    for d in &deliveries {
        d.ack().await.unwrap();
    }
    within(10, "the flush", consumer.flush()).await.unwrap();
    let left: usize = c.llen(&processing).await.unwrap();
    assert_eq!(left, 0, "every ack landed before flush returned");
}

/// A task that takes `ms` milliseconds.
async fn nap(ms: i64) -> i64 {
    tokio::time::sleep(std::time::Duration::from_millis(ms.unsigned_abs())).await;
    ms
}

/// The process exits as soon as its worker returned: the worker runs on a runtime of its own,
/// shut down right after (its queued requests die with it), and Redis is checked from another.
/// Without the worker's `Consumer::flush` the last acks are lost about one run in three (the
/// window is short); `flush_returns_once_every_queued_ack_landed` pins `flush` itself.
#[test]
fn a_worker_returns_with_every_ack_landed_so_an_exit_redelivers_nothing() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let queue = unique("stop");
    let cfg = config(&queue);
    const N: usize = 64;
    let process = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let sent = process.block_on(async {
        let srv = server(options(&redis.url(), &queue, &cfg), &cfg).await;
        srv.register_task("nap", nap);
        let mut sent = Vec::with_capacity(N);
        for _ in 0..N {
            let r = srv
                .send_task(Signature::new("nap").args((300i64,)))
                .await
                .unwrap();
            sent.push(r.uuid().to_owned());
        }
        let worker = srv.new_worker("w", N).launch_async();
        poll_until(10, "every task started", || {
            let backend = srv.backend().clone();
            let sent = sent.clone();
            async move {
                for uuid in &sent {
                    let state = backend.get_state(uuid).await.unwrap()?;
                    if !matches!(state.state, State::Started | State::Success) {
                        return None;
                    }
                }
                Some(())
            }
        })
        .await;
        // The tasks finish while the worker stops: their acks are queued just before it
        // returns.
        within(10, "the graceful stop", worker.quit())
            .await
            .unwrap();
        sent
    });
    process.shutdown_background();

    let check = tokio::runtime::Runtime::new().unwrap();
    check.block_on(async {
        let mut c = raw(&redis.url()).await;
        let lists: Vec<String> = c.keys("machinist:processing:*").await.unwrap();
        for key in &lists {
            let left: usize = c.llen(key).await.unwrap();
            assert_eq!(left, 0, "{key} empty when the worker returned");
        }
        let queued: usize = c.llen(&queue).await.unwrap();
        assert_eq!(queued, 0, "nothing to redeliver");
        for uuid in &sent {
            let raw: String = c.get(uuid).await.unwrap();
            let state = TaskState::from_slice(raw.as_bytes()).unwrap();
            assert_eq!(state.state, State::Success);
        }
    });
}
