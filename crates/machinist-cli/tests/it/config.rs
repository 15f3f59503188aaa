//! `config check` and how file, environment and flags layer.

use crate::util::{TempFile, command, run, text};

fn check(file: Option<&TempFile>, env: &[(&str, &str)], flags: &[&str]) -> std::process::Output {
    let mut args = vec!["config", "check"];
    if let Some(f) = file {
        args.extend_from_slice(&["--config", f.arg()]);
    }
    args.extend_from_slice(flags);
    let mut cmd = command(&args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    run(cmd, b"")
}

/// The value of `key: value` in `config check`'s output.
fn value<'a>(out: &'a str, key: &str) -> &'a str {
    out.lines()
        .find_map(|l| l.strip_prefix(key).and_then(|r| r.strip_prefix(": ")))
        .unwrap_or_else(|| panic!("no {key} in {out}"))
}

#[test]
fn defaults_use_the_embedded_sqlite_file() {
    let out = check(None, &[], &[]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert_eq!(value(&stdout, "default_queue"), "machinery_tasks");
    assert!(
        stdout.contains("# broker: SQLite (sqlite://machinist.db, the default)"),
        "{stdout}"
    );
    assert!(stdout.contains("# lock: SQLite"), "{stdout}");
}

#[test]
fn file_then_environment_then_flags() {
    let file = TempFile::new(
        "layers",
        "yml",
        "broker: sqlite://from-file.db\n\
         default_queue: from_file\n\
         results_expire_in: 60\n\
         concurrency: 3\n",
    );
    let out = check(Some(&file), &[], &[]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert_eq!(value(&stdout, "broker"), "sqlite://from-file.db");
    assert_eq!(value(&stdout, "default_queue"), "from_file");
    assert_eq!(value(&stdout, "results_expire_in"), "60");
    assert_eq!(value(&stdout, "concurrency"), "3");

    let env = [
        ("BROKER", "sqlite://from-env.db"),
        ("DEFAULT_QUEUE", "from_env"),
        ("MACHINIST_CONCURRENCY", "5"),
    ];
    let out = check(Some(&file), &env, &[]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert_eq!(value(&stdout, "broker"), "sqlite://from-env.db");
    assert_eq!(value(&stdout, "default_queue"), "from_env");
    assert_eq!(value(&stdout, "concurrency"), "5");
    assert_eq!(
        value(&stdout, "results_expire_in"),
        "60",
        "from the file still"
    );

    let out = check(Some(&file), &env, &["--broker", "memory"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert_eq!(value(&stdout, "broker"), "memory");
    assert!(stdout.contains("# broker: in-memory"), "{stdout}");
    assert_eq!(value(&stdout, "default_queue"), "from_env");
}

#[test]
fn a_bad_file_exits_1_naming_the_line() {
    let file = TempFile::new(
        "bad",
        "yml",
        "broker: sqlite://x.db\n\
         default_queue: q\n\
         concurency: 4\n",
    );
    let out = check(Some(&file), &[], &[]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stdout));
    let err = text(&out.stderr);
    assert!(err.contains(&format!("{}:3", file.arg())), "{err}");
    assert!(err.contains("concurency"), "{err}");
    assert!(err.contains("concurrency"), "a suggestion: {err}");
    assert!(out.stdout.is_empty());

    let file = TempFile::new(
        "bad-value",
        "yml",
        "default_queue: q\nresults_expire_in: soon\n",
    );
    let out = check(Some(&file), &[], &[]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(err.contains(&format!("{}:2", file.arg())), "{err}");
    assert!(err.contains("results_expire_in"), "{err}");

    let file = TempFile::new("bad-yaml", "yml", "broker: [unclosed\n");
    let out = check(Some(&file), &[], &[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains(file.arg()),
        "{}",
        text(&out.stderr)
    );

    let out = check(None, &[], &["--config", "/nonexistent/machinist.yml"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("/nonexistent/machinist.yml"));

    let out = check(None, &[("MACHINIST_CONCURRENCY", "lots")], &[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("MACHINIST_CONCURRENCY"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn secrets_are_redacted_and_unavailable_adapters_named() {
    let file = TempFile::new(
        "secret",
        "yml",
        "broker: redis://:hunter2@cache.internal:6379/0\n\
         result_backend: mongodb://root:s3cret@mongo:27017/\n",
    );
    let out = check(Some(&file), &[], &[]);
    assert_eq!(out.status.code(), Some(1), "mongodb is not in this version");
    let all = format!("{}{}", text(&out.stdout), text(&out.stderr));
    for secret in ["hunter2", "s3cret", "root"] {
        assert!(!all.contains(secret), "{secret} in {all}");
    }
    let stdout = text(&out.stdout);
    assert_eq!(value(&stdout, "broker"), "redis://cache.internal:6379");
    assert!(
        stdout.contains("# broker: Redis"),
        "the CLI has Redis: {stdout}"
    );
    let err = text(&out.stderr);
    assert!(err.contains("`mongodb`"), "{err}");
    assert!(err.contains("not available in this version"), "{err}");

    // The same with a worker: it refuses to start, exit 1, the URL redacted.
    let mut cmd = command(&["worker", "--config", file.arg()]);
    cmd.env("LOCK", "memory");
    let out = run(cmd, b"");
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let err = text(&out.stderr);
    assert!(err.contains("mongodb://mongo:27017"), "{err}");
    assert!(!err.contains("s3cret") && !err.contains("hunter2"), "{err}");

    // The CLI has AMQP; amqps:// needs a build with TLS, and the error names the feature.
    let out = check(
        None,
        &[],
        &[
            "--broker",
            "amqp://guest:hunter2@rabbit:5672/",
            "--result-backend",
            "amqps://guest:hunter2@rabbit:5671/",
        ],
    );
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains("# broker: AMQP"),
        "the CLI has AMQP: {stdout}"
    );
    if cfg!(feature = "amqp-tls") {
        assert!(out.status.success(), "{}", text(&out.stderr));
    } else {
        assert_eq!(out.status.code(), Some(1));
        let err = text(&out.stderr);
        assert!(err.contains("`amqp-tls`"), "{err}");
        assert!(!err.contains("hunter2"), "{err}");
    }

    // rediss:// needs a build with TLS; the error names the feature.
    let out = check(
        None,
        &[],
        &["--broker", "rediss://:hunter2@cache.internal:6380"],
    );
    if cfg!(feature = "redis-tls") {
        assert!(out.status.success(), "{}", text(&out.stderr));
    } else {
        assert_eq!(out.status.code(), Some(1));
        let err = text(&out.stderr);
        assert!(err.contains("`redis-tls`"), "{err}");
        assert!(!err.contains("hunter2"), "{err}");
    }
}

#[test]
fn a_redis_sentinel_is_used_not_ignored() {
    let file = TempFile::new(
        "sentinel",
        "yml",
        "broker: redis://:pw@127.0.0.1:1/0\nredis:\n  master_name: mymaster\n",
    );
    let mut cmd = command(&["worker", "--config", file.arg()]);
    cmd.env("RESULT_BACKEND", "memory").env("LOCK", "memory");
    let out = run(cmd, b"");
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let err = text(&out.stderr);
    // The URL's host is taken as a sentinel (none listens there) and the password never shows.
    assert!(err.contains("(sentinel mymaster)"), "{err}");
    assert!(!err.contains("pw"), "{err}");
}

#[test]
fn unknown_schemes_list_the_supported_ones() {
    let out = check(None, &[], &["--broker", "postgres://u:pw@db/app"]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(err.contains("unknown URL scheme"), "{err}");
    assert!(err.contains("sqlite://PATH"), "{err}");
    assert!(!err.contains("pw"), "{err}");
}

#[test]
fn the_example_config_file_checks() {
    let file = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/machinist.yml");
    let out = check(None, &[], &["--config", file]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert_eq!(value(&stdout, "broker"), "sqlite://machinist.db");
    assert_eq!(value(&stdout, "redis.normal_tasks_poll_period"), "1s");
    assert_eq!(value(&stdout, "task_time_limit"), "10m");
    assert!(stdout.contains("# broker: SQLite"), "{stdout}");

    // One URL moves it to Redis.
    let out = check(
        None,
        &[("BROKER", "redis://localhost:6379/0")],
        &["--config", file],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("# broker: Redis"),
        "{}",
        text(&out.stdout)
    );
}
