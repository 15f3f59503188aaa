//! The scheduler: one Tokio task per registered job. It sleeps on Tokio time in naps of at
//! most [`MAX_NAP`], re-reading the wall clock after each (so a paused-clock test drives it,
//! and a wall clock that jumps is noticed within a nap), picks the tick that is due, applies
//! the misfire policy, and fires through the two locks described in the [module docs](super).

use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use super::{Misfire, PeriodicJob, Work, fence_key};
use crate::error::Result;
use crate::server::{Server, ServerInner};
use crate::signature::{Headers, Signature};
use crate::workflow::{Chain, Chord, Group};

/// The wall clock the scheduler reads (see [`Server::set_periodic_clock`]).
pub type Clock = Arc<dyn Fn() -> DateTime<Utc> + Send + Sync>;

/// The longest the scheduler sleeps before it looks at the wall clock again.
pub(crate) const MAX_NAP: Duration = Duration::from_secs(1);
/// How late the latest due tick may be and still fire under [`Misfire::Skip`].
pub const MISFIRE_GRACE: Duration = Duration::from_secs(60);
/// How long past the following tick the per-tick fence key lives.
pub const FENCE_MARGIN: Duration = Duration::from_secs(10);
/// A wall clock that goes back further than this from the last tick re-bases the schedule
/// (shorter jumps back just wait, as cron does, so no tick fires twice).
pub(crate) const REBASE_AFTER: Duration = Duration::from_secs(3 * 3600);
/// Attempts at a lock call that fails (an error, not "held by someone").
const LOCK_ATTEMPTS: u32 = 3;

/// The periodic state of a server: the clock and the token that stops every job.
#[derive(Default)]
pub(crate) struct Registry {
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// Cancelled by `stop_periodic`, then replaced so that later registrations run.
    stop: CancellationToken,
    clock: Option<Clock>,
}

impl Registry {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn now(&self) -> DateTime<Utc> {
        let clock = self.state().clock.clone();
        clock.map_or_else(Utc::now, |c| c())
    }

    pub(crate) fn set_clock(&self, clock: Clock) {
        self.state().clock = Some(clock);
    }

    pub(crate) fn token(&self) -> CancellationToken {
        self.state().stop.clone()
    }

    pub(crate) fn stop(&self) {
        let old = std::mem::take(&mut self.state().stop);
        old.cancel();
    }
}

/// A dropped server stops its jobs at once (and the watchers of `stop_periodic_on`).
impl Drop for Registry {
    fn drop(&mut self) {
        self.state().stop.cancel();
    }
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry").finish_non_exhaustive()
    }
}

fn now_of(server: &Weak<ServerInner>) -> Option<DateTime<Utc>> {
    server.upgrade().map(|s| s.periodic.now())
}

fn to_std(d: TimeDelta) -> Duration {
    d.to_std().unwrap_or(Duration::ZERO)
}

/// Runs one job until `stop` is cancelled or the server is dropped.
pub(crate) async fn run(server: Weak<ServerInner>, job: Arc<PeriodicJob>, stop: CancellationToken) {
    let key = job.lock_key();
    let Some(start) = now_of(&server) else {
        return;
    };
    let Some(mut next) = job.schedule.next_after(start) else {
        warn!(name = %job.name, spec = %job.schedule, "periodic job never fires");
        return;
    };
    // The instant `next` was computed from (a tick, or the clock at a re-base).
    let mut anchor = start;
    info!(
        name = %job.name,
        spec = %job.schedule,
        key = %key,
        next = %crate::time::display(&next),
        "periodic job scheduled"
    );
    loop {
        // Sleep until the wall clock reaches `next`.
        loop {
            let Some(now) = now_of(&server) else {
                return;
            };
            if now >= next {
                break;
            }
            if now + TimeDelta::from_std(REBASE_AFTER).unwrap_or(TimeDelta::MAX) < anchor {
                warn!(name = %job.name, "the wall clock went back hours: re-basing the schedule");
                let Some(n) = job.schedule.next_after(now) else {
                    return;
                };
                next = n;
                anchor = now;
                continue;
            }
            let wait = to_std(next - now).clamp(Duration::from_millis(1), MAX_NAP);
            tokio::select! {
                biased;
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(wait) => {}
            }
        }
        if stop.is_cancelled() {
            return;
        }
        let Some(now) = now_of(&server) else {
            return;
        };
        let (tick, following) = job.schedule.last_at_or_before(next, now);
        let stale = to_std(now - tick) > MISFIRE_GRACE;
        if tick > next || stale {
            let firing = !stale || job.misfire == Misfire::CatchUpLast;
            warn!(
                name = %job.name,
                first_missed = %crate::time::display(&next),
                latest = %crate::time::display(&tick),
                late_by = ?to_std(now - tick),
                "periodic job missed ticks (process asleep, busy, or the clock jumped): {}",
                if firing { "firing the latest once" } else { "skipping them" }
            );
            if firing {
                fire_tick(&server, &job, &key, tick, following).await;
            }
        } else {
            fire_tick(&server, &job, &key, tick, following).await;
        }
        anchor = tick;
        let Some(following) = following else {
            info!(name = %job.name, "periodic job has no further ticks");
            return;
        };
        next = following;
    }
}

async fn fire_tick(
    server: &Weak<ServerInner>,
    job: &PeriodicJob,
    key: &str,
    tick: DateTime<Utc>,
    following: Option<DateTime<Utc>>,
) {
    let Some(inner) = server.upgrade() else {
        return;
    };
    let server = Server { inner };
    // With no following tick, hold the key for a day: nothing else will ask for it.
    let following = following.unwrap_or(tick + TimeDelta::days(1));
    let deadline = following - TimeDelta::nanoseconds(1);
    let fence = fence_key(key, tick);
    let fence_until = following + TimeDelta::from_std(FENCE_MARGIN).unwrap_or(TimeDelta::MAX);
    let t = crate::time::display(&tick);
    for (key, until) in [(key, deadline), (fence.as_str(), fence_until)] {
        match take(&server, key, until).await {
            Ok(true) => {}
            Ok(false) => {
                debug!(name = %job.name, tick = %t, key, "tick taken by another scheduler");
                return;
            }
            Err(e) => {
                error!(name = %job.name, tick = %t, "periodic lock failed, tick not fired: {e}");
                return;
            }
        }
    }
    match send(&server, job, tick).await {
        Ok(uuid) => debug!(name = %job.name, tick = %t, uuid = %uuid, "periodic job fired"),
        Err(e) => error!(name = %job.name, tick = %t, "periodic job could not be sent: {e}"),
    }
}

/// `try_lock`, retried a few times on errors (never on "held").
async fn take(server: &Server, key: &str, until: DateTime<Utc>) -> Result<bool> {
    let mut attempt = 1;
    loop {
        match server.lock().try_lock(key, until).await {
            Ok(taken) => return Ok(taken),
            Err(e) if attempt < LOCK_ATTEMPTS => {
                warn!(key = %key, "periodic lock failed (attempt {attempt}): {e}");
                tokio::time::sleep(Duration::from_millis(100 * u64::from(attempt))).await;
                attempt += 1;
            }
            Err(e) => return Err(e),
        }
    }
}

/// A fresh copy of `sig` with the periodic headers.
fn stamp(sig: &Signature, name: &str, tick: &str) -> Signature {
    let mut sig = sig.clone();
    let headers = sig.headers.get_or_insert_with(Headers::new);
    headers.insert(super::PERIODIC_HEADER, name);
    headers.insert(super::PERIODIC_TICK_HEADER, tick);
    sig
}

fn stamp_all(sigs: &[Signature], name: &str, tick: &str) -> Vec<Signature> {
    sigs.iter().map(|s| stamp(s, name, tick)).collect()
}

/// Sends a fresh copy of the job's work (new UUIDs unless the template fixed them); returns
/// the UUID to log (task, group, first of the chain, chord callback).
async fn send(server: &Server, job: &PeriodicJob, tick: DateTime<Utc>) -> Result<String> {
    let tick = crate::time::format(&tick);
    let copy = |sigs: &Vec<Signature>| stamp_all(sigs, &job.name, &tick);
    match &job.work {
        Work::Task(sig) => {
            let r = server.send_task(stamp(sig, &job.name, &tick)).await?;
            Ok(r.uuid().to_owned())
        }
        Work::Group {
            send_concurrency,
            tasks,
        } => {
            let group = Group::new(copy(tasks));
            let uuid = group.group_uuid.clone();
            server.send_group(group, *send_concurrency).await?;
            Ok(uuid)
        }
        Work::Chain(tasks) => {
            let chain = Chain::new(copy(tasks));
            let r = server.send_chain(chain).await?;
            Ok(r.results
                .first()
                .map(|r| r.uuid().to_owned())
                .unwrap_or_default())
        }
        Work::Chord {
            send_concurrency,
            callback,
            tasks,
        } => {
            let chord = Chord::new(Group::new(copy(tasks)), stamp(callback, &job.name, &tick));
            let r = server.send_chord(chord, *send_concurrency).await?;
            Ok(r.callback.uuid().to_owned())
        }
    }
}
