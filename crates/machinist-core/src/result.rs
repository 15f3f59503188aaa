//! Waiting for results: [`AsyncResult`] for one task, [`ChainAsyncResult`] for a chain and
//! [`ChordAsyncResult`] for a chord. They read the result backend; between reads they call
//! [`Backend::wait_for_change`], so a backend that can notify wakes them at once and the others
//! are polled at the interval the caller gives.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use crate::arg::TaskResult;
use crate::backend::Backend;
use crate::error::{Error, Result};
use crate::state::TaskState;
use crate::types::FromResults;

/// A handle on one sent task's state and results.
#[derive(Clone)]
pub struct AsyncResult {
    uuid: String,
    backend: Arc<dyn Backend>,
    state: Option<TaskState>,
}

impl std::fmt::Debug for AsyncResult {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AsyncResult")
            .field("uuid", &self.uuid)
            .field("state", &self.state.as_ref().map(|s| s.state.as_str()))
            .finish()
    }
}

impl AsyncResult {
    /// A handle on the task `uuid` stored in `backend`.
    pub fn new(uuid: impl Into<String>, backend: Arc<dyn Backend>) -> Self {
        AsyncResult {
            uuid: uuid.into(),
            backend,
            state: None,
        }
    }

    /// The task's UUID.
    pub fn uuid(&self) -> &str {
        &self.uuid
    }

    /// The latest known state: the cached one once completed, else read from the backend
    /// (`None` while nothing is stored).
    pub async fn get_state(&mut self) -> Result<Option<TaskState>> {
        if let Some(s) = &self.state
            && s.is_completed()
        {
            return Ok(self.state.clone());
        }
        if let Some(s) = self.backend.get_state(&self.uuid).await? {
            self.state = Some(s);
        }
        Ok(self.state.clone())
    }

    /// Reads the state once: `Ok(Some(results))` on SUCCESS, `Err(TaskFailed)` on FAILURE,
    /// `Ok(None)` while not finished.
    pub async fn touch(&mut self) -> Result<Option<Vec<TaskResult>>> {
        match self.get_state().await? {
            Some(s) if s.is_success() => Ok(Some(s.results.unwrap_or_default())),
            Some(s) if s.is_failure() => Err(Error::TaskFailed(s.error)),
            _ => Ok(None),
        }
    }

    /// Waits until the task finishes, checking at least every `poll`; returns its results or
    /// its error. Waits without bound: prefer [`AsyncResult::get_with_timeout`].
    pub async fn get(&mut self, poll: Duration) -> Result<Vec<TaskResult>> {
        loop {
            if let Some(r) = self.touch().await? {
                return Ok(r);
            }
            self.backend.wait_for_change(&self.uuid, poll).await;
        }
    }

    /// [`AsyncResult::get`] that gives up with [`Error::Timeout`] after `timeout`.
    pub async fn get_with_timeout(
        &mut self,
        timeout: Duration,
        poll: Duration,
    ) -> Result<Vec<TaskResult>> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(r) = self.touch().await? {
                return Ok(r);
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(Error::Timeout(timeout));
            }
            self.backend
                .wait_for_change(&self.uuid, poll.min(deadline - now))
                .await;
        }
    }

    /// Waits (up to `timeout`) and decodes the results as `T`: `i64`, `(String, String)`,
    /// `Vec<GoValue>` …
    pub async fn results<T: FromResults>(&mut self, timeout: Duration) -> Result<T> {
        let r = self
            .get_with_timeout(timeout, default_poll(timeout))
            .await?;
        Ok(T::from_results(&r)?)
    }
}

/// The poll interval used by the typed getters: a backend that notifies wakes earlier.
fn default_poll(timeout: Duration) -> Duration {
    timeout.min(Duration::from_millis(100))
}

/// A handle on a chain: the results are the last task's.
#[derive(Debug, Clone)]
pub struct ChainAsyncResult {
    /// One handle per task, in chain order.
    pub results: Vec<AsyncResult>,
}

impl ChainAsyncResult {
    /// Waits for every task in order and returns the last one's results; the first error
    /// stops the wait.
    pub async fn get(&mut self, poll: Duration) -> Result<Vec<TaskResult>> {
        let mut last = Vec::new();
        for r in &mut self.results {
            last = r.get(poll).await?;
        }
        Ok(last)
    }

    /// [`ChainAsyncResult::get`] bounded by `timeout` overall.
    pub async fn get_with_timeout(
        &mut self,
        timeout: Duration,
        poll: Duration,
    ) -> Result<Vec<TaskResult>> {
        let deadline = Instant::now() + timeout;
        let mut last = Vec::new();
        for r in &mut self.results {
            let left = deadline.saturating_duration_since(Instant::now());
            last = r.get_with_timeout(left, poll).await.map_err(|e| match e {
                Error::Timeout(_) => Error::Timeout(timeout),
                e => e,
            })?;
        }
        Ok(last)
    }

    /// Waits (up to `timeout`) and decodes the last task's results as `T`.
    pub async fn results<T: FromResults>(&mut self, timeout: Duration) -> Result<T> {
        let r = self
            .get_with_timeout(timeout, default_poll(timeout))
            .await?;
        Ok(T::from_results(&r)?)
    }
}

/// A handle on a chord: the results are the callback's.
#[derive(Debug, Clone)]
pub struct ChordAsyncResult {
    /// The group members.
    pub group: Vec<AsyncResult>,
    /// The callback.
    pub callback: AsyncResult,
}

impl ChordAsyncResult {
    /// Checks the callback, then the members: the callback's results once it succeeded, an
    /// error as soon as the callback or any member failed, `None` otherwise.
    async fn touch(&mut self) -> Result<Option<Vec<TaskResult>>> {
        if let Some(r) = self.callback.touch().await? {
            return Ok(Some(r));
        }
        for m in &mut self.group {
            if let Err(Error::TaskFailed(e)) = m.touch().await {
                return Err(Error::TaskFailed(format!(
                    "chord member {} failed: {e}",
                    m.uuid()
                )));
            }
        }
        Ok(None)
    }

    /// Waits for the callback's results. A failed member fails the chord at once (Go would
    /// wait forever): the error names the member.
    pub async fn get(&mut self, poll: Duration) -> Result<Vec<TaskResult>> {
        loop {
            if let Some(r) = self.touch().await? {
                return Ok(r);
            }
            self.callback
                .backend
                .wait_for_change(&self.callback.uuid, poll)
                .await;
        }
    }

    /// [`ChordAsyncResult::get`] bounded by `timeout`.
    pub async fn get_with_timeout(
        &mut self,
        timeout: Duration,
        poll: Duration,
    ) -> Result<Vec<TaskResult>> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(r) = self.touch().await? {
                return Ok(r);
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(Error::Timeout(timeout));
            }
            self.callback
                .backend
                .wait_for_change(&self.callback.uuid, poll.min(deadline - now))
                .await;
        }
    }

    /// Waits (up to `timeout`) and decodes the callback's results as `T`.
    pub async fn results<T: FromResults>(&mut self, timeout: Duration) -> Result<T> {
        let r = self
            .get_with_timeout(timeout, default_poll(timeout))
            .await?;
        Ok(T::from_results(&r)?)
    }
}
