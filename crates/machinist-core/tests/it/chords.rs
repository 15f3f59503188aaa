//! Chords on the in-memory backend, which counts member completions
//! (`Backend::group_member_completed`) instead of reading every member's state after each one:
//! the callback still runs exactly once when members finish at the same time on two workers,
//! and a failed member still fails the callback and marks the chord fired once the group is
//! complete.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use machinist_core::memory::{MemoryBackend, MemoryBroker, MemoryLock};
use machinist_core::task::Variadic;
use machinist_core::{
    Chord, Config, Error, Group, Server, Signature, TaskContext, TaskError, task,
};

const WAIT: Duration = Duration::from_secs(20);

fn config(queue: &str) -> Config {
    Config {
        no_unix_signals: true,
        default_queue: queue.into(),
        ..Config::default()
    }
}

/// Servers sharing one broker and one backend, each with the tasks of these tests; `calls`
/// counts callback runs by UUID.
fn servers(queue: &str, n: usize, calls: &Arc<Mutex<HashMap<String, usize>>>) -> Vec<Server> {
    let config = config(queue);
    let broker = Arc::new(MemoryBroker::new());
    let backend = Arc::new(MemoryBackend::new(config.results_ttl()));
    (0..n)
        .map(|_| {
            let server = Server::new(
                config.clone(),
                broker.clone(),
                backend.clone(),
                Arc::new(MemoryLock::new()),
            );
            let calls = Arc::clone(calls);
            server.register_tasks([
                (
                    // Sleeps until the shared release time plus 0–4 ms, returns 1.
                    "jitter_one",
                    task(|release_ms: i64, jitter: i64| async move {
                        let wait = release_ms - chrono::Utc::now().timestamp_millis() + jitter;
                        if let Ok(ms) = u64::try_from(wait) {
                            tokio::time::sleep(Duration::from_millis(ms)).await;
                        }
                        1i64
                    }),
                ),
                (
                    "count",
                    task(move |ctx: TaskContext, Variadic(xs): Variadic<i64>| {
                        let calls = Arc::clone(&calls);
                        async move {
                            *calls
                                .lock()
                                .unwrap_or_else(|e| e.into_inner())
                                .entry(ctx.uuid().to_owned())
                                .or_default() += 1;
                            xs.iter().sum::<i64>()
                        }
                    }),
                ),
                (
                    "fail",
                    task(|| async { Err::<i64, _>(TaskError::fatal("member failed")) }),
                ),
                ("one", task(|| async { 1i64 })),
            ]);
            server
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chord_fires_once_when_members_finish_together_on_two_workers() {
    let calls = Arc::new(Mutex::new(HashMap::new()));
    let servers = servers("chords_together", 2, &calls);
    let workers: Vec<_> = servers
        .iter()
        .map(|s| s.new_worker("chords", 16).launch_async())
        .collect();
    let mut callbacks = Vec::new();
    for round in 0..3 {
        let release = chrono::Utc::now().timestamp_millis() + 200;
        let members = (0..60)
            .map(|i| Signature::new("jitter_one").args((release, i % 5)))
            .collect();
        let chord = Chord::new(Group::new(members), Signature::new("count"));
        callbacks.push(chord.callback.uuid.clone());
        let mut r = servers[round % 2]
            .send_chord(chord, 0)
            .await
            .expect("send_chord");
        let total: i64 = r.callback.results(WAIT).await.expect("chord result");
        assert_eq!(total, 60, "round {round}: the callback gets all 60 results");
    }
    // A second firing would have queued its callback before these.
    let mut barrier = servers[0]
        .send_group(
            Group::new((0..32).map(|_| Signature::new("one")).collect()),
            0,
        )
        .await
        .expect("send_group");
    for m in &mut barrier {
        let _: i64 = m.results(WAIT).await.expect("barrier");
    }
    let calls = calls.lock().unwrap_or_else(|e| e.into_inner()).clone();
    for uuid in &callbacks {
        assert_eq!(
            calls.get(uuid),
            Some(&1),
            "callback {uuid} runs exactly once"
        );
    }
    assert_eq!(calls.len(), 3);
    for w in workers {
        w.quit().await.expect("worker stops");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_member_fails_the_callback_and_the_chord_fires_once_complete() {
    let calls = Arc::new(Mutex::new(HashMap::new()));
    let servers = servers("chords_failed", 1, &calls);
    let server = &servers[0];
    // One at a time, in order: the failed member is not the last to complete.
    let worker = server.new_worker("chords", 1).launch_async();
    let group = Group::new(vec![
        Signature::new("one"),
        Signature::new("fail"),
        Signature::new("one"),
    ]);
    let failed = group.tasks[1].uuid.clone();
    let group_uuid = group.group_uuid.clone();
    let chord = Chord::new(group, Signature::new("count"));
    let mut r = server.send_chord(chord, 0).await.expect("send_chord");
    match r
        .callback
        .get_with_timeout(WAIT, Duration::from_millis(5))
        .await
    {
        Err(Error::TaskFailed(text)) => assert!(text.contains(&failed), "{text}"),
        other => panic!("expected the callback to fail, got {other:?}"),
    }
    for m in &mut r.group {
        let _ = m.get_with_timeout(WAIT, Duration::from_millis(5)).await;
    }
    // The last member's completion found the group complete (the failure counted) and fired
    // the chord, which stored the callback's FAILURE again instead of running it.
    let backend = server.backend();
    let deadline = tokio::time::Instant::now() + WAIT;
    while !backend
        .get_group(&group_uuid)
        .await
        .expect("group")
        .is_some_and(|g| g.chord_triggered)
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the chord never fired"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(
        calls.lock().unwrap_or_else(|e| e.into_inner()).is_empty(),
        "callback never runs"
    );
    worker.quit().await.expect("worker stops");
}
