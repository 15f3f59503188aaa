//! [`SqliteBroker`]: messages in the `messages` table, delivered under a lease.

use std::collections::VecDeque;
use std::future::poll_fn;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::Poll;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use machinist_core::broker::{Acknowledger, Broker, Consumer, Delivery};
use machinist_core::{Error, Result, Signature};
use rusqlite::{Connection, OptionalExtension, params};
use tokio::sync::futures::OwnedNotified;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, TryAcquireError};
use tracing::{debug, warn};

use crate::error::{SqlResult, SqliteError};
use crate::store::{StoreInner, Wake, ceil_ms, now_ms, value_bytes};

/// The most messages one dequeue takes.
const MAX_FETCH: usize = 64;
/// How long an idle consumer sleeps when nothing at all is stored for its queues (it is woken
/// earlier by any publish, in this process or another).
const IDLE_SLEEP: Duration = Duration::from_secs(3600);

/// The [`Broker`] of a [`SqliteStore`](crate::SqliteStore).
///
/// * `publish` inserts a row, visible at `max(now, ETA)` (ETAs rounded up to the millisecond).
/// * `consume(queues, prefetch)` takes the oldest visible rows of the first queue that has
///   some, then the next queue …, up to the free prefetch in one transaction, and hides them
///   for the lease ([`SqliteOptions::lease`](crate::SqliteOptions::lease)) under a token of
///   its own. A consumer waits without polling: publishes and requeues in this process wake it
///   at once, other processes' writes within the poll interval, and with only delayed or
///   leased rows stored it sleeps until the earliest of them becomes visible.
/// * `ack` and `nack(false)` delete the row, `nack(true)` makes it visible again at its
///   original place in the queue, `dead_letter` keeps it with its reason, `extend` pushes the
///   lease on — each only while the lease token still matches. A delivery dropped undecided
///   is returned like `nack(true)`; one whose worker died comes back when its lease lapses.
///   Redeliveries are counted.
/// * `pending` lists visible rows (including ones whose lease lapsed), `delayed` rows waiting
///   for their ETA, `purge` deletes the visible rows of a queue (not delayed, leased or dead
///   ones, like the in-memory broker).
/// * `close` stops this store's consumers and refuses publishes; stored messages stay.
#[derive(Clone)]
pub struct SqliteBroker {
    store: Arc<StoreInner>,
}

impl std::fmt::Debug for SqliteBroker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteBroker")
            .field("location", &self.store.describe())
            .finish()
    }
}

fn limit(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn broker_err(e: SqliteError) -> Error {
    Error::broker(e)
}

impl SqliteBroker {
    pub(crate) fn new(store: Arc<StoreInner>) -> Self {
        SqliteBroker { store }
    }
}

#[async_trait]
impl Broker for SqliteBroker {
    async fn publish(&self, signature: &Signature, body: Bytes) -> Result<()> {
        if self.store.broker_closed() {
            return Err(Error::Shutdown);
        }
        let queue = signature.routing_key.clone();
        let eta = signature.eta.map(ceil_ms);
        self.store
            .write_one(move |conn, now, wakes| {
                let visible_at = eta.map_or(now, |eta| eta.max(now));
                conn.prepare_cached(
                    "INSERT INTO messages (queue, body, visible_at, enqueued_at) \
                     VALUES (?1, ?2, ?3, ?3)",
                )?
                .execute(params![queue, &body[..], visible_at])?;
                // Also for a delayed message: a consumer sleeping until a later ETA must
                // look again.
                wakes.push(Wake::Queue(queue));
                Ok(())
            })
            .await
            .map_err(broker_err)
    }

    async fn consume(&self, queues: &[String], prefetch: usize) -> Result<Box<dyn Consumer>> {
        if queues.is_empty() {
            return Err(Error::Config("consume needs at least one queue".into()));
        }
        let mut names: Vec<String> = Vec::with_capacity(queues.len());
        for q in queues {
            if !names.contains(q) {
                names.push(q.clone());
            }
        }
        let notifies = names
            .iter()
            .map(|q| self.store.shared.queue_notify(q))
            .collect();
        let permits = if prefetch == 0 {
            Semaphore::MAX_PERMITS
        } else {
            prefetch.min(Semaphore::MAX_PERMITS)
        };
        Ok(Box::new(SqliteConsumer {
            store: Arc::clone(&self.store),
            queues: Arc::new(names),
            notifies,
            permits: Arc::new(Semaphore::new(permits)),
            batch: permits.clamp(1, MAX_FETCH),
            buffer: VecDeque::new(),
            stopped: false,
        }))
    }

    async fn pending(&self, queue: &str, limit_n: usize) -> Result<Vec<Bytes>> {
        let queue = queue.to_owned();
        self.store
            .read(move |conn, now| {
                let mut stmt = conn.prepare_cached(
                    "SELECT body FROM messages \
                     WHERE queue = ?1 AND dead_reason IS NULL AND visible_at <= ?2 \
                     ORDER BY visible_at, id LIMIT ?3",
                )?;
                let rows = stmt.query_map(params![queue, now, limit(limit_n)], |r| {
                    Ok(Bytes::from(value_bytes(r.get_ref(0)?)))
                })?;
                Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
            })
            .await
            .map_err(broker_err)
    }

    async fn delayed(&self, limit_n: usize) -> Result<Vec<(DateTime<Utc>, Bytes)>> {
        self.store
            .read(move |conn, now| {
                let mut stmt = conn.prepare_cached(
                    "SELECT visible_at, body FROM messages \
                     WHERE dead_reason IS NULL AND lease_token IS NULL AND visible_at > ?1 \
                     ORDER BY visible_at, id LIMIT ?2",
                )?;
                let rows = stmt.query_map(params![now, limit(limit_n)], |r| {
                    let at: i64 = r.get(0)?;
                    Ok((
                        DateTime::from_timestamp_millis(at).unwrap_or(DateTime::<Utc>::MAX_UTC),
                        Bytes::from(value_bytes(r.get_ref(1)?)),
                    ))
                })?;
                Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
            })
            .await
            .map_err(broker_err)
    }

    async fn dead_letters(&self, queue: &str, limit_n: usize) -> Result<Vec<(String, Bytes)>> {
        let queue = queue.to_owned();
        self.store
            .read(move |conn, _| {
                let mut stmt = conn.prepare_cached(
                    "SELECT dead_reason, body FROM messages \
                     WHERE queue = ?1 AND dead_reason IS NOT NULL ORDER BY id LIMIT ?2",
                )?;
                let rows = stmt.query_map(params![queue, limit(limit_n)], |r| {
                    let reason = String::from_utf8_lossy(&value_bytes(r.get_ref(0)?)).into_owned();
                    Ok((reason, Bytes::from(value_bytes(r.get_ref(1)?))))
                })?;
                Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
            })
            .await
            .map_err(broker_err)
    }

    async fn purge(&self, queue: &str) -> Result<u64> {
        let queue = queue.to_owned();
        self.store
            .write_one(move |conn, now, _| {
                let n = conn
                    .prepare_cached(
                        "DELETE FROM messages \
                         WHERE queue = ?1 AND dead_reason IS NULL AND visible_at <= ?2",
                    )?
                    .execute(params![queue, now])?;
                Ok(n as u64)
            })
            .await
            .map_err(broker_err)
    }

    fn describe(&self) -> String {
        self.store.describe()
    }

    async fn close(&self) {
        self.store.close_broker();
    }
}

// -------------------------------------------------------------------------------------------
// Leases.
// -------------------------------------------------------------------------------------------

/// A message taken under a lease. Dropped while still armed (the consumer or worker went away
/// without deciding), it gives the message back.
pub(crate) struct LeasedRow {
    store: Arc<StoreInner>,
    id: i64,
    token: i64,
    queue: String,
    body: Bytes,
    redeliveries: u32,
    /// Still ours to give back.
    armed: bool,
    /// Handed to a worker: giving it back counts a redelivery.
    handed_out: bool,
}

impl Drop for LeasedRow {
    fn drop(&mut self) {
        if self.armed {
            let (id, token, queue, count) =
                (self.id, self.token, self.queue.clone(), self.handed_out);
            self.store.write_detached(move |conn, _, wakes| {
                release(conn, id, token, count)?;
                wakes.push(Wake::Queue(queue));
                Ok(())
            });
        }
    }
}

/// Makes a leased row visible again at its original place in the queue.
fn release(conn: &Connection, id: i64, token: i64, count_redelivery: bool) -> SqlResult<usize> {
    Ok(conn
        .prepare_cached(
            "UPDATE messages SET visible_at = enqueued_at, lease_token = NULL, \
             redeliveries = redeliveries + ?3 WHERE id = ?1 AND lease_token = ?2",
        )?
        .execute(params![id, token, i64::from(count_redelivery)])?)
}

/// What one dequeue returns.
struct Dequeued {
    rows: Vec<LeasedRow>,
    /// With no row taken: when the earliest stored row of these queues becomes visible.
    next_due: Option<i64>,
}

/// Takes up to `n` visible rows from `queues` (in priority order) under a fresh lease.
async fn dequeue(
    store: &Arc<StoreInner>,
    queues: Arc<Vec<String>>,
    n: usize,
) -> SqlResult<Dequeued> {
    let token = store.next_token();
    let lease = store.options.lease_ms();
    let owner = Arc::clone(store);
    store
        .write(move |conn, now, _| {
            let mut rows = Vec::new();
            let mut select = conn.prepare_cached(
                "SELECT id, body, redeliveries, lease_token IS NOT NULL FROM messages \
                 WHERE queue = ?1 AND dead_reason IS NULL AND visible_at <= ?2 \
                 ORDER BY visible_at, id LIMIT ?3",
            )?;
            let mut update = conn.prepare_cached(
                "UPDATE messages SET visible_at = ?2, lease_token = ?3, redeliveries = ?4 \
                 WHERE id = ?1",
            )?;
            for queue in queues.iter() {
                if rows.len() >= n {
                    break;
                }
                let found = select
                    .query_map(params![queue, now, limit(n - rows.len())], |r| {
                        let redeliveries: Option<i64> = r.get(2)?;
                        let lapsed: bool = r.get(3)?;
                        Ok((
                            r.get::<_, i64>(0)?,
                            value_bytes(r.get_ref(1)?),
                            redeliveries.unwrap_or(0).max(0) + i64::from(lapsed),
                        ))
                    })?
                    .collect::<rusqlite::Result<Vec<_>>>()?;
                for (id, body, redeliveries) in found {
                    update.execute(params![id, now.saturating_add(lease), token, redeliveries])?;
                    rows.push(LeasedRow {
                        store: Arc::clone(&owner),
                        id,
                        token,
                        queue: queue.clone(),
                        body: Bytes::from(body),
                        redeliveries: u32::try_from(redeliveries).unwrap_or(u32::MAX),
                        armed: true,
                        handed_out: false,
                    });
                }
            }
            let mut next_due = None;
            if rows.is_empty() {
                let mut first = conn.prepare_cached(
                    "SELECT visible_at FROM messages WHERE queue = ?1 AND dead_reason IS NULL \
                     ORDER BY visible_at LIMIT 1",
                )?;
                for queue in queues.iter() {
                    let at: Option<i64> = first.query_row([queue], |r| r.get(0)).optional()?;
                    next_due = match (next_due, at) {
                        (Some(a), Some(b)) => Some(std::cmp::min(a, b)),
                        (a, b) => a.or(b),
                    };
                }
            }
            Ok(Dequeued { rows, next_due })
        })
        .await
}

/// When the earliest stored row of `queues` becomes (or became) visible, read on a read
/// connection.
async fn earliest(store: &Arc<StoreInner>, queues: Arc<Vec<String>>) -> SqlResult<Option<i64>> {
    store
        .read(move |conn, _| {
            let mut first = conn.prepare_cached(
                "SELECT visible_at FROM messages WHERE queue = ?1 AND dead_reason IS NULL \
                 ORDER BY visible_at LIMIT 1",
            )?;
            let mut earliest: Option<i64> = None;
            for queue in queues.iter() {
                if let Some(at) = first.query_row([queue], |r| r.get(0)).optional()? {
                    earliest = Some(earliest.map_or(at, |e: i64| e.min(at)));
                }
            }
            Ok(earliest)
        })
        .await
}

/// Why an idle consumer woke.
enum Woke {
    /// The broker was closed.
    Shutdown,
    /// A publish or requeue in this process.
    Local,
    /// Another process wrote something.
    External,
    /// The earliest stored row is due.
    Due,
}

/// Waits for one of `waits` (the last being the wake-up for other processes' writes), for
/// `due` (unix ms; `None`: nothing stored), or for the broker to close.
async fn wait_for(
    waits: &mut [Pin<Box<OwnedNotified>>],
    due: Option<i64>,
    store: &StoreInner,
) -> Woke {
    let sleep = due.map_or(IDLE_SLEEP, |at| {
        Duration::from_millis(u64::try_from(at - now_ms()).unwrap_or(0).max(1))
    });
    let last = waits.len().saturating_sub(1);
    let any = poll_fn(|cx| {
        for (i, wait) in waits.iter_mut().enumerate() {
            if wait.as_mut().poll(cx).is_ready() {
                return Poll::Ready(if i == last {
                    Woke::External
                } else {
                    Woke::Local
                });
            }
        }
        Poll::Pending
    });
    tokio::select! {
        biased;
        () = store.broker_shutdown.cancelled() => Woke::Shutdown,
        wake = any => wake,
        () = tokio::time::sleep(sleep) => Woke::Due,
    }
}

// -------------------------------------------------------------------------------------------
// Consumer.
// -------------------------------------------------------------------------------------------

struct SqliteConsumer {
    store: Arc<StoreInner>,
    /// In priority order, without duplicates.
    queues: Arc<Vec<String>>,
    notifies: Vec<Arc<tokio::sync::Notify>>,
    /// One permit per message held (buffered or handed out and undecided).
    permits: Arc<Semaphore>,
    /// The most messages one dequeue takes.
    batch: usize,
    /// Taken in the last dequeue, not yet handed out.
    buffer: VecDeque<(LeasedRow, OwnedSemaphorePermit)>,
    stopped: bool,
}

impl SqliteConsumer {
    fn deliver(&self, mut row: LeasedRow, permit: OwnedSemaphorePermit) -> Delivery {
        row.handed_out = true;
        let body = std::mem::take(&mut row.body);
        let queue = row.queue.clone();
        let redeliveries = row.redeliveries;
        let acker = SqliteAcker {
            store: Arc::clone(&self.store),
            id: row.id,
            token: row.token,
            queue: queue.clone(),
            held: Mutex::new(Some((row, permit))),
        };
        let mut delivery = Delivery::new(queue, body, Box::new(acker));
        delivery.redeliveries = redeliveries;
        delivery
    }

    fn closed(&self) -> bool {
        self.stopped || self.store.broker_closed()
    }
}

#[async_trait]
impl Consumer for SqliteConsumer {
    async fn next(&mut self) -> Result<Option<Delivery>> {
        if self.closed() {
            return Ok(None);
        }
        if let Some((row, permit)) = self.buffer.pop_front() {
            return Ok(Some(self.deliver(row, permit)));
        }
        // Room first, so that a message is only taken by a consumer that can hold it.
        let permit = match Arc::clone(&self.permits).try_acquire_owned() {
            Ok(permit) => permit,
            Err(TryAcquireError::Closed) => return Ok(None),
            Err(TryAcquireError::NoPermits) => {
                tokio::select! {
                    biased;
                    () = self.store.broker_shutdown.cancelled() => return Ok(None),
                    permit = Arc::clone(&self.permits).acquire_owned() => match permit {
                        Ok(permit) => permit,
                        Err(_) => return Ok(None),
                    },
                }
            }
        };
        let mut peek_first = false;
        loop {
            // Register for wake-ups *before* looking, so that none is lost. The last one is
            // the wake-up for other processes' writes.
            let mut waits: Vec<Pin<Box<OwnedNotified>>> = self
                .notifies
                .iter()
                .chain(std::iter::once(&self.store.shared.external))
                .map(|n| Box::pin(Arc::clone(n).notified_owned()))
                .collect();
            for wait in &mut waits {
                wait.as_mut().enable();
            }
            if self.closed() {
                return Ok(None);
            }
            if peek_first {
                // Woken by another process's write, which may concern other queues: look on
                // a read connection before taking the write lock for a dequeue.
                peek_first = false;
                let due = earliest(&self.store, Arc::clone(&self.queues))
                    .await
                    .map_err(broker_err)?;
                if due.is_none_or(|at| at > now_ms()) {
                    let wake = wait_for(&mut waits, due, &self.store).await;
                    match wake {
                        Woke::Shutdown => return Ok(None),
                        Woke::External => peek_first = true,
                        Woke::Local | Woke::Due => {}
                    }
                    continue;
                }
            }
            let mut extra = Vec::new();
            while 1 + extra.len() < self.batch {
                match Arc::clone(&self.permits).try_acquire_owned() {
                    Ok(p) => extra.push(p),
                    Err(_) => break,
                }
            }
            let got = dequeue(&self.store, Arc::clone(&self.queues), 1 + extra.len())
                .await
                .map_err(broker_err)?;
            let mut rows = got.rows.into_iter();
            if let Some(first) = rows.next() {
                for row in rows {
                    match extra.pop() {
                        Some(p) => self.buffer.push_back((row, p)),
                        // Cannot happen (never more rows than permits); the row goes back.
                        None => drop(row),
                    }
                }
                return Ok(Some(self.deliver(first, permit)));
            }
            drop(extra);
            match wait_for(&mut waits, got.next_due, &self.store).await {
                Woke::Shutdown => return Ok(None),
                Woke::External => peek_first = true,
                Woke::Local | Woke::Due => {}
            }
        }
    }

    async fn stop(&mut self) -> Result<()> {
        self.stopped = true;
        let mut first_error = None;
        while let Some((mut row, permit)) = self.buffer.pop_front() {
            row.armed = false;
            let (id, token, queue) = (row.id, row.token, row.queue.clone());
            let result = self
                .store
                .write_one(move |conn, _, wakes| {
                    release(conn, id, token, false)?;
                    wakes.push(Wake::Queue(queue));
                    Ok(())
                })
                .await;
            if let Err(e) = result {
                row.armed = true; // its drop tries again
                first_error.get_or_insert(e);
            }
            drop((row, permit));
        }
        first_error.map_or(Ok(()), |e| Err(broker_err(e)))
    }
}

// -------------------------------------------------------------------------------------------
// Acknowledger.
// -------------------------------------------------------------------------------------------

struct SqliteAcker {
    store: Arc<StoreInner>,
    id: i64,
    token: i64,
    queue: String,
    /// `None` once decided. Dropping the row undecided gives the message back.
    held: Mutex<Option<(LeasedRow, OwnedSemaphorePermit)>>,
}

/// What a decision does to the row.
enum Decision {
    Delete,
    Requeue,
    DeadLetter(String),
}

impl SqliteAcker {
    fn held(&self) -> MutexGuard<'_, Option<(LeasedRow, OwnedSemaphorePermit)>> {
        self.held.lock().unwrap_or_else(|e| e.into_inner())
    }

    async fn decide(&self, decision: Decision) -> Result<()> {
        let Some((mut row, permit)) = self.held().take() else {
            return Ok(()); // already decided
        };
        row.armed = false;
        let (id, token, queue) = (self.id, self.token, self.queue.clone());
        let result = self
            .store
            .write_one(move |conn, _, wakes| {
                let changed = match decision {
                    Decision::Delete => conn
                        .prepare_cached("DELETE FROM messages WHERE id = ?1 AND lease_token = ?2")?
                        .execute(params![id, token])?,
                    Decision::Requeue => {
                        wakes.push(Wake::Queue(queue));
                        release(conn, id, token, true)?
                    }
                    Decision::DeadLetter(reason) => conn
                        .prepare_cached(
                            "UPDATE messages SET dead_reason = ?3, lease_token = NULL \
                             WHERE id = ?1 AND lease_token = ?2",
                        )?
                        .execute(params![id, token, reason])?,
                };
                Ok(changed)
            })
            .await;
        match result {
            Ok(changed) => {
                if changed == 0 {
                    warn!(
                        id,
                        "sqlite: the lease of message {id} lapsed before it was settled; \
                         it may run again elsewhere"
                    );
                }
                drop((row, permit));
                Ok(())
            }
            Err(e) => {
                // Still undecided: a later decision, or the drop, tries again.
                row.armed = true;
                *self.held() = Some((row, permit));
                Err(broker_err(e))
            }
        }
    }
}

#[async_trait]
impl Acknowledger for SqliteAcker {
    async fn ack(&self) -> Result<()> {
        self.decide(Decision::Delete).await
    }

    async fn nack(&self, requeue: bool) -> Result<()> {
        self.decide(if requeue {
            Decision::Requeue
        } else {
            Decision::Delete
        })
        .await
    }

    async fn dead_letter(&self, reason: &str) -> Result<()> {
        self.decide(Decision::DeadLetter(reason.to_owned())).await
    }

    async fn extend(&self, by: Duration) -> Result<()> {
        if self.held().is_none() {
            return Ok(());
        }
        let (id, token) = (self.id, self.token);
        let by = crate::options::duration_ms(by);
        let changed = self
            .store
            .write_one(move |conn, now, _| {
                Ok(conn
                    .prepare_cached(
                        "UPDATE messages SET visible_at = ?3 \
                         WHERE id = ?1 AND lease_token = ?2 AND dead_reason IS NULL",
                    )?
                    .execute(params![id, token, now.saturating_add(by)])?)
            })
            .await
            .map_err(broker_err)?;
        if changed == 0 && self.held().is_some() {
            debug!(id, "sqlite: lease lost");
            return Err(broker_err(SqliteError::LeaseLost { id }));
        }
        Ok(())
    }

    fn lease(&self) -> Option<Duration> {
        Some(self.store.options.lease)
    }
}
