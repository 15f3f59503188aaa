//! Periodic tasks and workflows (Go Machinery's `RegisterPeriodicTask`, `…Group`, `…Chain`,
//! `…Chord`), fired **exactly once per tick across any number of processes** through the
//! server's [`Lock`](crate::Lock).
//!
//! ```no_run
//! # async fn demo(server: machinist_core::Server) -> machinist_core::Result<()> {
//! use machinist_core::Signature;
//!
//! server.register_periodic_task("0 6 * * ?", "morning-report", Signature::new("report"))?;
//! server.register_periodic_task("CRON_TZ=Europe/Berlin */10 * * * * *", "poll", Signature::new("poll"))?;
//! server.register_periodic_group("@every 1h30m", "sweep", 2, vec![
//!     Signature::new("sweep").args("a"),
//!     Signature::new("sweep").args("b"),
//! ])?;
//! # Ok(()) }
//! ```
//!
//! Every process that registers the same job (same program name, job name and spec) runs a
//! scheduler for it; at each tick one of them sends a fresh copy of the work: new task, group
//! and chord UUIDs, unless the template fixed one (as in Go). Each sent signature carries the
//! headers [`PERIODIC_HEADER`] (the job name) and [`PERIODIC_TICK_HEADER`] (the tick, RFC 3339
//! UTC), which Go peers pass through untouched. Registering needs a Tokio runtime; a bad spec is
//! refused at once with a [`SpecError`] naming the spec and the reason.
//!
//! # Spec grammar
//!
//! Go Machinery validates specs with robfig/cron v3's `ParseStandard`; machinist reads the same
//! grammar, plus an optional leading seconds field (Go cannot: upstream issue #645).
//!
//! | form | meaning |
//! |---|---|
//! | `M H DOM MON DOW` | minute (0–59), hour (0–23), day of month (1–31), month (1–12 or `jan`–`dec`), day of week (0–6 or `sun`–`sat`, Sunday = 0; 7 is also Sunday) |
//! | `S M H DOM MON DOW` | the same with seconds (0–59) first |
//! | items | `*`, `N`, `N-M`, `*/step`, `N-M/step`, `N/step` (= `N-max/step`, as robfig), lists with `,`; `?` means `*` in any field; names in any case |
//! | day rule | when both day fields are restricted, a day matches if **either** does (Vixie/robfig); when either holds `*` (also `?`, `*/1`, `*,5`), both must |
//! | `@yearly` `@annually` `@monthly` `@weekly` `@daily` `@midnight` `@hourly` | `0 0 1 1 *`, `0 0 1 * *`, `0 0 * * 0`, `0 0 * * *`, `0 * * * *` |
//! | `@every D` | every Go duration `D` (`1h30m`, `10s`, `500ms`): rounded down to whole seconds, at least 1 s; the first tick is the registration time truncated to the second plus `D` (robfig) |
//! | `CRON_TZ=Zone …`, `TZ=Zone …` | read the fields in an IANA zone (`America/New_York`, `UTC`, `Local`) |
//!
//! Without a prefix the fields are read in the process's local zone, as Go's `time.Local`
//! (the `TZ` variable, else `/etc/localtime`). Next-fire times are robfig's, DST included: a
//! time that does not exist on a spring-forward day is skipped that day, and an hour that
//! repeats on a fall-back day fires at both instants for specs that name it (Go's "1am
//! nightly job runs twice"). croner (with no time backend) parses and matches the fields;
//! the walk between them is robfig's `Next`, so that a Go and a Rust scheduler of one spec
//! agree on every tick. Rejected: fewer than 5 or more than 6 fields, croner's extensions
//! `L`, `W`, `#` and `+`, out-of-range numbers, empty list items, unknown names, zones or
//! units, negative durations, and specs that never fire (`0 0 30 2 *`).
//!
//! Named zones come from **chrono-tz** rather than jiff: chrono is already this crate's time
//! type (so zones plug into the walk as `chrono::TimeZone`s with no conversion), and on the
//! 2-core build machine chrono-tz compiled in 4.7 s against 8.2 s for jiff and jiff-core (a
//! debug build from clean, `cargo build --timings`). Its zone database is compiled in, so
//! schedules do not depend on the host's tzdata.
//!
//! # Lock key
//!
//! `machinery_lock_` + basename(argv\[0\]) + name + spec, concatenated without separators, as
//! Go (`machinery_lock_worker` + `report` + `0 6 * * ?`); see [`lock_key`]. A Rust and a Go
//! scheduler share ticks when the key matches: same job name and spec text, and the same
//! program name ([`PeriodicJob::program_name`] sets it when the binaries' names differ). The
//! value is Go's: the deadline `next tick − 1 ns`.
//!
//! # Exactly once per tick
//!
//! At tick `T` (following tick `N`), a scheduler fires only if it takes two keys, in order:
//!
//! 1. the Go key `K` until `N − 1 ns` (Go's algorithm: taken when absent or when the stored
//!    deadline is before the taker's clock);
//! 2. the fence `K#tick:<unix seconds of T>` ([`fence_key`]) until `N + 10 s`
//!    ([`FENCE_MARGIN`]).
//!
//! Neither is released: `K` keeps Go's meaning (no one may fire before `N`), and the fence
//! expires on its own.
//!
//! **Why the fence, and the clock-skew argument.** Every process computes the same ticks (they
//! are wall-clock instants of the spec), so deadlines are the same numbers everywhere; only the
//! clocks they are compared with differ. Let process clocks read real time plus `δ`, with
//! `|δ_A − δ_B| ≤ s`. A scheduler attempts tick `T` only while its own clock reads in `[T, N)`:
//! after a sleep it always picks the latest tick at or before its clock.
//!
//! * *Stores that keep the value and compare it with the checker's clock* (memory, SQLite's
//!   conditional upsert, the Redis script's take-over): once someone took `T`, the stored
//!   deadline is `N − 1 ns`, and any other attempt at `T` compares it with a clock still below
//!   `N`: refused, for any skew. Nobody misses `T` either: the fastest live process attempts
//!   `T` before anyone can attempt a later tick (that would need a clock ahead of the fastest),
//!   so the deadline it finds is `T − 1 ns` or earlier (or `T` was taken, hence fired).
//! * *But keys also vanish physically*, by the setter's clock: Redis expires `K` after
//!   `PX = deadline − now` measured by the process that set it, and SQLite's sweeper deletes
//!   expired rows by its own clock. A key set by a process `s` ahead vanishes when the others'
//!   clocks read `N − s`; a process `s` behind attempts `T` until its clock reads `N`. With
//!   per-second ticks and `s` close to 1 s, that window holds its *normal* attempt (clock
//!   `T + ε = N − 1 s + ε`): it would find `K` gone, take it with `SET NX` and fire `T` again.
//!   The same happens without skew to an attempt whose clock read `N − ε` when it picked `T`
//!   but whose lock call reached the store after `N` (a wake just before the next tick).
//! * The fence closes both holes: it lives until `N + 10 s` by the setter's clock, i.e. past
//!   every attempt at `T` (all made before the attempter's clock reads `N`) for skews below
//!   10 s, and it is compared with clocks below `N`. Only a process that took `K` tries the
//!   fence, and only the one that takes it fires; so a tick fires at most once, and (by the
//!   first point, which a vanished key only makes easier) at least once while one scheduler
//!   is up and its store answers. Per-second specs with clocks up to a second apart are thus
//!   covered with a tenfold margin.
//!
//! Go schedulers sharing `K` do not know the fence: between a Go and a Rust scheduler the
//! guarantee is Go's (`K` alone).
//!
//! # Misfire policy
//!
//! The scheduler sleeps on Tokio time in naps of at most a second, and after each one reads
//! the wall clock again, so a suspend/resume, a long pause or a clock change is seen within a
//! second. When it wakes past one or more ticks it never walks through them: it finds the
//! latest tick at or before its clock (a binary search, a few dozen steps however long it
//! slept) and
//!
//! * fires it if it is at most [`MISFIRE_GRACE`] (60 s) old — the earlier missed ticks are
//!   skipped, with a warning;
//! * otherwise, under [`Misfire::Skip`] (the default), fires nothing and waits for the next
//!   tick; under [`Misfire::CatchUpLast`] fires that latest tick once.
//!
//! A wall clock that goes back waits until it reaches the next tick again (no tick fires
//! twice), as cron does; one that goes back more than three hours re-bases the schedule.
//!
//! # Stopping
//!
//! [`Server::stop_periodic`] stops every job of the server (a fire in progress completes).
//! A worker's shutdown (signal or [`ShutdownHandle`](crate::ShutdownHandle)) stops the
//! server's scheduler first, before it stops taking tasks.

mod scheduler;
mod spec;

use std::sync::Arc;

use chrono::{DateTime, Utc};
use tokio_util::sync::CancellationToken;

use crate::error::{Error, Result};
use crate::server::Server;
use crate::signature::Signature;

pub(crate) use scheduler::Registry;
pub use scheduler::{Clock, FENCE_MARGIN, MISFIRE_GRACE};
pub use spec::{Schedule, SpecError, Zone};

/// Header naming the periodic job that sent a signature.
pub const PERIODIC_HEADER: &str = "machinist_periodic";
/// Header holding the tick (RFC 3339, UTC) a periodic signature was sent for.
pub const PERIODIC_TICK_HEADER: &str = "machinist_periodic_tick";

/// What a scheduler does with a tick it woke up too late for (see the [module docs](self)).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Misfire {
    /// Skip ticks older than [`MISFIRE_GRACE`]; fire the latest due tick only if it is fresh.
    #[default]
    Skip,
    /// Fire the latest missed tick once, however old.
    CatchUpLast,
}

/// A periodic job that cannot be registered.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PeriodicError {
    /// The spec is invalid.
    #[error(transparent)]
    Spec(#[from] SpecError),
    /// A group, chain or chord without tasks.
    #[error("periodic {kind} {name:?} has no tasks")]
    Empty {
        /// The job name.
        name: String,
        /// `group`, `chain` or `chord`.
        kind: &'static str,
    },
    /// Registered outside a Tokio runtime.
    #[error(
        "periodic job {name:?}: registering needs a Tokio runtime (call it from async code or inside Runtime::block_on)"
    )]
    NoRuntime {
        /// The job name.
        name: String,
    },
}

impl From<SpecError> for Error {
    fn from(e: SpecError) -> Self {
        Error::Periodic(PeriodicError::Spec(e))
    }
}

/// What a job sends at each tick.
#[derive(Debug, Clone)]
pub(crate) enum Work {
    Task(Signature),
    Group {
        send_concurrency: usize,
        tasks: Vec<Signature>,
    },
    Chain(Vec<Signature>),
    Chord {
        send_concurrency: usize,
        callback: Signature,
        tasks: Vec<Signature>,
    },
}

/// A periodic job to register with [`Server::register_periodic`]: a schedule, a name (part of
/// the lock key) and the work, with options. The `register_periodic_*` methods build one.
#[derive(Debug, Clone)]
pub struct PeriodicJob {
    schedule: Schedule,
    name: String,
    work: Work,
    misfire: Misfire,
    program: Option<String>,
}

impl PeriodicJob {
    fn new(spec: &str, name: &str, work: Work) -> std::result::Result<Self, PeriodicError> {
        let kind = match &work {
            Work::Task(_) => None,
            Work::Group { tasks, .. } => tasks.is_empty().then_some("group"),
            Work::Chain(tasks) => tasks.is_empty().then_some("chain"),
            Work::Chord { tasks, .. } => tasks.is_empty().then_some("chord"),
        };
        if let Some(kind) = kind {
            return Err(PeriodicError::Empty {
                name: name.to_owned(),
                kind,
            });
        }
        Ok(PeriodicJob {
            schedule: Schedule::parse(spec)?,
            name: name.to_owned(),
            work,
            misfire: Misfire::default(),
            program: None,
        })
    }

    /// One task.
    pub fn task(
        spec: &str,
        name: &str,
        signature: Signature,
    ) -> std::result::Result<Self, PeriodicError> {
        Self::new(spec, name, Work::Task(signature))
    }

    /// A group, sent with at most `send_concurrency` publishes in flight (0 = all at once).
    pub fn group(
        spec: &str,
        name: &str,
        send_concurrency: usize,
        signatures: Vec<Signature>,
    ) -> std::result::Result<Self, PeriodicError> {
        Self::new(
            spec,
            name,
            Work::Group {
                send_concurrency,
                tasks: signatures,
            },
        )
    }

    /// A chain.
    pub fn chain(
        spec: &str,
        name: &str,
        signatures: Vec<Signature>,
    ) -> std::result::Result<Self, PeriodicError> {
        Self::new(spec, name, Work::Chain(signatures))
    }

    /// A chord: a group and the callback that gets all their results.
    pub fn chord(
        spec: &str,
        name: &str,
        send_concurrency: usize,
        callback: Signature,
        signatures: Vec<Signature>,
    ) -> std::result::Result<Self, PeriodicError> {
        Self::new(
            spec,
            name,
            Work::Chord {
                send_concurrency,
                callback,
                tasks: signatures,
            },
        )
    }

    /// Sets the misfire policy (default [`Misfire::Skip`]).
    pub fn misfire(mut self, misfire: Misfire) -> Self {
        self.misfire = misfire;
        self
    }

    /// Uses `program` instead of this process's basename(argv\[0\]) in the lock key, e.g. the
    /// name of a Go binary this scheduler shares ticks with.
    pub fn program_name(mut self, program: impl Into<String>) -> Self {
        self.program = Some(program.into());
        self
    }

    /// The job name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The schedule.
    pub fn schedule(&self) -> &Schedule {
        &self.schedule
    }

    /// The Go-compatible lock key of this job (see [`lock_key`]).
    pub fn lock_key(&self) -> String {
        let program = self.program.clone().unwrap_or_else(program_name);
        lock_key(&program, &self.name, self.schedule.spec())
    }
}

/// Go's periodic lock key: `machinery_lock_` + `program` + `name` + `spec`, with no separators
/// (`lock_key("worker", "report", "0 6 * * ?")` = `machinery_lock_workerreport0 6 * * ?`).
pub fn lock_key(program: &str, name: &str, spec: &str) -> String {
    format!("machinery_lock_{program}{name}{spec}")
}

/// The per-tick fence key that makes a tick fire once however far clocks drift (see the
/// [module docs](self)): `key` + `#tick:` + the tick's unix seconds.
pub fn fence_key(key: &str, tick: DateTime<Utc>) -> String {
    format!("{key}#tick:{}", tick.timestamp())
}

/// basename(argv\[0\]), as Go's `filepath.Base(os.Args[0])` (`.` when there is none).
pub fn program_name() -> String {
    std::env::args_os()
        .next()
        .and_then(|a| {
            std::path::Path::new(&a)
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
        })
        .unwrap_or_else(|| ".".to_owned())
}

/// Periodic registration and control (Go's `RegisterPeriodic*`, in Go's order of arguments).
impl Server {
    /// Sends `signature` at every tick of `spec`, once across every process that registers the
    /// same `name` and `spec` (see the [`periodic`](self) module for the grammar and the lock).
    ///
    /// Errors: [`Error::Periodic`] for a bad spec (with the reason) or outside a Tokio runtime.
    pub fn register_periodic_task(
        &self,
        spec: &str,
        name: &str,
        signature: Signature,
    ) -> Result<()> {
        self.register_periodic(PeriodicJob::task(spec, name, signature)?)
    }

    /// Sends a group of `signatures` at every tick (fresh group and task UUIDs each time), with
    /// at most `send_concurrency` publishes in flight (0 = all at once).
    pub fn register_periodic_group(
        &self,
        spec: &str,
        name: &str,
        send_concurrency: usize,
        signatures: Vec<Signature>,
    ) -> Result<()> {
        self.register_periodic(PeriodicJob::group(
            spec,
            name,
            send_concurrency,
            signatures,
        )?)
    }

    /// Sends a chain of `signatures` at every tick (fresh UUIDs each time).
    pub fn register_periodic_chain(
        &self,
        spec: &str,
        name: &str,
        signatures: Vec<Signature>,
    ) -> Result<()> {
        self.register_periodic(PeriodicJob::chain(spec, name, signatures)?)
    }

    /// Sends a chord (a group of `signatures`, then `callback` with all their results) at every
    /// tick (fresh UUIDs each time).
    pub fn register_periodic_chord(
        &self,
        spec: &str,
        name: &str,
        send_concurrency: usize,
        callback: Signature,
        signatures: Vec<Signature>,
    ) -> Result<()> {
        self.register_periodic(PeriodicJob::chord(
            spec,
            name,
            send_concurrency,
            callback,
            signatures,
        )?)
    }

    /// Starts scheduling `job` (built with [`PeriodicJob`], e.g. to set its misfire policy).
    /// Needs a Tokio runtime; runs until [`Server::stop_periodic`], a worker's shutdown, or the
    /// last handle on the server is dropped.
    pub fn register_periodic(&self, job: PeriodicJob) -> Result<()> {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return Err(Error::Periodic(PeriodicError::NoRuntime { name: job.name }));
        };
        let stop = self.inner.periodic.token();
        runtime.spawn(scheduler::run(
            Arc::downgrade(&self.inner),
            Arc::new(job),
            stop,
        ));
        Ok(())
    }

    /// Registers every entry of the configuration's `periodic_tasks` (YAML `periodic_tasks:`,
    /// `MACHINIST_PERIODIC_TASKS`, the CLI's `--periodic`); returns how many. Stops at the
    /// first entry that fails, naming it.
    pub fn register_configured_periodic_tasks(&self) -> Result<usize> {
        let config = self.config();
        for entry in &config.periodic_tasks {
            let job = entry.job().map_err(|e| {
                Error::Config(format!("periodic_tasks entry {:?}: {e}", entry.name))
            })?;
            self.register_periodic(job)?;
        }
        Ok(config.periodic_tasks.len())
    }

    /// Stops every periodic job of this server; a fire in progress completes. Jobs registered
    /// afterwards run again.
    pub fn stop_periodic(&self) {
        self.inner.periodic.stop();
    }

    /// Replaces the wall clock the scheduler reads, for tests under a paused Tokio clock
    /// (e.g. a fixed instant plus Tokio's elapsed time). The locks keep their own clocks.
    pub fn set_periodic_clock(&self, clock: impl Fn() -> DateTime<Utc> + Send + Sync + 'static) {
        self.inner.periodic.set_clock(Arc::new(clock));
    }

    /// Stops the scheduler when `shutdown` is cancelled (the worker's first shutdown step).
    pub(crate) fn stop_periodic_on(&self, shutdown: CancellationToken) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let server = Arc::downgrade(&self.inner);
        let mut stopped = self.inner.periodic.token();
        runtime.spawn(async move {
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => {
                        if let Some(inner) = server.upgrade() {
                            Server { inner }.stop_periodic();
                        }
                        return;
                    }
                    // Stopped by other means: jobs registered later still stop with the
                    // worker; a dropped server ends the watch.
                    _ = stopped.cancelled() => match server.upgrade() {
                        Some(inner) => stopped = inner.periodic.token(),
                        None => return,
                    },
                }
            }
        });
    }
}
