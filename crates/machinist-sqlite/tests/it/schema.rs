//! Opening files: fresh, reopened, older schema, not machinist, not SQLite, newer schema.

use std::path::Path;

use bytes::Bytes;
use machinist_core::{Backend, Broker, GroupMeta, GroupProgress, Signature, TaskState};
use machinist_sqlite::schema::{APPLICATION_ID, MIGRATIONS, SCHEMA_VERSION};
use machinist_sqlite::{SqliteError, SqliteOptions, SqliteStore};
use rusqlite::Connection;

use crate::common::{location, remove_db, temp_db};

fn header(db: &Path) -> (i32, i64, String) {
    let conn = Connection::open(db).unwrap();
    let app: i32 = conn
        .query_row("PRAGMA application_id", [], |r| r.get(0))
        .unwrap();
    let version: i64 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap();
    let mode: String = conn
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .unwrap();
    (app, version, mode)
}

fn objects(db: &Path) -> Vec<String> {
    let conn = Connection::open(db).unwrap();
    let mut stmt = conn
        .prepare("SELECT name FROM sqlite_master WHERE name NOT LIKE 'sqlite_%' ORDER BY name")
        .unwrap();
    stmt.query_map([], |r| r.get(0))
        .unwrap()
        .collect::<rusqlite::Result<_>>()
        .unwrap()
}

fn open(db: &Path) -> Result<SqliteStore, SqliteError> {
    SqliteStore::open(&location(db), SqliteOptions::default())
}

#[tokio::test]
async fn fresh_file_gets_schema_and_reopens_with_data() {
    let db = temp_db("fresh");
    let store = open(&db).unwrap();
    assert_eq!(store.path(), Some(db.as_path()));
    assert_eq!(store.describe(), format!("sqlite://{}", db.display()));
    assert_eq!(
        header(&db),
        (APPLICATION_ID, SCHEMA_VERSION, "wal".to_owned())
    );
    let names = objects(&db);
    for table in [
        "messages",
        "states",
        "groups",
        "locks",
        "messages_ready",
        "states_expiry",
    ] {
        assert!(
            names.iter().any(|n| n == table),
            "{table} missing from {names:?}"
        );
    }
    let sig = Signature::new("add").routing_key("q");
    let body = Bytes::from(sig.to_vec().unwrap());
    store.broker().publish(&sig, body.clone()).await.unwrap();
    store
        .backend()
        .set_state(&TaskState::pending("t", "add"))
        .await
        .unwrap();
    drop(store);

    let store = open(&db).unwrap();
    assert_eq!(store.broker().pending("q", 10).await.unwrap(), [body]);
    let state = store.backend().get_state("t").await.unwrap().unwrap();
    assert_eq!(state.task_name, "add");
    // Two stores on one file at once (two processes would do the same).
    let second = open(&db).unwrap();
    assert!(second.backend().get_state("t").await.unwrap().is_some());
    remove_db(&db);
}

#[tokio::test]
async fn older_schema_is_migrated_keeping_data() {
    let db = temp_db("old");
    {
        // What a machinist with only the first migration would have written.
        let conn = Connection::open(&db).unwrap();
        conn.execute_batch(MIGRATIONS[0]).unwrap();
        conn.pragma_update(None, "application_id", APPLICATION_ID)
            .unwrap();
        conn.pragma_update(None, "user_version", 1).unwrap();
        let sig = Signature::new("add").routing_key("q");
        conn.execute(
            "INSERT INTO messages (queue, body, visible_at, enqueued_at) VALUES ('q', ?1, 0, 0)",
            [sig.to_vec().unwrap()],
        )
        .unwrap();
        let state = String::from_utf8(TaskState::pending("t", "add").to_vec().unwrap()).unwrap();
        conn.execute(
            "INSERT INTO states (uuid, body, expires_at) VALUES ('t', ?1, 9000000000000)",
            [state],
        )
        .unwrap();
    }
    assert!(!objects(&db).iter().any(|n| n == "states_expiry"));
    let store = open(&db).unwrap();
    assert_eq!(header(&db).1, SCHEMA_VERSION);
    assert!(objects(&db).iter().any(|n| n == "states_expiry"));
    assert_eq!(store.broker().pending("q", 10).await.unwrap().len(), 1);
    assert_eq!(
        store
            .backend()
            .get_state("t")
            .await
            .unwrap()
            .unwrap()
            .task_name,
        "add"
    );
    remove_db(&db);
}

#[tokio::test]
async fn a_group_in_flight_across_the_counter_migration_still_completes() {
    let db = temp_db("groups-v2");
    {
        // Version 2 (no `done` column): a group of two, one member already succeeded.
        let conn = Connection::open(&db).unwrap();
        conn.execute_batch(MIGRATIONS[0]).unwrap();
        conn.execute_batch(MIGRATIONS[1]).unwrap();
        conn.pragma_update(None, "application_id", APPLICATION_ID)
            .unwrap();
        conn.pragma_update(None, "user_version", 2).unwrap();
        let meta = GroupMeta::new("g", vec!["a".to_owned(), "b".to_owned()]);
        conn.execute(
            "INSERT INTO groups (uuid, body, chord_triggered, expires_at) \
             VALUES ('g', ?1, 0, 9000000000000)",
            [String::from_utf8(meta.to_vec().unwrap()).unwrap()],
        )
        .unwrap();
        for (uuid, state) in [
            ("a", TaskState::success("a", Vec::new())),
            ("b", TaskState::pending("b", "add")),
        ] {
            conn.execute(
                "INSERT INTO states (uuid, body, expires_at) VALUES (?1, ?2, 9000000000000)",
                [
                    uuid.to_owned(),
                    String::from_utf8(state.to_vec().unwrap()).unwrap(),
                ],
            )
            .unwrap();
        }
    }
    let store = open(&db).unwrap();
    assert_eq!(header(&db).1, SCHEMA_VERSION);
    let backend = store.backend();
    backend
        .set_state(&TaskState::success("b", Vec::new()))
        .await
        .unwrap();
    // The member finished before the upgrade is counted: the second completion completes it.
    match backend.group_member_completed("g", 2, true).await.unwrap() {
        GroupProgress::CompleteWith(states) => assert_eq!(states.len(), 2),
        other => panic!("expected the group complete, got {other:?}"),
    }
    remove_db(&db);
}

/// Opening `db` fails as `check` says, and leaves the file byte for byte as it was.
fn refused(db: &Path, check: impl Fn(&SqliteError) -> bool) {
    let before = std::fs::read(db).unwrap();
    let err = open(db).unwrap_err();
    assert!(check(&err), "unexpected error: {err}");
    assert!(err.to_string().contains(&db.display().to_string()), "{err}");
    assert_eq!(std::fs::read(db).unwrap(), before, "the file was modified");
    assert!(
        !Path::new(&format!("{}-wal", db.display())).exists(),
        "a WAL file was created"
    );
}

#[test]
fn other_applications_files_are_refused_untouched() {
    let db = temp_db("foreign");
    {
        let conn = Connection::open(&db).unwrap();
        conn.execute_batch("CREATE TABLE people (name TEXT); INSERT INTO people VALUES ('ada');")
            .unwrap();
        conn.pragma_update(None, "application_id", 42).unwrap();
    }
    refused(&db, |e| {
        matches!(
            e,
            SqliteError::NotMachinist {
                application_id: 42,
                ..
            }
        ) && e.to_string().contains("not a machinist database")
    });
    remove_db(&db);

    // No application id, but tables: also someone else's.
    let db = temp_db("foreign0");
    Connection::open(&db)
        .unwrap()
        .execute_batch("CREATE TABLE t (x)")
        .unwrap();
    refused(&db, |e| {
        matches!(
            e,
            SqliteError::NotMachinist {
                application_id: 0,
                ..
            }
        )
    });
    remove_db(&db);
}

#[test]
fn newer_schema_is_refused_untouched() {
    let db = temp_db("newer");
    {
        let conn = Connection::open(&db).unwrap();
        conn.execute_batch("CREATE TABLE future_thing (x)").unwrap();
        conn.pragma_update(None, "application_id", APPLICATION_ID)
            .unwrap();
        conn.pragma_update(None, "user_version", SCHEMA_VERSION + 1)
            .unwrap();
    }
    refused(&db, |e| {
        matches!(e, SqliteError::NewerSchema { found, .. } if *found == SCHEMA_VERSION + 1)
            && e.to_string().contains("upgrade machinist")
    });
    remove_db(&db);
}

#[test]
fn non_sqlite_files_are_refused_untouched() {
    let db = temp_db("random");
    let mut x: u64 = 0x2545_F491_4F6C_DD1D;
    let bytes: Vec<u8> = (0..8192)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect();
    std::fs::write(&db, &bytes).unwrap();
    refused(&db, |e| {
        matches!(e, SqliteError::NotADatabase { .. })
            && e.to_string().contains("not an SQLite database")
    });
    std::fs::write(&db, b"hello, I am a text file that happens to be here\n").unwrap();
    refused(&db, |e| matches!(e, SqliteError::NotADatabase { .. }));
    remove_db(&db);
}

#[test]
fn bad_locations_are_clear_errors() {
    assert!(matches!(
        SqliteStore::open("redis://localhost", SqliteOptions::default()),
        Err(SqliteError::InvalidUrl { .. })
    ));
    let missing = std::env::temp_dir().join("machinist-no-such-dir/x/y.db");
    let err = SqliteStore::open(&location(&missing), SqliteOptions::default()).unwrap_err();
    assert!(matches!(err, SqliteError::CannotOpen { .. }), "{err}");
    let core: machinist_core::Error = err.into();
    assert!(core.to_string().contains("cannot open"), "{core}");
}

#[tokio::test]
async fn memory_stores_are_private() {
    let a = SqliteStore::open("sqlite::memory:", SqliteOptions::default()).unwrap();
    let b = SqliteStore::open("sqlite::memory:", SqliteOptions::default()).unwrap();
    assert_eq!(a.path(), None);
    assert_eq!(a.describe(), "sqlite::memory:");
    a.backend()
        .set_state(&TaskState::pending("t", "x"))
        .await
        .unwrap();
    assert!(a.backend().get_state("t").await.unwrap().is_some());
    assert!(b.backend().get_state("t").await.unwrap().is_none());
}

/// Several processes opening one brand-new file at the same moment: every one of them gets a
/// working store (one migrates, the others see the finished schema), none calls the file foreign.
#[test]
fn concurrent_first_opens_all_succeed() {
    for round in 0..20 {
        let db = temp_db(&format!("race_{round}"));
        let barrier = std::sync::Arc::new(std::sync::Barrier::new(6));
        let openers: Vec<_> = (0..6)
            .map(|_| {
                let (db, barrier) = (db.clone(), barrier.clone());
                std::thread::spawn(move || {
                    barrier.wait();
                    open(&db).map(|_| ())
                })
            })
            .collect();
        for o in openers {
            let opened = o.join().expect("opener thread");
            assert!(opened.is_ok(), "round {round}: {opened:?}");
        }
        remove_db(&db);
    }
}
