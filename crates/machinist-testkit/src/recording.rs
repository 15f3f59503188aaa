//! [`RecordingBackend`]: a [`Backend`] that delegates every call to another one and keeps a log
//! of the states written, so a scenario can check the exact sequence a task went through
//! (PENDING → RECEIVED → STARTED → SUCCESS …) instead of sampling it by polling.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use machinist_core::{Backend, GroupMeta, GroupProgress, Result, State, StateContext, TaskState};

/// Delegates to an inner backend and logs every successful state write (`set_state`,
/// `set_task_state`, `set_task_states`), passing the [`StateContext`] on.
pub struct RecordingBackend {
    inner: Arc<dyn Backend>,
    log: Mutex<Vec<TaskState>>,
}

impl std::fmt::Debug for RecordingBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecordingBackend")
            .field("inner", &self.inner.describe())
            .finish_non_exhaustive()
    }
}

impl RecordingBackend {
    /// Wraps `inner`.
    pub fn new(inner: Arc<dyn Backend>) -> Self {
        RecordingBackend {
            inner,
            log: Mutex::new(Vec::new()),
        }
    }

    /// Every state written so far, in the order the writes completed.
    pub fn written(&self) -> Vec<TaskState> {
        self.log.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Logs `states`, then runs the write: a reader that sees a stored state must also see its
    /// entry. If the write fails the entries are taken back out (those of a batch whose first
    /// states were stored too: the log then errs on the side of fewer entries).
    async fn logged(
        &self,
        states: &[TaskState],
        write: impl std::future::Future<Output = Result<()>>,
    ) -> Result<()> {
        self.log
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend_from_slice(states);
        let written = write.await;
        if written.is_err() {
            let mut log = self.log.lock().unwrap_or_else(|e| e.into_inner());
            for state in states {
                if let Some(i) = log.iter().rposition(|s| s == state) {
                    log.remove(i);
                }
            }
        }
        written
    }

    /// The state names written for `task_uuid`, in order.
    pub fn states_of(&self, task_uuid: &str) -> Vec<State> {
        self.written()
            .into_iter()
            .filter(|s| s.task_uuid == task_uuid)
            .map(|s| s.state)
            .collect()
    }
}

#[async_trait]
impl Backend for RecordingBackend {
    async fn set_state(&self, state: &TaskState) -> Result<()> {
        self.logged(std::slice::from_ref(state), self.inner.set_state(state))
            .await
    }

    async fn set_task_state(&self, ctx: &mut StateContext, state: &TaskState) -> Result<()> {
        self.logged(
            std::slice::from_ref(state),
            self.inner.set_task_state(ctx, state),
        )
        .await
    }

    async fn set_task_states(&self, ctx: &mut StateContext, states: &[TaskState]) -> Result<()> {
        self.logged(states, self.inner.set_task_states(ctx, states))
            .await
    }

    async fn get_state(&self, task_uuid: &str) -> Result<Option<TaskState>> {
        self.inner.get_state(task_uuid).await
    }

    async fn init_group(&self, group_uuid: &str, task_uuids: &[String]) -> Result<()> {
        self.inner.init_group(group_uuid, task_uuids).await
    }

    async fn get_group(&self, group_uuid: &str) -> Result<Option<GroupMeta>> {
        self.inner.get_group(group_uuid).await
    }

    async fn group_completed(&self, group_uuid: &str, count: usize) -> Result<bool> {
        self.inner.group_completed(group_uuid, count).await
    }

    async fn group_states(&self, group_uuid: &str, count: usize) -> Result<Vec<TaskState>> {
        self.inner.group_states(group_uuid, count).await
    }

    async fn group_member_completed(
        &self,
        group_uuid: &str,
        count: usize,
        succeeded: bool,
    ) -> Result<GroupProgress> {
        self.inner
            .group_member_completed(group_uuid, count, succeeded)
            .await
    }

    async fn trigger_chord(&self, group_uuid: &str) -> Result<bool> {
        self.inner.trigger_chord(group_uuid).await
    }

    async fn purge_state(&self, task_uuid: &str) -> Result<()> {
        self.inner.purge_state(task_uuid).await
    }

    async fn purge_group(&self, group_uuid: &str) -> Result<()> {
        self.inner.purge_group(group_uuid).await
    }

    async fn wait_for_change(&self, task_uuid: &str, timeout: Duration) {
        self.inner.wait_for_change(task_uuid, timeout).await;
    }

    fn describe(&self) -> String {
        self.inner.describe()
    }

    async fn close(&self) {
        self.inner.close().await;
    }
}
