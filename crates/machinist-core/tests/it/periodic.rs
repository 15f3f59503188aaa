//! Periodic tasks: the spec table (robfig/cron v3's next-fire times, DST changes in named
//! zones), bad specs with their reasons, the lock key, and the scheduler under a paused Tokio
//! clock — once per tick with fresh UUIDs, misfires skipped or caught up once (never looped),
//! stop and worker shutdown, and clocks a second apart on a Redis-like lock.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, TimeDelta, Timelike, Utc};
use machinist_core::memory::{MemoryBackend, MemoryBroker, MemoryLock};
use machinist_core::periodic::{
    self, Misfire, PERIODIC_HEADER, PERIODIC_TICK_HEADER, PeriodicError, PeriodicJob, Schedule,
    Zone,
};
use machinist_core::{Config, Error, Lock, Server, Signature};

fn at(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s)
        .unwrap_or_else(|e| panic!("{s}: {e}"))
        .to_utc()
}

/// (spec, from, next fire time). Times with offsets are the instants robfig's tests use.
const TABLE: &[(&str, &str, &str)] = &[
    // 5 fields (minute hour dom month dow), `?` as `*`.
    (
        "TZ=UTC 0/15 * * * *",
        "2012-07-09T14:45:00Z",
        "2012-07-09T15:00:00Z",
    ),
    (
        "TZ=UTC 0/15 * * * *",
        "2012-07-09T14:59:59Z",
        "2012-07-09T15:00:00Z",
    ),
    (
        "TZ=UTC 20-35/15 * * * *",
        "2012-07-09T15:45:00Z",
        "2012-07-09T16:20:00Z",
    ),
    (
        "TZ=UTC */15 * * * *",
        "2012-07-09T23:46:00Z",
        "2012-07-10T00:00:00Z",
    ),
    (
        "TZ=UTC 30 08 ? Jul Sun",
        "2012-07-09T00:00:00Z",
        "2012-07-15T08:30:00Z",
    ),
    (
        "TZ=UTC 30 08 15 Jul ?",
        "2012-07-09T00:00:00Z",
        "2012-07-15T08:30:00Z",
    ),
    (
        "TZ=UTC 0 6 * * ?",
        "2026-01-01T07:00:00Z",
        "2026-01-02T06:00:00Z",
    ),
    (
        "TZ=UTC 0 0 * * 7",
        "2026-01-05T00:00:00Z",
        "2026-01-11T00:00:00Z",
    ),
    // 6 fields (seconds first).
    (
        "TZ=UTC * * * * * *",
        "2026-01-01T00:00:00.5Z",
        "2026-01-01T00:00:01Z",
    ),
    (
        "TZ=UTC */10 * * * * ?",
        "2026-01-01T00:00:05Z",
        "2026-01-01T00:00:10Z",
    ),
    (
        "TZ=UTC 15/35 20-35/15 * * * *",
        "2012-07-09T23:35:51Z",
        "2012-07-10T00:20:15Z",
    ),
    (
        "TZ=UTC 15/35 20-35/15 1/2 * * *",
        "2012-07-09T23:35:51Z",
        "2012-07-10T01:20:15Z",
    ),
    (
        "TZ=UTC 15/35 20-35/15 10-12 * * *",
        "2012-07-09T23:35:51Z",
        "2012-07-10T10:20:15Z",
    ),
    (
        "TZ=UTC 15/35 20-35/15 1/2 */2 * *",
        "2012-07-09T23:35:51Z",
        "2012-07-11T01:20:15Z",
    ),
    (
        "TZ=UTC 15/35 20-35/15 * 9-20 * *",
        "2012-07-09T23:35:51Z",
        "2012-07-10T00:20:15Z",
    ),
    (
        "TZ=UTC 15/35 20-35/15 * 9-20 Jul *",
        "2012-07-09T23:35:51Z",
        "2012-07-10T00:20:15Z",
    ),
    (
        "TZ=UTC 0 0 0 9 Apr-Oct ?",
        "2012-07-09T23:35:00Z",
        "2012-08-09T00:00:00Z",
    ),
    (
        "TZ=UTC 0 0 0 * Feb Mon",
        "2012-07-09T23:35:00Z",
        "2013-02-04T00:00:00Z",
    ),
    // `Mon/2` is Monday to Saturday in steps of 2 (robfig), not through Sunday.
    (
        "TZ=UTC 0 0 0 * Feb Mon/2",
        "2012-07-09T23:35:00Z",
        "2013-02-01T00:00:00Z",
    ),
    (
        "TZ=UTC 0 * * * * *",
        "2012-12-31T23:59:45Z",
        "2013-01-01T00:00:00Z",
    ),
    (
        "TZ=UTC 0 0 0 29 Feb ?",
        "2012-07-09T23:35:00Z",
        "2016-02-29T00:00:00Z",
    ),
    // DOM/DOW: both restricted = either matches; one `*` = both must.
    (
        "TZ=UTC 0 0 0 */5 Apr,Aug,Oct Mon",
        "2012-07-09T23:35:00Z",
        "2012-08-01T00:00:00Z",
    ),
    (
        "TZ=UTC 0 0 0 */5 Oct Mon",
        "2012-07-09T23:35:00Z",
        "2012-10-01T00:00:00Z",
    ),
    (
        "TZ=UTC 0 0 1,15 * Sun",
        "2012-07-02T00:00:00Z",
        "2012-07-08T00:00:00Z",
    ),
    (
        "TZ=UTC 0 0 1,15 * Sun",
        "2012-07-08T00:00:00Z",
        "2012-07-15T00:00:00Z",
    ),
    (
        "TZ=UTC 0 0 * * Mon",
        "2012-07-10T00:00:00Z",
        "2012-07-16T00:00:00Z",
    ),
    (
        "TZ=UTC 0 0 1,15 * *",
        "2012-07-02T00:00:00Z",
        "2012-07-15T00:00:00Z",
    ),
    (
        "TZ=UTC 0 0 */1 * Mon",
        "2012-07-10T00:00:00Z",
        "2012-07-16T00:00:00Z",
    ),
    // Descriptors.
    (
        "TZ=UTC @hourly",
        "2012-07-09T15:04:00Z",
        "2012-07-09T16:00:00Z",
    ),
    (
        "TZ=UTC @daily",
        "2012-07-09T15:04:00Z",
        "2012-07-10T00:00:00Z",
    ),
    (
        "TZ=UTC @midnight",
        "2012-07-09T15:04:00Z",
        "2012-07-10T00:00:00Z",
    ),
    (
        "TZ=UTC @weekly",
        "2012-07-09T15:04:00Z",
        "2012-07-15T00:00:00Z",
    ),
    (
        "TZ=UTC @monthly",
        "2012-07-09T15:04:00Z",
        "2012-08-01T00:00:00Z",
    ),
    (
        "TZ=UTC @yearly",
        "2012-07-09T15:04:00Z",
        "2013-01-01T00:00:00Z",
    ),
    (
        "TZ=UTC @annually",
        "2012-07-09T15:04:00Z",
        "2013-01-01T00:00:00Z",
    ),
    (
        "CRON_TZ=America/New_York @daily",
        "2026-01-01T12:00:00Z",
        "2026-01-02T05:00:00Z",
    ),
    // @every: now truncated to the second, plus the interval (at least 1 s).
    (
        "@every 1h30m",
        "2026-01-01T00:00:00.9Z",
        "2026-01-01T01:30:00Z",
    ),
    (
        "@every 500ms",
        "2026-01-01T00:00:00.9Z",
        "2026-01-01T00:00:01Z",
    ),
    ("@every 1s", "2026-01-01T00:00:07Z", "2026-01-01T00:00:08Z"),
    (
        "TZ=Asia/Tokyo @every 10s",
        "2026-01-01T00:00:03.2Z",
        "2026-01-01T00:00:13Z",
    ),
    // New York, spring forward (2012-03-11, 02:00 EST -> 03:00 EDT): times in the gap are
    // skipped that day.
    (
        "TZ=America/New_York 0 30 2 11 Mar ?",
        "2012-03-11T00:00:00-05:00",
        "2013-03-11T02:30:00-04:00",
    ),
    (
        "TZ=America/New_York 0 0 * * * ?",
        "2012-03-11T00:00:00-05:00",
        "2012-03-11T01:00:00-05:00",
    ),
    (
        "TZ=America/New_York 0 0 * * * ?",
        "2012-03-11T01:00:00-05:00",
        "2012-03-11T03:00:00-04:00",
    ),
    (
        "CRON_TZ=America/New_York 0 0 * * * ?",
        "2012-03-11T03:00:00-04:00",
        "2012-03-11T04:00:00-04:00",
    ),
    (
        "TZ=America/New_York 0 0 1 * * ?",
        "2012-03-11T01:00:00-05:00",
        "2012-03-12T01:00:00-04:00",
    ),
    (
        "TZ=America/New_York 0 0 2 * * ?",
        "2012-03-11T00:00:00-05:00",
        "2012-03-12T02:00:00-04:00",
    ),
    (
        "CRON_TZ=America/New_York 30 2 * * *",
        "2012-03-11T00:00:00-05:00",
        "2012-03-12T02:30:00-04:00",
    ),
    // New York, fall back (2012-11-04, 02:00 EDT -> 01:00 EST): the repeated hour fires at
    // both instants for specs naming it.
    (
        "TZ=America/New_York 0 30 2 04 Nov ?",
        "2012-11-04T00:00:00-04:00",
        "2012-11-04T02:30:00-05:00",
    ),
    (
        "TZ=America/New_York 0 30 1 04 Nov ?",
        "2012-11-04T01:45:00-04:00",
        "2012-11-04T01:30:00-05:00",
    ),
    (
        "TZ=America/New_York 0 0 * * * ?",
        "2012-11-04T00:00:00-04:00",
        "2012-11-04T01:00:00-04:00",
    ),
    (
        "TZ=America/New_York 0 0 * * * ?",
        "2012-11-04T01:00:00-04:00",
        "2012-11-04T01:00:00-05:00",
    ),
    (
        "TZ=America/New_York 0 0 * * * ?",
        "2012-11-04T01:00:00-05:00",
        "2012-11-04T02:00:00-05:00",
    ),
    (
        "TZ=America/New_York 0 0 1 * * ?",
        "2012-11-04T00:00:00-04:00",
        "2012-11-04T01:00:00-04:00",
    ),
    (
        "TZ=America/New_York 0 0 1 * * ?",
        "2012-11-04T01:00:00-04:00",
        "2012-11-04T01:00:00-05:00",
    ),
    (
        "TZ=America/New_York 0 0 1 * * ?",
        "2012-11-04T01:00:00-05:00",
        "2012-11-05T01:00:00-05:00",
    ),
    (
        "TZ=America/New_York 0 0 2 * * ?",
        "2012-11-04T00:00:00-04:00",
        "2012-11-04T02:00:00-05:00",
    ),
    (
        "TZ=America/New_York 0 0 3 * * ?",
        "2012-11-04T00:00:00-04:00",
        "2012-11-04T03:00:00-05:00",
    ),
    (
        "TZ=America/New_York 0 0 3 3 * ?",
        "2012-11-04T00:00:00-04:00",
        "2012-12-03T03:00:00-05:00",
    ),
    // São Paulo 2018: DST started at midnight (00:00 -> 01:00), robfig issue #157.
    (
        "TZ=America/Sao_Paulo 0 0 9 10 * ?",
        "2018-10-17T05:00:00-04:00",
        "2018-11-10T06:00:00-05:00",
    ),
    (
        "TZ=America/Sao_Paulo 0 0 9 22 * ?",
        "2018-02-14T05:00:00-05:00",
        "2018-02-22T07:00:00-05:00",
    ),
    // Berlin 2026: spring forward 03-29 (02:00 CET -> 03:00 CEST), fall back 10-25
    // (03:00 CEST -> 02:00 CET).
    (
        "TZ=Europe/Berlin 30 2 * * *",
        "2026-03-28T12:00:00+01:00",
        "2026-03-30T02:30:00+02:00",
    ),
    (
        "TZ=Europe/Berlin 0 * * * *",
        "2026-03-29T01:00:00+01:00",
        "2026-03-29T03:00:00+02:00",
    ),
    (
        "TZ=Europe/Berlin 30 2 * * *",
        "2026-10-25T00:00:00+02:00",
        "2026-10-25T02:30:00+02:00",
    ),
    (
        "TZ=Europe/Berlin 30 2 * * *",
        "2026-10-25T02:30:00+02:00",
        "2026-10-25T02:30:00+01:00",
    ),
    (
        "TZ=Europe/Berlin 30 2 * * *",
        "2026-10-25T02:30:00+01:00",
        "2026-10-26T02:30:00+01:00",
    ),
    (
        "TZ=Europe/Berlin 0 0 12 * * 1-5",
        "2026-10-23T12:00:00+02:00",
        "2026-10-26T12:00:00+01:00",
    ),
];

#[test]
fn next_fire_times_match_robfig() {
    let mut failures = Vec::new();
    for (spec, from, want) in TABLE {
        let schedule = Schedule::parse(spec).unwrap_or_else(|e| panic!("{e}"));
        let got = schedule.next_after(at(from));
        if got != Some(at(want)) {
            failures.push(format!("{spec:?} after {from}: want {want}, got {got:?}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn default_zone_is_local() {
    let s = Schedule::parse("0 6 * * *").unwrap();
    assert_eq!(s.zone(), Zone::Local);
    let next = s
        .next_after(Utc::now())
        .unwrap()
        .with_timezone(&chrono::Local);
    assert_eq!((next.hour(), next.minute(), next.second()), (6, 0, 0));
    assert_eq!(
        Schedule::parse("CRON_TZ=Europe/Berlin @hourly")
            .unwrap()
            .zone()
            .to_string(),
        "Europe/Berlin"
    );
}

/// (spec, words the reason must contain).
const BAD: &[(&str, &[&str])] = &[
    ("", &["empty"]),
    ("   ", &["empty"]),
    ("* * * *", &["expected 5 fields", "found 4"]),
    ("* * * * * * *", &["found 7"]),
    (
        "60 * * * *",
        &["minute field \"60\"", "above the maximum 59"],
    ),
    ("0 60 * * * *", &["minute field", "above the maximum 59"]),
    ("60 0 * * * *", &["seconds field", "above the maximum 59"]),
    ("* 24 * * *", &["hour field", "above the maximum 23"]),
    ("* * 0 * *", &["day-of-month field", "below the minimum 1"]),
    (
        "* * 32 * *",
        &["day-of-month field", "above the maximum 31"],
    ),
    ("* * * 13 *", &["month field", "above the maximum 12"]),
    ("* * * * 8", &["day-of-week field", "above the maximum 7"]),
    (
        "* * * foo *",
        &["month field", "neither a number nor a name"],
    ),
    (
        "0 0 * * XYZ",
        &["day-of-week field", "neither a number nor a name"],
    ),
    ("xyz", &["expected 5 fields"]),
    ("5-3 * * * *", &["starts after it ends"]),
    ("*/0 * * * *", &["must be positive"]),
    ("TZ=America/New_York 15/0 * * * *", &["must be positive"]),
    ("1,,2 * * * *", &["empty list item"]),
    ("1/2/3 * * * *", &["too many slashes"]),
    ("1-2-3 * * * *", &["too many hyphens"]),
    ("/5 * * * *", &["missing number"]),
    ("* * L * *", &["day-of-month field", "not a number"]),
    ("* * * * 5#2", &["day-of-week field"]),
    ("* * 15W * *", &["day-of-month field"]),
    ("0 0 30 2 *", &["never fires"]),
    ("0 0 31 4 ?", &["never fires"]),
    ("@fortnightly", &["unknown descriptor @fortnightly"]),
    ("@every", &["unknown descriptor"]),
    ("@every 5", &["without a unit"]),
    ("@every 1d", &["unknown unit \"d\""]),
    ("@every -5s", &["negative"]),
    ("@every soon", &["Go duration"]),
    (
        "TZ=Mars/Olympus * * * * *",
        &["unknown time zone \"Mars/Olympus\""],
    ),
    ("CRON_TZ=UTC", &["followed by a space"]),
];

#[test]
fn bad_specs_are_rejected_with_the_reason() {
    for (spec, words) in BAD {
        let e = Schedule::parse(spec)
            .err()
            .unwrap_or_else(|| panic!("{spec:?} was accepted"));
        assert_eq!(e.spec(), *spec);
        let text = e.to_string();
        assert!(
            text.starts_with(&format!("invalid periodic spec {spec:?}: ")),
            "{text}"
        );
        for word in *words {
            assert!(e.reason().contains(word), "{spec:?}: {text} lacks {word:?}");
        }
    }
}

#[tokio::test]
async fn registration_refuses_bad_specs_and_empty_workflows() {
    let (server, _) = memory_server();
    let e = server
        .register_periodic_task("* * * *", "x", Signature::new("t"))
        .unwrap_err();
    assert!(matches!(&e, Error::Periodic(PeriodicError::Spec(s)) if s.spec() == "* * * *"));
    assert!(e.to_string().contains("\"* * * *\""), "{e}");
    let e = server
        .register_periodic_chain("@hourly", "c", vec![])
        .unwrap_err();
    assert!(e.to_string().contains("chain \"c\" has no tasks"), "{e}");
    let e = server
        .register_periodic_chord("@hourly", "c", 0, Signature::new("cb"), vec![])
        .unwrap_err();
    assert!(matches!(
        e,
        Error::Periodic(PeriodicError::Empty { kind: "chord", .. })
    ));
}

#[test]
fn registering_needs_a_runtime() {
    let (server, _) = memory_server();
    let e = server
        .register_periodic_task("@hourly", "x", Signature::new("t"))
        .unwrap_err();
    assert!(
        matches!(e, Error::Periodic(PeriodicError::NoRuntime { .. })),
        "{e}"
    );
    assert!(e.to_string().contains("Tokio runtime"), "{e}");
}

#[test]
fn lock_key_is_gos() {
    assert_eq!(
        periodic::lock_key("worker", "report", "0 6 * * ?"),
        "machinery_lock_workerreport0 6 * * ?"
    );
    // The key Go printed in upstream issue #621.
    let job = PeriodicJob::task("*/2 * * * *", "my-function", Signature::new("f"))
        .unwrap()
        .program_name("___Run_API");
    assert_eq!(
        job.lock_key(),
        "machinery_lock____Run_APImy-function*/2 * * * *"
    );
    // By default, this process's basename(argv[0]): the test binary `it-<hash>`.
    let program = periodic::program_name();
    assert!(program.starts_with("it-"), "{program}");
    let job = PeriodicJob::task("CRON_TZ=UTC @every 10s", "n", Signature::new("f")).unwrap();
    assert_eq!(
        job.lock_key(),
        format!("machinery_lock_{program}nCRON_TZ=UTC @every 10s")
    );
    assert_eq!(
        periodic::fence_key("k", at("2026-01-01T00:00:01Z")),
        "k#tick:1767225601"
    );
}

// --- the scheduler under a paused clock ---------------------------------------------------

fn memory_server() -> (Server, Arc<MemoryBroker>) {
    let config = Config {
        no_unix_signals: true,
        default_queue: "periodic".into(),
        ..Config::default()
    };
    let broker = Arc::new(MemoryBroker::new());
    let server = Server::new(
        config.clone(),
        broker.clone(),
        Arc::new(MemoryBackend::new(config.results_ttl())),
        Arc::new(MemoryLock::new()),
    );
    (server, broker)
}

/// A wall clock for the scheduler: `anchor` plus Tokio's elapsed time plus an adjustable jump.
/// Anchored in 2020, so the memory lock (which reads the real clock) always finds the
/// scheduler's deadlines passed: these tests watch one scheduler's own behaviour.
#[derive(Clone)]
struct FakeClock {
    anchor: DateTime<Utc>,
    start: tokio::time::Instant,
    jump_ms: Arc<AtomicI64>,
}

impl FakeClock {
    fn install(server: &Server, anchor: &str) -> Self {
        let clock = FakeClock {
            anchor: at(anchor),
            start: tokio::time::Instant::now(),
            jump_ms: Arc::new(AtomicI64::new(0)),
        };
        let c = clock.clone();
        server.set_periodic_clock(move || c.now());
        clock
    }
    fn now(&self) -> DateTime<Utc> {
        let elapsed = TimeDelta::from_std(self.start.elapsed()).unwrap();
        self.anchor + elapsed + TimeDelta::milliseconds(self.jump_ms.load(Ordering::SeqCst))
    }
    fn jump(&self, by: TimeDelta) {
        self.jump_ms
            .fetch_add(by.num_milliseconds(), Ordering::SeqCst);
    }
}

/// What the server published: (tick header, job header, signature), in order.
type Sent = Arc<Mutex<Vec<(String, String, Signature)>>>;

fn record(server: &Server) -> Sent {
    let sent: Sent = Arc::default();
    let s = sent.clone();
    server.set_pre_publish_hook(move |sig| {
        let h = |k| {
            sig.headers
                .as_ref()
                .and_then(|h| h.get_str(k))
                .unwrap_or_default()
                .to_owned()
        };
        s.lock()
            .unwrap()
            .push((h(PERIODIC_TICK_HEADER), h(PERIODIC_HEADER), sig.clone()));
    });
    sent
}

fn ticks(sent: &Sent) -> Vec<String> {
    sent.lock()
        .unwrap()
        .iter()
        .map(|(t, _, _)| t.clone())
        .collect()
}

async fn sleep_ms(ms: u64) {
    tokio::time::sleep(Duration::from_millis(ms)).await;
}

#[tokio::test(start_paused = true)]
async fn fires_once_per_tick_with_fresh_uuids() {
    let (server, _) = memory_server();
    FakeClock::install(&server, "2020-01-01T00:00:00.250Z");
    let sent = record(&server);
    server
        .register_periodic_task("* * * * * *", "tick", Signature::new("tick").args(1i64))
        .unwrap();
    server
        .register_periodic_task(
            "*/5 * * * * *",
            "fixed",
            Signature::new("fixed").with_uuid("task_fixed"),
        )
        .unwrap();
    sleep_ms(10_100).await;
    let sent = sent.lock().unwrap();
    let tick: Vec<_> = sent.iter().filter(|(_, job, _)| job == "tick").collect();
    let want: Vec<String> = (1..=10)
        .map(|s| format!("2020-01-01T00:00:{s:02}Z"))
        .collect();
    assert_eq!(
        tick.iter().map(|(t, _, _)| t.clone()).collect::<Vec<_>>(),
        want
    );
    let uuids: HashSet<_> = tick.iter().map(|(_, _, s)| s.uuid.clone()).collect();
    assert_eq!(uuids.len(), 10, "fresh UUIDs each tick");
    assert!(
        tick.iter()
            .all(|(_, _, s)| s.name == "tick" && s.args.len() == 1)
    );
    // A UUID fixed on the template is reused, as in Go.
    let fixed: Vec<_> = sent.iter().filter(|(_, job, _)| job == "fixed").collect();
    assert_eq!(fixed.len(), 2);
    assert!(fixed.iter().all(|(_, _, s)| s.uuid == "task_fixed"));
}

#[tokio::test(start_paused = true)]
async fn workflows_are_rebuilt_each_tick() {
    let (server, _) = memory_server();
    FakeClock::install(&server, "2020-01-01T00:00:00.500Z");
    let sent = record(&server);
    let two = || vec![Signature::new("a"), Signature::new("b")];
    server
        .register_periodic_group("* * * * * *", "g", 1, two())
        .unwrap();
    server
        .register_periodic_chain("* * * * * *", "c", two())
        .unwrap();
    server
        .register_periodic_chord("* * * * * *", "d", 0, Signature::new("cb"), two())
        .unwrap();
    sleep_ms(3_200).await;
    let sent = sent.lock().unwrap();
    let of = |job: &str| -> Vec<Signature> {
        sent.iter()
            .filter(|(_, j, _)| j == job)
            .map(|(_, _, s)| s.clone())
            .collect()
    };
    let (group, chain, chord) = (of("g"), of("c"), of("d"));
    assert_eq!((group.len(), chain.len(), chord.len()), (6, 3, 6));
    for members in [&group, &chord] {
        let groups: HashSet<_> = members.iter().map(|s| s.group_uuid.clone()).collect();
        let tasks: HashSet<_> = members.iter().map(|s| s.uuid.clone()).collect();
        assert_eq!((groups.len(), tasks.len()), (3, 6), "{members:#?}");
        assert!(members.iter().all(|s| s.group_task_count == 2));
    }
    let callbacks: HashSet<_> = chord
        .iter()
        .map(|s| s.chord_callback.as_ref().unwrap().uuid.clone())
        .collect();
    assert_eq!(callbacks.len(), 3);
    let firsts: HashSet<_> = chain.iter().map(|s| s.uuid.clone()).collect();
    let seconds: HashSet<_> = chain.iter().map(|s| s.on_success[0].uuid.clone()).collect();
    assert_eq!((firsts.len(), seconds.len()), (3, 3));
    // The headers travel with the nested tasks too.
    assert!(chain.iter().all(|s| {
        s.on_success[0]
            .headers
            .as_ref()
            .unwrap()
            .get_str(PERIODIC_HEADER)
            == Some("c")
    }));
}

async fn hourly_with_a_long_sleep(misfire: Misfire) -> Vec<String> {
    let (server, _) = memory_server();
    FakeClock::install(&server, "2020-01-01T00:10:00Z");
    let sent = record(&server);
    let job = PeriodicJob::task("TZ=UTC 0 * * * *", "hourly", Signature::new("h"))
        .unwrap()
        .misfire(misfire);
    server.register_periodic(job).unwrap();
    // Past 01:00: fired once.
    sleep_ms(51 * 60 * 1000).await;
    assert_eq!(ticks(&sent), ["2020-01-01T01:00:00Z"]);
    // The process is suspended for 3 h 40 min (Tokio's clock jumps at once): it wakes at
    // 04:41, 41 min after the latest tick.
    tokio::time::advance(Duration::from_secs(3 * 3600 + 40 * 60)).await;
    sleep_ms(2_000).await;
    let after_wake = ticks(&sent);
    // And runs on normally.
    sleep_ms(20 * 60 * 1000).await;
    let all = ticks(&sent);
    assert_eq!(all.last().map(String::as_str), Some("2020-01-01T05:00:00Z"));
    assert_eq!(all.len(), after_wake.len() + 1);
    after_wake
}

#[tokio::test(start_paused = true)]
async fn a_stale_missed_tick_is_skipped() {
    let fired = hourly_with_a_long_sleep(Misfire::Skip).await;
    assert_eq!(fired, ["2020-01-01T01:00:00Z"]);
}

#[tokio::test(start_paused = true)]
async fn catch_up_last_fires_the_last_missed_tick_once() {
    let fired = hourly_with_a_long_sleep(Misfire::CatchUpLast).await;
    assert_eq!(fired, ["2020-01-01T01:00:00Z", "2020-01-01T04:00:00Z"]);
}

#[tokio::test(start_paused = true)]
async fn a_long_sleep_never_loops_through_missed_ticks() {
    let (server, _) = memory_server();
    FakeClock::install(&server, "2020-01-01T00:00:00.300Z");
    let sent = record(&server);
    server
        .register_periodic_task("* * * * * *", "s", Signature::new("s"))
        .unwrap();
    sleep_ms(2_000).await;
    assert_eq!(ticks(&sent).len(), 2);
    // A day asleep: 86,400 ticks missed. Only the current one fires.
    tokio::time::advance(Duration::from_secs(86_400)).await;
    sleep_ms(10).await;
    assert_eq!(ticks(&sent).len(), 3, "{:?}", ticks(&sent));
    assert_eq!(ticks(&sent)[2], "2020-01-02T00:00:02Z");
    sleep_ms(3_000).await;
    assert_eq!(
        ticks(&sent)[2..],
        [
            "2020-01-02T00:00:02Z",
            "2020-01-02T00:00:03Z",
            "2020-01-02T00:00:04Z",
            "2020-01-02T00:00:05Z"
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn wall_clock_jumps_are_followed() {
    let (server, _) = memory_server();
    let clock = FakeClock::install(&server, "2020-01-01T00:00:00.300Z");
    let sent = record(&server);
    server
        .register_periodic_task("* * * * * *", "s", Signature::new("s"))
        .unwrap();
    sleep_ms(5_000).await;
    assert_eq!(ticks(&sent).len(), 5);
    // Back 3 s: ticks 3-5 come round again on the wall clock but do not fire twice.
    clock.jump(TimeDelta::seconds(-3));
    sleep_ms(6_000).await;
    let t = ticks(&sent);
    let unique: HashSet<_> = t.iter().collect();
    assert_eq!(unique.len(), t.len(), "a tick fired twice: {t:?}");
    assert_eq!(t.last().map(String::as_str), Some("2020-01-01T00:00:08Z"));
    // Forward 10 min while the scheduler naps: noticed within a second (not after a whole
    // sleep computed before the jump), fires the current tick.
    clock.jump(TimeDelta::minutes(10));
    sleep_ms(1_000).await;
    assert_eq!(
        ticks(&sent).last().map(String::as_str),
        Some("2020-01-01T00:10:09Z")
    );
}

#[tokio::test(start_paused = true)]
async fn stop_periodic_stops_every_job() {
    let (server, _) = memory_server();
    FakeClock::install(&server, "2020-01-01T00:00:00.500Z");
    let sent = record(&server);
    server
        .register_periodic_task("* * * * * *", "a", Signature::new("a"))
        .unwrap();
    server
        .register_periodic_task("* * * * * *", "b", Signature::new("b"))
        .unwrap();
    sleep_ms(2_000).await;
    assert_eq!(ticks(&sent).len(), 4);
    server.stop_periodic();
    sleep_ms(5_000).await;
    assert_eq!(ticks(&sent).len(), 4);
    // Registering again after a stop runs again.
    server
        .register_periodic_task("* * * * * *", "a", Signature::new("a"))
        .unwrap();
    sleep_ms(2_000).await;
    assert_eq!(ticks(&sent).len(), 6);
}

#[tokio::test(start_paused = true)]
async fn dropping_the_server_stops_its_jobs() {
    let (server, _) = memory_server();
    FakeClock::install(&server, "2020-01-01T00:00:00.500Z");
    let sent = record(&server);
    server
        .register_periodic_task("* * * * * *", "a", Signature::new("a"))
        .unwrap();
    sleep_ms(2_000).await;
    drop(server);
    sleep_ms(5_000).await;
    assert_eq!(ticks(&sent).len(), 2);
}

#[tokio::test(start_paused = true)]
async fn configured_periodic_tasks_run_without_code() {
    let config = Config::from_yaml_str(
        "no_unix_signals: true\n\
         periodic_tasks:\n\
         - {spec: \"*/2 * * * * *\", task: add, args: [\"int64:1\", \"int64:2\"], queue: sums}\n\
         - \"@every 3s | beat\"\n",
    )
    .unwrap();
    let server = Server::new(
        config,
        Arc::new(MemoryBroker::new()),
        Arc::new(MemoryBackend::new(Duration::from_secs(60))),
        Arc::new(MemoryLock::new()),
    );
    FakeClock::install(&server, "2020-01-01T00:00:00.500Z");
    let sent = record(&server);
    assert_eq!(server.register_configured_periodic_tasks().unwrap(), 2);
    sleep_ms(6_000).await;
    let sent = sent.lock().unwrap();
    let adds: Vec<_> = sent.iter().filter(|(_, j, _)| j == "add").collect();
    let beats: Vec<_> = sent.iter().filter(|(_, j, _)| j == "beat").collect();
    assert_eq!((adds.len(), beats.len()), (3, 2));
    assert!(
        adds.iter()
            .all(|(_, _, s)| s.routing_key == "sums" && s.args.len() == 2)
    );
}

#[tokio::test(start_paused = true)]
async fn worker_shutdown_stops_the_scheduler_first() {
    let (server, broker) = memory_server();
    FakeClock::install(&server, "2020-01-01T00:00:00.500Z");
    let sent = record(&server);
    let ran = Arc::new(AtomicI64::new(0));
    let r = ran.clone();
    server.register_task("beat", move || {
        let r = r.clone();
        async move {
            r.fetch_add(1, Ordering::SeqCst);
        }
    });
    server
        .register_periodic_task("* * * * * *", "beat", Signature::new("beat"))
        .unwrap();
    let worker = server.new_worker("w", 2).launch_async();
    sleep_ms(3_000).await;
    assert_eq!(ticks(&sent).len(), 3);
    worker.quit().await.unwrap();
    let at_shutdown = ticks(&sent).len();
    sleep_ms(5_000).await;
    assert_eq!(
        ticks(&sent).len(),
        at_shutdown,
        "fired after the worker's shutdown"
    );
    assert_eq!(broker.len("periodic"), 0);
    assert_eq!(ran.load(Ordering::SeqCst), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_schedulers_share_a_memory_lock() {
    // Real time: the memory lock reads the real clock.
    let broker = Arc::new(MemoryBroker::new());
    let lock = Arc::new(MemoryLock::new());
    let backend = Arc::new(MemoryBackend::new(Duration::from_secs(60)));
    let config = Config {
        no_unix_signals: true,
        default_queue: "shared".into(),
        ..Config::default()
    };
    let sent: Sent = Arc::default();
    let servers: Vec<Server> = (0..2)
        .map(|_| {
            let s = Server::new(
                config.clone(),
                broker.clone(),
                backend.clone(),
                lock.clone(),
            );
            let rec = sent.clone();
            s.set_pre_publish_hook(move |sig| {
                let tick = sig
                    .headers
                    .as_ref()
                    .and_then(|h| h.get_str(PERIODIC_TICK_HEADER));
                rec.lock().unwrap().push((
                    tick.unwrap_or_default().to_owned(),
                    String::new(),
                    sig.clone(),
                ));
            });
            s.register_periodic_task("* * * * * *", "shared", Signature::new("t"))
                .unwrap();
            s
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(3_500)).await;
    for s in &servers {
        s.stop_periodic();
    }
    let t = ticks(&sent);
    let unique: HashSet<_> = t.iter().collect();
    assert_eq!(unique.len(), t.len(), "a tick fired twice: {t:?}");
    assert!(t.len() >= 3, "{t:?}");
}

// --- clocks a second apart, on a lock that behaves like Redis ---------------------------------

/// Shared state of the simulated Redis: key → (deadline ns, when the key expires on the server).
type Keys = Arc<Mutex<HashMap<String, (i64, tokio::time::Instant)>>>;

/// Go's Redis lock as `RedisLock` runs it, seen by one process: the client computes `now` and
/// the TTL (`deadline − now`) with its own clock, the request travels `latency` plus a varying
/// 0–16 ms (a network, a busy process), and the server expires the key by its own time.
/// Records every take of a Go key (not of a fence).
struct RedisLike {
    keys: Keys,
    clock: FakeClock,
    latency: Duration,
    calls: AtomicI64,
    takes: Arc<Mutex<Vec<(String, i64)>>>,
}

#[async_trait]
impl Lock for RedisLike {
    async fn try_lock(&self, key: &str, expires_at: DateTime<Utc>) -> machinist_core::Result<bool> {
        let now = self.clock.now().timestamp_nanos_opt().unwrap();
        let deadline = expires_at.timestamp_nanos_opt().unwrap();
        let ttl = Duration::from_nanos(u64::try_from((deadline + 1 - now).max(1_000_000)).unwrap());
        let n = self.calls.fetch_add(1, Ordering::SeqCst);
        let jitter = Duration::from_millis(u64::try_from(n * 7 % 5 * 4).unwrap());
        tokio::time::sleep(self.latency + jitter).await;
        let arrived = tokio::time::Instant::now();
        let taken = {
            let mut keys = self.keys.lock().unwrap();
            let free = match keys.get(key) {
                None => true,
                Some((_, gone_at)) if *gone_at <= arrived => true,
                Some((stored, _)) => *stored < now,
            };
            if free {
                keys.insert(key.to_owned(), (deadline, arrived + ttl));
            }
            free
        };
        if taken && !key.contains("#tick:") {
            self.takes.lock().unwrap().push((key.to_owned(), deadline));
        }
        tokio::time::sleep(self.latency).await;
        Ok(taken)
    }
    async fn unlock(&self, key: &str) -> machinist_core::Result<()> {
        self.keys.lock().unwrap().remove(key);
        Ok(())
    }
    fn describe(&self) -> String {
        "redis-like".into()
    }
}

#[tokio::test(start_paused = true)]
async fn clocks_a_second_apart_fire_each_tick_once() {
    let broker = Arc::new(MemoryBroker::new());
    let backend = Arc::new(MemoryBackend::new(Duration::from_secs(600)));
    let keys: Keys = Arc::default();
    let takes: Arc<Mutex<Vec<(String, i64)>>> = Arc::default();
    let sent: Sent = Arc::default();
    let config = Config {
        no_unix_signals: true,
        default_queue: "skew".into(),
        ..Config::default()
    };
    // Clock offsets up to a second, and different distances to the store.
    let mut servers = Vec::new();
    for (offset_ms, latency_ms) in [(0, 10), (500, 4), (999, 1), (-1, 7)] {
        let clock = FakeClock {
            anchor: at("2026-01-01T00:00:00.200Z") + TimeDelta::milliseconds(offset_ms),
            start: tokio::time::Instant::now(),
            jump_ms: Arc::default(),
        };
        let lock = Arc::new(RedisLike {
            keys: keys.clone(),
            clock: clock.clone(),
            latency: Duration::from_millis(latency_ms),
            calls: AtomicI64::new(offset_ms.abs()),
            takes: takes.clone(),
        });
        let server = Server::new(config.clone(), broker.clone(), backend.clone(), lock);
        let c = clock.clone();
        server.set_periodic_clock(move || c.now());
        let rec = sent.clone();
        server.set_pre_publish_hook(move |sig| {
            let tick = sig
                .headers
                .as_ref()
                .and_then(|h| h.get_str(PERIODIC_TICK_HEADER));
            rec.lock().unwrap().push((
                tick.unwrap_or_default().to_owned(),
                offset_ms.to_string(),
                sig.clone(),
            ));
        });
        server
            .register_periodic_task("* * * * * *", "skew", Signature::new("t"))
            .unwrap();
        servers.push(server);
    }
    sleep_ms(60_000).await;
    for s in &servers {
        s.stop_periodic();
    }
    let mut per_tick: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (tick, who, _) in sent.lock().unwrap().iter() {
        per_tick.entry(tick.clone()).or_default().push(who.clone());
    }
    let twice: Vec<_> = per_tick.iter().filter(|(_, w)| w.len() > 1).collect();
    assert!(twice.is_empty(), "ticks fired more than once: {twice:?}");
    // None missed: every second from the first to the last.
    let first = at(per_tick.keys().next().unwrap());
    let last = at(per_tick.keys().last().unwrap());
    assert!(last - first >= TimeDelta::seconds(58), "{first} .. {last}");
    assert_eq!(
        i64::try_from(per_tick.len()).unwrap(),
        (last - first).num_seconds() + 1,
        "a tick was missed: {:?}",
        per_tick.keys().collect::<Vec<_>>()
    );
    // The Go key alone was taken twice for some ticks (the fast process's key expired on the
    // server before the slow one asked): the fence is what kept those ticks single.
    let mut key_takes: HashMap<i64, usize> = HashMap::new();
    for (_, deadline) in takes.lock().unwrap().iter() {
        *key_takes.entry(*deadline).or_default() += 1;
    }
    assert!(
        key_takes.values().any(|n| *n > 1),
        "the simulation never hit the expiry hole: {key_takes:?}"
    );
}
