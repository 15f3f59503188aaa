//! The [`Backend`] role: where task states, results and group metadata are stored.
//!
//! Values have Go's JSON shape (`TaskState`, `GroupMeta`) so that Go and Rust peers read each
//! other's results. Every write expires after `ResultsExpireIn`. The chord trigger is the one
//! place that must be exactly-once: each backend implements [`Backend::trigger_chord`] with an
//! atomic primitive of its store.
//!
//! Chords: the worker reports each member's final state with
//! [`Backend::group_member_completed`]; its default reads every member's state each time (as Go
//! does), backends with an atomic counter (in-memory, SQLite) read them once per group.
//!
//! Go's backends receive the task's whole signature with every state write
//! (`SetStatePending(signature)` …); machinist's worker and server pass a [`StateContext`] (the
//! task's name, its group and group size, and `CreatedAt` once known) through
//! [`Backend::set_task_state`] / [`Backend::set_task_states`]. A backend that needs none of it
//! implements only [`Backend::set_state`]: the defaults forward to it.

use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use crate::error::Result;
use crate::signature::Signature;
use crate::state::{GroupMeta, TaskState};

/// What a backend may need to know of the task whose state it writes, beyond the state itself.
///
/// Built from the task's [`Signature`] by the writer ([`StateContext::of`]) and kept for the
/// task's life in the worker, so a backend may also *learn* something on one write and use it
/// on the next ([`StateContext::created_at`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StateContext {
    /// The task's name (`Signature.Name`): what the producer's PENDING stored as `TaskName`.
    pub task_name: String,
    /// `Signature.GroupUUID`: empty when the task is not a group member.
    pub group_uuid: String,
    /// `Signature.GroupTaskCount`: the group's size (0 when not a member, as Go writes it).
    pub group_task_count: usize,
    /// The `CreatedAt` stored with the task's PENDING, when the writer knows it: from the
    /// message ([`Signature::created_at`], which a machinist producer stamps with its PENDING's),
    /// from the PENDING state itself, or set by a backend that read it during a write (Redis
    /// returns it from its first merge), so that later states can be stored whole, with no read.
    pub created_at: Option<DateTime<Utc>>,
}

impl StateContext {
    /// The context of the task `sig` describes.
    pub fn of(sig: &Signature) -> Self {
        StateContext {
            task_name: sig.name.clone(),
            group_uuid: sig.group_uuid.clone(),
            group_task_count: usize::try_from(sig.group_task_count).unwrap_or(0),
            created_at: sig.created_at,
        }
    }

    /// Learns `TaskName` and `CreatedAt` from `stored`, a task state (Go's JSON) the broker read
    /// when it fetched the message ([`Delivery::stored_state`](crate::Delivery::stored_state)),
    /// as a backend merging Go's way would read them before the first write: only when it is
    /// the state of task `uuid` and has a `CreatedAt`. Anything else (another task's state, a
    /// zero time, bytes that are not a state) is ignored, and the backend reads for itself.
    /// Returns whether it learned.
    pub fn learn_stored(&mut self, uuid: &str, stored: &[u8]) -> bool {
        let Ok(state) = TaskState::from_slice(stored) else {
            return false;
        };
        if state.task_uuid != uuid || state.created_at.is_none() {
            return false;
        }
        self.task_name = state.task_name;
        self.created_at = state.created_at;
        true
    }

    /// True for a member of a group with a size (Go records completion only for those).
    pub fn in_group(&self) -> bool {
        !self.group_uuid.is_empty() && self.group_task_count > 0
    }
}

/// What [`Backend::group_member_completed`] found.
#[derive(Debug, Clone, PartialEq)]
pub enum GroupProgress {
    /// Some member is not complete yet (or the completion was not a SUCCESS).
    Incomplete,
    /// Every member is SUCCESS or FAILURE; their states were not read (the worker reads them
    /// with [`Backend::group_states`] once it won [`Backend::trigger_chord`]).
    Complete,
    /// Every member is SUCCESS or FAILURE: their states, in group order, as read to decide.
    CompleteWith(Vec<TaskState>),
}

/// Stores states, results and group metadata.
#[async_trait]
pub trait Backend: Send + Sync + 'static {
    /// Stores `state` under its `task_uuid`. For every state but PENDING the backend carries
    /// `TaskName` and `CreatedAt` over from the state stored before ([`TaskState::merge_from`]),
    /// as Go does; PENDING replaces. The key's expiry is refreshed.
    async fn set_state(&self, state: &TaskState) -> Result<()>;

    /// Stores `state` of the task `ctx` describes: what the worker and the server call (Go
    /// passes the signature to every write). A backend may use the context (the AMQP backend
    /// publishes a group member's final state to the group's queue; Redis skips the merge once
    /// it knows `TaskName` and `CreatedAt`) and may fill in what it learns
    /// ([`StateContext::created_at`]). The stored result must be what [`Backend::set_state`]
    /// stores. The default ignores the context and calls `set_state`.
    async fn set_task_state(&self, ctx: &mut StateContext, state: &TaskState) -> Result<()> {
        let _ = ctx;
        self.set_state(state).await
    }

    /// Stores several consecutive states of one task, in order (the worker's RECEIVED and
    /// STARTED). Each must still be stored as its own write, visible to a reader in between;
    /// backends may send them in one round trip. The default calls
    /// [`Backend::set_task_state`] for each, stopping at the first error.
    async fn set_task_states(&self, ctx: &mut StateContext, states: &[TaskState]) -> Result<()> {
        for state in states {
            self.set_task_state(ctx, state).await?;
        }
        Ok(())
    }

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

    /// A member of the group (of `count` members) stored its final state: SUCCESS when
    /// `succeeded`, else FAILURE. Says whether the whole group is now complete (every member
    /// SUCCESS or FAILURE, as [`Backend::group_completed`] decides), with the members' states
    /// when they were read to decide it. The worker calls it once per final state of a chord
    /// member; on a `succeeded` call that finds the group complete it fires the chord
    /// ([`Backend::trigger_chord`]) and, if it won, sends the callback with the states
    /// ([`GroupProgress::CompleteWith`]'s, else read with [`Backend::group_states`]).
    ///
    /// The default is what the worker did before this method existed: nothing for a FAILURE;
    /// for a SUCCESS, [`Backend::group_completed`] ([`GroupProgress::Complete`] when true):
    /// every member's completion reads every member's state, O(n²) reads per group. A backend
    /// with an atomic counter overrides it: each call adds one to the group's count of
    /// completions and the states are read once, when the count reaches `count`. Completions
    /// are counted, not deduplicated (a redelivered member counts twice), so the states are
    /// still checked before the group is reported complete, and a completion past the count
    /// checks again. Every process that completes members of one group must count (or none):
    /// a process using the default on a store whose backend counts leaves the count short.
    async fn group_member_completed(
        &self,
        group_uuid: &str,
        count: usize,
        succeeded: bool,
    ) -> Result<GroupProgress> {
        if succeeded && self.group_completed(group_uuid, count).await? {
            Ok(GroupProgress::Complete)
        } else {
            Ok(GroupProgress::Incomplete)
        }
    }

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

    /// This backend as [`Any`](std::any::Any), for a broker that can work with it directly
    /// ([`Broker::publish_pending`](crate::Broker::publish_pending)). The default, `None`, is
    /// always correct; it only forgoes such shortcuts. A wrapper may return its inner
    /// backend's, if it need not see the PENDING writes a broker then makes itself.
    fn as_any(&self) -> Option<&dyn std::any::Any> {
        None
    }

    /// Releases connections.
    async fn close(&self) {}
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn ctx() -> StateContext {
        StateContext::of(&Signature::new("add"))
    }

    #[test]
    fn a_stored_state_is_learned_only_for_its_own_task_and_with_a_time() {
        let pending = TaskState::pending("task_a", "stored-name");
        let bytes = pending.to_vec().unwrap();
        let mut c = ctx();
        assert!(c.learn_stored("task_a", &bytes));
        assert_eq!(c.created_at, pending.created_at);
        assert_eq!(
            c.task_name, "stored-name",
            "TaskName carried over, as Go's merge"
        );

        let mut c = ctx();
        assert!(!c.learn_stored("task_b", &bytes), "another task's state");
        assert_eq!((c.created_at, c.task_name.as_str()), (None, "add"));

        let zero = TaskState::received("task_a").to_vec().unwrap();
        assert!(!ctx().learn_stored("task_a", &zero), "Go's zero time");
        assert!(!ctx().learn_stored("task_a", b"{not json"), "not a state");
        assert!(!ctx().learn_stored("task_a", b""), "empty");
    }
}
