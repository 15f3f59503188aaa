//! `worker --config FILE` following the file, and `worker --metrics-addr`.

use std::time::{Duration, Instant};

use crate::util::{Db, TempFile, free_port, http_get, text};

const WITHIN: Duration = Duration::from_secs(20);

/// The file is re-read this often in these tests (10 s by default).
const RELOAD: (&str, &str) = ("MACHINIST_CONFIG_RELOAD_PERIOD", "100ms");

#[test]
fn a_changed_config_file_applies_live() {
    let db = Db::new("reload");
    let file = TempFile::new("reload", "yml", "log_level: warn\nconcurrency: 1\n");
    let worker = db.worker_with_env(&["--config", file.arg()], &[RELOAD]);

    // Concurrency 1: of two long tasks, one runs and the other waits.
    let first = db.send(&["sleep", "int64:8000"]).remove(0);
    let second = db.send(&["sleep", "int64:8000"]).remove(0);
    db.wait_for_state(&first, "STARTED", WITHIN);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        db.status(&second).expect("stored")["State"],
        "PENDING",
        "concurrency 1: {}",
        worker.log()
    );
    let before = worker.log();
    assert!(
        !before.contains("registered tasks") && !before.contains("task started"),
        "log_level warn hides info lines: {before}"
    );

    // Both settings change; the file is re-read within 100 ms.
    let changed = Instant::now();
    std::fs::write(&file.0, "log_level: debug\nconcurrency: 3\n").expect("rewrite");
    worker.wait_for_log("log level is now debug", WITHIN);
    worker.wait_for_log("worker concurrency is now 3", WITHIN);
    db.wait_for_state(&second, "STARTED", WITHIN);
    assert!(
        changed.elapsed() < Duration::from_secs(7),
        "the second task started while the first still ran"
    );
    assert_eq!(db.status(&first).expect("stored")["State"], "STARTED");
    worker.wait_for_log("task started: sleep(8000)", WITHIN);

    // A setting that needs a restart is logged, not applied; a broken file keeps the config.
    std::fs::write(
        &file.0,
        "log_level: debug\nconcurrency: 3\ndefault_queue: elsewhere\n",
    )
    .expect("rewrite");
    worker.wait_for_log("`default_queue` changed but needs a restart", WITHIN);
    std::fs::write(&file.0, "log_level: debug\nconcurency: 3\n").expect("rewrite");
    let log = worker.wait_for_log("config reload failed; keeping the current config", WITHIN);
    assert!(log.contains("concurency"), "{log}");
}

#[test]
fn flags_and_environment_win_over_the_followed_file() {
    let db = Db::new("reload-flags");
    let file = TempFile::new("reload-flags", "yml", "concurrency: 1\n");
    let worker = db.worker_with_env(
        &["--config", file.arg(), "--concurrency", "2"],
        &[RELOAD, ("RUST_LOG", "info")],
    );
    worker.wait_for_log("worker started", WITHIN);
    assert!(worker.log().contains("concurrency=2"), "{}", worker.log());
    std::fs::write(&file.0, "concurrency: 5\nlog_level: error\n").expect("rewrite");
    let log = worker.wait_for_log("RUST_LOG decides", WITHIN);
    assert!(!log.contains("worker concurrency is now"), "{log}");
    // Still at `info` (RUST_LOG): a task's start is logged.
    let uuid = db.send(&["add", "int64:1"]).remove(0);
    db.wait_for_state(&uuid, "SUCCESS", WITHIN);
    worker.wait_for_log("task succeeded: add(1) = 1", WITHIN);
}

#[test]
fn a_zero_reload_period_is_refused() {
    let db = Db::new("reload-zero");
    let file = TempFile::new("reload-zero", "yml", "concurrency: 1\n");
    let out = db.run(&[
        "worker",
        "--config",
        file.arg(),
        "--config-reload-period",
        "0s",
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("above zero"),
        "{}",
        text(&out.stderr)
    );
}

/// The metrics page once it shows `want` (each line that holds all of a `want`'s parts).
fn scrape_until(port: u16, want: &[&[&str]]) -> String {
    let deadline = Instant::now() + WITHIN;
    loop {
        let page = http_get(port, "/metrics").unwrap_or_default();
        let found = |parts: &&[&str]| page.lines().any(|l| parts.iter().all(|p| l.contains(p)));
        if want.iter().all(found) {
            return page;
        }
        assert!(
            Instant::now() < deadline,
            "metrics without {want:?} after {WITHIN:?}:\n{page}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn metrics_are_served_in_prometheus_format() {
    let db = Db::new("metrics");
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let worker = db.worker(&["--metrics-addr", &addr]);
    worker.wait_for_log("serving Prometheus metrics", WITHIN);

    let out = db.run(&["send", "add", "int64:1", "int64:2", "--wait"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = db.run(&["send", "panic_task", "--wait"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let out = db.run(&["send", "sleep", "int64:30", "--wait"]);
    assert!(out.status.success(), "{}", text(&out.stderr));

    let page = scrape_until(
        port,
        &[
            &[
                "machinist_tasks_total{",
                r#"task="add""#,
                r#"state="started""#,
                "} 1",
            ],
            &[
                "machinist_tasks_total{",
                r#"task="add""#,
                r#"state="success""#,
                "} 1",
            ],
            &[
                "machinist_tasks_total{",
                r#"task="panic_task""#,
                r#"state="failure""#,
                "} 1",
            ],
            &[
                "machinist_task_duration_seconds_bucket{",
                r#"task="sleep""#,
                r#"le="0.025""#,
                "} 0",
            ],
            &[
                "machinist_task_duration_seconds_bucket{",
                r#"task="sleep""#,
                r#"le="0.05""#,
                "} 1",
            ],
            &[
                "machinist_task_duration_seconds_count{",
                r#"task="add""#,
                "} 1",
            ],
            &["machinist_tasks_running 0"],
            &["machinist_queue_depth{", r#"queue="machinery_tasks""#],
        ],
    );
    assert!(
        page.contains("# TYPE machinist_task_duration_seconds histogram"),
        "{page}"
    );
    assert!(page.contains("# HELP machinist_tasks_total"), "{page}");
}

#[test]
fn a_metrics_address_in_use_is_an_error() {
    let db = Db::new("metrics-busy");
    let busy = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = busy.local_addr().expect("addr").to_string();
    let out = db.run(&["worker", "--metrics-addr", &addr]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let err = text(&out.stderr);
    assert!(err.contains(&format!("serving metrics on {addr}")), "{err}");
}
