//! The database schema, its version, and the forward migrations.
//!
//! A machinist database is recognised by `PRAGMA application_id` = [`APPLICATION_ID`]; its
//! schema version is `PRAGMA user_version`. Opening a file:
//!
//! 1. reads both (and counts the schema objects) **before writing anything**;
//! 2. refuses a file with another application id, or with id 0 and tables in it
//!    ([`SqliteError::NotMachinist`]), a file whose version is newer than
//!    [`SCHEMA_VERSION`] ([`SqliteError::NewerSchema`]) and a file that is not SQLite
//!    ([`SqliteError::NotADatabase`]) — none of them is touched;
//! 3. otherwise switches to WAL and, in one `BEGIN IMMEDIATE` transaction (so two processes
//!    opening a new file at once do not both migrate), re-checks, applies the missing
//!    [`MIGRATIONS`] in order and sets `application_id` and `user_version`.

use std::path::Path;

use rusqlite::Connection;

use crate::error::{SqlResult, SqliteError};

/// `PRAGMA application_id` of a machinist database: `"MCHN"` in ASCII.
pub const APPLICATION_ID: i32 = 0x4D43_484E;

/// The schema version this code writes (`PRAGMA user_version`): the number of migrations.
pub const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

/// The forward migrations; migration `i` (0-based) takes a database from version `i` to
/// `i + 1`. Never edit one that was released: append a new one.
pub const MIGRATIONS: &[&str] = &[
    // 1: the tables and the dequeue index.
    "
    CREATE TABLE messages (
        id           INTEGER PRIMARY KEY,
        queue        TEXT    NOT NULL,
        body         BLOB    NOT NULL,
        visible_at   INTEGER NOT NULL,
        enqueued_at  INTEGER NOT NULL,
        lease_token  INTEGER,
        redeliveries INTEGER NOT NULL DEFAULT 0,
        dead_reason  TEXT
    );
    CREATE INDEX messages_ready ON messages (queue, visible_at, id) WHERE dead_reason IS NULL;
    CREATE TABLE states (
        uuid       TEXT    PRIMARY KEY,
        body       TEXT    NOT NULL,
        expires_at INTEGER NOT NULL
    );
    CREATE TABLE groups (
        uuid            TEXT    PRIMARY KEY,
        body            TEXT    NOT NULL,
        chord_triggered INTEGER NOT NULL DEFAULT 0,
        expires_at      INTEGER NOT NULL
    );
    CREATE TABLE locks (
        key        TEXT    PRIMARY KEY,
        expires_at INTEGER NOT NULL
    );
    ",
    // 2: indexes for the background expiry sweep and dead-letter inspection.
    "
    CREATE INDEX states_expiry ON states (expires_at);
    CREATE INDEX groups_expiry ON groups (expires_at);
    CREATE INDEX locks_expiry ON locks (expires_at);
    CREATE INDEX messages_dead ON messages (queue, id) WHERE dead_reason IS NOT NULL;
    ",
    // 3: a per-group count of completed members, so that a chord reads its members' states
    // once, when the count reaches the group's size (`Backend::group_member_completed`).
    // Groups already in the file start from the members they have completed, so a chord in
    // flight across the upgrade still fires.
    "
    ALTER TABLE groups ADD COLUMN done INTEGER NOT NULL DEFAULT 0;
    UPDATE groups SET done = (
        SELECT count(*) FROM json_each(groups.body, '$.TaskUUIDs') AS member
        JOIN states ON states.uuid = member.value
        WHERE json_extract(states.body, '$.State') IN ('SUCCESS', 'FAILURE')
    ) WHERE json_valid(body);
    ",
];

/// What a file holds before we touch it.
#[derive(Debug, Clone, Copy)]
struct Header {
    application_id: i32,
    version: i64,
    objects: i64,
}

fn read_header(conn: &Connection) -> rusqlite::Result<Header> {
    // One statement, so one snapshot: another process migrating a fresh file between three
    // separate reads would show its tables without its application id.
    conn.query_row(
        "SELECT (SELECT application_id FROM pragma_application_id()), \
                (SELECT user_version FROM pragma_user_version()), \
                (SELECT count(*) FROM sqlite_master)",
        [],
        |r| {
            Ok(Header {
                application_id: r.get(0)?,
                version: r.get(1)?,
                objects: r.get(2)?,
            })
        },
    )
}

/// Refuses files that are not (and cannot become) a machinist database of a known version.
fn check(path: &Path, header: Header) -> SqlResult<()> {
    let fresh = header.application_id == 0 && header.objects == 0 && header.version == 0;
    if header.application_id != APPLICATION_ID && !fresh {
        return Err(SqliteError::NotMachinist {
            path: path.to_owned(),
            application_id: header.application_id,
            tables: header.objects,
        });
    }
    if header.version > SCHEMA_VERSION {
        return Err(SqliteError::NewerSchema {
            path: path.to_owned(),
            found: header.version,
            supported: SCHEMA_VERSION,
        });
    }
    Ok(())
}

/// Checks the file before anything is written to it.
pub(crate) fn precheck(conn: &Connection, path: &Path) -> SqlResult<()> {
    let header = read_header(conn).map_err(|e| SqliteError::on_open(path, &e))?;
    check(path, header)
}

/// Brings the database to `target` (≤ [`SCHEMA_VERSION`]) in one write transaction,
/// re-checking the header inside it. Returns the version found before.
pub(crate) fn migrate(conn: &Connection, path: &Path, target: i64) -> SqlResult<i64> {
    let target = target.min(SCHEMA_VERSION);
    let header = read_header(conn).map_err(|e| SqliteError::on_open(path, &e))?;
    check(path, header)?;
    if header.application_id == APPLICATION_ID && header.version >= target {
        // Nothing to do: no write lock needed (opening works while another process writes).
        return Ok(header.version);
    }
    conn.execute_batch("BEGIN IMMEDIATE")
        .map_err(|e| SqliteError::on_open(path, &e))?;
    let result = (|| {
        let header = read_header(conn)?;
        check(path, header)?;
        for (i, sql) in MIGRATIONS
            .iter()
            .enumerate()
            .skip(usize::try_from(header.version).unwrap_or(0))
            .take(usize::try_from(target - header.version).unwrap_or(0))
        {
            conn.execute_batch(sql).map_err(|e| SqliteError::Sqlite {
                code: e.sqlite_error_code(),
                message: format!("migration to schema version {} failed: {e}", i + 1),
            })?;
        }
        if header.application_id != APPLICATION_ID {
            conn.pragma_update(None, "application_id", APPLICATION_ID)?;
        }
        if target > header.version {
            conn.pragma_update(None, "user_version", target)?;
        }
        Ok(header.version)
    })();
    match result {
        Ok(found) => {
            conn.execute_batch("COMMIT")?;
            Ok(found)
        }
        Err(e) => {
            let _ = conn.execute_batch("ROLLBACK");
            Err(e)
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn migrates_step_by_step_from_zero() {
        let conn = Connection::open_in_memory().unwrap();
        let p = Path::new(":memory:");
        precheck(&conn, p).unwrap();
        assert_eq!(migrate(&conn, p, 1).unwrap(), 0);
        let h = read_header(&conn).unwrap();
        assert_eq!((h.application_id, h.version), (APPLICATION_ID, 1));
        assert_eq!(migrate(&conn, p, SCHEMA_VERSION).unwrap(), 1);
        assert_eq!(read_header(&conn).unwrap().version, SCHEMA_VERSION);
        assert_eq!(
            migrate(&conn, p, SCHEMA_VERSION).unwrap(),
            SCHEMA_VERSION,
            "idempotent"
        );
    }

    #[test]
    fn refuses_foreign_and_newer() {
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch("CREATE TABLE t(x)").unwrap();
        let p = Path::new(":memory:");
        assert!(matches!(
            precheck(&conn, p),
            Err(SqliteError::NotMachinist {
                application_id: 0,
                tables: 1,
                ..
            })
        ));
        let conn = Connection::open_in_memory().unwrap();
        conn.pragma_update(None, "application_id", APPLICATION_ID)
            .unwrap();
        conn.pragma_update(None, "user_version", SCHEMA_VERSION + 1)
            .unwrap();
        assert!(matches!(
            precheck(&conn, p),
            Err(SqliteError::NewerSchema { .. })
        ));
        assert!(matches!(
            migrate(&conn, p, SCHEMA_VERSION),
            Err(SqliteError::NewerSchema { .. })
        ));
    }
}
