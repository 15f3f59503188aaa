//! The hot path's round trips: a task sent with its PENDING in one request when broker and
//! backend share a connection (and in two, in order, when they do not), and acks that the
//! worker does not wait for but that still land before the consumer's cleanup, and task
//! states read by the fetch itself, so the worker's first write reads nothing of its own. Requests are
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

/// A fresh queue's server whose broker and backend share one connection, with a plain client.
struct SharedSetup {
    queue: String,
    conn: RedisConnection,
    broker: RedisBroker,
    backend: RedisBackend,
    server: Server,
    c: redis::aio::MultiplexedConnection,
}

async fn shared_setup(redis: &RedisServer, prefix: &str) -> SharedSetup {
    let queue = unique(prefix);
    let cfg = config(&queue);
    let c = raw(&redis.url()).await;
    let conn = RedisConnection::connect(options(&redis.url(), &queue, &cfg))
        .await
        .unwrap();
    let broker = RedisBroker::new(conn.clone());
    let backend = RedisBackend::new(conn.clone());
    let server = Server::new(
        cfg,
        Arc::new(broker.clone()),
        Arc::new(backend.clone()),
        Arc::new(RedisLock::new(conn.clone())),
    );
    machinist_testkit::tasks::register_all(&server);
    SharedSetup {
        queue,
        conn,
        broker,
        backend,
        server,
        c,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_and_its_pending_go_in_one_request_on_a_shared_connection() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    // One connection for broker and backend (what `machinist::connect` does for one URL).
    let SharedSetup {
        queue,
        conn: shared,
        server,
        mut c,
        ..
    } = shared_setup(&redis, "sends").await;
    let cfg = config(&queue);
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

async fn send_add(server: &Server) -> String {
    server
        .send_task(Signature::new("add").args((1i64, 2i64)))
        .await
        .unwrap()
        .uuid()
        .to_owned()
}

async fn next_of(consumer: &mut Box<dyn Consumer>) -> Delivery {
    within(10, "a delivery", consumer.next())
        .await
        .unwrap()
        .unwrap()
}

/// A Go producer's message for `add(1, 2)` (no `CreatedAt` key) pushed to `queue`, with a
/// PENDING stored for it the way Go stores one.
async fn send_as_go(c: &mut redis::aio::MultiplexedConnection, queue: &str, uuid: &str) {
    let sig = Signature::new("add")
        .with_uuid(uuid)
        .routing_key(queue)
        .args((1i64, 2i64));
    assert_eq!(sig.created_at, None);
    let _: () = c
        .set(uuid, TaskState::pending(uuid, "add").to_vec().unwrap())
        .await
        .unwrap();
    let _: () = c.rpush(queue, sig.to_vec().unwrap()).await.unwrap();
}

/// `consume_for` with the backend on the broker's own connection: each delivery of a Go
/// producer's message comes with the bytes stored under its task's UUID, read in the fetch
/// itself; none when the key is missing or holds another type (the worker's own read then
/// reports it). A machinist producer's message carries its PENDING's `CreatedAt`: nothing is
/// read for it. Plain `consume`, or a backend on another connection, reads nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fetch_brings_the_stored_states_when_the_backend_shares_the_connection() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let SharedSetup {
        queue,
        broker,
        backend,
        server,
        mut c,
        ..
    } = shared_setup(&redis, "fetched").await;
    let pending = format!("task_{queue}_pending");
    send_as_go(&mut c, &queue, &pending).await;
    let missing = format!("task_{queue}_missing");
    send_as_go(&mut c, &queue, &missing).await;
    let _: () = c.del(&missing).await.unwrap();
    let hash = format!("task_{queue}_hash");
    send_as_go(&mut c, &queue, &hash).await;
    let _: () = c.del(&hash).await.unwrap();
    let _: () = c.hset(&hash, "f", "v").await.unwrap();
    let stored: Vec<u8> = c.get(&pending).await.unwrap();
    let stamped = send_add(&server).await;
    // A message from another client, its UUID not the first field: found all the same.
    let reordered = "task_fetched_reordered";
    let body = format!(r#"{{"Name":"add","RoutingKey":"{queue}","UUID":"{reordered}","Args":[]}}"#);
    let _: () = c.rpush(&queue, &body).await.unwrap();
    let _: () = c.set(reordered, "its state").await.unwrap();
    // `CreatedAt` far from the end (not where machinist writes it): the state is read.
    let early = "task_fetched_early";
    let pad = "x".repeat(100);
    let body = format!(
        r#"{{"UUID":"{early}","CreatedAt":"2024-01-01T00:00:00Z","Name":"add","RoutingKey":"{queue}","Headers":{{"pad":"{pad}"}}}}"#
    );
    let _: () = c.rpush(&queue, &body).await.unwrap();
    let _: () = c.set(early, "early's state").await.unwrap();

    let queues = std::slice::from_ref(&queue);
    let mut consumer = broker.consume_for(queues, 10, &backend).await.unwrap();
    let mut by_uuid = std::collections::HashMap::new();
    for _ in 0..6 {
        let d = next_of(&mut consumer).await;
        by_uuid.insert(d.signature().unwrap().uuid, d);
    }
    assert!(by_uuid[&stamped].signature().unwrap().created_at.is_some());
    assert_eq!(
        by_uuid[&stamped].stored_state, None,
        "the message carries CreatedAt: no state read"
    );
    assert_eq!(
        by_uuid[&pending].stored_state.as_deref(),
        Some(stored.as_slice()),
        "the PENDING as stored"
    );
    assert_eq!(by_uuid[&missing].stored_state, None, "no state stored");
    assert_eq!(by_uuid[&hash].stored_state, None, "not a string");
    assert_eq!(
        by_uuid[reordered].stored_state.as_deref(),
        Some(&b"its state"[..]),
        "UUID after other fields"
    );
    assert_eq!(
        by_uuid[early].stored_state.as_deref(),
        Some(&b"early's state"[..]),
        "CreatedAt where machinist does not write it"
    );
    for d in by_uuid.values() {
        d.ack().await.unwrap();
    }
    consumer.stop().await.unwrap();

    // Plain `consume`, and a backend on a connection of its own: nothing read.
    let other = RedisBackend::new(
        RedisConnection::connect(options(&redis.url(), &queue, &config(&queue)))
            .await
            .unwrap(),
    );
    for shared_backend in [false, true] {
        let uuid = send_add(&server).await;
        let mut consumer = if shared_backend {
            broker.consume_for(queues, 10, &other).await.unwrap()
        } else {
            broker.consume(queues, 10).await.unwrap()
        };
        let d = next_of(&mut consumer).await;
        assert_eq!(d.signature().unwrap().uuid, uuid);
        assert_eq!(
            d.stored_state, None,
            "backend on another connection: {shared_backend}"
        );
        d.ack().await.unwrap();
        consumer.stop().await.unwrap();
    }
}

/// Hands out what the Redis consumer fetched, after rewriting each task's stored PENDING with
/// another `CreatedAt` (as if it changed between the fetch and the worker's first write): a
/// worker that reads the state again stores the new time, one that took it from the fetch
/// stores the old one.
struct Rewriting {
    inner: Box<dyn Consumer>,
    c: redis::aio::MultiplexedConnection,
}

/// The `CreatedAt` the rewritten PENDINGs carry.
const REWRITTEN: &str = "2001-02-03T04:05:06Z";

#[async_trait::async_trait]
impl Consumer for Rewriting {
    async fn next(&mut self) -> machinist_core::Result<Option<Delivery>> {
        let Some(d) = self.inner.next().await? else {
            return Ok(None);
        };
        let uuid = d.signature().unwrap().uuid;
        let mut pending = TaskState::pending(&uuid, "add");
        pending.created_at = Some(REWRITTEN.parse().unwrap());
        let _: () = self.c.set(&uuid, pending.to_vec().unwrap()).await.unwrap();
        Ok(Some(d))
    }

    async fn stop(&mut self) -> machinist_core::Result<()> {
        self.inner.stop().await
    }

    async fn flush(&mut self) -> machinist_core::Result<()> {
        self.inner.flush().await
    }
}

/// A Redis broker whose consumers are [`Rewriting`]; `read_states` off: they are plain
/// `consume` ones, which read no states.
struct RewritingBroker {
    inner: RedisBroker,
    c: redis::aio::MultiplexedConnection,
    read_states: bool,
}

#[async_trait::async_trait]
impl Broker for RewritingBroker {
    async fn publish(
        &self,
        signature: &Signature,
        body: bytes::Bytes,
    ) -> machinist_core::Result<()> {
        self.inner.publish(signature, body).await
    }

    async fn consume(
        &self,
        queues: &[String],
        prefetch: usize,
    ) -> machinist_core::Result<Box<dyn Consumer>> {
        self.inner.consume(queues, prefetch).await
    }

    async fn consume_for(
        &self,
        queues: &[String],
        prefetch: usize,
        backend: &dyn machinist_core::Backend,
    ) -> machinist_core::Result<Box<dyn Consumer>> {
        let inner = if self.read_states {
            self.inner.consume_for(queues, prefetch, backend).await?
        } else {
            self.inner.consume(queues, prefetch).await?
        };
        Ok(Box::new(Rewriting {
            inner,
            c: self.c.clone(),
        }))
    }

    async fn pending(
        &self,
        queue: &str,
        limit: usize,
    ) -> machinist_core::Result<Vec<bytes::Bytes>> {
        self.inner.pending(queue, limit).await
    }

    async fn delayed(
        &self,
        limit: usize,
    ) -> machinist_core::Result<Vec<(chrono::DateTime<chrono::Utc>, bytes::Bytes)>> {
        self.inner.delayed(limit).await
    }

    async fn dead_letters(
        &self,
        queue: &str,
        limit: usize,
    ) -> machinist_core::Result<Vec<(String, bytes::Bytes)>> {
        self.inner.dead_letters(queue, limit).await
    }

    async fn purge(&self, queue: &str) -> machinist_core::Result<u64> {
        self.inner.purge(queue).await
    }

    fn describe(&self) -> String {
        self.inner.describe()
    }
}

/// The worker's states carry the `CreatedAt` of a machinist producer's message, or, for a Go
/// producer's, the one the fetch read (no read of their own); with a consumer that read no
/// states, the worker reads the stored one, as Go does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_worker_takes_created_at_from_the_message_or_the_fetch() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let SharedSetup {
        queue,
        broker,
        backend,
        c,
        ..
    } = shared_setup(&redis, "fetched_worker").await;
    let cases = [(false, true), (false, false), (true, true), (true, false)];
    for (i, (from_go, read_states)) in cases.into_iter().enumerate() {
        let server = Server::new(
            config(&queue),
            Arc::new(RewritingBroker {
                inner: broker.clone(),
                c: c.clone(),
                read_states,
            }),
            Arc::new(backend.clone()),
            Arc::new(machinist_core::memory::MemoryLock::new()),
        );
        machinist_testkit::tasks::register_all(&server);
        let mut c = c.clone();
        let uuid = if from_go {
            let uuid = format!("task_{queue}_go_{i}");
            send_as_go(&mut c, &queue, &uuid).await;
            uuid
        } else {
            send_add(&server).await
        };
        let sent: Vec<u8> = c.get(&uuid).await.unwrap();
        let sent = TaskState::from_slice(&sent).unwrap().created_at.unwrap();
        let worker = server.new_worker("w", 4).launch_async();
        let done = poll_until(10, "the task's SUCCESS", || {
            let mut c = c.clone();
            let uuid = uuid.clone();
            async move {
                let raw: Vec<u8> = c.get(&uuid).await.ok()?;
                let state = TaskState::from_slice(&raw).ok()?;
                (state.state == State::Success).then_some(state)
            }
        })
        .await;
        within(10, "the worker's stop", worker.quit())
            .await
            .unwrap();
        let rewritten = REWRITTEN.parse().unwrap();
        let expected = if read_states || !from_go {
            sent
        } else {
            rewritten
        };
        assert_ne!(sent, rewritten);
        assert_eq!(
            done.created_at,
            Some(expected),
            "CreatedAt of a Go message: {from_go}, with states read by the fetch: {read_states}"
        );
        assert_eq!(done.task_name, "add");
    }
}
