//! The writer thread: one per store, the only place that writes.
//!
//! Callers send [`Job`]s over a channel. The thread takes the first job, then everything else
//! already queued (up to [`MAX_BATCH`]), and runs them in one `BEGIN IMMEDIATE` transaction,
//! each inside its own savepoint (or, for a job that changes at most one statement, SQLite's
//! own statement rollback): a job that fails is undone alone and gets its error, the others go
//! on. Replies (and in-process wake-ups) are sent only after `COMMIT`
//! returned, so an acknowledged write is in the WAL. If SQLite rolls the whole transaction
//! back (`SQLITE_FULL`, I/O errors …), every job run so far gets the error and the jobs not yet
//! run go into the next transaction. If `BEGIN` or `COMMIT` fails (another process kept the
//! write lock past the busy timeout), every job of the batch gets the error. The thread never
//! stops on an error; it ends when every handle on the store is gone and the queue is drained.
//!
//! Between batches, and every poll interval while idle, it reads `PRAGMA data_version` on its
//! own connection: that number changes only when *another* connection (another process)
//! committed, so idle consumers (at once) and result waiters (at most every
//! [`STATE_WAKE_EVERY`]) are woken for other processes' writes without any polling of their
//! own. Every few seconds it deletes a bounded number of expired
//! states, group metas and locks.

use std::collections::VecDeque;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use rusqlite::Connection;
use tokio::sync::oneshot;
use tracing::{debug, warn};

use crate::error::{SqlResult, SqliteError};
use crate::store::{Shared, Wake, now_ms};

/// The most jobs one transaction carries.
pub(crate) const MAX_BATCH: usize = 256;
/// How often expired rows are swept (sooner while a sweep finds a full batch).
const SWEEP_EVERY: Duration = Duration::from_secs(5);
/// How often result waiters are woken at most for other processes' writes.
pub(crate) const STATE_WAKE_EVERY: Duration = Duration::from_millis(100);
/// How many expired rows of each table one sweep deletes at most.
const SWEEP_LIMIT: i64 = 500;

/// The work of a job: runs inside the batch transaction, gets the connection, the current time
/// in unix milliseconds, and a list of wake-ups to send after `COMMIT`.
pub(crate) type Work<T> =
    Box<dyn FnOnce(&Connection, i64, &mut Vec<Wake>) -> SqlResult<T> + Send + 'static>;

/// One operation queued for the writer.
pub(crate) trait Job: Send {
    /// Runs the operation inside the open transaction.
    fn run(&mut self, conn: &Connection) -> SqlResult<()>;
    /// Whether the operation must run inside a savepoint: true unless it makes at most one
    /// changing statement (a failed statement is undone by SQLite itself).
    fn needs_savepoint(&self) -> bool;
    /// Reports the outcome (after `COMMIT`, or the error that undid the operation) and returns
    /// the wake-ups to send (only for a committed operation).
    fn finish(self: Box<Self>, outcome: SqlResult<()>) -> Vec<Wake>;
}

/// A job made of a closure, replying over a oneshot (or to nobody).
pub(crate) struct Call<T> {
    savepoint: bool,
    work: Option<Work<T>>,
    out: Option<T>,
    wakes: Vec<Wake>,
    reply: Option<oneshot::Sender<SqlResult<T>>>,
}

impl<T> Call<T> {
    pub(crate) fn new(
        work: Work<T>,
        savepoint: bool,
        reply: Option<oneshot::Sender<SqlResult<T>>>,
    ) -> Self {
        Call {
            savepoint,
            work: Some(work),
            out: None,
            wakes: Vec::new(),
            reply,
        }
    }
}

impl<T: Send + 'static> Job for Call<T> {
    fn needs_savepoint(&self) -> bool {
        self.savepoint
    }

    fn run(&mut self, conn: &Connection) -> SqlResult<()> {
        let Some(work) = self.work.take() else {
            return Err(SqliteError::Internal("a job ran twice".into()));
        };
        self.out = Some(work(conn, now_ms(), &mut self.wakes)?);
        Ok(())
    }

    fn finish(self: Box<Self>, outcome: SqlResult<()>) -> Vec<Wake> {
        let Call {
            out,
            mut wakes,
            reply,
            ..
        } = *self;
        let result = match outcome {
            Ok(()) => {
                out.ok_or_else(|| SqliteError::Internal("a job finished without running".into()))
            }
            Err(e) => {
                wakes.clear();
                Err(e)
            }
        };
        // A caller that went away drops the value here (leases in it release themselves).
        if let Some(reply) = reply {
            let _ = reply.send(result);
        }
        wakes
    }
}

/// The writer thread's state.
pub(crate) struct Writer {
    conn: Connection,
    rx: Receiver<Box<dyn Job>>,
    shared: Arc<Shared>,
    poll: Duration,
    busy_timeout: Duration,
    data_version: Option<i64>,
    last_check: Instant,
    /// Another process wrote since result waiters were last woken.
    states_dirty: bool,
    last_state_wake: Instant,
    next_sweep: Instant,
}

impl Writer {
    pub(crate) fn new(
        conn: Connection,
        rx: Receiver<Box<dyn Job>>,
        shared: Arc<Shared>,
        poll: Duration,
        busy_timeout: Duration,
    ) -> Self {
        let mut writer = Writer {
            conn,
            rx,
            shared,
            poll: poll.max(Duration::from_millis(1)),
            busy_timeout,
            data_version: None,
            last_check: Instant::now(),
            states_dirty: false,
            last_state_wake: Instant::now(),
            next_sweep: Instant::now(),
        };
        writer.data_version = writer.read_data_version();
        writer
    }

    /// Runs until every sender is gone and the queue is drained.
    pub(crate) fn run(mut self) {
        let mut pending: VecDeque<Box<dyn Job>> = VecDeque::new();
        loop {
            if pending.is_empty() {
                match self.rx.recv_timeout(self.poll) {
                    Ok(job) => pending.push_back(job),
                    Err(RecvTimeoutError::Timeout) => {}
                    Err(RecvTimeoutError::Disconnected) => break,
                }
            }
            while pending.len() < MAX_BATCH {
                match self.rx.try_recv() {
                    Ok(job) => pending.push_back(job),
                    Err(_) => break,
                }
            }
            if !pending.is_empty() {
                self.run_batch(&mut pending);
            }
            if self.last_check.elapsed() >= self.poll {
                self.check_external();
            }
            if Instant::now() >= self.next_sweep {
                self.sweep();
            }
        }
        debug!("sqlite writer thread stopped");
    }

    fn exec(&self, sql: &str) -> rusqlite::Result<()> {
        self.conn.prepare_cached(sql)?.execute([])?;
        Ok(())
    }

    /// Runs up to [`MAX_BATCH`] jobs from the front of `pending` in one transaction.
    fn run_batch(&mut self, pending: &mut VecDeque<Box<dyn Job>>) {
        if let Err(e) = self.exec("BEGIN IMMEDIATE") {
            let err = self.begin_error(&e);
            for job in pending.drain(..) {
                job.finish(Err(err.clone()));
            }
            return;
        }
        let mut done: Vec<(Box<dyn Job>, SqlResult<()>)> = Vec::with_capacity(pending.len());
        while let Some(mut job) = pending.pop_front() {
            let savepoint = job.needs_savepoint();
            let result = (|| {
                if savepoint {
                    self.exec("SAVEPOINT job")?;
                }
                std::panic::catch_unwind(AssertUnwindSafe(|| job.run(&self.conn)))
                    .unwrap_or_else(|panic| Err(SqliteError::Internal(panic_text(&*panic))))?;
                if savepoint {
                    self.exec("RELEASE job")?;
                }
                Ok(())
            })();
            match result {
                Ok(()) => done.push((job, Ok(()))),
                Err(e) => {
                    if self.conn.is_autocommit() {
                        // SQLite undid the whole transaction: everything run so far is lost.
                        self.fail_all(job, &e, &mut done);
                        return;
                    }
                    if savepoint {
                        let undo = self
                            .exec("ROLLBACK TO job")
                            .and_then(|()| self.exec("RELEASE job"));
                        if let Err(undo) = undo {
                            warn!("sqlite: cannot roll back a failed operation: {undo}");
                            let _ = self.exec("ROLLBACK");
                            self.fail_all(job, &e, &mut done);
                            return;
                        }
                    }
                    // Without a savepoint the job's one changing statement failed, and SQLite
                    // undid that statement.
                    done.push((job, Err(e)));
                }
            }
        }
        match self.exec("COMMIT") {
            Ok(()) => {
                // Every caller first, then the waiters: whoever wrote learns it is stored
                // before anyone is woken to read it.
                let mut wakes = Vec::new();
                for (job, result) in done {
                    wakes.extend(job.finish(result));
                }
                self.shared.wake(&wakes);
            }
            Err(e) => {
                let err = SqliteError::from(e);
                warn!(
                    "sqlite: commit failed, {} operations undone: {err}",
                    done.len()
                );
                if !self.conn.is_autocommit() {
                    let _ = self.exec("ROLLBACK");
                }
                for (job, result) in done {
                    job.finish(result.and(Err(err.clone())));
                }
            }
        }
    }

    fn fail_all(
        &self,
        job: Box<dyn Job>,
        e: &SqliteError,
        done: &mut Vec<(Box<dyn Job>, SqlResult<()>)>,
    ) {
        job.finish(Err(e.clone()));
        for (job, result) in done.drain(..) {
            job.finish(result.and(Err(e.clone())));
        }
    }

    fn begin_error(&self, e: &rusqlite::Error) -> SqliteError {
        match SqliteError::from_sqlite(e) {
            SqliteError::Locked { detail } => SqliteError::Locked {
                detail: format!(
                    "gave up waiting for the write lock after the busy timeout of {:?} ({detail})",
                    self.busy_timeout
                ),
            },
            other => other,
        }
    }

    fn read_data_version(&self) -> Option<i64> {
        self.conn
            .prepare_cached("PRAGMA data_version")
            .and_then(|mut s| s.query_row([], |r| r.get(0)))
            .ok()
    }

    /// Wakes waiters when another connection committed since the last check.
    fn check_external(&mut self) {
        self.last_check = Instant::now();
        let now = self.read_data_version();
        if now.is_some() && now != self.data_version {
            self.data_version = now;
            self.shared.external.notify_waiters();
            self.states_dirty = true;
        }
        if self.states_dirty && self.last_state_wake.elapsed() >= STATE_WAKE_EVERY {
            self.states_dirty = false;
            self.last_state_wake = Instant::now();
            self.shared.external_states.notify_waiters();
        }
    }

    /// Deletes up to [`SWEEP_LIMIT`] expired rows of each expiring table.
    fn sweep(&mut self) {
        let result = (|| -> rusqlite::Result<usize> {
            self.exec("BEGIN IMMEDIATE")?;
            let now = now_ms();
            let mut most = 0;
            for sql in [
                "DELETE FROM states WHERE rowid IN \
                 (SELECT rowid FROM states WHERE expires_at <= ?1 LIMIT ?2)",
                "DELETE FROM groups WHERE rowid IN \
                 (SELECT rowid FROM groups WHERE expires_at <= ?1 LIMIT ?2)",
                "DELETE FROM locks WHERE rowid IN \
                 (SELECT rowid FROM locks WHERE expires_at <= ?1 LIMIT ?2)",
            ] {
                let n = match self.conn.prepare_cached(sql)?.execute((now, SWEEP_LIMIT)) {
                    Ok(n) => n,
                    Err(e) => {
                        let _ = self.exec("ROLLBACK");
                        return Err(e);
                    }
                };
                most = most.max(n);
            }
            self.exec("COMMIT")?;
            Ok(most)
        })();
        let full = match result {
            Ok(n) => {
                if n > 0 {
                    debug!("sqlite: swept {n} expired rows");
                }
                usize::try_from(SWEEP_LIMIT).is_ok_and(|limit| n >= limit)
            }
            Err(e) => {
                if !self.conn.is_autocommit() {
                    let _ = self.exec("ROLLBACK");
                }
                debug!("sqlite: expiry sweep skipped: {e}");
                false
            }
        };
        self.next_sweep = Instant::now() + if full { self.poll } else { SWEEP_EVERY };
    }
}

/// The text of a panic payload.
fn panic_text(payload: &(dyn std::any::Any + Send)) -> String {
    let text = if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "unknown panic".to_owned()
    };
    format!("an operation panicked: {text}")
}
