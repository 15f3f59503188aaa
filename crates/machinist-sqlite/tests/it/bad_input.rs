//! Bad input: corrupt rows, a database locked by another connection, a full disk.

use std::sync::Arc;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use machinist_core::{Backend, Broker, Error, Server, Signature, TaskState};
use machinist_sqlite::{SqliteError, SqliteOptions, SqliteStore};

use crate::common::{config, location, remove_db, temp_db};

fn sig(queue: &str, n: i64) -> (Signature, Bytes) {
    let sig = Signature::new("add").args((n, n)).routing_key(queue);
    let body = Bytes::from(sig.to_vec().unwrap());
    (sig, body)
}

fn sqlite_error(e: &Error) -> &SqliteError {
    match e {
        Error::Broker(source) | Error::Backend(source) | Error::Lock(source) => source
            .downcast_ref::<SqliteError>()
            .unwrap_or_else(|| panic!("not an SqliteError: {e}")),
        other => panic!("not an adapter error: {other}"),
    }
}

/// Rows written by hand with a body that is not a message (bytes, text, a number) are
/// dead-lettered with a reason; the worker keeps running tasks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupt_rows_are_dead_lettered() {
    let db = temp_db("corrupt");
    let store = SqliteStore::open(&location(&db), SqliteOptions::default()).unwrap();
    let server = Server::new(
        config(Some("bad_tasks")),
        Arc::new(store.broker()),
        Arc::new(store.backend()),
        Arc::new(store.lock()),
    );
    machinist_testkit::tasks::register_all(&server);
    let worker = server.new_worker("bad", 2).launch_async();

    // Another connection (as another process would) inserts garbage while the worker idles.
    let conn = rusqlite::Connection::open(&db).unwrap();
    conn.execute_batch(
        "INSERT INTO messages (queue, body, visible_at, enqueued_at) VALUES
            ('bad_tasks', x'00fffe', 0, 0),
            ('bad_tasks', '{\"not\": \"a signature\"', 0, 0),
            ('bad_tasks', 42, 0, 0);",
    )
    .unwrap();
    let broker = store.broker();
    let started = Instant::now();
    let dead = loop {
        let dead = broker.dead_letters("bad_tasks", 10).await.unwrap();
        if dead.len() == 3 {
            break dead;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "dead letters: {dead:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let bodies: Vec<&[u8]> = dead.iter().map(|(_, b)| &b[..]).collect();
    assert!(bodies.contains(&&b"\x00\xff\xfe"[..]), "{bodies:?}");
    assert!(bodies.contains(&&b"42"[..]), "{bodies:?}");
    for (reason, _) in &dead {
        assert!(reason.contains("undecodable"), "reason: {reason}");
    }
    let mut r = server
        .send_task(Signature::new("add").args((2i64, 3i64)))
        .await
        .unwrap();
    let v: i64 = r.results(Duration::from_secs(10)).await.unwrap();
    assert_eq!(v, 5, "the worker survived");
    assert!(broker.pending("bad_tasks", 10).await.unwrap().is_empty());

    // A corrupt stored state is a clear decoding error, not a panic.
    conn.execute(
        "INSERT INTO states (uuid, body, expires_at) VALUES ('bad_state', '{oops', 9e15)",
        [],
    )
    .unwrap();
    assert!(matches!(
        store.backend().get_state("bad_state").await,
        Err(Error::Serialization(_))
    ));
    worker.quit().await.unwrap();
    remove_db(&db);
}

/// Holds `BEGIN EXCLUSIVE` on another connection for `hold`; returns once it is held.
fn hold_write_lock(db: &std::path::Path, hold: Duration) -> std::thread::JoinHandle<()> {
    let db = db.to_owned();
    let (held, is_held) = mpsc::channel();
    let handle = std::thread::spawn(move || {
        let conn = rusqlite::Connection::open(&db).unwrap();
        conn.execute_batch("BEGIN EXCLUSIVE").unwrap();
        held.send(()).unwrap();
        std::thread::sleep(hold);
        conn.execute_batch("COMMIT").unwrap();
    });
    is_held.recv().unwrap();
    handle
}

/// Another connection holds the write lock for 2 s: a write waits for it (busy timeout 5 s)
/// and succeeds; reads go on meanwhile (WAL).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn locked_database_waits_then_succeeds() {
    let db = temp_db("locked_wait");
    let store = SqliteStore::open(&location(&db), SqliteOptions::default()).unwrap();
    let broker = store.broker();
    let (s1, b1) = sig("q", 1);
    broker.publish(&s1, b1.clone()).await.unwrap();

    let holder = hold_write_lock(&db, Duration::from_secs(2));
    let started = Instant::now();
    assert_eq!(
        broker.pending("q", 10).await.unwrap(),
        std::slice::from_ref(&b1),
        "reads are not blocked by a writer"
    );
    assert!(started.elapsed() < Duration::from_millis(500));
    let (s2, b2) = sig("q", 2);
    broker.publish(&s2, b2.clone()).await.unwrap();
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(1500),
        "waited only {waited:?}"
    );
    holder.join().unwrap();
    assert_eq!(broker.pending("q", 10).await.unwrap(), [b1, b2]);
    remove_db(&db);
}

/// With a busy timeout shorter than the hold, writes fail with a clear "locked" error; what was
/// acknowledged before is intact, what failed is not stored, and the store works afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn locked_database_short_timeout_is_a_clear_error() {
    let db = temp_db("locked_fail");
    let options = SqliteOptions::default().with_busy_timeout(Duration::from_millis(200));
    let store = SqliteStore::open(&location(&db), options).unwrap();
    let broker = store.broker();
    let backend = store.backend();
    let (s1, b1) = sig("q", 1);
    broker.publish(&s1, b1.clone()).await.unwrap();
    backend
        .set_state(&TaskState::pending("t1", "add"))
        .await
        .unwrap();

    let holder = hold_write_lock(&db, Duration::from_secs(2));
    let (s2, b2) = sig("q", 2);
    let err = broker.publish(&s2, b2).await.unwrap_err();
    assert!(sqlite_error(&err).is_locked(), "{err}");
    let text = err.to_string();
    assert!(
        text.contains("database is locked (another process holds a write lock)"),
        "{text}"
    );
    let err = backend
        .set_state(&TaskState::started("t1"))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Backend(_)), "{err}");
    assert!(sqlite_error(&err).is_locked());
    // Reads still work, and show only what was acknowledged.
    assert_eq!(
        broker.pending("q", 10).await.unwrap(),
        std::slice::from_ref(&b1)
    );
    let state = backend.get_state("t1").await.unwrap().unwrap();
    assert_eq!(state.state, machinist_core::State::Pending);
    holder.join().unwrap();

    let (s3, b3) = sig("q", 3);
    broker.publish(&s3, b3.clone()).await.unwrap();
    assert_eq!(broker.pending("q", 10).await.unwrap(), [b1, b3]);
    remove_db(&db);
}

/// A database capped by `max_page_count` fills up: publishing fails with a clear "full" error,
/// every message acknowledged before is intact, and deleting makes room again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_disk_is_a_clear_error_and_loses_nothing() {
    let db = temp_db("full");
    let options = SqliteOptions::default().with_max_page_count(Some(40));
    let store = SqliteStore::open(&location(&db), options).unwrap();
    let broker = store.broker();
    let mut stored = Vec::new();
    let err = loop {
        let payload = "x".repeat(1024);
        let sig = Signature::new("record")
            .args(payload)
            .with_uuid(format!("task_{}", stored.len()))
            .routing_key("q");
        let body = Bytes::from(sig.to_vec().unwrap());
        match broker.publish(&sig, body.clone()).await {
            Ok(()) => stored.push(body),
            Err(e) => break e,
        }
        assert!(stored.len() < 10_000, "the size cap was not enforced");
    };
    assert!(sqlite_error(&err).is_full(), "{err}");
    assert!(
        err.to_string().contains("database or disk is full"),
        "{err}"
    );
    assert!(!stored.is_empty());
    let pending = broker.pending("q", 100_000).await.unwrap();
    assert_eq!(
        pending, stored,
        "everything acknowledged is intact, in order"
    );

    // The backend reports the same error; then deleting makes room again.
    let big = TaskState::failure("t", "e".repeat(8192));
    let err = store.backend().set_state(&big).await.unwrap_err();
    assert!(sqlite_error(&err).is_full(), "{err}");
    assert_eq!(broker.purge("q").await.unwrap(), stored.len() as u64);
    let (s, b) = sig("q", 7);
    broker.publish(&s, b.clone()).await.unwrap();
    assert_eq!(broker.pending("q", 10).await.unwrap(), [b]);
    remove_db(&db);
}
