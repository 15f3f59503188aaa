//! The [`Backend`] role: where task states, results and group metadata are stored.
//!
//! Values have Go's JSON shape (`TaskState`, `GroupMeta`) so that Go and Rust peers read each
//! other's results. Every write expires after `ResultsExpireIn`. The chord trigger is the one
//! place that must be exactly-once: each backend implements [`Backend::trigger_chord`] with an
//! atomic primitive of its store.

use std::time::Duration;

use async_trait::async_trait;

use crate::error::Result;
use crate::state::{GroupMeta, TaskState};

/// Stores states, results and group metadata.
#[async_trait]
pub trait Backend: Send + Sync + 'static {
    /// Stores `state` under its `task_uuid`. For every state but PENDING the backend carries
    /// `TaskName` and `CreatedAt` over from the state stored before ([`TaskState::merge_from`]),
    /// as Go does; PENDING replaces. The key's expiry is refreshed.
    async fn set_state(&self, state: &TaskState) -> Result<()>;

    /// The stored state, or `None` when nothing is stored (never sent, expired, purged).
    async fn get_state(&self, task_uuid: &str) -> Result<Option<TaskState>>;

    /// Stores a group's metadata before its members are published.
    async fn init_group(&self, group_uuid: &str, task_uuids: &[String]) -> Result<()>;

    /// The stored group metadata.
    async fn get_group(&self, group_uuid: &str) -> Result<Option<GroupMeta>>;

    /// True when all `count` members of the group are SUCCESS or FAILURE.
    async fn group_completed(&self, group_uuid: &str, count: usize) -> Result<bool> {
        let states = self.group_states(group_uuid, count).await?;
        Ok(states.len() >= count && states.iter().all(TaskState::is_completed))
    }

    /// The members' states in group order (the order chord callback arguments take). A member
    /// with no stored state is an error naming it.
    async fn group_states(&self, group_uuid: &str, count: usize) -> Result<Vec<TaskState>>;

    /// Marks the group's chord as triggered. Returns `true` to exactly one caller per group,
    /// however many call at once, on however many machines.
    async fn trigger_chord(&self, group_uuid: &str) -> Result<bool>;

    /// Deletes a task's state.
    async fn purge_state(&self, task_uuid: &str) -> Result<()>;

    /// Deletes a group's metadata.
    async fn purge_group(&self, group_uuid: &str) -> Result<()>;

    /// Waits until the state of `task_uuid` may have changed, or `timeout` passed. Backends that
    /// can notify (in-memory, Redis pub/sub …) wake at once; the default sleeps `timeout`, which
    /// callers pass as their poll interval.
    async fn wait_for_change(&self, task_uuid: &str, timeout: Duration) {
        let _ = task_uuid;
        tokio::time::sleep(timeout).await;
    }

    /// A short name for logs, with no credentials.
    fn describe(&self) -> String;

    /// Releases connections.
    async fn close(&self) {}
}
