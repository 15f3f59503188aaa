//! Behaviour beyond the conformance suite: leases, wake-ups across stores (as across
//! processes), idle CPU, expiry sweeps, chords across connections.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use chrono::Utc;
use machinist_core::{
    Backend, Broker, Consumer, Delivery, GroupProgress, Lock, Server, Signature, TaskState,
};
use machinist_sqlite::{SqliteOptions, SqliteStore};

use crate::common::{config, location, remove_db, temp_db};

fn message(queue: &str, n: i64) -> (Signature, Bytes) {
    let sig = Signature::new("add").args((n, n)).routing_key(queue);
    let body = Bytes::from(sig.to_vec().unwrap());
    (sig, body)
}

async fn next(c: &mut Box<dyn Consumer>) -> Delivery {
    tokio::time::timeout(Duration::from_secs(10), c.next())
        .await
        .expect("no delivery within 10 s")
        .unwrap()
        .expect("consumer stopped")
}

fn q(name: &str) -> Vec<String> {
    vec![name.to_owned()]
}

/// A delivery whose worker vanished (never decided, never dropped: as if the process died)
/// comes back once its lease lapses, counted as a redelivery; `extend` keeps it hidden.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lapsed_lease_redelivers_and_extend_holds_it() {
    let db = temp_db("lease");
    let lease = Duration::from_millis(300);
    let store =
        SqliteStore::open(&location(&db), SqliteOptions::default().with_lease(lease)).unwrap();
    let broker = store.broker();
    let (s, b) = message("q", 1);
    broker.publish(&s, b.clone()).await.unwrap();
    let mut c = broker.consume(&q("q"), 4).await.unwrap();
    let d = next(&mut c).await;
    assert_eq!(d.lease(), Some(lease));
    assert_eq!(d.redeliveries, 0);
    let taken = Instant::now();
    std::mem::forget(d);
    let d = next(&mut c).await;
    let back = taken.elapsed();
    assert!(back >= Duration::from_millis(290), "back after {back:?}");
    assert!(back < Duration::from_secs(2), "back after {back:?}");
    assert_eq!((d.body.clone(), d.redeliveries), (b.clone(), 1));

    // Renewed every 100 ms for a second: nobody else gets it.
    let mut other = broker.consume(&q("q"), 4).await.unwrap();
    for _ in 0..10 {
        d.extend(lease).await.unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        tokio::time::timeout(Duration::from_millis(100), other.next())
            .await
            .is_err(),
        "an extended lease was handed out"
    );
    d.ack().await.unwrap();
    assert!(broker.pending("q", 10).await.unwrap().is_empty());
    remove_db(&db);
}

/// `stop()` gives back what was fetched ahead and not handed out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_returns_prefetched_messages() {
    let store = SqliteStore::open("sqlite::memory:", SqliteOptions::default()).unwrap();
    let broker = store.broker();
    let mut bodies = Vec::new();
    for i in 0..5 {
        let (s, b) = message("q", i);
        broker.publish(&s, b.clone()).await.unwrap();
        bodies.push(b);
    }
    let mut c = broker.consume(&q("q"), 10).await.unwrap();
    let d = next(&mut c).await;
    assert_eq!(d.body, bodies[0]);
    assert!(
        broker.pending("q", 10).await.unwrap().is_empty(),
        "all five fetched"
    );
    c.stop().await.unwrap();
    assert_eq!(broker.pending("q", 10).await.unwrap(), bodies[1..]);
    d.ack().await.unwrap();
}

/// Messages come from the first queue that has some, in the consume call's order.
#[tokio::test]
async fn queue_priority_order() {
    let store = SqliteStore::open("sqlite::memory:", SqliteOptions::default()).unwrap();
    let broker = store.broker();
    let (low, low_body) = message("low", 1);
    broker.publish(&low, low_body.clone()).await.unwrap();
    let (high, high_body) = message("high", 2);
    broker.publish(&high, high_body.clone()).await.unwrap();
    let mut c = broker
        .consume(&["high".to_owned(), "low".to_owned()], 1)
        .await
        .unwrap();
    let d = next(&mut c).await;
    assert_eq!((d.queue.as_str(), &d.body), ("high", &high_body));
    d.ack().await.unwrap();
    let d = next(&mut c).await;
    assert_eq!((d.queue.as_str(), &d.body), ("low", &low_body));
    d.ack().await.unwrap();
}

/// A publish through another store on the same file (what another process does) reaches an
/// idle consumer within the poll interval, not at its next timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_connections_publish_wakes_idle_consumer_quickly() {
    let db = temp_db("cross_wake");
    let consumer_side = SqliteStore::open(&location(&db), SqliteOptions::default()).unwrap();
    let producer_side = SqliteStore::open(&location(&db), SqliteOptions::default()).unwrap();
    let mut c = consumer_side.broker().consume(&q("q"), 1).await.unwrap();
    let mut latencies = Vec::new();
    for i in 0..5 {
        let waiter = tokio::spawn(async move {
            let d = next(&mut c).await;
            let at = Instant::now();
            d.ack().await.unwrap();
            (c, at)
        });
        tokio::time::sleep(Duration::from_millis(100)).await;
        let (s, b) = message("q", i);
        let sent = Instant::now();
        producer_side.broker().publish(&s, b).await.unwrap();
        let (back, got) = waiter.await.unwrap();
        c = back;
        latencies.push(got - sent);
    }
    latencies.sort();
    println!("cross-store pick-up latencies: {latencies:?}");
    assert!(latencies[2] < Duration::from_millis(50), "{latencies:?}");
    assert!(latencies[4] < Duration::from_millis(250), "{latencies:?}");
    remove_db(&db);
}

/// Chord triggers from two stores on one file (two processes): exactly one wins.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trigger_chord_once_across_connections() {
    let db = temp_db("chord_x");
    let a = SqliteStore::open(&location(&db), SqliteOptions::default()).unwrap();
    let b = SqliteStore::open(&location(&db), SqliteOptions::default()).unwrap();
    a.backend().init_group("g", &["t1".into()]).await.unwrap();
    let mut calls = Vec::new();
    for i in 0..40 {
        let backend = if i % 2 == 0 { a.backend() } else { b.backend() };
        calls.push(tokio::spawn(async move {
            backend.trigger_chord("g").await.unwrap()
        }));
    }
    let mut wins = 0;
    for call in calls {
        wins += usize::from(call.await.unwrap());
    }
    assert_eq!(wins, 1);
    let meta = b.backend().get_group("g").await.unwrap().unwrap();
    assert!(meta.chord_triggered, "the JSON body says so too");
    assert!(
        a.lock()
            .try_lock("k", Utc::now() + chrono::Duration::seconds(5))
            .await
            .unwrap()
    );
    assert!(
        !b.lock()
            .try_lock("k", Utc::now() + chrono::Duration::seconds(5))
            .await
            .unwrap()
    );
    remove_db(&db);
}

/// Member completions counted from two stores on one file (two processes): the states come
/// back exactly once, from the completion that brings the count to the group's size; a
/// completion counted twice (a redelivered member) is checked against the states; re-creating
/// the group starts the count again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_member_completions_counted_across_connections() {
    let db = temp_db("chord_count");
    let a = SqliteStore::open(&location(&db), SqliteOptions::default()).unwrap();
    let b = SqliteStore::open(&location(&db), SqliteOptions::default()).unwrap();
    assert!(matches!(
        a.backend().group_member_completed("g", 3, true).await,
        Err(machinist_core::Error::StateNotFound(g)) if g == "g"
    ));
    let members: Vec<String> = (0..40).map(|i| format!("m{i}")).collect();
    a.backend().init_group("g", &members).await.unwrap();
    let mut calls = Vec::new();
    for (i, m) in members.iter().cloned().enumerate() {
        let backend = if i % 2 == 0 { a.backend() } else { b.backend() };
        calls.push(tokio::spawn(async move {
            let state = if i == 7 {
                TaskState::failure(&m, "no")
            } else {
                TaskState::success(&m, vec![])
            };
            backend.set_state(&state).await.unwrap();
            backend
                .group_member_completed("g", 40, i != 7)
                .await
                .unwrap()
        }));
    }
    let mut complete = Vec::new();
    for call in calls {
        match call.await.unwrap() {
            GroupProgress::CompleteWith(states) => complete.push(states),
            GroupProgress::Incomplete => {}
            other => panic!("a counting backend reads the states: {other:?}"),
        }
    }
    assert_eq!(
        complete.len(),
        1,
        "exactly one completion sees the group complete"
    );
    let states = &complete[0];
    let order: Vec<_> = states.iter().map(|s| s.task_uuid.clone()).collect();
    assert_eq!(order, members, "in group order");
    assert!(states[7].is_failure());

    // A fresh group; m0 completes twice before m1 completes at all.
    let two: Vec<String> = vec!["m0".into(), "n1".into()];
    b.backend().init_group("g2", &two).await.unwrap();
    b.backend()
        .set_state(&TaskState::pending("n1", "t"))
        .await
        .unwrap();
    for _ in 0..2 {
        assert_eq!(
            a.backend()
                .group_member_completed("g2", 2, true)
                .await
                .unwrap(),
            GroupProgress::Incomplete,
            "n1 is not complete"
        );
    }
    b.backend()
        .set_state(&TaskState::success("n1", vec![]))
        .await
        .unwrap();
    assert!(matches!(
        b.backend()
            .group_member_completed("g2", 2, true)
            .await
            .unwrap(),
        GroupProgress::CompleteWith(_)
    ));
    // init_group again: counted from zero.
    a.backend().init_group("g2", &two).await.unwrap();
    assert_eq!(
        a.backend()
            .group_member_completed("g2", 2, true)
            .await
            .unwrap(),
        GroupProgress::Incomplete
    );
    remove_db(&db);
}

/// Chords run by workers on two stores of one file (two processes), with the backend counting
/// member completions: members finishing together fire each callback exactly once, with
/// every result.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chord_fires_once_with_counted_completions_across_stores() {
    use machinist_core::{Chord, Group};
    use machinist_testkit::tasks::{self, Probes};
    let db = temp_db("chord_workers");
    let probes = Probes::new();
    let stores: Vec<SqliteStore> = (0..2)
        .map(|_| SqliteStore::open(&location(&db), SqliteOptions::default()).unwrap())
        .collect();
    let servers: Vec<Server> = stores
        .iter()
        .map(|store| {
            let server = Server::new(
                config(Some("chord_workers")),
                Arc::new(store.broker()),
                Arc::new(store.backend()),
                Arc::new(store.lock()),
            );
            probes.register(&server);
            machinist_testkit::tasks::register_all(&server);
            server
        })
        .collect();
    let workers: Vec<_> = servers
        .iter()
        .map(|s| s.new_worker("chords", 16).launch_async())
        .collect();
    let mut callbacks = Vec::new();
    for round in 0..2 {
        let release = Utc::now().timestamp_millis() + 300;
        let members = (0..40)
            .map(|_| Signature::new(tasks::JITTER_ONE).args(release))
            .collect();
        let chord = Chord::new(Group::new(members), Signature::new(tasks::COUNT_CHORD));
        callbacks.push(chord.callback.uuid.clone());
        let mut r = servers[round % 2].send_chord(chord, 0).await.unwrap();
        let total: i64 = r.callback.results(Duration::from_secs(20)).await.unwrap();
        assert_eq!(
            total, 40,
            "round {round}: every result reaches the callback"
        );
    }
    // A second firing would have queued its callback before these.
    let mut barrier = servers[0]
        .send_group(
            Group::new(
                (0..16)
                    .map(|_| Signature::new("add").args((1i64, 1i64)))
                    .collect(),
            ),
            0,
        )
        .await
        .unwrap();
    for m in &mut barrier {
        let _: i64 = m.results(Duration::from_secs(20)).await.unwrap();
    }
    let calls = probes.chord_calls();
    for uuid in &callbacks {
        assert_eq!(
            calls.get(uuid),
            Some(&1),
            "callback {uuid} runs exactly once"
        );
    }
    for w in workers {
        w.quit().await.unwrap();
    }
    remove_db(&db);
}

/// `wait_for_change` wakes at once for a write in this process, within the poll interval for
/// another store's write, and does not miss a write made just before the wait.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_for_change_wakes_fast() {
    let db = temp_db("wait");
    let a = SqliteStore::open(&location(&db), SqliteOptions::default()).unwrap();
    let b = SqliteStore::open(&location(&db), SqliteOptions::default()).unwrap();
    let backend = a.backend();
    assert!(backend.get_state("t").await.unwrap().is_none());
    // Written between the read and the wait: the wait returns at once.
    backend
        .set_state(&TaskState::pending("t", "x"))
        .await
        .unwrap();
    let start = Instant::now();
    backend.wait_for_change("t", Duration::from_secs(5)).await;
    assert!(
        start.elapsed() < Duration::from_millis(100),
        "{:?}",
        start.elapsed()
    );

    for (who, writer) in [("same store", a.backend()), ("other store", b.backend())] {
        assert!(backend.get_state("t").await.unwrap().is_some());
        let w = writer.clone();
        let write = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(100)).await;
            w.set_state(&TaskState::started("t")).await.unwrap();
            Instant::now()
        });
        backend.wait_for_change("t", Duration::from_secs(5)).await;
        let woke = Instant::now();
        let written = write.await.unwrap();
        let late = woke.saturating_duration_since(written);
        assert!(
            late < Duration::from_millis(100),
            "{who}: woke {late:?} after the write"
        );
    }
    remove_db(&db);
}

/// Expired rows are deleted by the writer thread, a bounded batch at a time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_rows_are_swept_in_bounded_batches() {
    let db = temp_db("sweep");
    let store = SqliteStore::open(&location(&db), SqliteOptions::default()).unwrap();
    let conn = rusqlite::Connection::open(&db).unwrap();
    conn.execute_batch(
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 1200)
         INSERT INTO states (uuid, body, expires_at) SELECT 'old' || i, '{}', 1 FROM n;
         INSERT INTO locks (key, expires_at) VALUES ('stale', 1);",
    )
    .unwrap();
    store
        .backend()
        .set_state(&TaskState::pending("live", "x"))
        .await
        .unwrap();
    assert!(
        store.backend().get_state("old1").await.unwrap().is_none(),
        "expired: invisible"
    );
    let started = Instant::now();
    loop {
        let left: i64 = conn
            .query_row(
                "SELECT count(*) FROM states WHERE uuid LIKE 'old%'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        if left == 0 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "{left} expired rows left"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let locks: i64 = conn
        .query_row("SELECT count(*) FROM locks", [], |r| r.get(0))
        .unwrap();
    assert_eq!(locks, 0);
    assert!(store.backend().get_state("live").await.unwrap().is_some());
    drop(store);
    remove_db(&db);
}

const IDLE_DB_ENV: &str = "MACHINIST_SQLITE_IDLE_DB";
const IDLE_OUT_ENV: &str = "MACHINIST_SQLITE_IDLE_OUT";

/// This process's CPU time (user + system) in clock ticks, from `/proc/self/stat`.
fn cpu_ticks() -> u64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
    let after = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = after.split(' ').collect();
    // Fields 14 and 15 of the line (utime, stime) are 11 and 12 after the command name.
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

/// An idle worker process: measures its own CPU use over 2 s with nothing to do and writes it.
#[test]
#[ignore = "a process of behaviour::idle_worker_uses_no_cpu; does nothing on its own"]
fn idle_worker_process() {
    let (Ok(db), Ok(out)) = (std::env::var(IDLE_DB_ENV), std::env::var(IDLE_OUT_ENV)) else {
        return;
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async move {
        let store = SqliteStore::open(&db, SqliteOptions::default()).unwrap();
        let server = Server::new(
            config(None),
            Arc::new(store.broker()),
            Arc::new(store.backend()),
            Arc::new(store.lock()),
        );
        machinist_testkit::tasks::register_all(&server);
        let worker = server.new_worker("idle", 8).launch_async();
        tokio::time::sleep(Duration::from_millis(500)).await;
        let before = cpu_ticks();
        tokio::time::sleep(Duration::from_secs(2)).await;
        let used = cpu_ticks() - before;
        // The worker still works after idling.
        let mut r = server
            .send_task(Signature::new("add").args((1i64, 2i64)))
            .await
            .unwrap();
        let sum: i64 = r.results(Duration::from_secs(5)).await.unwrap();
        std::fs::write(&out, format!("{used} {sum}")).unwrap();
        worker.quit().await.unwrap();
    });
}

/// An idle worker (poll interval 20 ms) uses next to no CPU: measured in a process of its own.
#[test]
#[cfg(target_os = "linux")]
fn idle_worker_uses_no_cpu() {
    let db = temp_db("idle");
    let out = db.with_extension("out");
    let status = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "behaviour::idle_worker_process",
            "--nocapture",
            "--ignored",
        ])
        .env(IDLE_DB_ENV, &db)
        .env(IDLE_OUT_ENV, &out)
        .stdout(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    let report = std::fs::read_to_string(&out).unwrap();
    let (ticks, sum) = report.split_once(' ').unwrap();
    let ticks: u64 = ticks.parse().unwrap();
    assert_eq!(sum, "3");
    // Clock ticks are 10 ms: 2 s idle must cost under 5% of a core.
    println!("idle worker: {ticks} clock ticks of CPU over 2 s");
    assert!(
        ticks <= 10,
        "an idle worker used {ticks} ticks (10 ms each) in 2 s"
    );
    let _ = std::fs::remove_file(&out);
    remove_db(&db);
}
