//! How the worker's state writes reach Redis: each state its own `SET` (a reader can see
//! RECEIVED, STARTED …), `TaskName`/`CreatedAt` carried over from Go's PENDING byte-exact, the
//! stored state read once per task, and no Lua script on the way (counted with
//! `INFO commandstats` on a private server).

use machinist_core::{Backend, Signature, StateContext, TaskResult, TaskState};
use machinist_redis::RedisBackend;
use machinist_testkit::redis_server::RedisServer;
use redis::AsyncCommands;

use crate::common::{config, options, raw, unique};

const GO_CREATED: &str = "2025-11-20T10:00:00.29704155Z";

/// Calls per command since the last `CONFIG RESETSTAT`, from `INFO commandstats`.
async fn calls(c: &mut redis::aio::MultiplexedConnection, command: &str) -> u64 {
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(c)
        .await
        .expect("INFO commandstats");
    let prefix = format!("cmdstat_{command}:calls=");
    info.lines()
        .find_map(|l| l.strip_prefix(prefix.as_str()))
        .and_then(|rest| rest.split(',').next())
        .map_or(0, |n| n.parse().expect("a call count"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker_writes_are_plain_sets_carrying_gos_pending_over() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let ns = unique("writes");
    let cfg = config(&ns);
    let backend = RedisBackend::connect(options(&redis.url(), &ns, &cfg))
        .await
        .unwrap();
    let mut c = raw(&redis.url()).await;
    let uuid = "task_0e9c6c1a-6f5e-4c47-9d0b-2a51c3f0e7aa";
    let pending = format!(
        r#"{{"TaskUUID":"{uuid}","TaskName":"add","State":"PENDING","Results":null,"Error":"","CreatedAt":"{GO_CREATED}","TTL":0}}"#
    );
    let _: () = c.set_ex(uuid, &pending, 3600).await.unwrap();
    let _: () = redis::cmd("CONFIG")
        .arg("RESETSTAT")
        .query_async(&mut c)
        .await
        .unwrap();

    let mut sig = Signature::new("add");
    sig.uuid = uuid.to_owned();
    let mut ctx = StateContext::of(&sig);
    backend
        .set_task_states(
            &mut ctx,
            &[TaskState::received(uuid), TaskState::started(uuid)],
        )
        .await
        .unwrap();
    assert!(ctx.created_at.is_some(), "CreatedAt learned from PENDING");
    let started: String = c.get(uuid).await.unwrap();
    assert_eq!(
        started,
        format!(
            r#"{{"TaskUUID":"{uuid}","TaskName":"add","State":"STARTED","Results":null,"Error":"","CreatedAt":"{GO_CREATED}","TTL":0}}"#
        )
    );
    backend
        .set_task_state(
            &mut ctx,
            &TaskState::success(uuid, vec![TaskResult::new(2i64)]),
        )
        .await
        .unwrap();
    let success: String = c.get(uuid).await.unwrap();
    assert_eq!(
        success,
        format!(
            r#"{{"TaskUUID":"{uuid}","TaskName":"add","State":"SUCCESS","Results":[{{"Type":"int64","Value":2}}],"Error":"","CreatedAt":"{GO_CREATED}","TTL":0}}"#
        )
    );
    let ttl: i64 = c.ttl(uuid).await.unwrap();
    assert!(
        (3500..=3600).contains(&ttl),
        "EX results_expire_in, got {ttl}"
    );

    // One read for the task, one SET per state, no script.
    assert_eq!(
        calls(&mut c, "get").await,
        3,
        "one GET to merge + the two checks"
    );
    assert_eq!(calls(&mut c, "set").await, 3, "RECEIVED, STARTED, SUCCESS");
    assert_eq!(calls(&mut c, "evalsha").await, 0);
    assert_eq!(calls(&mut c, "eval").await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_stored_state_writes_are_stored_as_they_are() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let ns = unique("bare");
    let cfg = config(&ns);
    let backend = RedisBackend::connect(options(&redis.url(), &ns, &cfg))
        .await
        .unwrap();
    let mut c = raw(&redis.url()).await;
    let uuid = "task_1f2e3d4c-5b6a-4978-8a9b-0c1d2e3f4a5b";
    let mut sig = Signature::new("add");
    sig.uuid = uuid.to_owned();
    let mut ctx = StateContext::of(&sig);
    backend
        .set_task_states(
            &mut ctx,
            &[TaskState::received(uuid), TaskState::started(uuid)],
        )
        .await
        .unwrap();
    backend
        .set_task_state(&mut ctx, &TaskState::failure(uuid, "boom"))
        .await
        .unwrap();
    // As Go: nothing to carry over, so Go's zero TaskName and CreatedAt (not the signature's
    // name).
    let text: String = c.get(uuid).await.unwrap();
    assert_eq!(
        text,
        format!(
            r#"{{"TaskUUID":"{uuid}","TaskName":"","State":"FAILURE","Results":null,"Error":"boom","CreatedAt":"0001-01-01T00:00:00Z","TTL":0}}"#
        )
    );
    assert!(ctx.created_at.is_none());
}

/// Concurrent writers share requests (the connection's write queue sends what they queued as
/// one pipeline per round) but keep their own outcome: the write whose merge `GET` meets a key
/// of the wrong type fails for its caller alone, every other write of the same moment lands,
/// each task's RECEIVED before its STARTED.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writes_keep_their_own_outcome() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let ns = unique("shared");
    let cfg = config(&ns);
    let backend = RedisBackend::connect(options(&redis.url(), &ns, &cfg))
        .await
        .unwrap();
    let mut c = raw(&redis.url()).await;
    let bad = format!("task_{ns}_bad");
    let _: () = c.rpush(&bad, "not a state").await.unwrap();
    let mut uuids: Vec<String> = (0..64).map(|i| format!("task_{ns}_{i}")).collect();
    uuids.insert(32, bad.clone());
    for uuid in uuids.iter().step_by(2).filter(|u| **u != bad) {
        let pending = TaskState::pending(uuid, "add").to_vec().unwrap();
        let _: () = c.set_ex(uuid, pending, 3600).await.unwrap();
    }

    // Polled together, so they queue in the same rounds.
    let outcomes = futures_util::future::join_all(uuids.iter().map(|uuid| {
        let backend = backend.clone();
        async move {
            let mut sig = Signature::new("add");
            sig.uuid.clone_from(uuid);
            let mut ctx = StateContext::of(&sig);
            backend
                .set_task_states(
                    &mut ctx,
                    &[TaskState::received(uuid), TaskState::started(uuid)],
                )
                .await
        }
    }))
    .await;

    for (uuid, outcome) in uuids.iter().zip(outcomes) {
        if *uuid == bad {
            let e = outcome.expect_err("the merge GET meets a list");
            assert!(e.to_string().contains("WRONGTYPE"), "{e}");
            continue;
        }
        outcome.unwrap_or_else(|e| panic!("{uuid}: {e}"));
        let stored: String = c.get(uuid).await.unwrap();
        let state = TaskState::from_slice(stored.as_bytes()).unwrap();
        assert_eq!(state.state, machinist_core::State::Started, "{uuid}");
        let had_pending = uuids.iter().step_by(2).any(|u| u == uuid);
        assert_eq!(state.task_name == "add", had_pending, "{uuid}: {stored}");
        assert_eq!(state.created_at.is_some(), had_pending, "{uuid}: {stored}");
    }
    let kind: String = redis::cmd("TYPE")
        .arg(&bad)
        .query_async(&mut c)
        .await
        .unwrap();
    assert_eq!(kind, "list", "the failed write stored nothing");
}
