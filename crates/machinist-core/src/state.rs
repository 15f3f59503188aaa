//! What the result backend stores: [`TaskState`] per task and [`GroupMeta`] per group, in Go's
//! JSON shape (`wire-format.md` §2.3), and the [`State`] names Go writes.

use std::fmt;

use chrono::{DateTime, Utc};
use serde_json::Value;

use crate::arg::TaskResult;

/// A task's state name, exactly as Go writes it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum State {
    /// `PENDING`: written by the producer before publishing (and again on each retry).
    Pending,
    /// `RECEIVED`: a worker took the message.
    Received,
    /// `STARTED`: the arguments decoded and the function is running.
    Started,
    /// `RETRY`: failed, will be sent again with an ETA.
    Retry,
    /// `SUCCESS`: finished; results stored.
    Success,
    /// `FAILURE`: finished with an error; `Error` holds its text.
    Failure,
    /// A state name this version does not know, kept verbatim.
    Other(String),
}

impl State {
    /// The wire name (`"PENDING"` …).
    pub fn as_str(&self) -> &str {
        match self {
            State::Pending => "PENDING",
            State::Received => "RECEIVED",
            State::Started => "STARTED",
            State::Retry => "RETRY",
            State::Success => "SUCCESS",
            State::Failure => "FAILURE",
            State::Other(s) => s,
        }
    }

    /// Parses a wire name; unknown names become [`State::Other`].
    pub fn parse(s: &str) -> State {
        match s {
            "PENDING" => State::Pending,
            "RECEIVED" => State::Received,
            "STARTED" => State::Started,
            "RETRY" => State::Retry,
            "SUCCESS" => State::Success,
            "FAILURE" => State::Failure,
            other => State::Other(other.to_owned()),
        }
    }

    /// SUCCESS or FAILURE (Go's `IsCompleted`).
    pub fn is_completed(&self) -> bool {
        matches!(self, State::Success | State::Failure)
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A task's stored state (Go's `tasks.TaskState`).
#[derive(Debug, Clone, PartialEq)]
pub struct TaskState {
    /// `TaskUUID`.
    pub task_uuid: String,
    /// `TaskName`: set by PENDING; backends carry it over to later states.
    pub task_name: String,
    /// `State`.
    pub state: State,
    /// `Results`: `None` is JSON `null` (every state but SUCCESS); a SUCCESS with no results
    /// is `Some(vec![])`, as Go writes `[]`.
    pub results: Option<Vec<TaskResult>>,
    /// `Error`: the error text of a FAILURE, else empty.
    pub error: String,
    /// `CreatedAt`: set by PENDING; `None` is Go's zero time.
    pub created_at: Option<DateTime<Utc>>,
    /// `TTL`: 0 except on DynamoDB (unix seconds of expiry).
    pub ttl: i64,
    /// Keys this version does not know, written back on encode.
    pub extra: Vec<(String, Value)>,
}

impl TaskState {
    fn base(task_uuid: &str, state: State) -> Self {
        TaskState {
            task_uuid: task_uuid.to_owned(),
            task_name: String::new(),
            state,
            results: None,
            error: String::new(),
            created_at: None,
            ttl: 0,
            extra: Vec::new(),
        }
    }

    /// PENDING, with the task name and `CreatedAt = now`.
    pub fn pending(task_uuid: &str, task_name: &str) -> Self {
        TaskState {
            task_name: task_name.to_owned(),
            created_at: Some(Utc::now()),
            ..Self::base(task_uuid, State::Pending)
        }
    }
    /// RECEIVED.
    pub fn received(task_uuid: &str) -> Self {
        Self::base(task_uuid, State::Received)
    }
    /// STARTED.
    pub fn started(task_uuid: &str) -> Self {
        Self::base(task_uuid, State::Started)
    }
    /// RETRY.
    pub fn retry(task_uuid: &str) -> Self {
        Self::base(task_uuid, State::Retry)
    }
    /// SUCCESS with results.
    pub fn success(task_uuid: &str, results: Vec<TaskResult>) -> Self {
        TaskState {
            results: Some(results),
            ..Self::base(task_uuid, State::Success)
        }
    }
    /// FAILURE with an error text.
    pub fn failure(task_uuid: &str, error: impl Into<String>) -> Self {
        TaskState {
            error: error.into(),
            ..Self::base(task_uuid, State::Failure)
        }
    }

    /// SUCCESS or FAILURE.
    pub fn is_completed(&self) -> bool {
        self.state.is_completed()
    }
    /// SUCCESS.
    pub fn is_success(&self) -> bool {
        self.state == State::Success
    }
    /// FAILURE.
    pub fn is_failure(&self) -> bool {
        self.state == State::Failure
    }

    /// Copies `TaskName` and `CreatedAt` from the state stored before, as Go's backends do for
    /// every state but PENDING.
    pub fn merge_from(&mut self, previous: &TaskState) {
        if self.task_name.is_empty() {
            self.task_name.clone_from(&previous.task_name);
        }
        if self.created_at.is_none() {
            self.created_at = previous.created_at;
        }
    }

    /// Decodes a stored state (lenient, like Go).
    pub fn from_slice(bytes: &[u8]) -> crate::Result<Self> {
        crate::codec::task_state_from_slice(bytes)
    }

    /// Encodes the state as Go does.
    pub fn to_vec(&self) -> crate::Result<Vec<u8>> {
        Ok(crate::codec::task_state_to_vec(self)?)
    }

    /// Encodes the state as [`TaskState::to_vec`] would after filling in an empty `task_name`
    /// and a missing `created_at` with these (what a backend carries over from the task's
    /// PENDING), without copying the state.
    pub fn to_vec_carrying(
        &self,
        task_name: &str,
        created_at: Option<DateTime<Utc>>,
    ) -> crate::Result<Vec<u8>> {
        Ok(crate::codec::task_state_carrying_to_vec(
            self, task_name, created_at,
        )?)
    }
}

/// A group's stored metadata (Go's `tasks.GroupMeta`).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct GroupMeta {
    /// `GroupUUID`.
    pub group_uuid: String,
    /// `TaskUUIDs`: members in group order (the order of chord callback arguments).
    pub task_uuids: Vec<String>,
    /// `ChordTriggered`: set once, by whoever fires the chord callback.
    pub chord_triggered: bool,
    /// `Lock`: used by backends that lock by flag (memcache, DynamoDB).
    pub lock: bool,
    /// `CreatedAt`.
    pub created_at: Option<DateTime<Utc>>,
    /// `TTL`.
    pub ttl: i64,
    /// Keys this version does not know, written back on encode.
    pub extra: Vec<(String, Value)>,
}

impl GroupMeta {
    /// A new group meta created now.
    pub fn new(group_uuid: &str, task_uuids: Vec<String>) -> Self {
        GroupMeta {
            group_uuid: group_uuid.to_owned(),
            task_uuids,
            created_at: Some(Utc::now()),
            ..Default::default()
        }
    }

    /// Decodes stored group meta (lenient, like Go).
    pub fn from_slice(bytes: &[u8]) -> crate::Result<Self> {
        crate::codec::from_json_bytes(bytes)
    }

    /// Encodes as Go does.
    pub fn to_vec(&self) -> crate::Result<Vec<u8>> {
        Ok(crate::codec::to_go_json(self)?)
    }
}
