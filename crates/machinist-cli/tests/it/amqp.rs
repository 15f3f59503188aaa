//! `send`, `worker`, `status`, `inspect` and `purge` on RabbitMQ (`AMQP_URL`, default the
//! local guest account; skipped when nothing answers there), named by `--broker amqp://…`, with
//! results on SQLite or on RabbitMQ. Each test has its own queue on the default exchange
//! (a config file), and every queue it makes deletes itself a minute after its last use.

use std::path::PathBuf;

use crate::util::{Db, TempFile, machinist, temp_path, text};

/// The RabbitMQ the tests use, or `None` (the test is skipped, saying so).
fn rabbit() -> Option<String> {
    machinist_testkit::rabbitmq::reachable()
}

/// Where results go.
#[derive(Clone, Copy)]
enum Results {
    /// A private SQLite file (also the lock).
    Sqlite,
    /// RabbitMQ itself, Go's AMQP result backend (lock `memory`: AMQP has none).
    Amqp,
}

/// One test's setup: the commands' URLs and config file, and the queue's name.
struct Rabbit {
    db: Db,
    queue: String,
    _config: TempFile,
}

fn setup(tag: &str, results: Results) -> Option<Rabbit> {
    let url = rabbit()?;
    let queue = temp_path(&format!("amqp-{tag}"), "q")
        .file_name()
        .and_then(|n| n.to_str())
        .map(|n| n.replace(['.', '-'], "_"))
        .expect("a name");
    let config = TempFile::new(
        "amqp",
        "yml",
        &format!(
            "default_queue: {queue}\nresults_expire_in: 60\namqp:\n  exchange: \"\"\n  \
             binding_key: {queue}\n  queue_declare_args:\n    x-expires: 60000\n"
        ),
    );
    let db = match results {
        Results::Sqlite => {
            let file: PathBuf = temp_path(&format!("amqp-{tag}"), "db");
            let sqlite = format!("sqlite://{}", file.display());
            Db::with_roles(url, sqlite.clone(), sqlite, config.0.clone(), Some(file))
        }
        Results::Amqp => Db::with_roles(
            url.clone(),
            url,
            "memory".to_owned(),
            config.0.clone(),
            None,
        ),
    };
    Some(Rabbit {
        db,
        queue,
        _config: config,
    })
}

/// send → PENDING, inspect, a worker, SUCCESS, `--wait` results, a failure, a delayed task.
fn round_trip(tag: &str, results: Results) {
    let Some(rabbit) = setup(tag, results) else {
        return;
    };
    let (db, queue) = (&rabbit.db, &rabbit.queue);
    let uuid = db.send(&["add", "int64:1", "int64:2"]).remove(0);
    let pending = db.status(&uuid).expect("PENDING stored by send");
    assert_eq!(pending["State"], "PENDING");
    let listed = db.ok(&["inspect", "pending", "--json"]);
    assert!(listed.contains(&uuid), "{listed}");
    // Inspection puts the message back: it is still there for the worker.
    assert_eq!(db.ok(&["inspect", "pending"]).lines().count(), 1);

    // A worker, results, `--wait` to a success and a failure, and a delayed task (through
    // Go's `delay.<ms>.<exchange>.<routing key>` queue).
    let mut worker = db.worker_runs_the_basics(&uuid);

    let out = db.run(&[
        "send", "add", "int64:2", "int64:2", "--wait", "--count", "5",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout).lines().count(), 5);

    assert_eq!(worker.stop().code(), Some(0), "{}", worker.log());
    let log = worker.log();
    assert!(log.contains("task succeeded: add(1, 2) = 3"), "{log}");
    assert!(log.contains("broker=amqp://"), "{log}");
    assert!(!log.contains("guest:guest"), "{log}");
    assert_eq!(db.ok(&["inspect", "pending", "--queue", queue]), "");
}

#[test]
fn send_worker_status_on_amqp_with_sqlite_results() {
    round_trip("sqlite-results", Results::Sqlite);
}

#[test]
fn send_worker_status_on_amqp_with_amqp_results() {
    round_trip("amqp-results", Results::Amqp);
}

#[test]
fn inspect_and_purge_on_amqp() {
    let Some(rabbit) = setup("purge", Results::Sqlite) else {
        return;
    };
    let (db, queue) = (&rabbit.db, &rabbit.queue);
    let sent = db.send(&["add", "int64:1", "--count", "3"]);
    let lines = db.ok(&["inspect", "pending"]);
    assert_eq!(lines.lines().count(), 3, "{lines}");
    for uuid in &sent {
        assert!(lines.contains(uuid.as_str()), "{lines}");
    }
    let json = db.ok(&["inspect", "pending", "--json"]);
    for uuid in &sent {
        assert!(json.contains(uuid.as_str()), "{json}");
    }
    assert_eq!(
        db.ok(&["purge"]),
        format!("purged 3 message(s) from {queue}\n")
    );
    assert_eq!(db.ok(&["inspect", "pending"]), "");
    // The states stay where results go.
    assert_eq!(db.status(&sent[0]).expect("stored")["State"], "PENDING");
}

#[test]
fn an_amqp_lock_is_refused_by_name() {
    // No RabbitMQ needed: the URLs are checked before anything connects.
    let out = machinist(
        &[
            "send",
            "add",
            "--broker",
            "amqp://guest:hunter2@127.0.0.1:5672/",
            "--result-backend",
            "memory",
            "--lock",
            "amqp://guest:hunter2@127.0.0.1:5672/",
        ],
        b"",
    );
    assert_ne!(out.status.code(), Some(0));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("AMQP cannot be the lock (it can be: broker, result backend)"),
        "{stderr}"
    );
    assert!(!stderr.contains("hunter2"), "{stderr}");
}
