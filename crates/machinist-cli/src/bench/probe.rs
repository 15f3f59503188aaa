//! Watching tasks complete without polling: [`Probe`] wraps the result backend of in-process
//! workers and sees every state they store; [`NullBackend`] is the backend that keeps nothing
//! (the `no-results` scenario).
//!
//! Task UUIDs are `<prefix><index>`, so a write finds its task's slot by parsing the UUID: no
//! map, no lock. Per slot the probe keeps when the task was sent, when its STARTED and its
//! SUCCESS were stored (only when latencies are wanted: 24 bytes a task), and one bit saying it
//! completed, so a task stored twice is counted once and reported as a duplicate.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use machinist::{Backend, Error, GroupMeta, GroupProgress, Result, State, StateContext, TaskState};
use tokio::sync::Notify;

/// Sees the states stored through it (then stores them in the backend it wraps).
pub struct Probe {
    inner: Arc<dyn Backend>,
    prefix: String,
    slots: usize,
    origin: Instant,
    /// Per slot: nanoseconds after `origin` plus one (0: not yet), when latencies are kept.
    times: Option<Times>,
    /// One bit per slot: completed (SUCCESS or FAILURE stored).
    completed_bits: Vec<AtomicU64>,
    completed: AtomicUsize,
    failures: AtomicUsize,
    duplicates: AtomicUsize,
    /// Sum of the first results of first completions (wrapping, as Go's int64).
    sum: AtomicI64,
    /// The waiter is woken once `completed` reaches this.
    watch: AtomicUsize,
    notify: Notify,
}

struct Times {
    sent: Vec<AtomicU64>,
    started: Vec<AtomicU64>,
    done: Vec<AtomicU64>,
}

impl Times {
    fn new(slots: usize) -> Self {
        let zeros = || (0..slots).map(|_| AtomicU64::new(0)).collect();
        Times {
            sent: zeros(),
            started: zeros(),
            done: zeros(),
        }
    }
}

/// Latencies of one task, from when it was sent.
#[derive(Debug, Clone, Copy)]
pub struct TaskTimes {
    /// Until its STARTED was stored (`None` when no STARTED went through the probe).
    pub to_start: Option<Duration>,
    /// Until its SUCCESS was stored.
    pub to_result: Duration,
}

impl Probe {
    /// A probe over `inner` for `slots` tasks named `<prefix><index>`; `latencies` keeps the
    /// send, start and result instants of each.
    pub fn new(inner: Arc<dyn Backend>, prefix: &str, slots: usize, latencies: bool) -> Self {
        Probe {
            inner,
            prefix: prefix.to_owned(),
            slots,
            origin: Instant::now(),
            times: latencies.then(|| Times::new(slots)),
            completed_bits: (0..slots.div_ceil(64)).map(|_| AtomicU64::new(0)).collect(),
            completed: AtomicUsize::new(0),
            failures: AtomicUsize::new(0),
            duplicates: AtomicUsize::new(0),
            sum: AtomicI64::new(0),
            watch: AtomicUsize::new(usize::MAX),
            notify: Notify::new(),
        }
    }

    fn now(&self) -> u64 {
        u64::try_from(self.origin.elapsed().as_nanos()).unwrap_or(u64::MAX - 1) + 1
    }

    fn slot(&self, uuid: &str) -> Option<usize> {
        let index: usize = uuid.strip_prefix(&self.prefix)?.parse().ok()?;
        (index < self.slots).then_some(index)
    }

    /// Notes that task `index` is being sent now.
    pub fn mark_sent(&self, index: usize) {
        if let Some(t) = &self.times
            && let Some(slot) = t.sent.get(index)
        {
            slot.store(self.now(), Ordering::Relaxed);
        }
    }

    /// Tasks completed so far.
    pub fn completed(&self) -> usize {
        self.completed.load(Ordering::Acquire)
    }

    /// Tasks stored as FAILURE.
    pub fn failures(&self) -> usize {
        self.failures.load(Ordering::Relaxed)
    }

    /// Completions stored again for a task already completed.
    pub fn duplicates(&self) -> usize {
        self.duplicates.load(Ordering::Relaxed)
    }

    /// The (wrapping) sum of the first result of every completed task.
    pub fn sum(&self) -> i64 {
        self.sum.load(Ordering::Relaxed)
    }

    /// Waits until `target` tasks completed. Fails when none completes for `stall`.
    pub async fn wait_for(&self, target: usize, stall: Duration) -> anyhow::Result<()> {
        self.watch.store(target, Ordering::Release);
        let mut last = self.completed();
        let mut last_progress = Instant::now();
        while self.completed() < target {
            // `notify_one` keeps a permit when nobody waits yet: no wake-up is lost between the
            // check above and this wait.
            let _ = tokio::time::timeout(Duration::from_millis(200), self.notify.notified()).await;
            let now = self.completed();
            if now != last {
                last = now;
                last_progress = Instant::now();
            } else if last_progress.elapsed() > stall {
                anyhow::bail!(
                    "stalled: {now} of {target} tasks completed, none in the last {stall:?} \
                     ({} failed)",
                    self.failures()
                );
            }
        }
        self.watch.store(usize::MAX, Ordering::Release);
        Ok(())
    }

    /// The latencies of task `index`, once its result is stored (and latencies are kept).
    pub fn task_times(&self, index: usize) -> Option<TaskTimes> {
        let t = self.times.as_ref()?;
        let sent = t.sent.get(index)?.load(Ordering::Relaxed);
        let done = t.done.get(index)?.load(Ordering::Relaxed);
        if sent == 0 || done == 0 {
            return None;
        }
        let started = t.started.get(index)?.load(Ordering::Relaxed);
        Some(TaskTimes {
            to_start: (started != 0).then(|| Duration::from_nanos(started.saturating_sub(sent))),
            to_result: Duration::from_nanos(done.saturating_sub(sent)),
        })
    }

    fn record(&self, state: &TaskState) {
        // Only STARTED (when latencies are kept) and final states are looked at: the others
        // cost no UUID parsing.
        let wanted = match state.state {
            State::Started => self.times.is_some(),
            State::Success | State::Failure => true,
            _ => false,
        };
        if !wanted {
            return;
        }
        let Some(slot) = self.slot(&state.task_uuid) else {
            return;
        };
        match state.state {
            State::Started => {
                if let Some(t) = &self.times {
                    t.started[slot].store(self.now(), Ordering::Relaxed);
                }
            }
            State::Success | State::Failure => {
                let bit = 1u64 << (slot % 64);
                let before = self.completed_bits[slot / 64].fetch_or(bit, Ordering::AcqRel);
                if before & bit != 0 {
                    self.duplicates.fetch_add(1, Ordering::Relaxed);
                    return;
                }
                if let Some(t) = &self.times {
                    t.done[slot].store(self.now(), Ordering::Relaxed);
                }
                if state.state == State::Failure {
                    self.failures.fetch_add(1, Ordering::Relaxed);
                } else if let Some(v) = first_result(state) {
                    self.sum.fetch_add(v, Ordering::Relaxed);
                }
                let n = self.completed.fetch_add(1, Ordering::AcqRel) + 1;
                if n >= self.watch.load(Ordering::Acquire) {
                    self.notify.notify_one();
                }
            }
            _ => {}
        }
    }
}

/// The first result of a state as an int64, if it has one.
pub fn first_result(state: &TaskState) -> Option<i64> {
    state.results.as_ref()?.first()?.value.as_i64()
}

/// A `Backend` handle on a shared probe.
#[derive(Clone)]
pub struct ProbeBackend(pub Arc<Probe>);

#[async_trait]
impl Backend for ProbeBackend {
    async fn set_state(&self, state: &TaskState) -> Result<()> {
        self.0.inner.set_state(state).await?;
        self.0.record(state);
        Ok(())
    }
    async fn set_task_state(&self, ctx: &mut StateContext, state: &TaskState) -> Result<()> {
        self.0.inner.set_task_state(ctx, state).await?;
        self.0.record(state);
        Ok(())
    }
    async fn set_task_states(&self, ctx: &mut StateContext, states: &[TaskState]) -> Result<()> {
        self.0.inner.set_task_states(ctx, states).await?;
        for state in states {
            self.0.record(state);
        }
        Ok(())
    }
    async fn get_state(&self, task_uuid: &str) -> Result<Option<TaskState>> {
        self.0.inner.get_state(task_uuid).await
    }
    async fn init_group(&self, group_uuid: &str, task_uuids: &[String]) -> Result<()> {
        self.0.inner.init_group(group_uuid, task_uuids).await
    }
    async fn get_group(&self, group_uuid: &str) -> Result<Option<GroupMeta>> {
        self.0.inner.get_group(group_uuid).await
    }
    async fn group_completed(&self, group_uuid: &str, count: usize) -> Result<bool> {
        self.0.inner.group_completed(group_uuid, count).await
    }
    async fn group_states(&self, group_uuid: &str, count: usize) -> Result<Vec<TaskState>> {
        self.0.inner.group_states(group_uuid, count).await
    }
    async fn group_member_completed(
        &self,
        group_uuid: &str,
        count: usize,
        succeeded: bool,
    ) -> Result<GroupProgress> {
        self.0
            .inner
            .group_member_completed(group_uuid, count, succeeded)
            .await
    }
    async fn trigger_chord(&self, group_uuid: &str) -> Result<bool> {
        self.0.inner.trigger_chord(group_uuid).await
    }
    async fn purge_state(&self, task_uuid: &str) -> Result<()> {
        self.0.inner.purge_state(task_uuid).await
    }
    async fn purge_group(&self, group_uuid: &str) -> Result<()> {
        self.0.inner.purge_group(group_uuid).await
    }
    async fn wait_for_change(&self, task_uuid: &str, timeout: Duration) {
        self.0.inner.wait_for_change(task_uuid, timeout).await;
    }
    fn describe(&self) -> String {
        self.0.inner.describe()
    }
    /// The inner backend's: the probe records no PENDING, so a broker may write those itself
    /// (Redis sends a task's PENDING and its message in one request).
    fn as_any(&self) -> Option<&dyn std::any::Any> {
        self.0.inner.as_any()
    }
    async fn close(&self) {
        self.0.inner.close().await;
    }
}

/// A result backend that stores nothing: every write succeeds and is forgotten, every read
/// finds nothing. Groups and chords cannot work on it.
#[derive(Debug, Clone, Copy, Default)]
pub struct NullBackend;

#[async_trait]
impl Backend for NullBackend {
    async fn set_state(&self, _state: &TaskState) -> Result<()> {
        Ok(())
    }
    async fn get_state(&self, _task_uuid: &str) -> Result<Option<TaskState>> {
        Ok(None)
    }
    async fn init_group(&self, _group_uuid: &str, _task_uuids: &[String]) -> Result<()> {
        Ok(())
    }
    async fn get_group(&self, _group_uuid: &str) -> Result<Option<GroupMeta>> {
        Ok(None)
    }
    async fn group_states(&self, group_uuid: &str, _count: usize) -> Result<Vec<TaskState>> {
        Err(Error::StateNotFound(group_uuid.to_owned()))
    }
    async fn trigger_chord(&self, _group_uuid: &str) -> Result<bool> {
        Ok(false)
    }
    async fn purge_state(&self, _task_uuid: &str) -> Result<()> {
        Ok(())
    }
    async fn purge_group(&self, _group_uuid: &str) -> Result<()> {
        Ok(())
    }
    fn describe(&self) -> String {
        "null (results discarded)".to_owned()
    }
}

#[cfg(test)]
mod tests {
    use machinist::TaskResult;

    use super::*;

    fn success(uuid: &str, v: i64) -> TaskState {
        TaskState::success(uuid, vec![TaskResult::new(v)])
    }

    #[tokio::test]
    async fn counts_each_task_once_and_sums_results() {
        let probe = Arc::new(Probe::new(Arc::new(NullBackend), "task_x_", 3, true));
        let backend = ProbeBackend(Arc::clone(&probe));
        probe.mark_sent(0);
        backend
            .set_state(&TaskState::started("task_x_0"))
            .await
            .expect("started");
        backend
            .set_state(&success("task_x_0", 5))
            .await
            .expect("ok");
        backend
            .set_state(&success("task_x_0", 5))
            .await
            .expect("ok");
        backend
            .set_state(&success("task_x_2", 7))
            .await
            .expect("ok");
        backend.set_state(&success("other_1", 9)).await.expect("ok");
        backend
            .set_state(&success("task_x_99", 9))
            .await
            .expect("ok");
        backend
            .set_state(&success("task_x_5", 9))
            .await
            .expect("ok");
        assert_eq!(probe.completed(), 2);
        assert_eq!(probe.duplicates(), 1);
        assert_eq!(probe.sum(), 12);
        let t = probe.task_times(0).expect("times");
        assert!(t.to_start.is_some_and(|s| s <= t.to_result));
        assert!(probe.task_times(1).is_none());
        probe
            .wait_for(2, Duration::from_secs(1))
            .await
            .expect("reached");
        let e = probe
            .wait_for(3, Duration::from_millis(300))
            .await
            .expect_err("stalls");
        assert!(e.to_string().contains("2 of 3"), "{e}");
    }

    #[tokio::test]
    async fn wakes_the_waiter_when_the_target_is_reached() {
        let probe = Arc::new(Probe::new(Arc::new(NullBackend), "t", 2, false));
        let backend = ProbeBackend(Arc::clone(&probe));
        let waiter = {
            let probe = Arc::clone(&probe);
            tokio::spawn(async move { probe.wait_for(2, Duration::from_secs(5)).await })
        };
        backend.set_state(&success("t0", 1)).await.expect("ok");
        backend
            .set_state(&TaskState::failure("t1", "no"))
            .await
            .expect("ok");
        let started = Instant::now();
        waiter.await.expect("join").expect("reached");
        assert!(started.elapsed() < Duration::from_secs(1));
        assert_eq!(probe.failures(), 1);
        assert!(probe.task_times(0).is_none(), "no latencies kept");
    }
}
