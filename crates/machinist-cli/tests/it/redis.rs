//! `send`, `worker`, `status`, `inspect` and `purge` on a Redis the test starts, named by
//! `--broker redis://127.0.0.1:PORT/0` (and `--result-backend`, `--lock`).

use machinist_testkit::redis_server::RedisServer;

use crate::util::{Db, text};

#[test]
fn send_worker_status_on_redis() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let db = Db::with_flags(redis.url_db(0));
    assert!(db.url().starts_with("redis://127.0.0.1:"), "{}", db.url());

    let uuid = db.send(&["add", "int64:1", "int64:2"]).remove(0);
    let pending = db.status(&uuid).expect("PENDING stored by send");
    assert_eq!(pending["State"], "PENDING");
    let listed = db.ok(&["inspect", "pending", "--json"]);
    assert!(listed.contains(&uuid), "{listed}");
    // Go's keys: the queue is a list named after it, the state a string named after the task.
    assert!(
        redis
            .command(&["LLEN", "machinery_tasks"])
            .is_some_and(|r| r.starts_with(":1")),
        "one message in Go's queue list"
    );

    // A worker, results, `--wait` to a success and a failure, and a delayed task (through
    // Go's delayed_tasks sorted set).
    let mut worker = db.worker_runs_the_basics(&uuid);

    let out = db.run(&[
        "send",
        "return_multiple_values",
        "string:foo",
        "string:bar",
        "bool:false",
        "--wait",
        "--count",
        "5",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout).lines().count(), 5);

    assert_eq!(worker.stop().code(), Some(0), "{}", worker.log());
    let log = worker.log();
    assert!(log.contains("task succeeded: add(1, 2) = 3"), "{log}");
    assert!(log.contains("broker=redis://127.0.0.1:"), "{log}");
}

#[test]
fn inspect_and_purge_on_redis() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let db = Db::with_flags(redis.url_db(2));
    let sent = db.send(&["add", "int64:1", "--count", "3"]);
    let delayed = db.send(&["add", "int64:2", "--delay", "1h"]);
    let lines = db.ok(&["inspect", "pending"]);
    assert_eq!(lines.lines().count(), 3, "{lines}");
    for uuid in &sent {
        assert!(lines.contains(uuid.as_str()), "{lines}");
    }
    let json = db.ok(&["inspect", "delayed", "--json"]);
    assert!(json.contains(&delayed[0]), "{json}");
    assert_eq!(
        db.ok(&["purge"]),
        "purged 3 message(s) from machinery_tasks\n"
    );
    assert_eq!(db.ok(&["inspect", "pending"]), "");
}
