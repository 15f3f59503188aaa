//! Configuration: Go's YAML keys and environment names load with Go's values and defaults, the
//! whole file is read, errors name key and line, redaction never leaks a password, and hot
//! reload follows the file under a paused clock.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use machinist_core::config::{ConfigError, ConfigWatcher, redact_url};
use machinist_core::{Config, Error};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

fn env(pairs: &[(&str, &str)]) -> impl FnMut(&str) -> Option<String> + use<> {
    let map: HashMap<String, String> = pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    move |k| map.get(k).cloned()
}

/// A fresh directory under the system's temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> Self {
        let dir = std::env::temp_dir().join(format!("machinist-config-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).expect("create temp dir");
        TempDir(dir)
    }
    fn file(&self, name: &str, text: &str) -> PathBuf {
        let path = self.0.join(name);
        std::fs::write(&path, text).expect("write config");
        path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn go_testconfig_loads_every_key() {
    let c = Config::from_yaml(fixture("go_testconfig.yml")).expect("load");
    assert_eq!(c.broker, "broker");
    assert_eq!(c.lock, "lock");
    assert_eq!(c.multiple_broker_separator, ",");
    assert_eq!(c.default_queue, "default_queue");
    assert_eq!(c.result_backend, "result_backend");
    assert_eq!(c.results_expire_in, 123_456);
    assert_eq!(c.amqp.binding_key, "binding_key");
    assert_eq!(c.amqp.exchange, "exchange");
    assert_eq!(c.amqp.exchange_type, "exchange_type");
    assert_eq!(c.amqp.prefetch_count, 123);
    assert_eq!(c.amqp.queue_declare_args["x-max-priority"], 10);
    assert_eq!(c.amqp.queue_binding_args["image-type"], "png");
    assert_eq!(c.amqp.queue_binding_args["x-match"], "any");
    assert!(c.amqp.auto_delete);
    assert_eq!(c.amqp.delayed_queue, "delayed_queue");
    assert_eq!(c.sqs.wait_time_seconds, 123);
    assert_eq!(c.sqs.visibility_timeout, Some(Duration::from_secs(456)));
    assert!(c.sqs.visibility_heartbeat, "Go's `visibility_hearth_beat`");
    assert_eq!(c.redis.max_idle, 12);
    assert_eq!(c.redis.max_active, 123);
    assert_eq!(c.redis.max_idle_timeout, Duration::from_secs(456));
    assert!(!c.redis.wait);
    assert_eq!(c.redis.read_timeout, Duration::from_secs(17));
    assert_eq!(c.redis.write_timeout, Duration::from_secs(19));
    assert_eq!(c.redis.connect_timeout, Duration::from_secs(21));
    assert_eq!(
        c.redis.normal_tasks_poll_period,
        Duration::from_millis(1001)
    );
    assert_eq!(c.redis.delayed_tasks_poll_period, Duration::from_millis(23));
    assert_eq!(c.redis.delayed_tasks_key, "delayed_tasks_key");
    assert_eq!(c.redis.client_name, "client_name");
    assert_eq!(c.redis.master_name, "master_name");
    assert!(c.redis.cluster_enabled);
    assert_eq!(c.redis.sentinel_password, "sentinel_password");
    assert!(c.no_unix_signals);
    assert_eq!(c.dynamodb.task_states_table, "task_states_table");
    assert_eq!(c.dynamodb.group_metas_table, "group_metas_table");
    // Keys the file does not have keep their defaults.
    let d = Config::default();
    assert_eq!(c.shutdown_timeout, d.shutdown_timeout);
    assert_eq!(c.mongodb, d.mongodb);
}

#[test]
fn defaults_match_gos_table() {
    let d = Config::default();
    assert_eq!(Config::from_env_with(|_| None).expect("no env"), d);
    let dir = TempDir::new();
    assert_eq!(
        Config::from_yaml(dir.file("empty.yml", "")).expect("empty file"),
        d
    );

    // Go's file/env loader defaults (v2/config/config.go `defaultCnf`).
    assert_eq!(d.default_queue, "machinery_tasks");
    assert_eq!(d.results_expire_in, 3600);
    assert_eq!(d.results_ttl(), Duration::from_secs(3600));
    assert_eq!(
        Config {
            results_expire_in: 0,
            ..Config::default()
        }
        .results_ttl(),
        Duration::from_secs(3600)
    );
    assert_eq!(d.amqp.exchange, "machinery_exchange");
    assert_eq!(d.amqp.exchange_type, "direct");
    assert_eq!(d.amqp.binding_key, "machinery_task");
    assert_eq!(d.amqp.prefetch_count, 3);
    assert!(d.amqp.queue_declare_args.is_empty() && d.amqp.queue_binding_args.is_empty());
    assert!(!d.amqp.auto_delete);
    assert_eq!(d.amqp.delayed_queue, "");
    assert_eq!(d.sqs.wait_time_seconds, 0);
    assert_eq!(d.sqs.visibility_timeout, None);
    assert!(!d.sqs.visibility_heartbeat);
    assert_eq!(d.redis.max_idle, 3);
    assert_eq!(d.redis.max_active, 0);
    assert_eq!(d.redis.max_idle_timeout, Duration::from_secs(240));
    assert!(!d.redis.wait);
    assert_eq!(d.redis.read_timeout, Duration::from_secs(15));
    assert_eq!(d.redis.write_timeout, Duration::from_secs(15));
    assert_eq!(d.redis.connect_timeout, Duration::from_secs(15));
    assert_eq!(
        d.redis.normal_tasks_poll_period,
        Duration::from_millis(1000)
    );
    assert_eq!(
        d.redis.delayed_tasks_poll_period,
        Duration::from_millis(500)
    );
    assert_eq!(d.redis.delayed_tasks_key, "delayed_tasks");
    assert_eq!(d.dynamodb.task_states_table, "task_states");
    assert_eq!(d.dynamodb.group_metas_table, "group_metas");
    assert_eq!(d.mongodb.database, "machinery");
    assert!(!d.no_unix_signals);
    // machinist: empty URLs mean the embedded SQLite default (Go: the AMQP URL).
    assert_eq!(
        (
            d.broker.as_str(),
            d.result_backend.as_str(),
            d.lock.as_str()
        ),
        ("", "", "")
    );
    // machinist's own.
    assert_eq!(d.log_level, "info");
    assert_eq!(d.concurrency, 0);
    assert!(d.effective_concurrency() >= 2);
    assert_eq!(d.lease, Duration::from_secs(30));
    assert_eq!(d.result_poll_interval, Duration::from_millis(50));
    assert_eq!(d.shutdown_timeout, Duration::from_secs(30));
    assert_eq!(d.task_time_limit, None);
    assert_eq!(d.time_limit_grace, Duration::from_secs(5));
    assert_eq!(d.max_message_size, 16 << 20);
    assert_eq!(d.max_retry_later, 100);
    assert_eq!(d.unregistered_max_requeues, 20);
    assert_eq!(d.unregistered_max_backoff, Duration::from_secs(60));
}

#[test]
fn whole_file_is_read() {
    let path = fixture("machinist_full.yml");
    let text = std::fs::read_to_string(&path).expect("read");
    let tail = text.find("unregistered_max_backoff").expect("key");
    assert!(
        tail > 1000,
        "the fixture must put keys past Go's 1,000-byte cut"
    );
    assert!(text.len() > 2000);

    let c = Config::from_yaml(&path).expect("load");
    assert_eq!(c.broker, "redis://:broker-password@redis.internal:6379/1");
    assert_eq!(c.amqp.exchange_type, "topic");
    assert_eq!(c.amqp.queue_declare_args["x-message-ttl"], 60_000);
    assert_eq!(c.sqs.visibility_timeout, Some(Duration::from_secs(30)));
    assert_eq!(c.redis.write_timeout, Duration::from_secs(15));
    assert_eq!(
        c.redis.delayed_tasks_poll_period,
        Duration::from_millis(250)
    );
    assert_eq!(c.gcp_pubsub.max_extension, Some(Duration::from_secs(600)));
    assert_eq!(c.mongodb.database, "machinist");
    assert_eq!(
        c.tls.ca_file.as_deref(),
        Some(Path::new("/etc/machinist/ca.pem"))
    );
    assert_eq!(c.log_level, "info,machinist=debug");
    assert_eq!(c.concurrency, 16);
    assert_eq!(c.lease, Duration::from_secs(45));
    assert_eq!(c.result_poll_interval, Duration::from_millis(100));
    assert_eq!(c.shutdown_timeout, Duration::from_secs(60));
    assert_eq!(c.task_time_limit, Some(Duration::from_secs(600)));
    assert_eq!(c.time_limit_grace, Duration::from_secs(10));
    assert_eq!(c.max_message_size, 8 << 20);
    assert_eq!(c.max_retry_later, 50);
    assert_eq!(c.unregistered_max_requeues, 10);
    // The last key of the file, past byte 2000.
    assert_eq!(c.unregistered_max_backoff, Duration::from_secs(120));

    // The file's URLs keep their passwords in the value, never in what is shown.
    let shown = format!("{c:?}\n{}", c.redacted());
    assert!(!shown.contains("broker-password") && !shown.contains("backend-password"));
    assert!(shown.contains("redis://redis.internal:6379"), "{shown}");
}

#[test]
fn unknown_key_names_key_and_line() {
    let path = fixture("unknown_key.yml");
    let e = Config::from_yaml(&path).expect_err("unknown key");
    assert!(matches!(e, ConfigError::UnknownKey { .. }), "{e:?}");
    assert_eq!(e.line(), Some(6));
    assert_eq!(e.key(), Some("redis.normal_task_poll_period"));
    assert_eq!(e.file(), Some(path.display().to_string().as_str()));
    let text = e.to_string();
    assert!(text.contains("unknown_key.yml:6"), "{text}");
    assert!(
        text.contains("did you mean `redis.normal_tasks_poll_period`"),
        "{text}"
    );
    // And through the crate's error.
    let e: Error = e.into();
    assert!(matches!(&e, Error::Config(m) if m.contains("redis.normal_task_poll_period")));
}

#[test]
fn bad_value_names_key_line_and_expectation() {
    let e = Config::from_yaml(fixture("bad_value.yml")).expect_err("bad value");
    assert!(matches!(e, ConfigError::InvalidValue { .. }), "{e:?}");
    assert_eq!(e.line(), Some(4));
    assert_eq!(e.key(), Some("results_expire_in"));
    let text = e.to_string();
    assert!(text.contains("bad_value.yml:4"), "{text}");
    assert!(text.contains("`results_expire_in`"), "{text}");
    assert!(text.contains("whole number of seconds"), "{text}");
    assert!(text.contains("`abc`"), "{text}");

    let e = Config::from_yaml(fixture("does-not-exist.yml")).expect_err("missing");
    assert!(matches!(e, ConfigError::Io { .. }), "{e:?}");
}

#[test]
fn env_layers_over_the_file() {
    let dir = TempDir::new();
    let path = dir.file(
        "layers.yml",
        "broker: redis://file:6379\ndefault_queue: from_file\nmultiple_broker_separator: \";\"\n\
         sqs:\n  visibility_hearth_beat: false\nredis:\n  read_timeout: 3\n",
    );
    let mut c = Config::from_yaml(&path).expect("file");
    assert_eq!(c.multiple_broker_separator, ";");
    c.apply_env_with(env(&[
        ("DEFAULT_QUEUE", "from_env"),
        ("MULTIPLE_BROKEN_SEPARATOR", "|"),
        ("SQS_VISIBILITY_HEARTBEAT", "true"),
        ("REDIS_WRITE_TIMEOUT", "4"),
        ("REDIS_NORMAL_TASKS_POLL_PERIOD", "250"),
        ("MACHINIST_SHUTDOWN_TIMEOUT", "90s"),
        ("MACHINIST_CONCURRENCY", "12"),
        ("MACHINIST_LOG_LEVEL", "debug"),
        ("MACHINIST_TASK_TIME_LIMIT", "5m"),
        ("MACHINIST_MAX_MESSAGE_SIZE", "1MiB"),
        (
            "AMQP_QUEUE_DECLARE_ARGS",
            "x-max-priority:10,x-queue-mode:lazy",
        ),
        ("TASK_STATES_TABLE", "states"),
        ("GROUP_METAS_TABLE", "metas"),
    ]))
    .expect("env");
    // The file's values stay where the environment says nothing.
    assert_eq!(c.broker, "redis://file:6379");
    assert_eq!(c.redis.read_timeout, Duration::from_secs(3));
    // The environment wins where it speaks.
    assert_eq!(c.default_queue, "from_env");
    assert_eq!(
        c.multiple_broker_separator, "|",
        "Go's MULTIPLE_BROKEN_SEPARATOR"
    );
    assert!(c.sqs.visibility_heartbeat);
    assert_eq!(c.redis.write_timeout, Duration::from_secs(4));
    assert_eq!(c.redis.normal_tasks_poll_period, Duration::from_millis(250));
    assert_eq!(c.shutdown_timeout, Duration::from_secs(90));
    assert_eq!(c.concurrency, 12);
    assert_eq!(c.log_level, "debug");
    assert_eq!(c.task_time_limit, Some(Duration::from_secs(300)));
    assert_eq!(c.max_message_size, 1 << 20);
    assert_eq!(c.amqp.queue_declare_args["x-max-priority"], 10);
    assert_eq!(c.amqp.queue_declare_args["x-queue-mode"], "lazy");
    assert_eq!(c.dynamodb.task_states_table, "states");
    assert_eq!(c.dynamodb.group_metas_table, "metas");

    // Both separator spellings; the correct one wins when both are set.
    let c = Config::from_env_with(env(&[("MULTIPLE_BROKER_SEPARATOR", ",")])).expect("env");
    assert_eq!(c.multiple_broker_separator, ",");
    let c = Config::from_env_with(env(&[
        ("MULTIPLE_BROKER_SEPARATOR", ","),
        ("MULTIPLE_BROKEN_SEPARATOR", "|"),
    ]))
    .expect("env");
    assert_eq!(c.multiple_broker_separator, ",");

    // Flags come last: plain assignments over file + env.
    let mut c = Config::from_yaml(&path).expect("file");
    c.apply_env_with(env(&[("DEFAULT_QUEUE", "from_env")]))
        .expect("env");
    c.default_queue = "from_flag".into();
    assert_eq!(c.default_queue, "from_flag");

    // A bad value names the variable and changes nothing.
    let before = c.clone();
    let e = c
        .apply_env_with(env(&[
            ("DEFAULT_QUEUE", "x"),
            ("MACHINIST_LEASE", "forever"),
        ]))
        .expect_err("bad");
    assert!(
        matches!(&e, ConfigError::Env { var, .. } if var == "MACHINIST_LEASE"),
        "{e:?}"
    );
    assert!(e.to_string().contains("MACHINIST_LEASE") && e.to_string().contains("`forever`"));
    assert_eq!(c, before);

    // Every variable the docs promise is known.
    let names: Vec<_> = Config::env_names().collect();
    for name in [
        "BROKER",
        "LOCK",
        "MULTIPLE_BROKER_SEPARATOR",
        "MULTIPLE_BROKEN_SEPARATOR",
        "DEFAULT_QUEUE",
        "RESULT_BACKEND",
        "RESULTS_EXPIRE_IN",
        "NO_UNIX_SIGNALS",
        "AMQP_EXCHANGE",
        "AMQP_EXCHANGE_TYPE",
        "AMQP_QUEUE_DECLARE_ARGS",
        "AMQP_QUEUE_BINDING_ARGS",
        "AMQP_BINDING_KEY",
        "AMQP_PREFETCH_COUNT",
        "AMQP_AUTO_DELETE",
        "AMQP_DELAYED_QUEUE",
        "SQS_WAIT_TIME_SECONDS",
        "SQS_VISIBILITY_TIMEOUT",
        "SQS_VISIBILITY_HEARTBEAT",
        "REDIS_MAX_IDLE",
        "REDIS_MAX_ACTIVE",
        "REDIS_IDLE_TIMEOUT",
        "REDIS_WAIT",
        "REDIS_READ_TIMEOUT",
        "REDIS_WRITE_TIMEOUT",
        "REDIS_CONNECT_TIMEOUT",
        "REDIS_NORMAL_TASKS_POLL_PERIOD",
        "REDIS_DELAYED_TASKS_POLL_PERIOD",
        "REDIS_DELAYED_TASKS_KEY",
        "REDIS_CLIENT_NAME",
        "REDIS_MASTER_NAME",
        "REDIS_CLUSTER_ENABLED",
        "REDIS_SENTINEL_PASSWORD",
        "TASK_STATES_TABLE",
        "GROUP_METAS_TABLE",
        "MACHINIST_SHUTDOWN_TIMEOUT",
        "MACHINIST_CONCURRENCY",
        "MACHINIST_LOG_LEVEL",
        "MACHINIST_LEASE",
        "MACHINIST_RESULT_POLL_INTERVAL",
    ] {
        assert!(names.contains(&name), "{name}");
    }
}

/// A tiny deterministic generator (xorshift), so the "property" loop is reproducible.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn pick<'a>(&mut self, chars: &'a [char]) -> &'a char {
        &chars[(self.next() % chars.len() as u64) as usize]
    }
    fn word(&mut self, chars: &[char], min: usize, max: usize) -> String {
        let len = min + (self.next() as usize % (max - min + 1));
        (0..len).map(|_| *self.pick(chars)).collect()
    }
}

#[test]
fn redaction_never_leaks_a_password() {
    let alnum: Vec<char> = ('a'..='z').chain('A'..='Z').chain('0'..='9').collect();
    // Characters people put in passwords, including the ones that confuse URL parsers.
    let mut wild = alnum.clone();
    wild.extend("!$&'()*+,;=:@/?#%~-._[]".chars());
    let forms: &[fn(&str, &str) -> String] = &[
        |u, p| format!("amqp://{u}:{p}@localhost:5672/"),
        |u, p| format!("amqps://{u}:{p}@rabbit.example.com:5671/vhost?heartbeat=30"),
        |_, p| format!("redis://:{p}@localhost:6379/0"),
        |_, p| format!("redis://{p}@localhost:6379"),
        |u, p| format!("rediss://{u}:{p}@redis.example.com:6380/2"),
        |_, p| format!("redis://{p}@h1:6379,h2:6380,h3:6381/0"),
        |_, p| format!("redis+socket://{p}@/var/run/redis/redis.sock"),
        |u, p| format!("redis+socket://{u}:{p}@/tmp/redis.sock:/3"),
        |u, p| format!("mongodb://{u}:{p}@m1:27017,m2:27017/machinery?replicaSet=rs0"),
        |u, p| format!("mongodb+srv://{u}:{p}@cluster0.example.net/db?authSource=admin"),
        |u, p| format!("memcache://{u}:{p}@h1:11211,h2:11211"),
        |u, p| format!("https://{u}:{p}@sqs.us-east-1.amazonaws.com/123456789012/q"),
        |u, p| format!("{u}:{p}@host:1234/x"),
        |_, p| format!("https://sqs.us-east-1.amazonaws.com/1/q?X-Amz-Signature={p}"),
        |_, p| format!("sqlite:///var/lib/machinist/db.sqlite?key={p}"),
    ];
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    for round in 0..300 {
        let user = format!("usr{}", rng.word(&alnum, 6, 10));
        let chars = if round % 2 == 0 { &alnum } else { &wild };
        let password = format!("pw{}", rng.word(chars, 8, 20));
        for form in forms {
            let url = form(&user, &password);
            let shown = redact_url(&url);
            assert!(!shown.contains(&password), "{url} → {shown}");
            assert!(!shown.contains(&user), "{url} → {shown}");
            // And wherever a config shows URLs.
            let c = Config {
                broker: url.clone(),
                result_backend: url.clone(),
                lock: url.clone(),
                ..Config::default()
            };
            for text in [format!("{c:?}"), format!("{c:#?}"), c.redacted()] {
                assert!(!text.contains(&password), "{url} → {text}");
            }
        }
    }
    // The readable cases stay readable.
    assert_eq!(
        redact_url("amqp://guest:guest@localhost:5672/"),
        "amqp://localhost:5672"
    );
    assert_eq!(redact_url("redis://pw@h1:1,h2:2/0"), "redis://h1:1,h2:2");
    assert_eq!(
        redact_url("redis+socket://pw@/path.sock"),
        "redis+socket://path.sock"
    );
    assert_eq!(redact_url("sqlite://path.db"), "sqlite://path.db");
    assert_eq!(
        redact_url("https://sqs.us-east-1.amazonaws.com/123/q"),
        "https://sqs.us-east-1.amazonaws.com"
    );
}

#[test]
fn secrets_stay_out_of_errors() {
    let dir = TempDir::new();
    // A syntax error on the line holding a password.
    let path = dir.file(
        "syntax.yml",
        "broker: redis://:hunter2@h:6379/0 : x\n  - [\n",
    );
    let e = Config::from_yaml(&path).expect_err("syntax");
    assert!(matches!(e, ConfigError::Syntax { .. }), "{e:?}");
    assert!(!e.to_string().contains("hunter2"), "{e}");
    let c = Config {
        redis: machinist_core::config::RedisConfig {
            sentinel_password: "s3ntinel-pw".into(),
            ..Default::default()
        },
        ..Config::default()
    };
    assert!(!format!("{c:?}").contains("s3ntinel-pw"));
    assert!(c.redacted().contains("redis.sentinel_password: ***"));
}

/// Log lines written while a test runs, for checking what the reloader says.
#[derive(Clone, Default)]
struct Logs(Arc<Mutex<Vec<u8>>>);

impl Logs {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().expect("logs")).into_owned()
    }
}

impl Write for Logs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("logs").extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Held by the tests that run a reloader: tracing caches per call site whether anyone listens,
/// and a reloader on another test's thread (no subscriber) racing with `capture_logs` can
/// leave the call sites silenced for the capturing thread.
static RELOADERS: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn capture_logs() -> (Logs, tracing::subscriber::DefaultGuard) {
    let logs = Logs::default();
    let writer = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_ansi(false)
        .with_max_level(tracing::Level::DEBUG)
        .with_writer(move || writer.clone())
        .finish();
    (logs, tracing::subscriber::set_default(subscriber))
}

#[tokio::test(start_paused = true)]
async fn hot_reload_follows_the_file() {
    let _serial = RELOADERS.lock().await;
    let (logs, _guard) = capture_logs();
    let dir = TempDir::new();
    let path = dir.file(
        "machinist.yml",
        "broker: redis://:hunter2@old-host:6379/0\nconcurrency: 4\nredis:\n  normal_tasks_poll_period: 1000\n",
    );
    let mut watcher = Config::from_yaml_reloading(&path).expect("load");
    assert_eq!(watcher.period(), Duration::from_secs(10));
    assert_eq!(watcher.path(), path.as_path());
    assert_eq!(watcher.current().concurrency, 4);
    let mut follower = watcher.subscribe();

    // A change of live and restart-only settings.
    std::fs::write(
        &path,
        "broker: redis://:hunter2@new-host:6379/0\nconcurrency: 8\nlog_level: debug\nredis:\n  normal_tasks_poll_period: 200\n",
    )
    .expect("write");
    let started = tokio::time::Instant::now();
    let new = tokio::time::timeout(Duration::from_secs(11), watcher.changed())
        .await
        .expect("reloaded within a period")
        .expect("still reloading");
    assert_eq!(
        started.elapsed(),
        Duration::from_secs(10),
        "picked up at the next tick"
    );
    assert_eq!(new.concurrency, 8);
    assert_eq!(new.log_level, "debug");
    assert_eq!(
        new.redis.normal_tasks_poll_period,
        Duration::from_millis(200)
    );
    // The broker needs a restart: the published config keeps the one in effect.
    assert_eq!(new.broker, "redis://:hunter2@old-host:6379/0");
    assert!(follower.has_changed().expect("open"));
    assert_eq!(follower.borrow_and_update().concurrency, 8);

    let text = logs.text();
    assert!(
        text.contains("`concurrency` changed and applies live"),
        "{text}"
    );
    assert!(
        text.contains("`redis.normal_tasks_poll_period` changed and applies live"),
        "{text}"
    );
    assert!(
        text.contains("`broker` changed but needs a restart"),
        "{text}"
    );
    assert!(text.contains("redis://new-host:6379"), "{text}");
    assert!(!text.contains("hunter2"), "{text}");

    // A file that becomes invalid: logged once, the config stays.
    std::fs::write(
        &path,
        "broker: redis://:hunter2@new-host:6379/0\nconcurrency: lots\n",
    )
    .expect("write");
    assert!(
        tokio::time::timeout(Duration::from_secs(35), watcher.changed())
            .await
            .is_err(),
        "an invalid file publishes nothing"
    );
    assert_eq!(watcher.current().concurrency, 8);
    let text = logs.text();
    assert_eq!(
        text.matches("config reload failed; keeping the current config")
            .count(),
        1,
        "{text}"
    );
    assert!(
        text.contains("machinist.yml:2: bad value for `concurrency`"),
        "{text}"
    );

    // A file removed for a while (editors replace files): same.
    std::fs::remove_file(&path).expect("remove");
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert_eq!(watcher.current().concurrency, 8);

    // Fixed again: picked up.
    std::fs::write(
        &path,
        "broker: redis://:hunter2@old-host:6379/0\nconcurrency: 2\n",
    )
    .expect("write");
    let new = tokio::time::timeout(Duration::from_secs(11), watcher.changed())
        .await
        .expect("reloaded")
        .expect("still reloading");
    assert_eq!(new.concurrency, 2);
    // Keys the file no longer has go back to their defaults.
    assert_eq!(new.log_level, "info");
    assert_eq!(
        new.redis.normal_tasks_poll_period,
        Duration::from_millis(1000)
    );

    // An unchanged file publishes nothing.
    assert!(
        tokio::time::timeout(Duration::from_secs(25), watcher.changed())
            .await
            .is_err()
    );
}

#[tokio::test(start_paused = true)]
async fn hot_reload_keeps_the_layers_above_the_file() {
    let _serial = RELOADERS.lock().await;
    let dir = TempDir::new();
    let path = dir.file("layered.yml", "concurrency: 4\nshutdown_timeout: 10s\n");
    let mut watcher = ConfigWatcher::start_with(&path, Duration::from_secs(1), |c| {
        c.apply_env_with(env(&[("MACHINIST_SHUTDOWN_TIMEOUT", "1m")]))?;
        c.concurrency = 32; // a --concurrency flag
        Ok(())
    })
    .expect("load");
    let c = watcher.current();
    assert_eq!(
        (c.concurrency, c.shutdown_timeout),
        (32, Duration::from_secs(60))
    );

    std::fs::write(
        &path,
        "concurrency: 5\nshutdown_timeout: 20s\ntask_time_limit: 30s\n",
    )
    .expect("write");
    let new = tokio::time::timeout(Duration::from_secs(2), watcher.changed())
        .await
        .expect("reloaded within a period")
        .expect("still reloading");
    assert_eq!(new.concurrency, 32);
    assert_eq!(new.shutdown_timeout, Duration::from_secs(60));
    assert_eq!(new.task_time_limit, Some(Duration::from_secs(30)));

    // A first load that fails is an error, not a watcher.
    let bad = dir.file("bad.yml", "lease: never\n");
    let e = ConfigWatcher::start(&bad, Duration::from_secs(1)).expect_err("bad");
    assert_eq!(e.key(), Some("lease"));
}

#[test]
fn changes_say_what_applies_live() {
    let old = Config::default();
    let new = Config {
        broker: "redis://:pw@h:6379".into(),
        default_queue: "other".into(),
        concurrency: 3,
        log_level: "warn".into(),
        task_time_limit: Some(Duration::from_secs(5)),
        redis: machinist_core::config::RedisConfig {
            delayed_tasks_poll_period: Duration::from_millis(100),
            sentinel_password: "sekrit".into(),
            ..Default::default()
        },
        ..Config::default()
    };
    let changes = old.changes(&new);
    let live: Vec<_> = changes
        .iter()
        .filter(|c| c.applies_live)
        .map(|c| c.key)
        .collect();
    let restart: Vec<_> = changes
        .iter()
        .filter(|c| !c.applies_live)
        .map(|c| c.key)
        .collect();
    assert_eq!(
        live,
        [
            "redis.delayed_tasks_poll_period",
            "log_level",
            "concurrency",
            "task_time_limit"
        ]
    );
    assert_eq!(
        restart,
        ["broker", "default_queue", "redis.sentinel_password"]
    );
    let broker = &changes[0];
    assert_eq!(
        (broker.old.as_str(), broker.new.as_str()),
        ("\"\"", "redis://h:6379")
    );
    assert!(
        changes
            .iter()
            .all(|c| !c.new.contains("sekrit") && !c.new.contains("pw@"))
    );

    let effective = old.with_live_changes(&new);
    assert_eq!(effective.concurrency, 3);
    assert_eq!(effective.broker, "");
    assert_eq!(effective.default_queue, "machinery_tasks");
}
