//! [`RedisBackend`]: task states and group metadata under Go Machinery's keys and JSON.
//!
//! * A state lives under its bare task UUID (`task_…`, `chord_…`), a group's metadata under its
//!   bare group UUID (`group_…`): the keys Go reads and writes.
//! * Every write is `SET … EX results_expire_in`. PENDING replaces what is stored (as Go);
//!   every other state carries `TaskName` and `CreatedAt` over from the stored state.
//! * The worker's writes ([`Backend::set_task_state`], [`Backend::set_task_states`]) come with a
//!   [`StateContext`]: `TaskName` is the signature's, and `CreatedAt` the message's own (a
//!   machinist producer stamps it with its PENDING's, `Signature::created_at`) or, for a Go
//!   producer's message, read once per task — by the broker's fetch script when broker and
//!   backend share a connection (the worker puts it in the context from
//!   `Delivery::stored_state`), else one `GET` before the first write (RECEIVED) — decoded and
//!   merged as Go's `mergeNewTaskState` does (GET, then SET), and kept in the context, so
//!   every state (RECEIVED, STARTED, SUCCESS, FAILURE, RETRY) is a plain `SET … EX` with no
//!   read of its own and no script; the carried-over fields are written as the JSON is
//!   encoded (`TaskState::to_vec_carrying`), without copying the state.
//!   RECEIVED and STARTED go out together, as two `SET`s in one request (a reader can still
//!   see each); a final state's `SET` and its `PUBLISH` (below) go together too.
//! * Those requests (the merge `GET`, the `SET`s, a PENDING's `SET`) are not sent one by one:
//!   they join the connection's write queue (`batch.rs`), which sends what all concurrent
//!   callers queued as one pipeline per round, and answers each caller with its own
//!   outcome (a failed write is still that caller's error).
//! * A bare [`Backend::set_state`] (no context) goes through the
//!   [`SET_STATE`](crate::scripts::SET_STATE) script, which carries `TaskName` and `CreatedAt`
//!   over from the stored state atomically. The client sends the new JSON with an empty
//!   `TaskName` and Go's zero `CreatedAt` plus the byte positions of those two values; the
//!   script splices the stored values in there, so the bytes stay Go's (key order, escaping)
//!   and nothing is re-encoded.
//! * `group_states` reads the members with one `MGET` (standalone) or one `GET` per member
//!   sent concurrently (cluster: the members live in different slots).
//! * `trigger_chord` is exactly-once and honours Go's redsync mutex: see
//!   [`RedisBackend::trigger_chord`](machinist_core::Backend::trigger_chord) below.
//! * `wait_for_change` is woken by the announcement a final state's write publishes (`notify.rs`).

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use machinist_core::{Backend, Error, GroupMeta, Result, State, StateContext, TaskState};
use redis::AsyncCommands;
use tokio::time::Instant;

use crate::batch::command;
use crate::conn::{Conn, RedisConnection, jitter, random_u64};
use crate::error::RedisError;
use crate::notify::Notices;
use crate::options::RedisOptions;
use crate::scripts;

/// The key of Go's global chord-trigger mutex (redsync).
pub const TRIGGER_CHORD_MUTEX: &str = "TriggerChordMutex";

/// How long `trigger_chord` keeps retrying while a Go worker holds the mutex (redsync's own
/// expiry is 8 s).
const TRIGGER_PATIENCE: Duration = Duration::from_secs(20);

/// A result [`Backend`] on Redis, sharing keys and JSON with Go Machinery's Redis backend.
///
/// * `set_task_state` / `set_task_states` (the worker's and the server's writes):
///   `SET <uuid> <json> EX <results_expire_in>` per state; `TaskName`/`CreatedAt` carried over
///   from the stored state, read once per task: by the broker's fetch when it shares this
///   connection, else one `GET` (Go does GET then SET for every state). Each call's commands are
///   sent in one request, coalesced with other tasks' requests (one pipeline per round).
/// * `set_state` (no context): the same `SET`, with `TaskName`/`CreatedAt` carried over from the
///   stored state in one script. A key holding another Redis type is
///   [`RedisError::WrongType`], naming it.
/// * `get_state` / `get_group`: `GET` and Go's lenient decoding; absent key → `None`.
/// * `init_group`: `SET <group uuid> <GroupMeta> EX <results_expire_in>`.
/// * `group_states` / `group_completed`: the group's `TaskUUIDs` read with `MGET`; a missing
///   member (expired, deleted) is [`Error::StateNotFound`] naming it.
/// * `trigger_chord`: true exactly once per group, also against Go workers (see the method).
/// * `purge_state` / `purge_group`: `DEL`.
/// * `wait_for_change`: woken by a pub/sub announcement of each SUCCESS or FAILURE write
///   (published with the write on `<key_prefix>:state:<uuid>`), so a result is seen
///   as soon as it is stored; a wait never sleeps longer than
///   [`RedisOptions::state_poll`] (1 s), which is how states written by Go workers (who
///   announce nothing) are seen — at once too when the server has keyspace notifications on.
///   In a cluster, or with [`RedisOptions::notify_states`] off, it sleeps the caller's poll.
#[derive(Clone)]
pub struct RedisBackend {
    conn: RedisConnection,
    ttl_secs: u64,
    /// `ttl_secs` as a command argument.
    ttl_arg: String,
    /// Announcements and their subscriptions (`None`: cluster, or turned off).
    notices: Option<Arc<Notices>>,
}

impl std::fmt::Debug for RedisBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisBackend")
            .field("target", &self.conn.options().describe())
            .field("ttl_secs", &self.ttl_secs)
            .finish()
    }
}

impl RedisBackend {
    /// Connects with `options` (expiry from `options.results_expire_in`).
    pub async fn connect(options: RedisOptions) -> std::result::Result<Self, RedisError> {
        Ok(Self::new(RedisConnection::connect(options).await?))
    }

    /// A backend on an existing connection.
    pub fn new(conn: RedisConnection) -> Self {
        let expire = conn.options().results_expire_in;
        let ttl_secs = if expire.is_zero() {
            3600
        } else {
            expire.as_secs().max(1)
        };
        let notices = (conn.options().notify_states && !conn.options().is_cluster())
            .then(|| Notices::new(conn.clone()));
        RedisBackend {
            conn,
            ttl_secs,
            ttl_arg: ttl_secs.to_string(),
            notices,
        }
    }

    fn c(&self) -> Conn {
        self.conn.conn()
    }

    fn cluster(&self) -> bool {
        self.conn.options().is_cluster()
    }

    /// Raw values of `keys` (missing or non-string keys are `None`).
    async fn get_many(
        &self,
        keys: &[String],
    ) -> std::result::Result<Vec<Option<Vec<u8>>>, RedisError> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        if self.cluster() {
            let gets = keys.iter().map(|k| {
                let mut c = self.c();
                async move {
                    c.get::<_, Option<Vec<u8>>>(k)
                        .await
                        .map_err(|e| RedisError::redis("reading group members", k, e))
                }
            });
            return futures_util::future::try_join_all(gets).await;
        }
        let mut c = self.c();
        redis::cmd("MGET")
            .arg(keys)
            .query_async(&mut c)
            .await
            .map_err(|e| RedisError::redis("reading group members", "", e))
    }

    /// `trigger_chord` for a cluster: `TriggerChordMutex` lives in another slot than the group,
    /// so take it as redsync does (`SET NX PX 8000` with a random token), flip the flag, and
    /// release it with compare-and-delete.
    async fn trigger_in_cluster(
        &self,
        group: &str,
    ) -> std::result::Result<Option<String>, RedisError> {
        let token = format!("{:016x}{:016x}", random_u64(), random_u64());
        let mut c = self.c();
        let taken: Option<String> = redis::cmd("SET")
            .arg(TRIGGER_CHORD_MUTEX)
            .arg(&token)
            .arg("NX")
            .arg("PX")
            .arg(8000)
            .query_async(&mut c)
            .await
            .map_err(|e| RedisError::redis("taking TriggerChordMutex", TRIGGER_CHORD_MUTEX, e))?;
        if taken.is_none() {
            return Ok(None);
        }
        let outcome: std::result::Result<String, RedisError> = scripts::TRIGGER_CHORD
            .key(group)
            .invoke_async(&mut c)
            .await
            .map_err(|e| RedisError::redis("triggering the chord", group, e));
        let released: std::result::Result<i64, _> = scripts::RELEASE_MUTEX
            .key(TRIGGER_CHORD_MUTEX)
            .arg(&token)
            .invoke_async(&mut c)
            .await;
        if let Err(e) = released {
            tracing::warn!("could not release TriggerChordMutex (it expires in 8 s): {e}");
        }
        outcome.map(Some)
    }
}

impl RedisBackend {
    /// True when this backend writes through `conn` (the same socket and write queue).
    pub(crate) fn shares(&self, conn: &RedisConnection) -> bool {
        self.conn.same_as(conn)
    }

    /// The `SET` that stores a task's PENDING, exactly as [`Backend::set_task_state`] would send
    /// it, with `ctx` learning its `TaskName` and `CreatedAt`: for a broker that sends it in
    /// one request with the task's message.
    pub(crate) fn pending_command(
        &self,
        ctx: &mut StateContext,
        state: &TaskState,
    ) -> Result<redis::Cmd> {
        learn_from_pending(ctx, state);
        Ok(self.set_command(&state.task_uuid, &state.to_vec()?))
    }

    /// `SET <key> <json> EX <results_expire_in>`: how every state is stored.
    fn set_command(&self, key: &str, json: &[u8]) -> redis::Cmd {
        command(&[b"SET", key.as_bytes(), json, b"EX", self.ttl_arg.as_bytes()])
    }

    /// The announcement channel of a state (`None`: none). Only final states are announced
    /// (what result waiters wait for): one `PUBLISH` per task; RECEIVED, STARTED and RETRY are
    /// seen by the poll.
    fn channel_of(&self, state: &TaskState) -> Option<String> {
        match &self.notices {
            Some(n) if state.is_completed() => Some(n.channel(&state.task_uuid)),
            _ => None,
        }
    }

    /// The stored state, for a merge: `None` when there is none or it is not a task state (then
    /// the new one is written as it is, as Go does and as the script does with a value that is
    /// not a JSON object). A key of another type is [`RedisError::WrongType`]. The `GET` is
    /// coalesced with other tasks' writes (`batch.rs`).
    async fn stored_for_merge(&self, key: &str) -> Result<Option<TaskState>> {
        let raw = self
            .conn
            .batched([command(&[b"GET", key.as_bytes()])])
            .await
            .map_err(|e| {
                backend_err(RedisError::redis(
                    "reading the stored state to merge",
                    key,
                    e,
                ))
            })?;
        Ok(match raw {
            redis::Value::BulkString(bytes) => TaskState::from_slice(&bytes).ok(),
            _ => None,
        })
    }

    /// Stores `states` of one task in order with plain `SET … EX` (and `PUBLISH` for final
    /// states), in one request coalesced with other tasks' writes (`batch.rs`).
    ///
    /// `TaskName`/`CreatedAt` are carried over as Go does (from the stored state, nothing when
    /// none is stored), but read at most once per task: the first write without them `GET`s
    /// the stored state and records both in `ctx` (as a PENDING written with this context
    /// does); later writes take them from `ctx`. `ctx.created_at` set means "learned".
    async fn write_states(&self, ctx: &mut StateContext, states: &[TaskState]) -> Result<()> {
        let Some(first) = states.first() else {
            return Ok(());
        };
        let key = first.task_uuid.as_str();
        // Each state's JSON and announcement channel, encoded before the request is queued.
        // Each state's `SET` (and `PUBLISH`), built before the request is queued.
        let mut cmds = Vec::with_capacity(states.len() * 2);
        let mut looked = false;
        let mut partial: Option<TaskState> = None;
        for state in states {
            let json = if state.state == State::Pending {
                learn_from_pending(ctx, state);
                state.to_vec()?
            } else if !state.task_name.is_empty() && state.created_at.is_some() {
                state.to_vec()?
            } else {
                if ctx.created_at.is_none() && !looked {
                    looked = true;
                    match self.stored_for_merge(key).await? {
                        Some(stored) if stored.created_at.is_some() => {
                            ctx.task_name = stored.task_name;
                            ctx.created_at = stored.created_at;
                        }
                        // Go's zero time stored (or nothing): carry over what there is, and
                        // look again on the next write.
                        other => partial = other,
                    }
                }
                match (&partial, ctx.created_at) {
                    (_, Some(created_at)) => {
                        state.to_vec_carrying(&ctx.task_name, Some(created_at))?
                    }
                    (Some(stored), None) => {
                        state.to_vec_carrying(&stored.task_name, stored.created_at)?
                    }
                    // Nothing stored: written as it is, as Go does.
                    (None, None) => state.to_vec()?,
                }
            };
            cmds.push(self.set_command(&state.task_uuid, &json));
            if let Some(channel) = self.channel_of(state) {
                cmds.push(command(&[
                    b"PUBLISH",
                    channel.as_bytes(),
                    state.state.as_str().as_bytes(),
                ]));
            }
        }
        self.conn.batched(cmds).await.map(drop).map_err(|e| {
            let names: Vec<&str> = states.iter().map(|s| s.state.as_str()).collect();
            backend_err(RedisError::redis(
                format!("storing state {}", names.join(", ")),
                key,
                e,
            ))
        })
    }
}

/// A PENDING with its `CreatedAt` replaces what is stored: later states of the task carry its
/// `TaskName` and `CreatedAt`, which `ctx` now knows.
fn learn_from_pending(ctx: &mut StateContext, pending: &TaskState) {
    if pending.created_at.is_some() {
        ctx.task_name.clone_from(&pending.task_name);
        ctx.created_at = pending.created_at;
    }
}

fn backend_err(e: RedisError) -> Error {
    e.into_backend()
}

#[async_trait]
impl Backend for RedisBackend {
    async fn set_state(&self, state: &TaskState) -> Result<()> {
        let json = state.to_vec()?;
        let key = state.task_uuid.as_str();
        if state.state == State::Pending {
            return self
                .conn
                .batched([self.set_command(key, &json)])
                .await
                .map(drop)
                .map_err(|e| backend_err(RedisError::redis("storing PENDING", key, e)));
        }
        let mut c = self.c();
        // 1-based positions of the values the script may replace (0 = keep).
        let name_at = if state.task_name.is_empty() {
            top_level_value_offset(&json, "TaskName").map_or(0, |p| p + 1)
        } else {
            0
        };
        let created_at = if state.created_at.is_none() {
            top_level_value_offset(&json, "CreatedAt").map_or(0, |p| p + 1)
        } else {
            0
        };
        let channel = self.channel_of(state).unwrap_or_default();
        scripts::SET_STATE
            .key(key)
            .arg(json)
            .arg(self.ttl_secs)
            .arg(name_at)
            .arg(created_at)
            .arg(channel)
            .arg(state.state.as_str())
            .invoke_async::<i64>(&mut c)
            .await
            .map(drop)
            .map_err(|e| {
                backend_err(RedisError::redis(
                    format!("storing state {}", state.state),
                    key,
                    e,
                ))
            })
    }

    /// With the context: `TaskName` from the signature, `CreatedAt` read once per task and kept
    /// (see the module docs); plain `SET`s, no script.
    async fn set_task_state(&self, ctx: &mut StateContext, state: &TaskState) -> Result<()> {
        self.write_states(ctx, std::slice::from_ref(state)).await
    }

    /// RECEIVED and STARTED (or any consecutive states of one task): at most one `GET`, then
    /// one `SET` each, sent together in one request.
    async fn set_task_states(&self, ctx: &mut StateContext, states: &[TaskState]) -> Result<()> {
        if states.iter().any(|s| s.task_uuid != states[0].task_uuid) {
            for s in states {
                self.write_states(ctx, std::slice::from_ref(s)).await?;
            }
            return Ok(());
        }
        self.write_states(ctx, states).await
    }

    async fn get_state(&self, task_uuid: &str) -> Result<Option<TaskState>> {
        let mut c = self.c();
        let raw: Option<Vec<u8>> = c
            .get(task_uuid)
            .await
            .map_err(|e| backend_err(RedisError::redis("reading a state", task_uuid, e)))?;
        match raw {
            None => Ok(None),
            Some(bytes) => TaskState::from_slice(&bytes).map(Some).map_err(|e| {
                backend_err(RedisError::corrupt(
                    format!("reading the state of {task_uuid}"),
                    format!("not a task state: {e}"),
                ))
            }),
        }
    }

    async fn init_group(&self, group_uuid: &str, task_uuids: &[String]) -> Result<()> {
        let json = GroupMeta::new(group_uuid, task_uuids.to_vec()).to_vec()?;
        let mut c = self.c();
        c.set_ex::<_, _, ()>(group_uuid, json, self.ttl_secs)
            .await
            .map_err(|e| backend_err(RedisError::redis("storing group metadata", group_uuid, e)))
    }

    async fn get_group(&self, group_uuid: &str) -> Result<Option<GroupMeta>> {
        let mut c = self.c();
        let raw: Option<Vec<u8>> = c
            .get(group_uuid)
            .await
            .map_err(|e| backend_err(RedisError::redis("reading group metadata", group_uuid, e)))?;
        match raw {
            None => Ok(None),
            Some(bytes) => GroupMeta::from_slice(&bytes).map(Some).map_err(|e| {
                backend_err(RedisError::corrupt(
                    format!("reading the metadata of {group_uuid}"),
                    format!("not group metadata: {e}"),
                ))
            }),
        }
    }

    async fn group_completed(&self, group_uuid: &str, count: usize) -> Result<bool> {
        let states = self.group_states(group_uuid, count).await?;
        Ok(states.len() >= count && states.iter().all(TaskState::is_completed))
    }

    async fn group_states(&self, group_uuid: &str, _count: usize) -> Result<Vec<TaskState>> {
        let meta = self
            .get_group(group_uuid)
            .await?
            .ok_or_else(|| Error::StateNotFound(group_uuid.to_owned()))?;
        let raw = self.get_many(&meta.task_uuids).await.map_err(backend_err)?;
        meta.task_uuids
            .iter()
            .zip(raw)
            .map(|(uuid, value)| {
                let bytes = value.ok_or_else(|| Error::StateNotFound(uuid.clone()))?;
                TaskState::from_slice(&bytes).map_err(|e| {
                    backend_err(RedisError::corrupt(
                        format!("reading the state of {uuid} (member of {group_uuid})"),
                        format!("not a task state: {e}"),
                    ))
                })
            })
            .collect()
    }

    /// True exactly once per group, however many machinist and Go workers race.
    ///
    /// Standalone: one script checks Go's `TriggerChordMutex` (held by a Go worker inside its
    /// redsync-guarded trigger → "busy", retried after 50–250 ms, as redsync retries), then
    /// reads the meta, answers false if `"ChordTriggered":true`, else rewrites that one value to
    /// `true` keeping the key's expiry. Go's critical section (read meta, write
    /// `ChordTriggered`, under the mutex) cannot interleave with the script, and the script never
    /// runs while Go holds the mutex. Cluster: the mutex is taken as redsync does around the
    /// same script (the mutex and the meta live in different slots).
    async fn trigger_chord(&self, group_uuid: &str) -> Result<bool> {
        let give_up = Instant::now() + TRIGGER_PATIENCE;
        loop {
            let outcome = if self.cluster() {
                self.trigger_in_cluster(group_uuid)
                    .await
                    .map_err(backend_err)?
            } else {
                let mut c = self.c();
                let status: String = scripts::TRIGGER_CHORD
                    .key(group_uuid)
                    .key(TRIGGER_CHORD_MUTEX)
                    .invoke_async(&mut c)
                    .await
                    .map_err(|e| {
                        backend_err(RedisError::redis("triggering the chord", group_uuid, e))
                    })?;
                Some(status)
            };
            match outcome.as_deref() {
                Some("won") => return Ok(true),
                Some("already") => return Ok(false),
                Some("missing") => return Err(Error::StateNotFound(group_uuid.to_owned())),
                Some("corrupt") => {
                    return Err(backend_err(RedisError::corrupt(
                        format!("triggering the chord of {group_uuid}"),
                        "the stored group metadata is not a JSON object",
                    )));
                }
                // "busy", or the mutex taken by someone else (cluster).
                _ => {
                    if Instant::now() >= give_up {
                        return Err(backend_err(RedisError::corrupt(
                            format!("triggering the chord of {group_uuid}"),
                            format!("{TRIGGER_CHORD_MUTEX} stayed taken for {TRIGGER_PATIENCE:?}"),
                        )));
                    }
                    tokio::time::sleep(jitter(Duration::from_millis(150), 1)).await;
                }
            }
        }
    }

    async fn purge_state(&self, task_uuid: &str) -> Result<()> {
        let mut c = self.c();
        c.del::<_, ()>(task_uuid)
            .await
            .map_err(|e| backend_err(RedisError::redis("deleting a state", task_uuid, e)))
    }

    async fn purge_group(&self, group_uuid: &str) -> Result<()> {
        let mut c = self.c();
        c.del::<_, ()>(group_uuid)
            .await
            .map_err(|e| backend_err(RedisError::redis("deleting group metadata", group_uuid, e)))
    }

    /// Returns when `task_uuid`'s final state is announced (written by machinist), after at
    /// most [`RedisOptions::state_poll`] (intermediate states, states written by Go), or after
    /// `timeout`. The first wait
    /// for a task subscribes to its announcements and returns at once, so that the caller reads
    /// again: a write between its last read and the subscription is not missed.
    async fn wait_for_change(&self, task_uuid: &str, timeout: Duration) {
        match &self.notices {
            Some(notices) => notices.wait(task_uuid, timeout).await,
            None => tokio::time::sleep(timeout).await,
        }
    }

    fn describe(&self) -> String {
        self.conn.options().describe()
    }

    /// `Some`: the Redis broker on the same connection sends a task's PENDING and its message
    /// in one request.
    fn as_any(&self) -> Option<&dyn std::any::Any> {
        Some(self)
    }
}

/// The byte offset of the value of `key` at the top level of the JSON object `json`, if
/// present. Strings are skipped with their escapes, nested objects and arrays by depth, so a
/// `"CreatedAt"` inside `Results` is never mistaken for the state's own.
pub(crate) fn top_level_value_offset(json: &[u8], key: &str) -> Option<usize> {
    let mut p = Scanner { b: json, i: 0 };
    p.ws();
    p.eat(b'{')?;
    loop {
        p.ws();
        if p.peek()? == b'}' {
            return None;
        }
        let (start, end) = p.string()?;
        p.ws();
        p.eat(b':')?;
        p.ws();
        if &json[start..end] == key.as_bytes() {
            return Some(p.i);
        }
        p.value()?;
        p.ws();
        match p.peek()? {
            b',' => p.i += 1,
            _ => return None,
        }
    }
}

struct Scanner<'a> {
    b: &'a [u8],
    i: usize,
}

impl Scanner<'_> {
    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }
    fn ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.i += 1;
        }
    }
    fn eat(&mut self, c: u8) -> Option<()> {
        (self.peek()? == c).then(|| self.i += 1)
    }
    /// A string; returns the raw bytes' range between the quotes.
    fn string(&mut self) -> Option<(usize, usize)> {
        self.eat(b'"')?;
        let start = self.i;
        loop {
            match self.peek()? {
                b'\\' => self.i += 2,
                b'"' => {
                    let end = self.i;
                    self.i += 1;
                    return Some((start, end));
                }
                _ => self.i += 1,
            }
        }
    }
    fn value(&mut self) -> Option<()> {
        match self.peek()? {
            b'"' => self.string().map(drop),
            b'{' | b'[' => {
                let mut depth = 0usize;
                loop {
                    match self.peek()? {
                        b'"' => {
                            self.string()?;
                            continue;
                        }
                        b'{' | b'[' => depth += 1,
                        b'}' | b']' => {
                            depth = depth.saturating_sub(1);
                            if depth == 0 {
                                self.i += 1;
                                return Some(());
                            }
                        }
                        _ => {}
                    }
                    self.i += 1;
                }
            }
            _ => {
                while !matches!(
                    self.peek()?,
                    b',' | b'}' | b']' | b' ' | b'\t' | b'\n' | b'\r'
                ) {
                    self.i += 1;
                }
                Some(())
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn finds_top_level_values_only() {
        let json = br#"{"TaskUUID":"t\"x","TaskName":"","State":"SUCCESS","Results":[{"Type":"map","Value":{"CreatedAt":"0001-01-01T00:00:00Z"}}],"Error":"","CreatedAt":"0001-01-01T00:00:00Z","TTL":0}"#;
        let name = top_level_value_offset(json, "TaskName").unwrap();
        assert_eq!(&json[name..name + 2], b"\"\"");
        let created = top_level_value_offset(json, "CreatedAt").unwrap();
        assert_eq!(&json[created..created + 22], b"\"0001-01-01T00:00:00Z\"");
        assert!(&json[..created].ends_with(br#""Error":"","CreatedAt":"#));
        assert_eq!(top_level_value_offset(json, "Nope"), None);
        assert_eq!(top_level_value_offset(b"not json", "TaskName"), None);
        let spaced = br#" { "A" : [1, {"b": 2}] , "TaskName" : "x" }"#;
        let at = top_level_value_offset(spaced, "TaskName").unwrap();
        assert_eq!(spaced[at], b'"');
    }

    #[test]
    fn real_state_positions() {
        let state = TaskState::success("task_1", vec![machinist_core::TaskResult::new(2i64)]);
        let json = state.to_vec().unwrap();
        let name = top_level_value_offset(&json, "TaskName").unwrap();
        assert_eq!(&json[name..name + 2], b"\"\"");
        let created = top_level_value_offset(&json, "CreatedAt").unwrap();
        assert_eq!(
            &json[created..created + 22],
            format!("\"{}\"", machinist_core::time::GO_ZERO_TIME).as_bytes()
        );
    }
}
