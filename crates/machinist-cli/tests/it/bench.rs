//! `machinist bench` as CI runs it: small runs per broker that must complete with every result
//! checked, and JSON of the documented shape. No timing is asserted.

use serde_json::Value;

use crate::util::{command, run, temp_path, text};

/// Fields every scenario's JSON line has (numbers, or null where a figure does not apply).
const FIELDS: &[&str] = &[
    "scenario",
    "broker",
    "tasks",
    "tasks_per_sec",
    "floor_tasks_per_sec",
    "ratio",
    "p50_ms",
    "p99_ms",
    "peak_rss_mb",
    "cpu_s_per_1000",
];

/// Runs `machinist bench args… --json`, expects exit 0, returns one object per line.
fn bench_json(args: &[&str]) -> Vec<Value> {
    let mut all = vec!["bench"];
    all.extend_from_slice(args);
    all.push("--json");
    let out = run(command(&all), b"");
    assert!(
        out.status.success(),
        "machinist {all:?}: {:?}\nstdout: {}\nstderr: {}",
        out.status,
        text(&out.stdout),
        text(&out.stderr)
    );
    text(&out.stdout)
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}")))
        .collect()
}

/// The shape and the checks of one scenario's line: every task came back SUCCESS with the
/// right sum (the bench checks that itself and says so in `verified`).
fn check_line(line: &Value, scenario: &str, broker: &str, tasks: u64) {
    for field in FIELDS {
        assert!(line.get(field).is_some(), "no {field:?} in {line}");
    }
    assert_eq!(line["scenario"], scenario, "{line}");
    assert_eq!(line["broker"], broker, "{line}");
    assert_eq!(line["tasks"], tasks, "{line}");
    assert_eq!(line["succeeded"], tasks, "{line}");
    assert_eq!(line["verified"], true, "{line}");
    assert!(line.get("note").is_none(), "{line}");
    assert_eq!(line["threads"], 1, "one runtime thread by default: {line}");
    assert!(
        line["tasks_per_sec"].as_f64().is_some_and(|r| r > 0.0),
        "{line}"
    );
    for field in ["p50_ms", "p99_ms", "peak_rss_mb", "cpu_s_per_1000"] {
        assert!(line[field].is_number(), "{field} is not a number in {line}");
    }
    assert!(
        line["p50_ms"].as_f64() <= line["p99_ms"].as_f64(),
        "p50 above p99: {line}"
    );
}

#[test]
fn memory_end_to_end_and_latency() {
    let lines = bench_json(&[
        "--broker",
        "memory",
        "--tasks",
        "2000",
        "--scenario",
        "end-to-end",
        "--scenario",
        "latency",
    ]);
    assert_eq!(lines.len(), 2, "{lines:?}");
    check_line(&lines[0], "end-to-end", "memory", 2000);
    // Latency sends at most --latency-tasks (1000) one at a time.
    check_line(&lines[1], "latency", "memory", 1000);
    for line in &lines {
        assert!(line["floor_tasks_per_sec"].is_null(), "{line}");
        assert!(line["ratio"].is_null(), "{line}");
        assert!(line["start_p50_ms"].is_number(), "{line}");
    }
}

/// A SQLite file in the temp directory, removed (with its WAL files) on drop.
struct TempDb(std::path::PathBuf);

impl TempDb {
    fn new(tag: &str) -> Self {
        TempDb(temp_path(tag, "db"))
    }
    fn url(&self) -> String {
        format!("sqlite://{}", self.0.display())
    }
}

impl Drop for TempDb {
    fn drop(&mut self) {
        for suffix in ["", "-wal", "-shm"] {
            let mut p = self.0.clone().into_os_string();
            p.push(suffix);
            let _ = std::fs::remove_file(p);
        }
    }
}

#[test]
fn sqlite_end_to_end_and_latency() {
    let db = TempDb::new("bench");
    let url = db.url();
    let lines = bench_json(&[
        "--broker",
        &url,
        "--tasks",
        "2000",
        "--scenario",
        "end-to-end",
        "--scenario",
        "latency",
    ]);
    assert_eq!(lines.len(), 2, "{lines:?}");
    check_line(&lines[0], "end-to-end", "sqlite", 2000);
    check_line(&lines[1], "latency", "sqlite", 1000);
}

#[test]
fn sqlite_every_scenario_with_a_worker_process() {
    let db = TempDb::new("bench-procs");
    let url = db.url();
    let lines = bench_json(&[
        "--broker",
        &url,
        "--tasks",
        "300",
        "--latency-tasks",
        "20",
        "--chord-size",
        "50",
        "--worker-processes",
        "1",
        "--concurrency",
        "8",
        // Passed on to the worker process, which would not start on a flag it refused.
        "--threads",
        "2",
    ]);
    let names: Vec<&str> = lines
        .iter()
        .filter_map(|l| l["scenario"].as_str())
        .collect();
    assert_eq!(
        names,
        [
            "enqueue",
            "drain",
            "end-to-end",
            "no-results",
            "latency",
            "chord",
            "backlog"
        ]
    );
    for line in &lines {
        let scenario = line["scenario"].as_str().unwrap_or_default();
        if scenario == "no-results" {
            // Needs in-process workers: said, not run.
            assert!(line["skipped"].is_string(), "{line}");
            continue;
        }
        let tasks = if scenario == "latency" { 20 } else { 300 };
        assert_eq!(line["tasks"], tasks, "{line}");
        assert_eq!(line["succeeded"], tasks, "{line}");
        assert_eq!(line["verified"], true, "{line}");
        assert!(line["peak_rss_mb"].is_number(), "{line}");
        assert_eq!(line["threads"], 2, "{line}");
    }
    let chord = &lines[5];
    assert_eq!(chord["chords"], 6, "{chord}");
    assert_eq!(chord["cpu_scope"], "worker processes", "{chord}");
    // End to end, the producers' CPU beside the worker processes': this process sent 300
    // tasks, which cost it some CPU.
    let e2e = &lines[2];
    assert_eq!(e2e["scenario"], "end-to-end", "{e2e}");
    assert!(
        e2e["producer_cpu_s_per_1000"]
            .as_f64()
            .is_some_and(|c| c > 0.0),
        "{e2e}"
    );
}

#[test]
fn redis_end_to_end_beside_the_raw_floor() {
    let Some(redis) = machinist_testkit::redis_server::RedisServer::start() else {
        return;
    };
    let url = redis.url();
    let lines = bench_json(&[
        "--broker",
        &url,
        "--tasks",
        "2000",
        "--scenario",
        "end-to-end",
        "--scenario",
        "latency",
    ]);
    assert_eq!(lines.len(), 2, "{lines:?}");
    check_line(&lines[0], "end-to-end", "redis", 2000);
    check_line(&lines[1], "latency", "redis", 1000);
    for line in &lines {
        assert!(
            line["floor_tasks_per_sec"]
                .as_f64()
                .is_some_and(|f| f > 0.0),
            "{line}"
        );
        assert!(line["ratio"].as_f64().is_some_and(|r| r > 0.0), "{line}");
    }
    assert!(lines[1]["floor_p50_ms"].is_number(), "{}", lines[1]);
    // The server's own count: a task costs at least its PENDING, its push, its fetch share and
    // its states; the floor ran its three commands per task at some rate.
    let e2e = &lines[0];
    // In-process, `cpu_s_per_1000` covers the producers too: no separate figure.
    assert!(e2e.get("producer_cpu_s_per_1000").is_none(), "{e2e}");
    let per_task = e2e["server_commands_per_task"].as_f64().unwrap_or_default();
    assert!((4.0..30.0).contains(&per_task), "{e2e}");
    assert!(
        e2e["server_commands_per_sec"]
            .as_f64()
            .is_some_and(|r| r > 0.0),
        "{e2e}"
    );
    assert!(
        e2e["floor_server_commands_per_sec"]
            .as_f64()
            .is_some_and(|r| r > 0.0),
        "{e2e}"
    );
    // And the server's CPU per task, for both: Redis did some work for each task.
    for field in ["server_cpu_us_per_task", "floor_server_cpu_us_per_task"] {
        assert!(
            e2e[field]
                .as_f64()
                .is_some_and(|us| us > 0.0 && us < 10_000.0),
            "{field}: {e2e}"
        );
    }
    // Nothing left behind: the floor's keys and the bench's states are deleted, queues empty.
    let keys = redis.command(&["DBSIZE"]).unwrap_or_default();
    assert!(keys.starts_with(":0"), "keys left in Redis: {keys}");
}

#[test]
fn the_table_names_every_column_and_bad_combinations_are_usage_errors() {
    let out = run(
        command(&["bench", "--tasks", "50", "--scenario", "drain"]),
        b"",
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let table = text(&out.stdout);
    for column in [
        "scenario", "tasks/s", "floor/s", "ratio", "p50 ms", "p99 ms", "RSS MB",
    ] {
        assert!(table.contains(column), "no {column:?} in\n{table}");
    }
    assert!(table.contains("ok (50 SUCCESS)"), "{table}");

    let out = run(
        command(&["bench", "--broker", "memory", "--worker-processes", "2"]),
        b"",
    );
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("--worker-processes"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn amqp_end_to_end_beside_the_raw_floor() {
    let Some(url) = machinist_testkit::rabbitmq::reachable() else {
        return;
    };
    let results = temp_path("bench-amqp", "db");
    let backend = format!("sqlite://{}", results.display());
    let mut cmd = command(&[
        "bench",
        "--broker",
        &url,
        "--result-backend",
        &backend,
        "--tasks",
        "2000",
        "--scenario",
        "end-to-end",
        "--scenario",
        "latency",
        "--json",
    ]);
    // The run's queues delete themselves a minute after the run (no leftovers on the server).
    cmd.env("AMQP_QUEUE_DECLARE_ARGS", "x-expires:60000");
    let out = run(cmd, b"");
    for suffix in ["", "-wal", "-shm"] {
        let mut p = results.clone().into_os_string();
        p.push(suffix);
        let _ = std::fs::remove_file(p);
    }
    assert!(
        out.status.success(),
        "{:?}\nstdout: {}\nstderr: {}",
        out.status,
        text(&out.stdout),
        text(&out.stderr)
    );
    let lines: Vec<Value> = text(&out.stdout)
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}")))
        .collect();
    assert_eq!(lines.len(), 2, "{lines:?}");
    check_line(&lines[0], "end-to-end", "amqp", 2000);
    check_line(&lines[1], "latency", "amqp", 1000);
    for line in &lines {
        assert!(
            line["floor_tasks_per_sec"]
                .as_f64()
                .is_some_and(|f| f > 0.0),
            "the AMQP floor is measured: {line}"
        );
        assert!(line["ratio"].as_f64().is_some_and(|r| r > 0.0), "{line}");
    }
    assert!(lines[1]["floor_p50_ms"].is_number(), "{}", lines[1]);
    // No Redis broker: no server command count.
    for field in ["server_commands_per_task", "server_cpu_us_per_task"] {
        assert!(lines[0].get(field).is_none(), "{field}: {}", lines[0]);
    }
}
