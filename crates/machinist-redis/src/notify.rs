//! Pushed result waits: [`Notices`] wakes [`Backend::wait_for_change`] callers when the state
//! they wait for is written, instead of letting them sleep a poll interval.
//!
//! * **Write path.** Every SUCCESS or FAILURE write also sends
//!   `PUBLISH <prefix>:state:<uuid> <STATE>`: in the same request as the worker's `SET`, or
//!   inside the [`SET_STATE`](crate::scripts::SET_STATE) script for a bare `set_state`. No
//!   extra round trip, and with nobody subscribed Redis only looks the channel up. That is one announcement per task,
//!   what result waiters wait for; the intermediate states (RECEIVED, STARTED, RETRY) and
//!   PENDING announce nothing (three more `PUBLISH`es per task cost about a tenth of the
//!   worker's throughput) and are seen by the fallback poll.
//! * **Wait path.** One pub/sub connection per [`RedisBackend`](crate::RedisBackend) (opened on
//!   the first wait) subscribes to the channels of the tasks being waited for, one `SUBSCRIBE`
//!   per task the first time, kept for a few seconds after the last waiter left (a waiter reads
//!   the state between two waits, so it keeps its subscription), then dropped in batches.
//!   A wait that had to subscribe returns at once: the caller's read may predate the
//!   subscription, so it reads again, and any write after that read is announced.
//! * **Go peers** announce nothing, so no wait sleeps longer than
//!   [`RedisOptions::state_poll`](crate::RedisOptions::state_poll) (1 s by default): their
//!   writes are seen by that poll. When the server has keyspace notifications on for string
//!   commands (`notify-keyspace-events` with `K` and `$` or `A`), the waiter also subscribes
//!   to `__keyspace@<db>__:<uuid>`, and Go's `SET`s wake it at once too.
//! * **Outages.** While the pub/sub connection is down, waits sleep the poll; when it is lost,
//!   every waiter is woken (announcements may have been missed) and it is reopened with
//!   back-off. A `PING` every few seconds finds a connection that hangs.
//! * **Cluster**: no announcements (a `PUBLISH` in a cluster is broadcast to every node);
//!   waits sleep the caller's poll interval, as before.
//!
//! [`Backend::wait_for_change`]: machinist_core::Backend::wait_for_change

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use futures_util::StreamExt;
use redis::aio::PubSubSink;
use tokio::sync::{Notify, watch};
use tokio::time::Instant;
use tracing::debug;

use crate::conn::{Backoff, RedisConnection};

/// How long a subscription outlives its last waiter.
const LINGER: Duration = Duration::from_secs(5);
/// How often idle subscriptions are dropped and the connection is pinged.
const SWEEP: Duration = Duration::from_secs(3);

/// The subscriptions of one backend and the task that keeps its pub/sub connection.
pub(crate) struct Notices {
    conn: RedisConnection,
    /// `<prefix>:state:`.
    channel_prefix: String,
    hub: Mutex<Hub>,
    /// Signalled when a pub/sub connection comes up.
    link_up: Notify,
}

#[derive(Default)]
struct Hub {
    entries: HashMap<String, Entry>,
    /// The open pub/sub connection, if any.
    link: Option<Link>,
    /// Bumped per connection, so subscriptions made on a lost one count as gone.
    epoch: u64,
    started: bool,
}

#[derive(Clone)]
struct Link {
    sink: PubSubSink,
    epoch: u64,
    /// `__keyspace@<db>__:` when the server publishes keyspace events for `SET`.
    keyspace: Option<String>,
}

struct Entry {
    /// Bumped by every announcement for the task.
    version: watch::Sender<u64>,
    /// The version when a wait last returned: a later one means "changed meanwhile".
    seen: u64,
    waiters: usize,
    subscribed: Subscribed,
    idle_since: Instant,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Subscribed {
    No,
    Pending(u64),
    Active(u64),
}

impl Notices {
    pub(crate) fn new(conn: RedisConnection) -> Arc<Self> {
        let channel_prefix = format!("{}:state:", conn.options().key_prefix);
        Arc::new(Notices {
            conn,
            channel_prefix,
            hub: Mutex::new(Hub::default()),
            link_up: Notify::new(),
        })
    }

    /// The channel announcing writes of `task_uuid`'s state.
    pub(crate) fn channel(&self, task_uuid: &str) -> String {
        // One exact allocation, no formatting machinery: this runs once per task.
        let mut channel = String::with_capacity(self.channel_prefix.len() + task_uuid.len());
        channel.push_str(&self.channel_prefix);
        channel.push_str(task_uuid);
        channel
    }

    fn hub(&self) -> std::sync::MutexGuard<'_, Hub> {
        self.hub.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Waits until `task_uuid`'s state is announced, `timeout` passed, or the fallback poll
    /// ([`RedisOptions::state_poll`](crate::RedisOptions::state_poll)) is due.
    pub(crate) async fn wait(self: &Arc<Self>, task_uuid: &str, timeout: Duration) {
        let cap = timeout.min(self.conn.options().state_poll);
        let link_up = self.link_up.notified();
        tokio::pin!(link_up);
        link_up.as_mut().enable();
        let link = {
            let mut hub = self.hub();
            if !hub.started {
                hub.started = true;
                tokio::spawn(run(Arc::downgrade(self), self.conn.clone()));
            }
            hub.link.clone()
        };
        let Some(link) = link else {
            // Connecting (first wait) or reconnecting: return as soon as it is up, so that the
            // caller reads again and its next wait subscribes.
            let _ = tokio::time::timeout(cap, link_up).await;
            return;
        };
        let (mut changed, subscribe) = {
            let mut hub = self.hub();
            let entry = hub
                .entries
                .entry(task_uuid.to_owned())
                .or_insert_with(|| Entry {
                    version: watch::Sender::new(0),
                    seen: 0,
                    waiters: 0,
                    subscribed: Subscribed::No,
                    idle_since: Instant::now(),
                });
            let version = *entry.version.borrow();
            if version != entry.seen {
                // Announced since the last wait returned: the caller has not read it yet.
                entry.seen = version;
                return;
            }
            entry.waiters += 1;
            let subscribe = match entry.subscribed {
                Subscribed::Active(e) | Subscribed::Pending(e) if e == link.epoch => false,
                _ => {
                    entry.subscribed = Subscribed::Pending(link.epoch);
                    true
                }
            };
            (entry.version.subscribe(), subscribe)
        };
        let _waiting = Waiting {
            notices: self,
            task_uuid,
        };
        if subscribe {
            let mut channels = vec![self.channel(task_uuid)];
            if let Some(keyspace) = &link.keyspace {
                channels.push(format!("{keyspace}{task_uuid}"));
            }
            let mut sink = link.sink.clone();
            let done = tokio::time::timeout(cap, sink.subscribe(channels)).await;
            let ok = matches!(done, Ok(Ok(())));
            {
                let mut hub = self.hub();
                if let Some(entry) = hub.entries.get_mut(task_uuid)
                    && entry.subscribed == Subscribed::Pending(link.epoch)
                {
                    entry.subscribed = if ok {
                        Subscribed::Active(link.epoch)
                    } else {
                        Subscribed::No
                    };
                }
            }
            if ok {
                // The caller's read may predate the subscription: let it read again.
                return;
            }
            debug!("could not subscribe to state announcements: {done:?}");
        }
        let _ = tokio::time::timeout(cap, changed.changed()).await;
    }

    /// Wakes the waiters of the task a message on `channel` is about.
    fn deliver(&self, channel: &str) {
        let mut hub = self.hub();
        let keyspace = hub.link.as_ref().and_then(|l| l.keyspace.clone());
        let uuid = channel.strip_prefix(&self.channel_prefix).or_else(|| {
            keyspace
                .as_deref()
                .and_then(|prefix| channel.strip_prefix(prefix))
        });
        if let Some(entry) = uuid.and_then(|u| hub.entries.get_mut(u)) {
            entry.version.send_modify(|v| *v = v.wrapping_add(1));
        }
    }

    /// A new connection is up.
    fn linked(&self, sink: PubSubSink, keyspace: Option<String>) {
        {
            let mut hub = self.hub();
            hub.epoch += 1;
            hub.link = Some(Link {
                sink,
                epoch: hub.epoch,
                keyspace,
            });
        }
        self.link_up.notify_waiters();
    }

    /// The connection is lost: subscriptions are gone, announcements may have been missed.
    fn unlinked(&self) {
        let mut hub = self.hub();
        hub.link = None;
        for entry in hub.entries.values_mut() {
            entry.subscribed = Subscribed::No;
            entry.version.send_modify(|v| *v = v.wrapping_add(1));
        }
    }

    /// Forgets the tasks nobody waited for during [`LINGER`]; returns the channels to leave.
    fn sweep(&self) -> Vec<String> {
        let mut hub = self.hub();
        let epoch = hub.link.as_ref().map(|l| l.epoch);
        let keyspace = hub.link.as_ref().and_then(|l| l.keyspace.clone());
        let mut leave = Vec::new();
        hub.entries.retain(|uuid, entry| {
            let idle = entry.waiters == 0 && entry.idle_since.elapsed() >= LINGER;
            if idle && Some(entry.subscribed) == epoch.map(Subscribed::Active) {
                leave.push(format!("{}{uuid}", self.channel_prefix));
                if let Some(prefix) = &keyspace {
                    leave.push(format!("{prefix}{uuid}"));
                }
            }
            !idle
        });
        leave
    }
}

/// One waiter of a task, unregistered when its wait returns or is cancelled.
struct Waiting<'a> {
    notices: &'a Notices,
    task_uuid: &'a str,
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        let mut hub = self.notices.hub();
        if let Some(entry) = hub.entries.get_mut(self.task_uuid) {
            entry.waiters = entry.waiters.saturating_sub(1);
            entry.seen = *entry.version.borrow();
            if entry.waiters == 0 {
                entry.idle_since = Instant::now();
            }
        }
    }
}

/// Keeps the pub/sub connection of `notices` open while the backend lives: opens it (with
/// back-off), routes its messages, drops idle subscriptions, pings it.
async fn run(notices: Weak<Notices>, conn: RedisConnection) {
    let mut backoff = Backoff::default();
    loop {
        if notices.strong_count() == 0 {
            return;
        }
        let pubsub = match conn.pubsub().await {
            Ok(Some(pubsub)) => pubsub,
            Ok(None) => return,
            Err(e) => {
                debug!("state announcements unavailable ({e}); waiters poll meanwhile");
                tokio::time::sleep(backoff.next_delay()).await;
                continue;
            }
        };
        backoff.reset();
        let keyspace = keyspace_prefix(&conn).await;
        let (mut sink, mut stream) = pubsub.split();
        match notices.upgrade() {
            Some(n) => n.linked(sink.clone(), keyspace),
            None => return,
        }
        let mut sweep = tokio::time::interval(SWEEP);
        sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                message = stream.next() => match message {
                    Some(message) => match notices.upgrade() {
                        Some(n) => n.deliver(message.get_channel_name()),
                        None => return,
                    },
                    None => break,
                },
                _ = sweep.tick() => {
                    let Some(n) = notices.upgrade() else { return };
                    let leave = n.sweep();
                    drop(n);
                    let bound = conn.options().response_timeout;
                    if !leave.is_empty()
                        && !matches!(
                            tokio::time::timeout(bound, sink.unsubscribe(leave)).await,
                            Ok(Ok(()))
                        )
                    {
                        break;
                    }
                    if !matches!(
                        tokio::time::timeout(bound, sink.ping::<redis::Value>()).await,
                        Ok(Ok(_))
                    ) {
                        break;
                    }
                }
            }
        }
        debug!("state announcement connection lost; reopening");
        match notices.upgrade() {
            Some(n) => n.unlinked(),
            None => return,
        }
        tokio::time::sleep(backoff.next_delay()).await;
    }
}

/// `__keyspace@<db>__:` when the server announces `SET`s as keyspace events
/// (`notify-keyspace-events` holds `K` and `$` or `A`); `None` otherwise or when `CONFIG` is
/// not allowed.
async fn keyspace_prefix(conn: &RedisConnection) -> Option<String> {
    let mut c = conn.conn();
    let config: HashMap<String, String> = redis::cmd("CONFIG")
        .arg("GET")
        .arg("notify-keyspace-events")
        .query_async(&mut c)
        .await
        .ok()?;
    let flags = config.get("notify-keyspace-events")?;
    (flags.contains('K') && (flags.contains('A') || flags.contains('$')))
        .then(|| format!("__keyspace@{}__:", conn.options().target.auth.db))
}
