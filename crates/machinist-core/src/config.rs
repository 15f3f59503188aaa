//! [`Config`]: Go Machinery's settings, with Go's YAML keys, environment variable names and
//! defaults, plus what machinist adds (shutdown timeout, time limits, lease, message size,
//! concurrency, log level …).
//!
//! # Loading
//!
//! * [`Config::from_yaml`] reads a whole YAML file (Go reads only its first 1,000 bytes).
//!   Unknown keys and bad values are errors that name the key and the line.
//! * [`Config::from_env`] / [`Config::apply_env_with`] read Go's environment variables
//!   (`BROKER`, `DEFAULT_QUEUE`, `AMQP_EXCHANGE`, `REDIS_READ_TIMEOUT` …) and `MACHINIST_*` for
//!   machinist's own fields. A CLI layers them: defaults < file < environment < flags.
//! * [`Config::from_yaml_reloading`] re-reads the file every 10 s and publishes changes through
//!   a [`ConfigWatcher`], logging which changes apply live and which need a restart.
//!
//! # YAML
//!
//! Keys are Go Machinery's (`v2/config/testconfig.yml` loads as is), plus machinist's own at the
//! top level and three machinist sections (`gcp_pubsub`, `mongodb`, `tls`: in Go these are
//! code-only):
//!
//! ```yaml
//! broker: redis://localhost:6379        # empty: the embedded SQLite default
//! result_backend: redis://localhost:6379
//! lock: redis://localhost:6379
//! default_queue: machinery_tasks
//! results_expire_in: 3600               # seconds
//! no_unix_signals: false
//! amqp:
//!   exchange: machinery_exchange
//!   exchange_type: direct
//!   binding_key: machinery_task
//!   prefetch_count: 3
//!   queue_declare_args: {x-max-priority: 10}
//! sqs:
//!   receive_wait_time_seconds: 20
//!   receive_visibility_timeout: 30      # seconds; absent = the queue's own
//!   visibility_heartbeat: true          # Go's spelling `visibility_hearth_beat` is accepted
//! redis:
//!   read_timeout: 15                    # seconds, as in Go
//!   normal_tasks_poll_period: 1000      # milliseconds, as in Go
//!   delayed_tasks_poll_period: 500ms    # a duration with a unit is accepted too
//! dynamodb: {task_states_table: task_states, group_metas_table: group_metas}
//! # machinist's own
//! log_level: info
//! concurrency: 0                        # 0 = 2 × CPUs
//! lease: 30s
//! shutdown_timeout: 30s
//! task_time_limit: 10m                  # none / 0 = no limit
//! max_message_size: 16MiB
//! tls: {ca_file: /etc/ssl/ca.pem}
//! periodic_tasks:                       # see PeriodicTaskConfig
//!   - {spec: "0 6 * * ?", task: report, args: ["int64:7"]}
//!   - "@every 30s | heartbeat"
//! ```
//!
//! Durations: Go's integer fields take a whole number in the unit their Go name says (seconds
//! for `*_timeout` and `results_expire_in`, milliseconds for `*_poll_period`); machinist's own
//! duration fields take a bare number of seconds. Every duration field also takes a string
//! with units (`"30s"`, `"500ms"`, `"1m30s"`, see [`parse_duration`]). A key given no value
//! (`broker:` or `broker: ~`) sets the field's zero value (empty, 0, false, none), as Go's YAML
//! loader does; fields that cannot be zero (`lease`, `result_poll_interval`,
//! `max_message_size`, `log_level`) reject it.
//!
//! Differences from Go, on purpose:
//! * the whole file is read (Go: the first 1,000 bytes);
//! * unknown keys are errors (Go ignores them), except top-level keys starting with `x-`,
//!   which can hold YAML anchors (`x-timeouts: &t {…}` then `redis: {<<: *t}`);
//! * a file without an `amqp:` section keeps the AMQP defaults (Go drops the section), and an
//!   empty section (`redis:`) keeps its defaults (Go falls back to in-code ones);
//! * `broker`, `result_backend` and `lock` default to empty, meaning the embedded SQLite
//!   default (Go: `amqp://guest:guest@localhost:5672/`);
//! * `redis.delayed_tasks_key` defaults to `delayed_tasks`, the value Go's broker uses for
//!   Go's empty default.
//!
//! # Environment
//!
//! Every Go field has Go's name; see [`Config::apply_env_with`] for the list and the
//! `MACHINIST_*` names of machinist's fields.
//!
//! # Secrets
//!
//! `Debug` of [`Config`] and [`Config::redacted`] show URLs as `scheme://host[:port]`
//! ([`redact_url`]) and `redis.sentinel_password` as `***`; errors never quote a URL or a
//! password.

mod duration;
mod env;
mod fields;
mod periodic;
mod redact;
mod reload;
mod yaml;

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use duration::{ParseDurationError, format_duration, parse_duration};
pub use periodic::{PeriodicTaskConfig, parse_typed_arg};
pub use redact::redact_url;
pub use reload::ConfigWatcher;

/// Settings read by the server, the worker and the adapters.
///
/// Build one with struct update syntax:
/// `Config { no_unix_signals: true, ..Config::default() }`, or load one with
/// [`Config::from_yaml`] / [`Config::from_env`]. Field docs give the YAML key (Go's where Go
/// has the field), the environment variable and the default.
///
/// `Debug` redacts URLs and passwords (see [`Config::redacted`]).
#[derive(Clone, PartialEq)]
pub struct Config {
    /// `broker` / `BROKER`: the broker URL; adapters are chosen by scheme in the `machinist`
    /// crate. Default empty: the embedded SQLite default (Go: `amqp://guest:guest@localhost:5672/`).
    pub broker: String,
    /// `lock` / `LOCK`: the lock URL (used by periodic tasks). Default empty: the embedded
    /// default (Go: an in-memory lock).
    pub lock: String,
    /// `multiple_broker_separator` / `MULTIPLE_BROKER_SEPARATOR` (also Go's misspelt
    /// `MULTIPLE_BROKEN_SEPARATOR`): splits `broker` into several URLs tried in turn (AMQP).
    /// Default empty: `broker` is one URL.
    pub multiple_broker_separator: String,
    /// `default_queue` / `DEFAULT_QUEUE`: where tasks with no routing key go
    /// (default `machinery_tasks`).
    pub default_queue: String,
    /// `result_backend` / `RESULT_BACKEND`: the result backend URL. Default empty: the
    /// embedded SQLite default (Go: `amqp://guest:guest@localhost:5672/`).
    pub result_backend: String,
    /// `results_expire_in` / `RESULTS_EXPIRE_IN`: seconds states and group metas live
    /// (default 3600; 0 means 3600, see [`Config::results_ttl`]).
    pub results_expire_in: u64,
    /// `amqp:`: RabbitMQ settings.
    pub amqp: AmqpConfig,
    /// `sqs:`: Amazon SQS settings.
    pub sqs: SqsConfig,
    /// `redis:`: Redis settings (broker, backend and lock).
    pub redis: RedisConfig,
    /// `gcp_pubsub:` (machinist; code-only in Go): Google Cloud Pub/Sub settings.
    pub gcp_pubsub: GcpPubSubConfig,
    /// `mongodb:` (machinist; code-only in Go): MongoDB backend settings.
    pub mongodb: MongoDbConfig,
    /// `dynamodb:`: DynamoDB backend settings.
    pub dynamodb: DynamoDbConfig,
    /// `tls:` (machinist; Go takes a `*tls.Config` in code): certificates for `rediss://`,
    /// `amqps://` and other TLS connections.
    pub tls: TlsConfig,
    /// `no_unix_signals` / `NO_UNIX_SIGNALS`: when true the worker does not trap
    /// SIGINT/SIGTERM (default false).
    pub no_unix_signals: bool,
    /// machinist `log_level` / `MACHINIST_LOG_LEVEL`: a tracing level (`trace`, `debug`,
    /// `info`, `warn`, `error`, `off`) or filter directives such as `info,machinist=debug`
    /// (default `info`). `RUST_LOG`, when set, is the binary's business.
    pub log_level: String,
    /// machinist `concurrency` / `MACHINIST_CONCURRENCY`: how many tasks a worker runs at
    /// once; 0 (the default) means twice the CPUs (see [`Config::effective_concurrency`]).
    pub concurrency: usize,
    /// machinist `lease` / `MACHINIST_LEASE`: how long a delivered message stays invisible
    /// to other consumers on brokers with leases (SQLite, SQS without
    /// `receive_visibility_timeout`); extended while the task runs (default 30 s).
    pub lease: Duration,
    /// machinist `result_poll_interval` / `MACHINIST_RESULT_POLL_INTERVAL`: how often
    /// `AsyncResult::get` polls the backend (default 50 ms).
    pub result_poll_interval: Duration,
    /// machinist `shutdown_timeout` / `MACHINIST_SHUTDOWN_TIMEOUT`: how long a graceful
    /// shutdown waits for running tasks before it returns them to the broker (default 30 s).
    pub shutdown_timeout: Duration,
    /// machinist `task_time_limit` / `MACHINIST_TASK_TIME_LIMIT`: the default time limit of
    /// every task (`None`, written `none` or `0`: no limit, the default). When it passes the
    /// task's cancellation token fires; after `time_limit_grace` the task is dropped and fails
    /// with "time limit exceeded" (retries apply).
    pub task_time_limit: Option<Duration>,
    /// machinist `time_limit_grace` / `MACHINIST_TIME_LIMIT_GRACE`: grace between the
    /// cancellation token and dropping the task (default 5 s).
    pub time_limit_grace: Duration,
    /// machinist `max_message_size` / `MACHINIST_MAX_MESSAGE_SIZE`: the largest encoded
    /// message accepted, sent or received, in bytes (`16777216` or `16MiB`; default 16 MiB).
    pub max_message_size: usize,
    /// machinist `max_retry_later` / `MACHINIST_MAX_RETRY_LATER`: how many times a task may
    /// ask to be retried later ([`crate::TaskError::retry_after`]) before it fails (Go
    /// retries forever; default 100).
    pub max_retry_later: u32,
    /// machinist `unregistered_max_requeues` / `MACHINIST_UNREGISTERED_MAX_REQUEUES`: how
    /// many times a message whose task no worker registered is requeued (with Fibonacci
    /// back-off capped at `unregistered_max_backoff`) before it is dead-lettered (default 20).
    pub unregistered_max_requeues: u32,
    /// machinist `unregistered_max_backoff` / `MACHINIST_UNREGISTERED_MAX_BACKOFF`: the
    /// longest back-off between requeues of an unregistered task (default 60 s).
    pub unregistered_max_backoff: Duration,
    /// machinist `periodic_tasks` / `MACHINIST_PERIODIC_TASKS`: tasks sent on a schedule,
    /// started by [`Server::register_configured_periodic_tasks`](crate::Server::register_configured_periodic_tasks)
    /// (see [`PeriodicTaskConfig`] for the forms; default none). A change needs a restart.
    pub periodic_tasks: Vec<PeriodicTaskConfig>,
}

/// `amqp:` — RabbitMQ settings (Go's `AMQPConfig`).
#[derive(Debug, Clone, PartialEq)]
pub struct AmqpConfig {
    /// `exchange` / `AMQP_EXCHANGE`: the exchange tasks are published to
    /// (default `machinery_exchange`).
    pub exchange: String,
    /// `exchange_type` / `AMQP_EXCHANGE_TYPE`: `direct`, `fanout`, `topic` or `headers`
    /// (default `direct`).
    pub exchange_type: String,
    /// `queue_declare_args` / `AMQP_QUEUE_DECLARE_ARGS`: arguments of `queue.declare`
    /// (`x-max-priority: 10` …). From the environment as `k:v,k2:v2`, where whole numbers and
    /// `true`/`false` become numbers and booleans (RabbitMQ wants numbers for `x-*` limits).
    /// Default empty.
    pub queue_declare_args: BTreeMap<String, serde_json::Value>,
    /// `queue_binding_args` / `AMQP_QUEUE_BINDING_ARGS`: arguments of `queue.bind`
    /// (`x-match: any` for headers exchanges). From the environment as `k:v,k2:v2`, values
    /// kept as strings as Go does. Default empty.
    pub queue_binding_args: BTreeMap<String, serde_json::Value>,
    /// `binding_key` / `AMQP_BINDING_KEY`: the routing key queues are bound with
    /// (default `machinery_task`).
    pub binding_key: String,
    /// `prefetch_count` / `AMQP_PREFETCH_COUNT`: unacknowledged deliveries per consumer
    /// (default 3).
    pub prefetch_count: u16,
    /// `auto_delete` / `AMQP_AUTO_DELETE`: declare delay queues auto-delete (default false).
    pub auto_delete: bool,
    /// `delayed_queue` / `AMQP_DELAYED_QUEUE`: the queue delayed tasks wait in; empty (the
    /// default) derives one per delay as Go does.
    pub delayed_queue: String,
}

/// `sqs:` — Amazon SQS settings (Go's `SQSConfig`).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct SqsConfig {
    /// `receive_wait_time_seconds` / `SQS_WAIT_TIME_SECONDS`: long-poll wait of
    /// `ReceiveMessage`, in seconds (SQS allows 0–20; default 0).
    pub wait_time_seconds: u32,
    /// `receive_visibility_timeout` / `SQS_VISIBILITY_TIMEOUT`: visibility timeout asked for
    /// on receive, in whole seconds; `None` (the default) uses the queue's own.
    pub visibility_timeout: Option<Duration>,
    /// `visibility_heartbeat` (Go's key `visibility_hearth_beat` accepted) /
    /// `SQS_VISIBILITY_HEARTBEAT`: extend the visibility timeout while the task runs
    /// (default false, as Go's loaders leave it).
    pub visibility_heartbeat: bool,
}

/// `redis:` — Redis settings (Go's `RedisConfig`). Defaults are those Go's file and
/// environment loaders apply.
#[derive(Clone, PartialEq)]
pub struct RedisConfig {
    /// `max_idle` / `REDIS_MAX_IDLE`: idle connections kept in the pool (default 3).
    pub max_idle: u32,
    /// `max_active` / `REDIS_MAX_ACTIVE`: most connections open at once; 0 (the default)
    /// means no limit.
    pub max_active: u32,
    /// `max_idle_timeout` / `REDIS_IDLE_TIMEOUT`: close connections idle this long
    /// (YAML: whole seconds; default 240 s; zero: never).
    pub max_idle_timeout: Duration,
    /// `wait` / `REDIS_WAIT`: when the pool is at `max_active`, wait for a connection instead
    /// of failing (default false).
    pub wait: bool,
    /// `read_timeout` / `REDIS_READ_TIMEOUT`: timeout of reading one reply (YAML: whole
    /// seconds; default 15 s).
    pub read_timeout: Duration,
    /// `write_timeout` / `REDIS_WRITE_TIMEOUT`: timeout of writing one command (YAML: whole
    /// seconds; default 15 s).
    pub write_timeout: Duration,
    /// `connect_timeout` / `REDIS_CONNECT_TIMEOUT`: timeout of connecting (YAML: whole
    /// seconds; default 15 s).
    pub connect_timeout: Duration,
    /// `normal_tasks_poll_period` / `REDIS_NORMAL_TASKS_POLL_PERIOD`: how long a blocking pop
    /// of normal tasks waits (YAML: milliseconds; default 1000 ms; zero: 1000 ms as in Go).
    pub normal_tasks_poll_period: Duration,
    /// `delayed_tasks_poll_period` / `REDIS_DELAYED_TASKS_POLL_PERIOD`: how often delayed
    /// tasks are polled (YAML: milliseconds; default 500 ms; zero: 500 ms as in Go).
    pub delayed_tasks_poll_period: Duration,
    /// `delayed_tasks_key` / `REDIS_DELAYED_TASKS_KEY`: the sorted set of delayed tasks
    /// (default `delayed_tasks`; empty also means `delayed_tasks`, as in Go).
    pub delayed_tasks_key: String,
    /// `client_name` / `REDIS_CLIENT_NAME`: `CLIENT SETNAME` of each connection
    /// (default empty: none).
    pub client_name: String,
    /// `master_name` / `REDIS_MASTER_NAME`: with Sentinel, the master's name; the broker
    /// URL's hosts are then the sentinels (default empty: no Sentinel).
    pub master_name: String,
    /// `cluster_enabled` (v1's `cluster_mode` accepted) / `REDIS_CLUSTER_ENABLED`
    /// (`REDIS_CLUSTER_MODE`): use Redis Cluster even with one address (default false).
    pub cluster_enabled: bool,
    /// `sentinel_password` / `REDIS_SENTINEL_PASSWORD`: password of the sentinels (default
    /// empty). Shown as `***` by `Debug`.
    pub sentinel_password: String,
}

/// `gcp_pubsub:` — Google Cloud Pub/Sub settings (machinist: in Go the client and this are set
/// in code only).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct GcpPubSubConfig {
    /// `max_extension` / `MACHINIST_GCP_PUBSUB_MAX_EXTENSION`: the longest a received message's
    /// ack deadline is extended; `None` (written `none` or `0`, the default) keeps the client's
    /// default.
    pub max_extension: Option<Duration>,
}

/// `mongodb:` — MongoDB backend settings (machinist: in Go set in code only).
#[derive(Debug, Clone, PartialEq)]
pub struct MongoDbConfig {
    /// `database` / `MACHINIST_MONGODB_DATABASE`: the database holding the `tasks` and
    /// `group_metas` collections (default `machinery`, as Go's backend).
    pub database: String,
}

/// `dynamodb:` — DynamoDB backend settings (Go's `DynamoDBConfig`).
#[derive(Debug, Clone, PartialEq)]
pub struct DynamoDbConfig {
    /// `task_states_table` / `TASK_STATES_TABLE`: the table of task states
    /// (default `task_states`).
    pub task_states_table: String,
    /// `group_metas_table` / `GROUP_METAS_TABLE`: the table of group metas
    /// (default `group_metas`).
    pub group_metas_table: String,
}

/// `tls:` — TLS material for `rediss://`, `amqps://` and other TLS connections (machinist: Go
/// takes a `*tls.Config` in code). Empty paths use the system's roots and no client
/// certificate.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct TlsConfig {
    /// `ca_file` / `MACHINIST_TLS_CA_FILE`: PEM file of the root certificates to trust (instead of the system's).
    pub ca_file: Option<PathBuf>,
    /// `cert_file` / `MACHINIST_TLS_CERT_FILE`: PEM client certificate (with `key_file`).
    pub cert_file: Option<PathBuf>,
    /// `key_file` / `MACHINIST_TLS_KEY_FILE`: PEM private key of `cert_file`.
    pub key_file: Option<PathBuf>,
    /// `insecure_skip_verify` / `MACHINIST_TLS_INSECURE_SKIP_VERIFY`: accept any server
    /// certificate (tests only; default false).
    pub insecure_skip_verify: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            broker: String::new(),
            lock: String::new(),
            multiple_broker_separator: String::new(),
            default_queue: "machinery_tasks".to_owned(),
            result_backend: String::new(),
            results_expire_in: 3600,
            amqp: AmqpConfig::default(),
            sqs: SqsConfig::default(),
            redis: RedisConfig::default(),
            gcp_pubsub: GcpPubSubConfig::default(),
            mongodb: MongoDbConfig::default(),
            dynamodb: DynamoDbConfig::default(),
            tls: TlsConfig::default(),
            no_unix_signals: false,
            log_level: "info".to_owned(),
            concurrency: 0,
            lease: Duration::from_secs(30),
            result_poll_interval: Duration::from_millis(50),
            shutdown_timeout: Duration::from_secs(30),
            task_time_limit: None,
            time_limit_grace: Duration::from_secs(5),
            max_message_size: 16 * 1024 * 1024,
            max_retry_later: 100,
            unregistered_max_requeues: 20,
            unregistered_max_backoff: Duration::from_secs(60),
            periodic_tasks: Vec::new(),
        }
    }
}

impl Default for AmqpConfig {
    fn default() -> Self {
        AmqpConfig {
            exchange: "machinery_exchange".to_owned(),
            exchange_type: "direct".to_owned(),
            queue_declare_args: BTreeMap::new(),
            queue_binding_args: BTreeMap::new(),
            binding_key: "machinery_task".to_owned(),
            prefetch_count: 3,
            auto_delete: false,
            delayed_queue: String::new(),
        }
    }
}

impl Default for RedisConfig {
    fn default() -> Self {
        RedisConfig {
            max_idle: 3,
            max_active: 0,
            max_idle_timeout: Duration::from_secs(240),
            wait: false,
            read_timeout: Duration::from_secs(15),
            write_timeout: Duration::from_secs(15),
            connect_timeout: Duration::from_secs(15),
            normal_tasks_poll_period: Duration::from_millis(1000),
            delayed_tasks_poll_period: Duration::from_millis(500),
            delayed_tasks_key: "delayed_tasks".to_owned(),
            client_name: String::new(),
            master_name: String::new(),
            cluster_enabled: false,
            sentinel_password: String::new(),
        }
    }
}

impl Default for MongoDbConfig {
    fn default() -> Self {
        MongoDbConfig {
            database: "machinery".to_owned(),
        }
    }
}

impl Default for DynamoDbConfig {
    fn default() -> Self {
        DynamoDbConfig {
            task_states_table: "task_states".to_owned(),
            group_metas_table: "group_metas".to_owned(),
        }
    }
}

/// A URL shown redacted by `Debug`.
struct RedactedUrl<'a>(&'a str);

impl fmt::Debug for RedactedUrl<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&redact_url(self.0), f)
    }
}

/// A secret shown as `***` (or `""` when empty) by `Debug`.
struct Secret<'a>(&'a str);

impl fmt::Debug for Secret<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            f.write_str("\"\"")
        } else {
            f.write_str("\"***\"")
        }
    }
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Destructured so that a new field cannot be forgotten here.
        let Config {
            broker,
            lock,
            multiple_broker_separator,
            default_queue,
            result_backend,
            results_expire_in,
            amqp,
            sqs,
            redis,
            gcp_pubsub,
            mongodb,
            dynamodb,
            tls,
            no_unix_signals,
            log_level,
            concurrency,
            lease,
            result_poll_interval,
            shutdown_timeout,
            task_time_limit,
            time_limit_grace,
            max_message_size,
            max_retry_later,
            unregistered_max_requeues,
            unregistered_max_backoff,
            periodic_tasks,
        } = self;
        f.debug_struct("Config")
            .field("broker", &RedactedUrl(broker))
            .field("lock", &RedactedUrl(lock))
            .field("multiple_broker_separator", multiple_broker_separator)
            .field("default_queue", default_queue)
            .field("result_backend", &RedactedUrl(result_backend))
            .field("results_expire_in", results_expire_in)
            .field("amqp", amqp)
            .field("sqs", sqs)
            .field("redis", redis)
            .field("gcp_pubsub", gcp_pubsub)
            .field("mongodb", mongodb)
            .field("dynamodb", dynamodb)
            .field("tls", tls)
            .field("no_unix_signals", no_unix_signals)
            .field("log_level", log_level)
            .field("concurrency", concurrency)
            .field("lease", lease)
            .field("result_poll_interval", result_poll_interval)
            .field("shutdown_timeout", shutdown_timeout)
            .field("task_time_limit", task_time_limit)
            .field("time_limit_grace", time_limit_grace)
            .field("max_message_size", max_message_size)
            .field("max_retry_later", max_retry_later)
            .field("unregistered_max_requeues", unregistered_max_requeues)
            .field("unregistered_max_backoff", unregistered_max_backoff)
            .field("periodic_tasks", periodic_tasks)
            .finish()
    }
}

impl fmt::Debug for RedisConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let RedisConfig {
            max_idle,
            max_active,
            max_idle_timeout,
            wait,
            read_timeout,
            write_timeout,
            connect_timeout,
            normal_tasks_poll_period,
            delayed_tasks_poll_period,
            delayed_tasks_key,
            client_name,
            master_name,
            cluster_enabled,
            sentinel_password,
        } = self;
        f.debug_struct("RedisConfig")
            .field("max_idle", max_idle)
            .field("max_active", max_active)
            .field("max_idle_timeout", max_idle_timeout)
            .field("wait", wait)
            .field("read_timeout", read_timeout)
            .field("write_timeout", write_timeout)
            .field("connect_timeout", connect_timeout)
            .field("normal_tasks_poll_period", normal_tasks_poll_period)
            .field("delayed_tasks_poll_period", delayed_tasks_poll_period)
            .field("delayed_tasks_key", delayed_tasks_key)
            .field("client_name", client_name)
            .field("master_name", master_name)
            .field("cluster_enabled", cluster_enabled)
            .field("sentinel_password", &Secret(sentinel_password))
            .finish()
    }
}

/// One field that differs between two configs (see [`Config::changes`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigChange {
    /// The YAML key, dotted for sections (`redis.normal_tasks_poll_period`).
    pub key: &'static str,
    /// Whether running components pick the change up (poll periods, concurrency, log level,
    /// time limits …) or it needs a restart (URLs, queues, exchange, pools …).
    pub applies_live: bool,
    /// The old value, as [`Config::redacted`] shows it.
    pub old: String,
    /// The new value, as [`Config::redacted`] shows it.
    pub new: String,
}

impl Config {
    /// How often [`Config::from_yaml_reloading`] re-reads the file (Go's `reloadDelay`).
    pub const RELOAD_PERIOD: Duration = Duration::from_secs(10);

    /// `results_expire_in` as a duration, with Go's rule that 0 means 3600 s.
    pub fn results_ttl(&self) -> Duration {
        Duration::from_secs(if self.results_expire_in == 0 {
            3600
        } else {
            self.results_expire_in
        })
    }

    /// `concurrency`, with 0 meaning twice the available CPUs.
    pub fn effective_concurrency(&self) -> usize {
        if self.concurrency == 0 {
            std::thread::available_parallelism().map_or(1, |n| n.get()) * 2
        } else {
            self.concurrency
        }
    }

    /// Loads a YAML file over the defaults. The whole file is read (Go reads only the first
    /// 1,000 bytes).
    ///
    /// Errors: [`ConfigError::Io`] when the file cannot be read, [`ConfigError::Syntax`] for
    /// invalid YAML, [`ConfigError::UnknownKey`] and [`ConfigError::InvalidValue`] (with the
    /// key and the line) for keys machinist does not know and values that do not fit.
    pub fn from_yaml(path: impl AsRef<Path>) -> Result<Config, ConfigError> {
        let path = path.as_ref();
        let text = yaml::read_file(path)?;
        yaml::parse(&text, &path.display().to_string())
    }

    /// Loads YAML text over the defaults, like [`Config::from_yaml`]; errors name the source
    /// `<yaml>`.
    pub fn from_yaml_str(yaml: &str) -> Result<Config, ConfigError> {
        yaml::parse(yaml, "<yaml>")
    }

    /// Loads a YAML file, then re-reads it every [`Config::RELOAD_PERIOD`] (10 s) and publishes
    /// changes through the returned [`ConfigWatcher`] (Go's `NewFromYaml(path, true)`).
    /// See [`ConfigWatcher::start_with`] for the period, an overlay (environment, flags) and
    /// what a reload does.
    ///
    /// # Panics
    ///
    /// Outside a Tokio runtime (the reloader is a spawned task).
    pub fn from_yaml_reloading(path: impl AsRef<Path>) -> Result<ConfigWatcher, ConfigError> {
        ConfigWatcher::start(path.as_ref(), Config::RELOAD_PERIOD)
    }

    /// The defaults overlaid with the process environment (Go's `NewFromEnvironment`). See
    /// [`Config::apply_env_with`] for the names.
    pub fn from_env() -> Result<Config, ConfigError> {
        Config::from_env_with(env::process_env)
    }

    /// The defaults overlaid with the variables `lookup` returns (testable
    /// [`Config::from_env`]).
    pub fn from_env_with(
        lookup: impl FnMut(&str) -> Option<String>,
    ) -> Result<Config, ConfigError> {
        let mut config = Config::default();
        config.apply_env_with(lookup)?;
        Ok(config)
    }

    /// Overlays the process environment on `self` (see [`Config::apply_env_with`]).
    pub fn apply_env(&mut self) -> Result<(), ConfigError> {
        self.apply_env_with(env::process_env)
    }

    /// Overlays the variables `lookup` returns on `self`, so a CLI can layer
    /// file < environment < flags. On error `self` is left unchanged and the error names the
    /// variable.
    ///
    /// Go's names (`BROKER`, `LOCK`, `MULTIPLE_BROKER_SEPARATOR` and Go's
    /// `MULTIPLE_BROKEN_SEPARATOR`, `DEFAULT_QUEUE`, `RESULT_BACKEND`, `RESULTS_EXPIRE_IN`,
    /// `NO_UNIX_SIGNALS`, `AMQP_EXCHANGE`, `AMQP_EXCHANGE_TYPE`, `AMQP_QUEUE_DECLARE_ARGS`,
    /// `AMQP_QUEUE_BINDING_ARGS` (both `k:v,k2:v2`), `AMQP_BINDING_KEY`,
    /// `AMQP_PREFETCH_COUNT`, `AMQP_AUTO_DELETE`, `AMQP_DELAYED_QUEUE`,
    /// `SQS_WAIT_TIME_SECONDS`, `SQS_VISIBILITY_TIMEOUT`, `SQS_VISIBILITY_HEARTBEAT`,
    /// `REDIS_MAX_IDLE`, `REDIS_MAX_ACTIVE`, `REDIS_IDLE_TIMEOUT`, `REDIS_WAIT`,
    /// `REDIS_READ_TIMEOUT`, `REDIS_WRITE_TIMEOUT`, `REDIS_CONNECT_TIMEOUT`,
    /// `REDIS_NORMAL_TASKS_POLL_PERIOD`, `REDIS_DELAYED_TASKS_POLL_PERIOD`,
    /// `REDIS_DELAYED_TASKS_KEY`, `REDIS_CLIENT_NAME`, `REDIS_MASTER_NAME`,
    /// `REDIS_CLUSTER_ENABLED` (v1: `REDIS_CLUSTER_MODE`), `REDIS_SENTINEL_PASSWORD`,
    /// `TASK_STATES_TABLE`, `GROUP_METAS_TABLE`) are read, and so are the prefixed forms Go's
    /// envconfig tries first (`AMQP_AMQP_EXCHANGE`, `SQS_SQS_WAIT_TIME_SECONDS`,
    /// `REDIS_REDIS_MAX_IDLE`, `DYNAMODB_TASK_STATES_TABLE` …), which win when both are set.
    /// Values are read as in YAML: Go's integer durations in their unit (seconds, or
    /// milliseconds for poll periods), or with a unit (`15s`). Booleans: `true`/`false`,
    /// `1`/`0`, `t`/`f`, `yes`/`no`, `on`/`off`.
    ///
    /// machinist's own fields: `MACHINIST_LOG_LEVEL`, `MACHINIST_CONCURRENCY`,
    /// `MACHINIST_LEASE`, `MACHINIST_RESULT_POLL_INTERVAL`, `MACHINIST_SHUTDOWN_TIMEOUT`,
    /// `MACHINIST_TASK_TIME_LIMIT`, `MACHINIST_TIME_LIMIT_GRACE`, `MACHINIST_MAX_MESSAGE_SIZE`,
    /// `MACHINIST_MAX_RETRY_LATER`, `MACHINIST_UNREGISTERED_MAX_REQUEUES`,
    /// `MACHINIST_UNREGISTERED_MAX_BACKOFF`, `MACHINIST_GCP_PUBSUB_MAX_EXTENSION`,
    /// `MACHINIST_MONGODB_DATABASE`, `MACHINIST_TLS_CA_FILE`, `MACHINIST_TLS_CERT_FILE`,
    /// `MACHINIST_TLS_KEY_FILE`, `MACHINIST_TLS_INSECURE_SKIP_VERIFY`, `MACHINIST_PERIODIC_TASKS`
    /// (one `SPEC | TASK [TYPE:VALUE ...]` per line).
    pub fn apply_env_with(
        &mut self,
        lookup: impl FnMut(&str) -> Option<String>,
    ) -> Result<(), ConfigError> {
        let mut next = self.clone();
        env::apply(&mut next, lookup)?;
        *self = next;
        Ok(())
    }

    /// Every environment variable [`Config::apply_env_with`] reads, in lookup order per field.
    pub fn env_names() -> impl Iterator<Item = &'static str> {
        fields::FIELDS.iter().flat_map(|f| f.env.iter().copied())
    }

    /// A summary of every field, one `key: value` line each (dotted keys for sections), with
    /// URLs redacted to `scheme://host[:port]` and passwords shown as `***`: safe to log.
    pub fn redacted(&self) -> String {
        let mut out = String::new();
        for field in fields::FIELDS {
            out.push_str(field.key);
            out.push_str(": ");
            out.push_str(&(field.show)(self));
            out.push('\n');
        }
        out
    }

    /// The fields that differ between `self` and `new`, in declaration order, each marked
    /// live or needing a restart. Values are redacted.
    pub fn changes(&self, new: &Config) -> Vec<ConfigChange> {
        fields::FIELDS
            .iter()
            .filter(|f| !(f.same)(self, new))
            .map(|f| ConfigChange {
                key: f.key,
                applies_live: f.live,
                old: (f.show)(self),
                new: (f.show)(new),
            })
            .collect()
    }

    /// `self` with the fields that apply live taken from `new`; the others (URLs, queues …)
    /// keep `self`'s values because running connections cannot change them.
    pub fn with_live_changes(&self, new: &Config) -> Config {
        let mut out = self.clone();
        for f in fields::FIELDS.iter().filter(|f| f.live) {
            (f.copy)(new, &mut out);
        }
        out
    }
}

/// An error loading configuration. Its text names the file, the line and the key (or the
/// environment variable), never a URL's credentials.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {file}: {source}")]
    Io {
        /// The file.
        file: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid YAML.
    #[error("{file}:{line}: invalid YAML: {message}")]
    Syntax {
        /// The file.
        file: String,
        /// The line (1-based; 0 when unknown).
        line: u64,
        /// What the parser says.
        message: String,
    },
    /// A key machinist does not know.
    #[error("{file}:{line}: unknown key `{key}`{}", suggestion.as_ref().map(|s| format!(" (did you mean `{s}`?)")).unwrap_or_default())]
    UnknownKey {
        /// The file.
        file: String,
        /// The line of the key (1-based).
        line: u64,
        /// The key, dotted for sections (`redis.max_idel`).
        key: String,
        /// A known key that is spelt alike.
        suggestion: Option<String>,
    },
    /// A value that does not fit its key.
    #[error("{file}:{line}: bad value for `{key}`: {message}")]
    InvalidValue {
        /// The file.
        file: String,
        /// The line of the key (1-based).
        line: u64,
        /// The key, dotted for sections (`redis.read_timeout`).
        key: String,
        /// What was expected and what was found.
        message: String,
    },
    /// An environment variable whose value does not fit.
    #[error("environment variable {var}: {message}")]
    Env {
        /// The variable.
        var: String,
        /// What was expected and what was found.
        message: String,
    },
}

impl ConfigError {
    /// The file the error is about, if it is about one.
    pub fn file(&self) -> Option<&str> {
        match self {
            ConfigError::Io { file, .. }
            | ConfigError::Syntax { file, .. }
            | ConfigError::UnknownKey { file, .. }
            | ConfigError::InvalidValue { file, .. } => Some(file),
            ConfigError::Env { .. } => None,
        }
    }

    /// The line (1-based) the error is about, if known.
    pub fn line(&self) -> Option<u64> {
        match self {
            ConfigError::Syntax { line, .. }
            | ConfigError::UnknownKey { line, .. }
            | ConfigError::InvalidValue { line, .. } => Some(*line).filter(|l| *l > 0),
            ConfigError::Io { .. } | ConfigError::Env { .. } => None,
        }
    }

    /// The key (dotted) or environment variable the error is about, if any.
    pub fn key(&self) -> Option<&str> {
        match self {
            ConfigError::UnknownKey { key, .. } | ConfigError::InvalidValue { key, .. } => {
                Some(key)
            }
            ConfigError::Env { var, .. } => Some(var),
            ConfigError::Io { .. } | ConfigError::Syntax { .. } => None,
        }
    }
}

impl From<ConfigError> for crate::Error {
    fn from(e: ConfigError) -> Self {
        crate::Error::Config(e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_gos_loader_defaults() {
        let c = Config::default();
        assert_eq!(c.default_queue, "machinery_tasks");
        assert_eq!(c.results_expire_in, 3600);
        assert_eq!(c.amqp.exchange, "machinery_exchange");
        assert_eq!(c.amqp.exchange_type, "direct");
        assert_eq!(c.amqp.binding_key, "machinery_task");
        assert_eq!(c.amqp.prefetch_count, 3);
        assert_eq!(c.redis.max_idle, 3);
        assert_eq!(c.redis.max_active, 0);
        assert_eq!(c.redis.max_idle_timeout, Duration::from_secs(240));
        assert!(!c.redis.wait);
        assert_eq!(c.redis.read_timeout, Duration::from_secs(15));
        assert_eq!(
            c.redis.normal_tasks_poll_period,
            Duration::from_millis(1000)
        );
        assert_eq!(
            c.redis.delayed_tasks_poll_period,
            Duration::from_millis(500)
        );
        assert_eq!(c.dynamodb.task_states_table, "task_states");
        assert_eq!(c.dynamodb.group_metas_table, "group_metas");
        assert_eq!(c.sqs.visibility_timeout, None);
        assert!(c.broker.is_empty() && c.result_backend.is_empty() && c.lock.is_empty());
    }

    #[test]
    fn every_field_is_in_the_table_once() {
        let keys: Vec<_> = fields::FIELDS.iter().map(|f| f.key).collect();
        let mut dedup = keys.clone();
        dedup.sort_unstable();
        dedup.dedup();
        assert_eq!(dedup.len(), keys.len(), "duplicate keys in the table");
        // Debug destructures every field, so its leaf lines count the fields: a field missing
        // from the table would be invisible to YAML, env, `redacted` and reload.
        let debug = format!("{:#?}", Config::default());
        let leaves = debug
            .lines()
            .filter(|l| l.contains(": ") && !l.trim_end().ends_with('{'))
            .count();
        assert_eq!(leaves, fields::FIELDS.len(), "{debug}");
        assert_eq!(
            Config::default().redacted().lines().count(),
            fields::FIELDS.len()
        );
    }

    #[test]
    fn module_doc_example_loads() {
        let source = include_str!("config.rs");
        let start = source.find("//! ```yaml\n").expect("example") + "//! ```yaml\n".len();
        let end = start + source[start..].find("//! ```\n").expect("end");
        let yaml: String = source[start..end]
            .lines()
            .map(|l| format!("{}\n", l.strip_prefix("//! ").unwrap_or("")))
            .collect();
        let c = Config::from_yaml_str(&yaml).expect("the documented example loads");
        assert_eq!(c.task_time_limit, Some(Duration::from_secs(600)));
        assert_eq!(c.periodic_tasks.len(), 2);
        assert!(c.sqs.visibility_heartbeat);
    }

    #[test]
    fn debug_redacts() {
        let c = Config {
            broker: "redis://:hunter2@h:6379/0".into(),
            result_backend: "amqp://guest:sekrit@h:5672/".into(),
            lock: "redis://user:pa55@h:1".into(),
            redis: RedisConfig {
                sentinel_password: "s3ntinel".into(),
                ..RedisConfig::default()
            },
            ..Config::default()
        };
        for text in [format!("{c:?}"), format!("{c:#?}"), c.redacted()] {
            for secret in ["hunter2", "sekrit", "pa55", "s3ntinel", "guest", "user"] {
                assert!(!text.contains(secret), "{secret} in {text}");
            }
            assert!(text.contains("redis://h:6379"), "{text}");
        }
    }

    #[test]
    fn error_converts() {
        let e = ConfigError::Env {
            var: "BROKER".into(),
            message: "x".into(),
        };
        let e: crate::Error = e.into();
        assert!(matches!(e, crate::Error::Config(m) if m.contains("BROKER")));
    }
}
