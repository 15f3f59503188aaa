//! Go interop: messages and states byte-exact as Go Machinery writes them (`wire-format.md`
//! §2, §4, §15), pushed and read with a raw Redis client as a Go process would.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use machinist_core::{Signature, TaskContext, task};
use machinist_testkit::redis_server::RedisServer;
use redis::AsyncCommands;

use crate::common::{adapters, config, options, poll_until, raw, server, unique, within};

/// Go's `CreatedAt` for a PENDING written at some instant (nanoseconds, trailing zeros dropped).
const GO_CREATED: &str = "2025-11-20T10:00:00.29704155Z";

/// A Go message: every key, Go's order, `Headers` `{}`, int64 args.
fn go_message(uuid: &str, name: &str, queue: &str, args: &[i64]) -> String {
    go_message_with(uuid, name, queue, args, "\"\"", "0", "null")
}

fn go_message_with(
    uuid: &str,
    name: &str,
    queue: &str,
    args: &[i64],
    group: &str,
    group_count: &str,
    chord_callback: &str,
) -> String {
    format!(
        r#"{{"UUID":"{uuid}","Name":"{name}","RoutingKey":"{queue}","ETA":null,"GroupUUID":{group},"GroupTaskCount":{group_count},"Args":{},"Headers":{{}},"Priority":0,"Immutable":false,"RetryCount":0,"RetryTimeout":0,"OnSuccess":null,"OnError":null,"ChordCallback":{chord_callback},"BrokerMessageGroupId":"","SQSReceiptHandle":"","StopTaskDeletionOnError":false,"IgnoreWhenTaskNotRegistered":false}}"#,
        go_args(args)
    )
}

fn go_args(args: &[i64]) -> String {
    let args: Vec<String> = args
        .iter()
        .map(|a| format!(r#"{{"Name":"","Type":"int64","Value":{a}}}"#))
        .collect();
    format!("[{}]", args.join(","))
}

fn go_pending(uuid: &str, name: &str) -> String {
    format!(
        r#"{{"TaskUUID":"{uuid}","TaskName":"{name}","State":"PENDING","Results":null,"Error":"","CreatedAt":"{GO_CREATED}","TTL":0}}"#
    )
}

fn go_success(uuid: &str, name: &str, created: &str, value: i64) -> String {
    format!(
        r#"{{"TaskUUID":"{uuid}","TaskName":"{name}","State":"SUCCESS","Results":[{{"Type":"int64","Value":{value}}}],"Error":"","CreatedAt":"{created}","TTL":0}}"#
    )
}

/// Waits until the raw value at `key` is a completed state, and returns its text.
async fn completed_text(c: &mut redis::aio::MultiplexedConnection, key: &str) -> String {
    poll_until(20, &format!("{key} to complete"), || {
        let mut c = c.clone();
        async move {
            let v: Option<String> = c.get(key).await.ok()?;
            v.filter(|t| t.contains(r#""State":"SUCCESS""#) || t.contains(r#""State":"FAILURE""#))
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn go_message_is_processed_and_state_keeps_go_bytes() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let queue = unique("go_in");
    let cfg = config(&queue);
    let srv = server(options(&redis.url(), &queue, &cfg), &cfg).await;
    let weird = "go/add<x>&y";
    srv.register_task(weird, machinist_testkit::tasks::add);
    let worker = srv.new_worker("w", 2).launch_async();
    let mut c = raw(&redis.url()).await;

    // A Go producer: PENDING first, then RPUSH.
    let uuid = "task_3f1d7c4e-6a61-4b1a-9c55-0d2b8e6f7a10";
    let _: () = c.set_ex(uuid, go_pending(uuid, "add"), 3600).await.unwrap();
    let _: () = c
        .rpush(&queue, go_message(uuid, "add", &queue, &[1, 1]))
        .await
        .unwrap();
    let text = completed_text(&mut c, uuid).await;
    assert_eq!(text, go_success(uuid, "add", GO_CREATED, 2));
    let ttl: i64 = c.ttl(uuid).await.unwrap();
    assert!(
        (3500..=3600).contains(&ttl),
        "EX results_expire_in, got {ttl}"
    );

    // No PENDING at all (a message pushed by hand): Go's zero TaskName and CreatedAt.
    let bare = "task_5b0c3f0e-2d4e-4f7e-8c3a-6a7b9d0e1f22";
    let _: () = c
        .rpush(&queue, go_message(bare, "add", &queue, &[2, 3]))
        .await
        .unwrap();
    let text = completed_text(&mut c, bare).await;
    assert_eq!(text, go_success(bare, "", "0001-01-01T00:00:00Z", 5));

    // A task name Go escapes: the carried-over name keeps Go's bytes.
    let odd = "task_9a8b7c6d-5e4f-4a3b-8c2d-1e0f9a8b7c6d";
    let go_name = r"go/add\u003cx\u003e\u0026y";
    let _: () = c.set_ex(odd, go_pending(odd, go_name), 3600).await.unwrap();
    let _: () = c
        .rpush(&queue, go_message(odd, go_name, &queue, &[4, 4]))
        .await
        .unwrap();
    let text = completed_text(&mut c, odd).await;
    assert_eq!(text, go_success(odd, go_name, GO_CREATED, 8));
    let decoded = srv.backend().get_state(odd).await.unwrap().unwrap();
    assert_eq!(decoded.task_name, weird);

    within(10, "quit", worker.quit()).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn machinist_writes_what_go_reads() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let queue = unique("go_out");
    let cfg = config(&queue);
    let opts = options(&redis.url(), &queue, &cfg);
    let delayed_key = opts.delayed_tasks_key.clone();
    let srv = server(opts, &cfg).await;
    let mut c = raw(&redis.url()).await;

    let sig = Signature::new("add").args((1i64, 2i64));
    let r = srv.send_task(sig).await.unwrap();
    let uuid = r.uuid().to_owned();
    // The message, as a Go worker's BLPOP on the bare queue gets it.
    let popped: Option<(String, String)> = c.blpop(&queue, 1.0).await.unwrap();
    let (key, body) = popped.expect("the message is on the bare queue list");
    assert_eq!(key, queue);
    // PENDING in Go's shape, with a Go-format CreatedAt.
    let pending: String = c.get(&uuid).await.unwrap();
    let prefix = format!(
        r#"{{"TaskUUID":"{uuid}","TaskName":"add","State":"PENDING","Results":null,"Error":"","CreatedAt":""#
    );
    assert!(pending.starts_with(&prefix), "{pending}");
    assert!(pending.ends_with(r#"Z","TTL":0}"#), "{pending}");
    let created_at = &pending[prefix.len()..pending.len() - r#"","TTL":0}"#.len()];
    // Go's bytes, then machinist's own key (Go ignores it): the PENDING's CreatedAt.
    let go = go_message(&uuid, "add", &queue, &[1, 2]);
    assert_eq!(
        body,
        format!(r#"{},"CreatedAt":"{created_at}"}}"#, &go[..go.len() - 1])
    );

    // A future ETA: ZADD <delayed key> <ETA ns> <json>, same bytes.
    let eta = chrono::Utc::now() + chrono::Duration::seconds(60);
    let r = srv
        .send_task(Signature::new("add").args((5i64, 5i64)).eta(eta))
        .await
        .unwrap();
    let members: Vec<(String, f64)> = c.zrange_withscores(&delayed_key, 0, -1).await.unwrap();
    assert_eq!(members.len(), 1);
    let sent: Signature = Signature::from_slice(members[0].0.as_bytes()).unwrap();
    assert_eq!(sent.uuid, r.uuid());
    let eta_ns = eta.timestamp_nanos_opt().unwrap() as f64;
    assert!(
        (members[0].1 - eta_ns).abs() < 1000.0,
        "score is the ETA in ns"
    );
}

/// Registers a task `name` that records the UUIDs it ran with.
fn recorder(srv: &machinist_core::Server, name: &str) -> Arc<Mutex<Vec<String>>> {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s = Arc::clone(&seen);
    srv.register(
        name,
        task(move |ctx: TaskContext| {
            let s = Arc::clone(&s);
            async move {
                s.lock().expect("lock").push(ctx.uuid().to_owned());
                1i64
            }
        }),
    );
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn go_delayed_tasks_move_exactly_once_with_many_movers() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let queue = unique("go_delayed");
    let cfg = config(&queue);
    let opts = options(&redis.url(), &queue, &cfg);
    let delayed_key = opts.delayed_tasks_key.clone();
    let mut c = raw(&redis.url()).await;
    // 250 due tasks, half with an empty RoutingKey (→ default queue), as a Go producer adds
    // them: ZADD with the ETA in ns as an integer.
    let past = chrono::Utc::now().timestamp_nanos_opt().unwrap() - 1_000_000_000;
    let mut uuids = Vec::new();
    for i in 0..250i64 {
        let uuid = format!("task_00000000-0000-4000-8000-{i:012}");
        let rk = if i % 2 == 0 { queue.as_str() } else { "" };
        let body = go_message(&uuid, "count", rk, &[]);
        let _: () = redis::cmd("ZADD")
            .arg(&delayed_key)
            .arg((past + i).to_string())
            .arg(body)
            .query_async(&mut c)
            .await
            .unwrap();
        uuids.push(uuid);
    }
    // Three workers, each with its own broker (three movers racing).
    let mut workers = Vec::new();
    let mut seen = Vec::new();
    for n in 0..3 {
        let srv = server(opts.clone(), &cfg).await;
        seen.push(recorder(&srv, "count"));
        workers.push(srv.new_worker(format!("w{n}"), 8).launch_async());
    }
    let all = poll_until(20, "all delayed tasks to run", || {
        let seen = seen.clone();
        async move {
            let mut all: Vec<String> = seen
                .iter()
                .flat_map(|s| s.lock().expect("lock").clone())
                .collect();
            (all.len() >= 250).then(|| {
                all.sort();
                all
            })
        }
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let total: usize = seen.iter().map(|s| s.lock().expect("lock").len()).sum();
    assert_eq!(total, 250, "each delayed task ran exactly once");
    uuids.sort();
    assert_eq!(all, uuids);
    let left: usize = c.zcard(&delayed_key).await.unwrap();
    assert_eq!(left, 0);
    for w in workers {
        within(10, "quit", w.quit()).await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn go_chain_completes() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let queue = unique("go_chain");
    let cfg = config(&queue);
    let srv = server(options(&redis.url(), &queue, &cfg), &cfg).await;
    let worker = srv.new_worker("w", 2).launch_async();
    let mut c = raw(&redis.url()).await;
    let (t1, t2, t3) = (
        "task_11111111-1111-4111-8111-111111111111",
        "task_22222222-2222-4222-8222-222222222222",
        "task_33333333-3333-4333-8333-333333333333",
    );
    // Go's NewChain: nested OnSuccess; nested tasks carry "RoutingKey":"" and "Headers":null.
    let nested = |uuid: &str, name: &str, args: &[i64], on_success: &str| {
        format!(
            r#"{{"UUID":"{uuid}","Name":"{name}","RoutingKey":"","ETA":null,"GroupUUID":"","GroupTaskCount":0,"Args":{},"Headers":null,"Priority":0,"Immutable":false,"RetryCount":0,"RetryTimeout":0,"OnSuccess":{on_success},"OnError":null,"ChordCallback":null,"BrokerMessageGroupId":"","SQSReceiptHandle":"","StopTaskDeletionOnError":false,"IgnoreWhenTaskNotRegistered":false}}"#,
            go_args(args)
        )
    };
    let third = nested(t3, "multiply", &[4], "null");
    let second = nested(t2, "add", &[5, 6], &format!("[{third}]"));
    let first = format!(
        r#"{{"UUID":"{t1}","Name":"add","RoutingKey":"{queue}","ETA":null,"GroupUUID":"","GroupTaskCount":0,"Args":{},"Headers":{{}},"Priority":0,"Immutable":false,"RetryCount":0,"RetryTimeout":0,"OnSuccess":[{second}],"OnError":null,"ChordCallback":null,"BrokerMessageGroupId":"","SQSReceiptHandle":"","StopTaskDeletionOnError":false,"IgnoreWhenTaskNotRegistered":false}}"#,
        go_args(&[2, 2])
    );
    let _: () = c.set_ex(t1, go_pending(t1, "add"), 3600).await.unwrap();
    let _: () = c.rpush(&queue, first).await.unwrap();
    let text = completed_text(&mut c, t3).await;
    assert!(
        text.contains(r#""State":"SUCCESS","Results":[{"Type":"int64","Value":60}]"#),
        "multiply(4, add(5, 6, 4)) = 60: {text}"
    );
    let first_state = completed_text(&mut c, t1).await;
    assert_eq!(first_state, go_success(t1, "add", GO_CREATED, 4));
    within(10, "quit", worker.quit()).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn go_chord_completes_and_meta_keeps_go_bytes() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let queue = unique("go_chord");
    let cfg = config(&queue);
    let srv = server(options(&redis.url(), &queue, &cfg), &cfg).await;
    let worker = srv.new_worker("w", 4).launch_async();
    let mut c = raw(&redis.url()).await;
    let group = "group_44444444-4444-4444-8444-444444444444";
    let chord = "chord_55555555-5555-4555-8555-555555555555";
    let members = [
        ("task_a0000000-0000-4000-8000-000000000001", [1i64, 1]),
        ("task_a0000000-0000-4000-8000-000000000002", [2, 2]),
        ("task_a0000000-0000-4000-8000-000000000003", [5, 6]),
    ];
    let ids: Vec<String> = members.iter().map(|(u, _)| format!("\"{u}\"")).collect();
    let meta = format!(
        r#"{{"GroupUUID":"{group}","TaskUUIDs":[{}],"ChordTriggered":false,"Lock":false,"CreatedAt":"{GO_CREATED}","TTL":0}}"#,
        ids.join(",")
    );
    let callback = format!(
        r#"{{"UUID":"{chord}","Name":"multiply","RoutingKey":"","ETA":null,"GroupUUID":"","GroupTaskCount":0,"Args":null,"Headers":{{}},"Priority":0,"Immutable":false,"RetryCount":0,"RetryTimeout":0,"OnSuccess":null,"OnError":null,"ChordCallback":null,"BrokerMessageGroupId":"","SQSReceiptHandle":"","StopTaskDeletionOnError":false,"IgnoreWhenTaskNotRegistered":false}}"#
    );
    // Go's SendChord: group meta, every PENDING, then the members (in no fixed order).
    let _: () = c.set_ex(group, &meta, 3600).await.unwrap();
    for (uuid, _) in &members {
        let _: () = c
            .set_ex(*uuid, go_pending(uuid, "add"), 3600)
            .await
            .unwrap();
    }
    for (uuid, args) in members.iter().rev() {
        let body = go_message_with(
            uuid,
            "add",
            &queue,
            args,
            &format!("\"{group}\""),
            "3",
            &callback,
        );
        let _: () = c.rpush(&queue, body).await.unwrap();
    }
    let text = completed_text(&mut c, chord).await;
    assert!(
        text.contains(r#""State":"SUCCESS","Results":[{"Type":"int64","Value":88}]"#),
        "multiply(2, 4, 11) = 88 in group order: {text}"
    );
    let after: String = c.get(group).await.unwrap();
    assert_eq!(
        after,
        meta.replace(r#""ChordTriggered":false"#, r#""ChordTriggered":true"#)
    );
    let ttl: i64 = c.ttl(group).await.unwrap();
    assert!(ttl > 3000, "the group keeps its expiry: {ttl}");
    within(10, "quit", worker.quit()).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trigger_chord_waits_while_a_go_worker_holds_the_mutex() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let queue = unique("mutex");
    let cfg = config(&queue);
    let a = adapters(options(&redis.url(), &queue, &cfg)).await;
    let mut c = raw(&redis.url()).await;
    let group = "group_66666666-6666-4666-8666-666666666666";
    let meta = format!(
        r#"{{"GroupUUID":"{group}","TaskUUIDs":["task_x"],"ChordTriggered":false,"Lock":false,"CreatedAt":"{GO_CREATED}","TTL":0}}"#
    );
    let _: () = c.set_ex(group, &meta, 3600).await.unwrap();
    // A Go worker inside redsync's critical section.
    let _: () = redis::cmd("SET")
        .arg(machinist_redis::TRIGGER_CHORD_MUTEX)
        .arg("go-token")
        .arg("PX")
        .arg(600)
        .query_async(&mut c)
        .await
        .unwrap();
    let started = Instant::now();
    assert!(a.backend.trigger_chord(group).await.unwrap());
    assert!(
        started.elapsed() >= Duration::from_millis(450),
        "waited for the mutex: {:?}",
        started.elapsed()
    );
    assert!(!a.backend.trigger_chord(group).await.unwrap());
    // Go already triggered it: false, untouched.
    let go_done = "group_77777777-7777-4777-8777-777777777777";
    let done_meta = meta
        .replace(group, go_done)
        .replace(r#""ChordTriggered":false"#, r#""ChordTriggered":true"#);
    let _: () = c.set_ex(go_done, &done_meta, 3600).await.unwrap();
    assert!(!a.backend.trigger_chord(go_done).await.unwrap());
    let still: String = c.get(go_done).await.unwrap();
    assert_eq!(still, done_meta);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn periodic_lock_is_gos() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let queue = unique("lock");
    let cfg = config(&queue);
    let a = adapters(options(&redis.url(), &queue, &cfg)).await;
    let mut c = raw(&redis.url()).await;
    let key = "machinery_lock_worker_periodic*/2 * * * *";
    let now = chrono::Utc::now();
    let deadline = now + chrono::Duration::seconds(30);
    assert!(a.lock.try_lock(key, deadline).await.unwrap());
    let stored: String = c.get(key).await.unwrap();
    assert_eq!(stored, deadline.timestamp_nanos_opt().unwrap().to_string());
    let pttl: i64 = c.pttl(key).await.unwrap();
    assert!(
        (29_000..=30_001).contains(&pttl),
        "PX deadline − now: {pttl}"
    );
    assert!(!a.lock.try_lock(key, deadline).await.unwrap(), "held");

    // A Go scheduler's key with a passed deadline and no expiry: taken over (Go's GETSET path).
    let stale = "machinery_lock_stale";
    let past = (now - chrono::Duration::seconds(5))
        .timestamp_nanos_opt()
        .unwrap();
    let _: () = c.set(stale, past.to_string()).await.unwrap();
    assert!(a.lock.try_lock(stale, deadline).await.unwrap());
    let pttl: i64 = c.pttl(stale).await.unwrap();
    assert!(pttl > 0, "the taken-over key expires");
    // A Go scheduler's live key with no expiry: not taken.
    let live = "machinery_lock_live";
    let _: () = c
        .set(live, deadline.timestamp_nanos_opt().unwrap().to_string())
        .await
        .unwrap();
    assert!(!a.lock.try_lock(live, deadline).await.unwrap());
    a.lock.unlock(live).await.unwrap();
    let gone: bool = c.exists(live).await.unwrap();
    assert!(!gone);
    assert_eq!(
        a.broker.describe(),
        format!("redis://127.0.0.1:{}/0", redis.port().unwrap())
    );
}
