//! Result waiters are woken by the announcement each final state write publishes, not by
//! polling; states written by a raw client (as a Go worker writes them, announcing nothing) are
//! still seen by the fallback poll, or at once when the server has keyspace notifications on.

use std::sync::Arc;
use std::time::Duration;

use machinist_core::{Backend, State, TaskResult, TaskState};
use machinist_redis::{RedisBackend, RedisConnection, RedisOptions};
use machinist_testkit::redis_server::RedisServer;
use redis::AsyncCommands;
use tokio::time::Instant;

use crate::common::{raw, within};

async fn backend(options: RedisOptions) -> Arc<RedisBackend> {
    Arc::new(RedisBackend::new(
        RedisConnection::connect(options)
            .await
            .expect("connect to the test redis-server"),
    ))
}

/// Runs a waiter the way `AsyncResult` does (read, wait, read …) with a 10 s wait per round;
/// returns when the state is SUCCESS, with the instant it saw it.
fn waiter(backend: Arc<RedisBackend>, uuid: &'static str) -> tokio::task::JoinHandle<Instant> {
    tokio::spawn(async move {
        loop {
            match backend.get_state(uuid).await {
                Ok(Some(s)) if s.state == State::Success => return Instant::now(),
                Ok(_) => {}
                // Redis restarting: AsyncResult would give up; the test retries.
                Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            }
            backend.wait_for_change(uuid, Duration::from_secs(10)).await;
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_by_another_connection_wakes_a_waiter_at_once() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let opts = RedisOptions::from_url(&redis.url()).unwrap();
    let reader = backend(opts.clone()).await;
    let writer = backend(opts).await;
    writer
        .set_state(&TaskState::pending("task_w1", "add"))
        .await
        .unwrap();
    let seen = waiter(reader.clone(), "task_w1");
    // Let the waiter subscribe and block.
    tokio::time::sleep(Duration::from_millis(300)).await;
    writer
        .set_state(&TaskState::started("task_w1"))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let written = Instant::now();
    writer
        .set_state(&TaskState::success("task_w1", vec![TaskResult::new(3i64)]))
        .await
        .unwrap();
    let seen = within(5, "the waiter", seen).await.unwrap();
    let latency = seen.duration_since(written);
    println!("woken {latency:?} after the write");
    assert!(latency < Duration::from_millis(50), "{latency:?}");

    // A bare wait returns when the state is written, well before its timeout.
    let reader2 = reader.clone();
    let wait = tokio::spawn(async move {
        // The first wait subscribes and returns; the second blocks.
        reader2
            .wait_for_change("task_w2", Duration::from_secs(10))
            .await;
        let started = Instant::now();
        reader2
            .wait_for_change("task_w2", Duration::from_secs(10))
            .await;
        started
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let written = Instant::now();
    writer
        .set_state(&TaskState::failure("task_w2", "boom"))
        .await
        .unwrap();
    let started = within(5, "the bare wait", wait).await.unwrap();
    assert!(started < written);
    let woke = written.elapsed();
    assert!(woke < Duration::from_millis(200), "{woke:?}");
}

/// Go's state JSON, as a Go worker `SET`s it (no announcement).
fn go_success(uuid: &str) -> String {
    format!(
        r#"{{"TaskUUID":"{uuid}","TaskName":"add","State":"SUCCESS","Results":[{{"Type":"int64","Value":3}}],"Error":"","CreatedAt":"2024-01-01T00:00:00Z","TTL":0}}"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_state_written_by_go_is_seen_by_polling() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let opts = RedisOptions::from_url(&redis.url())
        .unwrap()
        .with_state_poll(Duration::from_millis(300));
    let reader = backend(opts).await;
    let seen = waiter(reader, "task_go1");
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut c = raw(&redis.url()).await;
    let written = Instant::now();
    let _: () = c
        .set_ex("task_go1", go_success("task_go1"), 60)
        .await
        .unwrap();
    let seen = within(5, "the waiter", seen).await.unwrap();
    let latency = seen.duration_since(written);
    println!("a raw SET seen {latency:?} later (poll 300 ms)");
    assert!(latency <= Duration::from_millis(600), "{latency:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keyspace_notifications_wake_waiters_for_go_writes() {
    let Some(redis) = RedisServer::start_tcp(&["--notify-keyspace-events", "K$"]) else {
        return;
    };
    // A long poll: only the keyspace event can wake the waiter in time.
    let opts = RedisOptions::from_url(&redis.url())
        .unwrap()
        .with_state_poll(Duration::from_secs(10));
    let reader = backend(opts).await;
    let seen = waiter(reader, "task_go2");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut c = raw(&redis.url()).await;
    let written = Instant::now();
    let _: () = c
        .set_ex("task_go2", go_success("task_go2"), 60)
        .await
        .unwrap();
    let seen = within(5, "the waiter", seen).await.unwrap();
    let latency = seen.duration_since(written);
    println!("a raw SET with keyspace events seen {latency:?} later");
    assert!(latency < Duration::from_millis(50), "{latency:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn announcements_can_be_turned_off_and_survive_a_restart() {
    let Some(mut redis) = RedisServer::start() else {
        return;
    };
    // Off: nothing is published, a wait sleeps the caller's interval.
    let off = backend(
        RedisOptions::from_url(&redis.url())
            .unwrap()
            .with_notify_states(false),
    )
    .await;
    let started = Instant::now();
    off.wait_for_change("task_off", Duration::from_millis(300))
        .await;
    assert!(started.elapsed() >= Duration::from_millis(300));
    let mut c = raw(&redis.url()).await;
    let mut pubsub = redis::Client::open(redis.url())
        .unwrap()
        .get_async_pubsub()
        .await
        .unwrap();
    pubsub.psubscribe("machinist:state:*").await.unwrap();
    off.set_state(&TaskState::success("task_off", vec![TaskResult::new(1i64)]))
        .await
        .unwrap();
    let _: () = c.set("probe", 1).await.unwrap();
    {
        use futures_util::StreamExt;
        let mut messages = pubsub.on_message();
        let none = tokio::time::timeout(Duration::from_millis(200), messages.next()).await;
        assert!(none.is_err(), "nothing announced when turned off");
    }

    // On: the subscription comes back after Redis restarts.
    let on = backend(RedisOptions::from_url(&redis.url()).unwrap()).await;
    on.wait_for_change("task_r", Duration::from_secs(1)).await;
    redis.shutdown();
    tokio::time::sleep(Duration::from_millis(500)).await;
    redis.restart();
    let writer = backend(RedisOptions::from_url(&redis.url()).unwrap()).await;
    let seen = waiter(on, "task_r");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let written = Instant::now();
    writer
        .set_state(&TaskState::success("task_r", vec![TaskResult::new(1i64)]))
        .await
        .unwrap();
    let seen = within(10, "the waiter after a restart", seen)
        .await
        .unwrap();
    let latency = seen.duration_since(written);
    println!("after a restart, woken {latency:?} after the write");
    assert!(latency < Duration::from_millis(50), "{latency:?}");
}
