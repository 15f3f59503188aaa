//! [`SqliteBackend`]: task states and group metas in the `states` and `groups` tables.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use machinist_core::backend::Backend;
use machinist_core::{Error, GroupMeta, GroupProgress, Result, State, TaskState};
use rusqlite::{OptionalExtension, params};
use tracing::warn;

use crate::error::SqliteError;
use crate::store::{StoreInner, Wake, value_bytes};

/// The result [`Backend`] of a [`SqliteStore`](crate::SqliteStore).
///
/// * Values are Go's JSON (`TaskState`, `GroupMeta`), stored as text.
/// * `set_state` carries `TaskName` and `CreatedAt` over from the stored state for every state
///   but PENDING ([`TaskState::merge_from`]), reading and writing in the same transaction.
/// * Every write sets the row's expiry to now + `results_expire_in`; expired rows are invisible
///   at once and deleted by the writer thread in bounded sweeps.
/// * `trigger_chord` is one conditional `UPDATE … WHERE chord_triggered = 0` in a write
///   transaction: `true` for exactly one caller per group, across processes.
/// * `group_member_completed` adds one to the group's `done` column (`UPDATE … RETURNING`, in
///   the writer's transaction: atomic across processes) and reads the members' states only
///   once it reaches the group's size: a chord of n members reads n states once, not n times.
/// * `group_states` reads the group and its members in one read transaction (a consistent
///   snapshot) and returns them in group order; a missing group or member is
///   [`Error::StateNotFound`] naming it.
/// * `wait_for_change(uuid)` returns at once when this process writes `uuid` (also if the write
///   landed between the caller's last `get_state` and the wait); when another process writes
///   anything, within the poll interval but at most every 100 ms (each waiter reads its state
///   when woken, and there may be many); otherwise after the timeout.
#[derive(Clone)]
pub struct SqliteBackend {
    store: Arc<StoreInner>,
}

impl std::fmt::Debug for SqliteBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteBackend")
            .field("location", &self.store.describe())
            .finish()
    }
}

fn backend_err(e: SqliteError) -> Error {
    Error::backend(e)
}

/// JSON bytes as text for a TEXT column.
fn json_text(bytes: Vec<u8>) -> std::result::Result<String, SqliteError> {
    String::from_utf8(bytes)
        .map_err(|e| SqliteError::Internal(format!("encoded JSON is not UTF-8: {e}")))
}

impl SqliteBackend {
    pub(crate) fn new(store: Arc<StoreInner>) -> Self {
        SqliteBackend { store }
    }

    /// How long states and group metas live after their last write.
    pub fn results_expire_in(&self) -> Duration {
        Duration::from_millis(u64::try_from(self.store.options.expire_ms()).unwrap_or(0))
    }
}

#[async_trait]
impl Backend for SqliteBackend {
    async fn set_state(&self, state: &TaskState) -> Result<()> {
        let expire = self.store.options.expire_ms();
        let mut state = state.clone();
        let needs_merge = state.state != State::Pending
            && (state.task_name.is_empty() || state.created_at.is_none());
        // Encode here when nothing is merged, so that the writer thread only runs SQL.
        let encoded = if needs_merge {
            None
        } else {
            Some(json_text(state.to_vec()?).map_err(backend_err)?)
        };
        self.store
            .write_one(move |conn, now, wakes| {
                let body = match encoded {
                    Some(body) => body,
                    None => {
                        let previous: Option<Vec<u8>> = conn
                            .prepare_cached(
                                "SELECT body FROM states WHERE uuid = ?1 AND expires_at > ?2",
                            )?
                            .query_row(params![state.task_uuid, now], |r| {
                                Ok(value_bytes(r.get_ref(0)?))
                            })
                            .optional()?;
                        if let Some(previous) = previous {
                            match TaskState::from_slice(&previous) {
                                Ok(previous) => state.merge_from(&previous),
                                Err(e) => warn!(
                                    uuid = %state.task_uuid,
                                    "sqlite: stored state undecodable, not merged: {e}"
                                ),
                            }
                        }
                        let bytes = state.to_vec().map_err(|e| {
                            SqliteError::Internal(format!("cannot encode the state: {e}"))
                        })?;
                        json_text(bytes)?
                    }
                };
                conn.prepare_cached(
                    "INSERT INTO states (uuid, body, expires_at) VALUES (?1, ?2, ?3) \
                     ON CONFLICT (uuid) DO UPDATE \
                     SET body = excluded.body, expires_at = excluded.expires_at",
                )?
                .execute(params![
                    state.task_uuid,
                    body,
                    now.saturating_add(expire)
                ])?;
                wakes.push(Wake::State(state.task_uuid));
                Ok(())
            })
            .await
            .map_err(backend_err)
    }

    async fn get_state(&self, task_uuid: &str) -> Result<Option<TaskState>> {
        let read_seq = self.store.shared.watch().seq;
        let uuid = task_uuid.to_owned();
        let body = self
            .store
            .read(move |conn, now| {
                Ok(conn
                    .prepare_cached("SELECT body FROM states WHERE uuid = ?1 AND expires_at > ?2")?
                    .query_row(params![uuid, now], |r| Ok(value_bytes(r.get_ref(0)?)))
                    .optional()?)
            })
            .await
            .map_err(backend_err)?;
        let state = body.map(|b| TaskState::from_slice(&b)).transpose()?;
        if !state.as_ref().is_some_and(TaskState::is_completed) {
            // The caller may wait for a change next: remember what it has seen.
            let mut watch = self.store.shared.watch();
            let key = watch.key(task_uuid, read_seq);
            key.read_seq = key.read_seq.max(read_seq);
        }
        Ok(state)
    }

    async fn init_group(&self, group_uuid: &str, task_uuids: &[String]) -> Result<()> {
        let expire = self.store.options.expire_ms();
        let body = json_text(GroupMeta::new(group_uuid, task_uuids.to_vec()).to_vec()?)
            .map_err(backend_err)?;
        let uuid = group_uuid.to_owned();
        self.store
            .write_one(move |conn, now, _| {
                conn.prepare_cached(
                    "INSERT INTO groups (uuid, body, chord_triggered, expires_at, done) \
                     VALUES (?1, ?2, 0, ?3, 0) \
                     ON CONFLICT (uuid) DO UPDATE SET body = excluded.body, \
                     chord_triggered = 0, expires_at = excluded.expires_at, done = 0",
                )?
                .execute(params![uuid, body, now.saturating_add(expire)])?;
                Ok(())
            })
            .await
            .map_err(backend_err)
    }

    async fn get_group(&self, group_uuid: &str) -> Result<Option<GroupMeta>> {
        let uuid = group_uuid.to_owned();
        let row = self
            .store
            .read(move |conn, now| {
                Ok(conn
                    .prepare_cached(
                        "SELECT body, chord_triggered FROM groups \
                         WHERE uuid = ?1 AND expires_at > ?2",
                    )?
                    .query_row(params![uuid, now], |r| {
                        Ok((value_bytes(r.get_ref(0)?), r.get::<_, i64>(1)? != 0))
                    })
                    .optional()?)
            })
            .await
            .map_err(backend_err)?;
        row.map(|(body, triggered)| {
            let mut meta = GroupMeta::from_slice(&body)?;
            meta.chord_triggered |= triggered;
            Ok(meta)
        })
        .transpose()
    }

    async fn group_states(&self, group_uuid: &str, _count: usize) -> Result<Vec<TaskState>> {
        let uuid = group_uuid.to_owned();
        let found = self
            .store
            .read(move |conn, now| {
                // One read transaction: the group and its members from one snapshot (on the
                // writer of an in-memory store, the batch transaction already is one).
                let tx = if conn.is_autocommit() {
                    Some(conn.unchecked_transaction()?)
                } else {
                    None
                };
                let body: Option<Vec<u8>> = conn
                    .prepare_cached("SELECT body FROM groups WHERE uuid = ?1 AND expires_at > ?2")?
                    .query_row(params![uuid, now], |r| Ok(value_bytes(r.get_ref(0)?)))
                    .optional()?;
                let Some(body) = body else {
                    return Ok(Err(Missing::Group));
                };
                let meta = match GroupMeta::from_slice(&body) {
                    Ok(meta) => meta,
                    Err(e) => return Ok(Err(Missing::Undecodable(e.to_string()))),
                };
                let mut stmt = conn.prepare_cached(
                    "SELECT body FROM states WHERE uuid = ?1 AND expires_at > ?2",
                )?;
                let mut states = Vec::with_capacity(meta.task_uuids.len());
                for member in meta.task_uuids {
                    let state: Option<Vec<u8>> = stmt
                        .query_row(params![member, now], |r| Ok(value_bytes(r.get_ref(0)?)))
                        .optional()?;
                    match state {
                        Some(s) => states.push(s),
                        None => return Ok(Err(Missing::Member(member))),
                    }
                }
                drop(stmt);
                if let Some(tx) = tx {
                    tx.commit()?;
                }
                Ok(Ok(states))
            })
            .await
            .map_err(backend_err)?;
        match found {
            Ok(states) => states.iter().map(|s| TaskState::from_slice(s)).collect(),
            Err(Missing::Group) => Err(Error::StateNotFound(group_uuid.to_owned())),
            Err(Missing::Member(uuid)) => Err(Error::StateNotFound(uuid)),
            Err(Missing::Undecodable(e)) => Err(Error::Other(format!(
                "group {group_uuid}: stored metadata undecodable: {e}"
            ))),
        }
    }

    async fn group_member_completed(
        &self,
        group_uuid: &str,
        count: usize,
        _succeeded: bool,
    ) -> Result<GroupProgress> {
        let uuid = group_uuid.to_owned();
        let done: Option<i64> = self
            .store
            .write_one(move |conn, now, _| {
                Ok(conn
                    .prepare_cached(
                        "UPDATE groups SET done = done + 1 \
                         WHERE uuid = ?1 AND expires_at > ?2 RETURNING done",
                    )?
                    .query_row(params![uuid, now], |r| r.get(0))
                    .optional()?)
            })
            .await
            .map_err(backend_err)?;
        let Some(done) = done else {
            return Err(Error::StateNotFound(group_uuid.to_owned()));
        };
        if usize::try_from(done).unwrap_or(0) < count {
            return Ok(GroupProgress::Incomplete);
        }
        let states = self.group_states(group_uuid, count).await?;
        Ok(
            if states.len() >= count && states.iter().all(TaskState::is_completed) {
                GroupProgress::CompleteWith(states)
            } else {
                GroupProgress::Incomplete
            },
        )
    }

    async fn trigger_chord(&self, group_uuid: &str) -> Result<bool> {
        let expire = self.store.options.expire_ms();
        let uuid = group_uuid.to_owned();
        let won = self
            .store
            .write(move |conn, now, _| {
                let changed = conn
                    .prepare_cached(
                        "UPDATE groups SET chord_triggered = 1, expires_at = ?3 \
                         WHERE uuid = ?1 AND chord_triggered = 0 AND expires_at > ?2",
                    )?
                    .execute(params![uuid, now, now.saturating_add(expire)])?;
                if changed == 1 {
                    // Keep the JSON's ChordTriggered in step with the column.
                    let body: Vec<u8> = conn
                        .prepare_cached("SELECT body FROM groups WHERE uuid = ?1")?
                        .query_row([&uuid], |r| Ok(value_bytes(r.get_ref(0)?)))?;
                    match GroupMeta::from_slice(&body) {
                        Ok(mut meta) => {
                            meta.chord_triggered = true;
                            if let Ok(bytes) = meta.to_vec() {
                                conn.prepare_cached("UPDATE groups SET body = ?2 WHERE uuid = ?1")?
                                    .execute(params![uuid, json_text(bytes)?])?;
                            }
                        }
                        Err(e) => warn!(group = %uuid, "sqlite: group meta undecodable: {e}"),
                    }
                    return Ok(Some(true));
                }
                let exists = conn
                    .prepare_cached("SELECT 1 FROM groups WHERE uuid = ?1 AND expires_at > ?2")?
                    .query_row(params![uuid, now], |_| Ok(()))
                    .optional()?
                    .is_some();
                Ok(exists.then_some(false))
            })
            .await
            .map_err(backend_err)?;
        won.ok_or_else(|| Error::StateNotFound(group_uuid.to_owned()))
    }

    async fn purge_state(&self, task_uuid: &str) -> Result<()> {
        let uuid = task_uuid.to_owned();
        self.store
            .write_one(move |conn, _, wakes| {
                if conn
                    .prepare_cached("DELETE FROM states WHERE uuid = ?1")?
                    .execute([&uuid])?
                    > 0
                {
                    wakes.push(Wake::State(uuid));
                }
                Ok(())
            })
            .await
            .map_err(backend_err)
    }

    async fn purge_group(&self, group_uuid: &str) -> Result<()> {
        let uuid = group_uuid.to_owned();
        self.store
            .write_one(move |conn, _, _| {
                conn.prepare_cached("DELETE FROM groups WHERE uuid = ?1")?
                    .execute([&uuid])?;
                Ok(())
            })
            .await
            .map_err(backend_err)
    }

    async fn wait_for_change(&self, task_uuid: &str, timeout: Duration) {
        let shared = &self.store.shared;
        let (_guard, key_wait, external_wait) = {
            let mut watch = shared.watch();
            let seq = watch.seq;
            let key = watch.key(task_uuid, seq);
            if key.write_seq > key.read_seq {
                // Written since the caller last looked.
                key.read_seq = key.write_seq;
                if key.waiters == 0 {
                    watch.keys.remove(task_uuid);
                }
                return;
            }
            key.waiters += 1;
            // Created under the lock: a wake-up from any later write reaches them.
            let key_wait = Arc::clone(&key.notify).notified_owned();
            let external_wait = Arc::clone(&shared.external_states).notified_owned();
            let guard = WaitGuard {
                store: &self.store,
                uuid: task_uuid,
            };
            (guard, key_wait, external_wait)
        };
        tokio::select! {
            () = key_wait => {}
            () = external_wait => {}
            () = tokio::time::sleep(timeout) => {}
        }
    }

    fn describe(&self) -> String {
        self.store.describe()
    }
}

/// Why `group_states` found no complete answer.
enum Missing {
    Group,
    Member(String),
    Undecodable(String),
}

/// Unregisters a `wait_for_change` waiter (also when the wait is cancelled) and marks the
/// key's last write as seen.
struct WaitGuard<'a> {
    store: &'a StoreInner,
    uuid: &'a str,
}

impl Drop for WaitGuard<'_> {
    fn drop(&mut self) {
        let mut watch = self.store.shared.watch();
        if let Some(key) = watch.keys.get_mut(self.uuid) {
            key.waiters = key.waiters.saturating_sub(1);
            key.read_seq = key.write_seq;
            if key.waiters == 0 {
                watch.keys.remove(self.uuid);
            }
        }
    }
}
