//! Bad input in Redis: garbage in a queue, a key of the wrong type where a state should be,
//! group members or metadata deleted or mangled. Clear errors, no panic, the worker goes on.

use std::time::Duration;

use bytes::Bytes;
use machinist_core::{Error, Signature, State, TaskState};
use machinist_testkit::redis_server::RedisServer;
use redis::AsyncCommands;

use crate::common::{adapters, config, options, poll_until, raw, server, unique, within};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_in_the_queue_is_dead_lettered() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let queue = unique("garbage");
    let cfg = config(&queue);
    let srv = server(options(&redis.url(), &queue, &cfg), &cfg).await;
    let worker = srv.new_worker("w", 2).launch_async();
    let mut c = raw(&redis.url()).await;
    let binary: &[u8] = &[0xff, 0xfe, b'{', 0x00];
    let _: () = c.rpush(&queue, "{not json").await.unwrap();
    let _: () = c.rpush(&queue, binary).await.unwrap();
    let _: () = c.rpush(&queue, r#"{"UUID":"task_x"}"#).await.unwrap();
    let dead = poll_until(10, "three dead letters", || {
        let srv = srv.clone();
        let queue = queue.clone();
        async move {
            let dead = srv.broker().dead_letters(&queue, 10).await.ok()?;
            (dead.len() == 3).then_some(dead)
        }
    })
    .await;
    let bodies: Vec<Bytes> = dead.iter().map(|(_, b)| b.clone()).collect();
    assert!(bodies.contains(&Bytes::from_static(b"{not json")));
    assert!(
        bodies.contains(&Bytes::copy_from_slice(binary)),
        "non-UTF-8 kept"
    );
    assert!(dead.iter().all(|(reason, _)| !reason.is_empty()));
    assert!(
        dead.iter()
            .any(|(reason, _)| reason.contains("no task name")),
        "{dead:?}"
    );
    // The records are JSON with the body as a string.
    let records: Vec<String> = c
        .lrange(format!("machinist:dead:{{{queue}}}"), 0, -1)
        .await
        .unwrap();
    assert!(
        records.iter().all(|r| r.starts_with(r#"{"reason":""#)),
        "{records:?}"
    );
    assert!(
        records
            .iter()
            .any(|r| r.ends_with(r#","body":"{not json"}"#)),
        "{records:?}"
    );
    let mut r = srv
        .send_task(Signature::new("add").args((1i64, 2i64)))
        .await
        .unwrap();
    let v: i64 = r.results(Duration::from_secs(10)).await.unwrap();
    assert_eq!(v, 3, "the worker survived");
    within(10, "quit", worker.quit()).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_typed_state_key_is_a_clear_error_and_the_worker_survives() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let queue = unique("wrongtype");
    let cfg = config(&queue);
    let srv = server(options(&redis.url(), &queue, &cfg), &cfg).await;
    let worker = srv.new_worker("w", 2).launch_async();
    let mut c = raw(&redis.url()).await;
    let uuid = "task_wrongtype";
    let _: () = c.rpush(uuid, "a list, not a state").await.unwrap();
    let message = Signature::new("add")
        .args((20i64, 22i64))
        .with_uuid(uuid)
        .routing_key(queue.clone());
    let _: () = c.rpush(&queue, message.to_vec().unwrap()).await.unwrap();

    let err = srv.backend().get_state(uuid).await.unwrap_err();
    let text = err.to_string();
    assert!(text.contains("WRONGTYPE") && text.contains(uuid), "{text}");
    let err = srv
        .backend()
        .set_state(&TaskState::started(uuid))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Backend(_)), "{err:?}");
    assert!(err.to_string().contains("WRONGTYPE"), "{err}");

    // Other tasks go on meanwhile.
    let mut r = srv
        .send_task(Signature::new("add").args((1i64, 1i64)))
        .await
        .unwrap();
    let v: i64 = r.results(Duration::from_secs(10)).await.unwrap();
    assert_eq!(v, 2);
    // Once the key is fixed the message (given back by the worker) completes.
    let _: () = c.del(uuid).await.unwrap();
    let state = poll_until(20, "the message to complete once the key is fixed", || {
        let srv = srv.clone();
        async move {
            let s = srv.backend().get_state(uuid).await.ok()??;
            (s.state == State::Success).then_some(s)
        }
    })
    .await;
    assert_eq!(state.results.unwrap()[0].value, 42);
    within(10, "quit", worker.quit()).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleted_and_mangled_group_keys_are_clear_errors() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let queue = unique("groups");
    let cfg = config(&queue);
    let a = adapters(options(&redis.url(), &queue, &cfg)).await;
    let mut c = raw(&redis.url()).await;
    let group = "group_deleted_member";
    let members: Vec<String> = (0..3).map(|i| format!("task_member_{i}")).collect();
    a.backend.init_group(group, &members).await.unwrap();
    for m in &members {
        a.backend
            .set_state(&TaskState::success(m, vec![]))
            .await
            .unwrap();
    }
    assert!(a.backend.group_completed(group, 3).await.unwrap());
    let _: () = c.del(&members[1]).await.unwrap();
    match a.backend.group_states(group, 3).await {
        Err(Error::StateNotFound(u)) => assert_eq!(u, members[1]),
        other => panic!("expected StateNotFound naming the member, got {other:?}"),
    }
    assert!(matches!(
        a.backend.group_completed(group, 3).await,
        Err(Error::StateNotFound(_))
    ));
    // A wrong-typed member reads as absent (MGET), named.
    let _: () = c.rpush(&members[1], "x").await.unwrap();
    assert!(matches!(
        a.backend.group_states(group, 3).await,
        Err(Error::StateNotFound(u)) if u == members[1]
    ));
    // A garbage member state: named in the error.
    let _: () = c.del(&members[1]).await.unwrap();
    let _: () = c.set(&members[1], "garbage").await.unwrap();
    let err = a.backend.group_states(group, 3).await.unwrap_err();
    assert!(err.to_string().contains(&members[1]), "{err}");

    // The group metadata itself gone or mangled.
    assert!(matches!(
        a.backend.trigger_chord("group_missing").await,
        Err(Error::StateNotFound(_))
    ));
    assert!(matches!(
        a.backend.group_states("group_missing", 1).await,
        Err(Error::StateNotFound(_))
    ));
    let _: () = c.set("group_garbage", "not json").await.unwrap();
    let err = a.backend.trigger_chord("group_garbage").await.unwrap_err();
    assert!(err.to_string().contains("not a JSON object"), "{err}");
    assert!(a.backend.get_group("group_garbage").await.is_err());
    // A garbage state is overwritten by the next write (nothing to carry over).
    let _: () = c.set("task_garbage", "{{{").await.unwrap();
    assert!(a.backend.get_state("task_garbage").await.is_err());
    a.backend
        .set_state(&TaskState::started("task_garbage"))
        .await
        .unwrap();
    let s = a.backend.get_state("task_garbage").await.unwrap().unwrap();
    assert_eq!(s.state, State::Started);

    // The delayed set of the wrong type: publishing with an ETA fails clearly.
    let opts = options(&redis.url(), &queue, &cfg);
    let _: () = c.set(&opts.delayed_tasks_key, "oops").await.unwrap();
    let sig = Signature::new("add")
        .routing_key(queue.clone())
        .countdown(Duration::from_secs(60));
    let err = a
        .broker
        .publish(&sig, Bytes::from(sig.to_vec().unwrap()))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("WRONGTYPE"), "{err}");
}
