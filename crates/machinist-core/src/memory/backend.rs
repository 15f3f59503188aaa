//! [`MemoryBackend`]: a result [`Backend`] inside the process's memory.
//!
//! It exists so that tests and the quickstart can store and read task states, run groups and
//! chords, and wait for results without a database, with the same contract as the real
//! backends: Go's `TaskName`/`CreatedAt` merge, expiring keys, an exactly-once chord trigger.
//!
//! ## How it works
//!
//! * One `std::sync::Mutex` guards everything; it is never held across an `.await`.
//! * Every write gets an expiry `results_expire_in` after it. Since that duration is the same
//!   for every key, expiries come in write order: a FIFO of `(expiry, key, version)` records is
//!   an expiry queue. Each write removes at most 64 expired entries from its front (bounded
//!   work, never a scan). A task's key has one record at a time, queued by its first write:
//!   a later write (the worker writes each task three times more) only moves the entry's own
//!   expiry, and when its record comes up the entry is queued again for that expiry instead
//!   of removed; so such an entry may be removed up to one `results_expire_in` late. A group
//!   gets a record per write; a record whose group was written again since is stale and is
//!   skipped. Entries past their expiry are invisible to reads even before they are swept.
//! * Expiry uses [`tokio::time::Instant`], so tests with a paused clock can `advance` past it.
//! * [`Backend::wait_for_change`] waits on a [`Notify`] created for the key on demand and
//!   removed when its last waiter leaves; see [`MemoryBackend`] for what it guarantees.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::backend::{Backend, GroupProgress, StateContext};
use crate::error::{Error, Result};
use crate::state::{GroupMeta, State, TaskState};

/// Go's default `ResultsExpireIn` (one hour), used when zero is given.
const DEFAULT_EXPIRE_IN: Duration = Duration::from_secs(3600);
/// The longest expiry honoured (about a century), so that `Instant` arithmetic cannot overflow.
const MAX_EXPIRE_IN: Duration = Duration::from_secs(100 * 365 * 24 * 3600);
/// How many expired entries one write removes at most.
const SWEEP: usize = 64;

/// An in-memory result [`Backend`]. Cloning is cheap and clones share the same store.
///
/// * `set_state` carries `TaskName` and `CreatedAt` over from the stored state for every state
///   but PENDING ([`TaskState::merge_from`]) and refreshes the key's expiry.
/// * Task states and group metadata expire `results_expire_in` after their last write.
/// * `group_states` returns members in `TaskUUIDs` order; a missing group or member is
///   [`Error::StateNotFound`] naming it. The `count` argument is not needed and ignored.
/// * `group_member_completed` counts completions per group under the store's lock and reads
///   the members' states only once the count reaches the group's size: O(1) per member.
/// * `trigger_chord` returns `true` exactly once per group; a missing group is
///   [`Error::StateNotFound`].
/// * `wait_for_change(uuid, timeout)` returns as soon as `uuid`'s state is written (or purged),
///   or after `timeout`. It does **not** miss a write made between the caller's last
///   `get_state(uuid)` and the wait: every key keeps the version of its last write and the
///   version last observed by `get_state` or by a returning `wait_for_change`; when they differ
///   the wait returns at once. With several callers reading the same key, one caller's read
///   can mark a write as seen for the others, who then wait until the next write or their
///   timeout (callers pass their poll interval, so this delays, never hangs).
#[derive(Clone)]
pub struct MemoryBackend {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for MemoryBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let store = self.inner.lock();
        f.debug_struct("MemoryBackend")
            .field("expire_in", &self.inner.expire_in)
            .field("tasks", &store.tasks.len())
            .field("groups", &store.groups.len())
            .finish()
    }
}

impl Default for MemoryBackend {
    /// A backend with Go's default expiry of one hour.
    fn default() -> Self {
        Self::new(DEFAULT_EXPIRE_IN)
    }
}

struct Inner {
    expire_in: Duration,
    store: Mutex<Store>,
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, Store> {
        // No code path panics while holding the lock with the store half-updated.
        self.store.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[derive(Default)]
struct Store {
    // Keys are task and group UUIDs written by producers of this process: a fast hash, no
    // flood resistance needed.
    tasks: HashMap<Arc<str>, TaskEntry, super::FastHash>,
    groups: HashMap<Arc<str>, GroupEntry, super::FastHash>,
    /// Expiry records in write order (hence in expiry order).
    expiry: VecDeque<ExpiryRecord>,
    /// Bumped by every write; identifies a write.
    version: u64,
    /// Keys someone waits on in `wait_for_change`.
    waiters: HashMap<Arc<str>, Waiters, super::FastHash>,
}

struct TaskEntry {
    state: TaskState,
    expires_at: Instant,
    /// The write that stored `state`.
    version: u64,
    /// The last version a reader observed.
    seen: u64,
    /// The version of this key's one record in the expiry queue (of the write that queued it).
    queued: u64,
}

struct GroupEntry {
    meta: GroupMeta,
    expires_at: Instant,
    version: u64,
    /// Members counted by `group_member_completed`.
    done: usize,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Task,
    Group,
}

struct ExpiryRecord {
    at: Instant,
    kind: Kind,
    key: Arc<str>,
    version: u64,
}

struct Waiters {
    notify: Arc<Notify>,
    count: usize,
}

/// Overwrites `stored` with `state`, reusing `stored`'s buffers (the same result as
/// `*stored = state.clone()`).
fn assign_state(stored: &mut TaskState, state: &TaskState) {
    stored.task_uuid.clone_from(&state.task_uuid);
    stored.task_name.clone_from(&state.task_name);
    assign_merged(stored, state);
    stored.created_at = state.created_at;
}

/// Overwrites `stored` (the state stored before) with `state` merged over it as
/// [`TaskState::merge_from`] does: `TaskName` and `CreatedAt` are kept unless `state` has its
/// own. `stored.task_uuid` is already `state.task_uuid` (the map's key).
fn assign_merged(stored: &mut TaskState, state: &TaskState) {
    if !state.task_name.is_empty() {
        stored.task_name.clone_from(&state.task_name);
    }
    if state.created_at.is_some() {
        stored.created_at = state.created_at;
    }
    stored.state.clone_from(&state.state);
    stored.results.clone_from(&state.results);
    stored.error.clone_from(&state.error);
    stored.ttl = state.ttl;
    stored.extra.clone_from(&state.extra);
}

/// A key already stored in `map`, shared, or a new one.
fn shared_key<V>(map: &HashMap<Arc<str>, V, super::FastHash>, key: &str) -> Arc<str> {
    map.get_key_value(key)
        .map_or_else(|| Arc::from(key), |(k, _)| Arc::clone(k))
}

impl Store {
    /// Removes up to [`SWEEP`] expired entries.
    fn sweep(&mut self, now: Instant) {
        for _ in 0..SWEEP {
            match self.expiry.front() {
                Some(record) if record.at <= now => {}
                _ => return,
            }
            let Some(record) = self.expiry.pop_front() else {
                return;
            };
            match record.kind {
                Kind::Task => {
                    let requeue = match self.tasks.get(&record.key) {
                        Some(e) if e.queued == record.version => {
                            if e.expires_at > now {
                                // Written again since it was queued: due later.
                                Some(e.expires_at)
                            } else {
                                self.tasks.remove(&record.key);
                                None
                            }
                        }
                        // Removed (purged, swept) since: a stale record.
                        _ => None,
                    };
                    if let Some(at) = requeue {
                        self.expiry.push_back(ExpiryRecord { at, ..record });
                    }
                }
                Kind::Group => {
                    if self
                        .groups
                        .get(&record.key)
                        .is_some_and(|e| e.version == record.version)
                    {
                        self.groups.remove(&record.key);
                    }
                }
            }
        }
    }

    fn next_version(&mut self) -> u64 {
        self.version += 1;
        self.version
    }

    fn live_task(&mut self, uuid: &str, now: Instant) -> Option<&mut TaskEntry> {
        self.tasks.get_mut(uuid).filter(|e| e.expires_at > now)
    }

    fn live_group(&mut self, uuid: &str, now: Instant) -> Option<&mut GroupEntry> {
        self.groups.get_mut(uuid).filter(|e| e.expires_at > now)
    }

    fn notify_waiters(&self, uuid: &str) {
        if self.waiters.is_empty() {
            // Nobody waits (the worker's writes, usually): no hashing.
            return;
        }
        if let Some(w) = self.waiters.get(uuid) {
            w.notify.notify_waiters();
        }
    }

    fn put_group(&mut self, key: Arc<str>, meta: GroupMeta, expires_at: Instant, done: usize) {
        let version = self.next_version();
        self.expiry.push_back(ExpiryRecord {
            at: expires_at,
            kind: Kind::Group,
            key: Arc::clone(&key),
            version,
        });
        self.groups.insert(
            key,
            GroupEntry {
                meta,
                expires_at,
                version,
                done,
            },
        );
    }

    /// The states of the members of the group `meta` describes, in group order; a missing
    /// member is an error naming it.
    fn member_states(&self, meta: &GroupMeta, now: Instant) -> Result<Vec<TaskState>> {
        meta.task_uuids
            .iter()
            .map(|uuid| match self.tasks.get(uuid.as_str()) {
                Some(e) if e.expires_at > now => Ok(e.state.clone()),
                _ => Err(Error::StateNotFound(uuid.clone())),
            })
            .collect()
    }
}

/// Unregisters a `wait_for_change` waiter (also when the wait is cancelled) and marks the
/// key's current version as observed.
struct WaitGuard<'a> {
    inner: &'a Inner,
    key: Arc<str>,
}

impl Drop for WaitGuard<'_> {
    fn drop(&mut self) {
        let now = Instant::now();
        let mut store = self.inner.lock();
        if let Some(w) = store.waiters.get_mut(&self.key) {
            w.count -= 1;
            if w.count == 0 {
                store.waiters.remove(&self.key);
            }
        }
        if let Some(entry) = store.live_task(&self.key, now) {
            entry.seen = entry.version;
        }
    }
}

impl MemoryBackend {
    /// An empty backend whose entries expire `results_expire_in` after their last write.
    /// Zero means Go's default, one hour.
    pub fn new(results_expire_in: Duration) -> Self {
        let expire_in = if results_expire_in.is_zero() {
            DEFAULT_EXPIRE_IN
        } else {
            results_expire_in.min(MAX_EXPIRE_IN)
        };
        MemoryBackend {
            inner: Arc::new(Inner {
                expire_in,
                store: Mutex::new(Store::default()),
            }),
        }
    }

    /// How long entries live after their last write.
    pub fn results_expire_in(&self) -> Duration {
        self.inner.expire_in
    }

    /// Stores `state` (see [`Backend::set_state`]) under the lock.
    fn write_state(&self, state: &TaskState) {
        let now = Instant::now();
        let expires_at = self.expiry_from(now);
        let mut store = self.inner.lock();
        store.sweep(now);
        let version = store.next_version();
        // A key written before is updated in place: no new key, no map insert, no new expiry
        // record (its record, due earlier, is still queued), and the stored strings' buffers
        // are reused (the worker's RECEIVED, STARTED and SUCCESS of a task allocate nothing
        // here but SUCCESS's results).
        match store.tasks.get_mut(state.task_uuid.as_str()) {
            Some(entry) => {
                if entry.expires_at > now {
                    if state.state == State::Pending {
                        assign_state(&mut entry.state, state);
                    } else {
                        assign_merged(&mut entry.state, state);
                    }
                } else {
                    // Expired but not yet swept: nothing to carry over, nobody has seen it.
                    assign_state(&mut entry.state, state);
                    entry.seen = 0;
                }
                entry.expires_at = expires_at;
                entry.version = version;
            }
            None => {
                let key: Arc<str> = Arc::from(state.task_uuid.as_str());
                store.tasks.insert(
                    Arc::clone(&key),
                    TaskEntry {
                        state: state.clone(),
                        expires_at,
                        version,
                        seen: 0,
                        queued: version,
                    },
                );
                store.expiry.push_back(ExpiryRecord {
                    at: expires_at,
                    kind: Kind::Task,
                    key,
                    version,
                });
            }
        }
        store.notify_waiters(&state.task_uuid);
    }

    fn expiry_from(&self, now: Instant) -> Instant {
        now + self.inner.expire_in
    }
}

#[async_trait]
impl Backend for MemoryBackend {
    async fn set_state(&self, state: &TaskState) -> Result<()> {
        self.write_state(state);
        Ok(())
    }

    // The context is not needed here; overridden so that the worker's writes are one boxed
    // future each instead of a chain of default methods, each boxing its own.
    async fn set_task_state(&self, _ctx: &mut StateContext, state: &TaskState) -> Result<()> {
        self.write_state(state);
        Ok(())
    }

    async fn set_task_states(&self, _ctx: &mut StateContext, states: &[TaskState]) -> Result<()> {
        // One write (one lock) per state: a reader may see each of them.
        for state in states {
            self.write_state(state);
        }
        Ok(())
    }

    async fn get_state(&self, task_uuid: &str) -> Result<Option<TaskState>> {
        let now = Instant::now();
        let mut store = self.inner.lock();
        Ok(store.live_task(task_uuid, now).map(|entry| {
            entry.seen = entry.version;
            entry.state.clone()
        }))
    }

    async fn init_group(&self, group_uuid: &str, task_uuids: &[String]) -> Result<()> {
        let now = Instant::now();
        let expires_at = self.expiry_from(now);
        let mut store = self.inner.lock();
        store.sweep(now);
        let key = shared_key(&store.groups, group_uuid);
        store.put_group(
            key,
            GroupMeta::new(group_uuid, task_uuids.to_vec()),
            expires_at,
            0,
        );
        Ok(())
    }

    async fn get_group(&self, group_uuid: &str) -> Result<Option<GroupMeta>> {
        let now = Instant::now();
        let mut store = self.inner.lock();
        Ok(store.live_group(group_uuid, now).map(|e| e.meta.clone()))
    }

    async fn group_states(&self, group_uuid: &str, _count: usize) -> Result<Vec<TaskState>> {
        let now = Instant::now();
        let store = self.inner.lock();
        match store.groups.get(group_uuid) {
            Some(e) if e.expires_at > now => store.member_states(&e.meta, now),
            _ => Err(Error::StateNotFound(group_uuid.to_owned())),
        }
    }

    async fn group_member_completed(
        &self,
        group_uuid: &str,
        count: usize,
        _succeeded: bool,
    ) -> Result<GroupProgress> {
        let now = Instant::now();
        let mut store = self.inner.lock();
        let Some(entry) = store.live_group(group_uuid, now) else {
            return Err(Error::StateNotFound(group_uuid.to_owned()));
        };
        entry.done += 1;
        if entry.done < count {
            return Ok(GroupProgress::Incomplete);
        }
        let store = &*store;
        let Some(entry) = store.groups.get(group_uuid) else {
            return Err(Error::StateNotFound(group_uuid.to_owned()));
        };
        let states = store.member_states(&entry.meta, now)?;
        Ok(
            if states.len() >= count && states.iter().all(TaskState::is_completed) {
                GroupProgress::CompleteWith(states)
            } else {
                GroupProgress::Incomplete
            },
        )
    }

    async fn trigger_chord(&self, group_uuid: &str) -> Result<bool> {
        let now = Instant::now();
        let expires_at = self.expiry_from(now);
        let mut store = self.inner.lock();
        store.sweep(now);
        let Some(entry) = store.live_group(group_uuid, now) else {
            return Err(Error::StateNotFound(group_uuid.to_owned()));
        };
        if entry.meta.chord_triggered {
            return Ok(false);
        }
        let mut meta = entry.meta.clone();
        meta.chord_triggered = true;
        let done = entry.done;
        // A write like any other: it refreshes the group's expiry.
        let key = shared_key(&store.groups, group_uuid);
        store.put_group(key, meta, expires_at, done);
        Ok(true)
    }

    async fn purge_state(&self, task_uuid: &str) -> Result<()> {
        let mut store = self.inner.lock();
        if store.tasks.remove(task_uuid).is_some() {
            store.notify_waiters(task_uuid);
        }
        Ok(())
    }

    async fn purge_group(&self, group_uuid: &str) -> Result<()> {
        self.inner.lock().groups.remove(group_uuid);
        Ok(())
    }

    async fn wait_for_change(&self, task_uuid: &str, timeout: Duration) {
        let (_guard, notified) = {
            let now = Instant::now();
            let mut store = self.inner.lock();
            if let Some(entry) = store.live_task(task_uuid, now)
                && entry.seen != entry.version
            {
                // Written since the caller last looked.
                entry.seen = entry.version;
                return;
            }
            let key = shared_key(&store.waiters, task_uuid);
            let waiters = store
                .waiters
                .entry(Arc::clone(&key))
                .or_insert_with(|| Waiters {
                    notify: Arc::new(Notify::new()),
                    count: 0,
                });
            waiters.count += 1;
            // Created under the lock: a `notify_waiters` from any later write reaches it.
            let notified = Arc::clone(&waiters.notify).notified_owned();
            let guard = WaitGuard {
                inner: &self.inner,
                key,
            };
            (guard, notified)
        };
        let _ = tokio::time::timeout(timeout, notified).await;
    }

    fn describe(&self) -> String {
        "memory".to_owned()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::arg::TaskResult;

    fn backend() -> MemoryBackend {
        MemoryBackend::new(Duration::from_secs(60))
    }

    #[tokio::test]
    async fn merge_keeps_task_name_and_created_at() {
        let b = backend();
        let pending = TaskState::pending("t1", "add");
        b.set_state(&pending).await.unwrap();
        b.set_state(&TaskState::started("t1")).await.unwrap();
        b.set_state(&TaskState::success("t1", Vec::<TaskResult>::new()))
            .await
            .unwrap();
        let got = b.get_state("t1").await.unwrap().unwrap();
        assert!(got.is_success());
        assert_eq!(got.task_name, "add");
        assert_eq!(got.created_at, pending.created_at);

        // PENDING replaces: nothing carried over.
        let mut again = TaskState::pending("t1", "");
        again.created_at = None;
        b.set_state(&again).await.unwrap();
        let got = b.get_state("t1").await.unwrap().unwrap();
        assert_eq!(got.task_name, "");
        assert_eq!(got.created_at, None);
        assert!(b.get_state("missing").await.unwrap().is_none());
        assert_eq!(b.describe(), "memory");
    }

    #[tokio::test(start_paused = true)]
    async fn expiry_hides_states_and_writes_refresh_it() {
        let b = MemoryBackend::new(Duration::from_secs(10));
        b.set_state(&TaskState::pending("a", "t")).await.unwrap();
        b.set_state(&TaskState::pending("b", "t")).await.unwrap();
        b.init_group("g", &["a".into()]).await.unwrap();
        tokio::time::advance(Duration::from_secs(6)).await;
        b.set_state(&TaskState::started("b")).await.unwrap();
        tokio::time::advance(Duration::from_secs(5)).await;
        assert!(b.get_state("a").await.unwrap().is_none(), "expired");
        assert!(b.get_group("g").await.unwrap().is_none(), "expired");
        assert!(b.get_state("b").await.unwrap().is_some(), "refreshed");
        // A write sweeps the expired entries (and skips b's stale record).
        b.set_state(&TaskState::pending("c", "t")).await.unwrap();
        {
            let store = b.inner.lock();
            assert!(!store.tasks.contains_key("a"));
            assert!(!store.groups.contains_key("g"));
            assert!(store.tasks.contains_key("b"));
        }
        // An expired previous state is not merged.
        b.set_state(&TaskState::started("a")).await.unwrap();
        assert_eq!(b.get_state("a").await.unwrap().unwrap().task_name, "");
        tokio::time::advance(Duration::from_secs(10)).await;
        assert!(b.get_state("b").await.unwrap().is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn a_task_keeps_one_expiry_record_requeued_while_written_again() {
        let b = MemoryBackend::new(Duration::from_secs(10));
        b.set_state(&TaskState::pending("t", "n")).await.unwrap();
        for _ in 0..3 {
            b.set_state(&TaskState::started("t")).await.unwrap();
        }
        assert_eq!(b.inner.lock().expiry.len(), 1, "one record per task");
        tokio::time::advance(Duration::from_secs(6)).await;
        b.set_state(&TaskState::success("t", vec![])).await.unwrap();
        // Its record (due at 10 s) comes up at 11 s: t was written at 6 s, so it is queued
        // again, for 16 s, not removed.
        tokio::time::advance(Duration::from_secs(5)).await;
        b.set_state(&TaskState::pending("u", "n")).await.unwrap();
        {
            let store = b.inner.lock();
            assert!(store.tasks.contains_key("t"));
            assert_eq!(store.expiry.len(), 2);
        }
        assert!(b.get_state("t").await.unwrap().unwrap().is_success());
        // Purged and written anew at 14 s: its old record (due at 21 s) is stale, the new one
        // (due at 24 s) counts.
        b.purge_state("u").await.unwrap();
        tokio::time::advance(Duration::from_secs(3)).await;
        b.set_state(&TaskState::pending("u", "n")).await.unwrap();
        assert_eq!(b.inner.lock().expiry.len(), 3);
        tokio::time::advance(Duration::from_secs(8)).await;
        b.set_state(&TaskState::pending("v", "n")).await.unwrap();
        let store = b.inner.lock();
        assert!(
            !store.tasks.contains_key("t"),
            "swept once its refreshed expiry passed"
        );
        assert!(
            store.tasks.contains_key("u"),
            "the stale record did not remove u"
        );
        assert_eq!(store.expiry.len(), 2, "u's new record and v's");
    }

    #[tokio::test]
    async fn sweep_is_bounded_per_write() {
        let b = MemoryBackend::new(Duration::from_secs(10));
        for i in 0..200 {
            b.set_state(&TaskState::received(&format!("t{i}")))
                .await
                .unwrap();
        }
        let later = Instant::now() + Duration::from_secs(11);
        let mut store = b.inner.lock();
        store.sweep(later);
        assert_eq!(store.tasks.len(), 200 - SWEEP);
        assert_eq!(store.expiry.len(), 200 - SWEEP);
    }

    #[tokio::test]
    async fn group_states_in_order_and_missing_ones_named() {
        let b = backend();
        let ids: Vec<String> = ["x3", "x1", "x2"].iter().map(|s| (*s).into()).collect();
        assert!(matches!(
            b.group_states("g", 3).await,
            Err(Error::StateNotFound(g)) if g == "g"
        ));
        b.init_group("g", &ids).await.unwrap();
        let meta = b.get_group("g").await.unwrap().unwrap();
        assert_eq!(meta.task_uuids, ids);
        assert!(!meta.chord_triggered);
        for id in ["x1", "x2"] {
            b.set_state(&TaskState::success(id, vec![])).await.unwrap();
        }
        assert!(matches!(
            b.group_states("g", 3).await,
            Err(Error::StateNotFound(u)) if u == "x3"
        ));
        b.set_state(&TaskState::failure("x3", "boom"))
            .await
            .unwrap();
        let states = b.group_states("g", 3).await.unwrap();
        let order: Vec<_> = states.iter().map(|s| s.task_uuid.as_str()).collect();
        assert_eq!(order, ["x3", "x1", "x2"]);
        assert!(b.group_completed("g", 3).await.unwrap());
        b.purge_group("g").await.unwrap();
        assert!(b.get_group("g").await.unwrap().is_none());
        b.purge_state("x1").await.unwrap();
        assert!(b.get_state("x1").await.unwrap().is_none());
    }

    #[tokio::test]
    async fn group_member_completed_reads_states_once_the_count_is_reached() {
        let b = backend();
        assert!(matches!(
            b.group_member_completed("g", 3, true).await,
            Err(Error::StateNotFound(g)) if g == "g"
        ));
        let ids: Vec<String> = ["m1", "m2", "m3"].iter().map(|s| (*s).into()).collect();
        b.init_group("g", &ids).await.unwrap();
        for id in &ids {
            b.set_state(&TaskState::pending(id, "t")).await.unwrap();
        }
        b.set_state(&TaskState::success("m1", vec![]))
            .await
            .unwrap();
        let incomplete = GroupProgress::Incomplete;
        assert_eq!(
            b.group_member_completed("g", 3, true).await.unwrap(),
            incomplete
        );
        // A failure counts too.
        b.set_state(&TaskState::failure("m2", "no")).await.unwrap();
        assert_eq!(
            b.group_member_completed("g", 3, false).await.unwrap(),
            incomplete
        );
        // m1 delivered again: the count reaches 3, but m3 is not complete yet.
        b.set_state(&TaskState::success("m1", vec![]))
            .await
            .unwrap();
        assert_eq!(
            b.group_member_completed("g", 3, true).await.unwrap(),
            incomplete
        );
        // Triggering keeps the count.
        assert!(b.trigger_chord("g").await.unwrap());
        b.set_state(&TaskState::success("m3", vec![]))
            .await
            .unwrap();
        let GroupProgress::CompleteWith(states) =
            b.group_member_completed("g", 3, true).await.unwrap()
        else {
            panic!("complete");
        };
        let order: Vec<_> = states.iter().map(|s| s.task_uuid.as_str()).collect();
        assert_eq!(order, ["m1", "m2", "m3"]);
        assert!(states[1].is_failure());
        // Re-initialising the group starts the count again.
        b.init_group("g", &ids).await.unwrap();
        assert_eq!(
            b.group_member_completed("g", 3, true).await.unwrap(),
            incomplete
        );
        // An expired group is not found.
        b.purge_group("g").await.unwrap();
        assert!(b.group_member_completed("g", 3, true).await.is_err());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_completions_return_the_states_once_without_duplicates() {
        let b = backend();
        let ids: Vec<String> = (0..64).map(|i| format!("m{i}")).collect();
        b.init_group("g", &ids).await.unwrap();
        let handles: Vec<_> = ids
            .iter()
            .cloned()
            .map(|id| {
                let b = b.clone();
                tokio::spawn(async move {
                    b.set_state(&TaskState::success(&id, vec![])).await.unwrap();
                    b.group_member_completed("g", 64, true).await.unwrap()
                        != GroupProgress::Incomplete
                })
            })
            .collect();
        let mut complete = 0;
        for h in handles {
            complete += usize::from(h.await.unwrap());
        }
        assert_eq!(
            complete, 1,
            "only the last completion finds the group complete"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn trigger_chord_is_true_exactly_once() {
        let b = backend();
        assert!(matches!(
            b.trigger_chord("g").await,
            Err(Error::StateNotFound(_))
        ));
        b.init_group("g", &["a".into()]).await.unwrap();
        let handles: Vec<_> = (0..50)
            .map(|_| {
                let b = b.clone();
                tokio::spawn(async move { b.trigger_chord("g").await.unwrap() })
            })
            .collect();
        let mut wins = 0;
        for h in handles {
            wins += usize::from(h.await.unwrap());
        }
        assert_eq!(wins, 1);
        assert!(b.get_group("g").await.unwrap().unwrap().chord_triggered);
    }

    #[tokio::test(start_paused = true)]
    async fn wait_for_change_wakes_on_write() {
        let b = backend();
        b.set_state(&TaskState::pending("t", "n")).await.unwrap();
        assert!(b.get_state("t").await.unwrap().is_some());
        let writer = b.clone();
        let start = Instant::now();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(10)).await;
            writer.set_state(&TaskState::started("t")).await.unwrap();
        });
        b.wait_for_change("t", Duration::from_secs(30)).await;
        assert_eq!(start.elapsed(), Duration::from_millis(10));
        assert!(b.inner.lock().waiters.is_empty(), "waiter removed");

        // Nothing written: the timeout ends the wait.
        let start = Instant::now();
        b.wait_for_change("t", Duration::from_millis(500)).await;
        assert_eq!(start.elapsed(), Duration::from_millis(500));
    }

    #[tokio::test(start_paused = true)]
    async fn wait_for_change_sees_write_since_last_read() {
        let b = backend();
        b.set_state(&TaskState::pending("t", "n")).await.unwrap();
        assert!(b.get_state("t").await.unwrap().is_some());
        b.set_state(&TaskState::started("t")).await.unwrap();
        let start = Instant::now();
        b.wait_for_change("t", Duration::from_secs(30)).await;
        assert_eq!(start.elapsed(), Duration::ZERO, "returns at once");
        // That write is now seen: the next wait blocks until the timeout.
        b.wait_for_change("t", Duration::from_secs(1)).await;
        assert_eq!(start.elapsed(), Duration::from_secs(1));

        // A key written for the first time after the caller saw nothing.
        assert!(b.get_state("new").await.unwrap().is_none());
        b.set_state(&TaskState::pending("new", "n")).await.unwrap();
        let start = Instant::now();
        b.wait_for_change("new", Duration::from_secs(30)).await;
        assert_eq!(start.elapsed(), Duration::ZERO);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_waiters_all_wake() {
        let b = backend();
        let handles: Vec<_> = (0..8)
            .map(|_| {
                let b = b.clone();
                tokio::spawn(async move {
                    b.wait_for_change("t", Duration::from_secs(30)).await;
                })
            })
            .collect();
        while b.inner.lock().waiters.get("t").map_or(0, |w| w.count) < 8 {
            tokio::task::yield_now().await;
        }
        b.set_state(&TaskState::pending("t", "n")).await.unwrap();
        for h in handles {
            tokio::time::timeout(Duration::from_secs(5), h)
                .await
                .expect("woken")
                .unwrap();
        }
        assert!(b.inner.lock().waiters.is_empty());
    }
}
