//! From a [`Config`] to adapters: [`connect`] and [`server`] choose the broker, the result
//! backend and the lock by the scheme of `config.broker`, `config.result_backend` and
//! `config.lock`, each on its own.
//!
//! | URL | adapter | roles | Cargo feature of `machinist` |
//! |---|---|---|---|
//! | empty | the embedded default, `sqlite://machinist.db` in the working directory | all | `sqlite` (default) |
//! | `sqlite://file.db`, `sqlite:///abs/file.db`, `sqlite::memory:` | SQLite (`machinist-sqlite`) | broker, backend, lock | `sqlite` (default) |
//! | `memory`, `eager`, `memory://NAME` | in-process ([`crate::memory`]) | broker, backend, lock | always |
//! | `redis://[[user]:password@]host[:port][/db]`, `redis+socket://[password@]/path.sock[:/db]` | Redis (`machinist-redis`) | broker, backend, lock | `redis` |
//! | `redis://[password@]h1:p1,h2:p2,…` (Go's cluster form), or one host with `redis.cluster_enabled` | Redis Cluster (`machinist-redis`) | broker, backend, lock | `redis` |
//! | `redis://[password@]s1:26379,s2:26379/db` with `redis.master_name` | Redis Sentinel: the hosts are sentinels (`machinist-redis`) | broker, backend, lock | `redis` |
//! | `rediss://…` | Redis over TLS (rustls; the system's roots, or `tls.ca_file`) | broker, backend, lock | `redis-tls` |
//! | `amqp://[user:password@]host[:port][/vhost]` | AMQP 0-9-1 (RabbitMQ, `machinist-amqp`) | broker, backend (no lock: set `lock` to another URL, or leave it empty for the embedded default) | `amqp` |
//! | `amqp://h1:5672/,amqp://h2:5672/` with `multiple_broker_separator: ","` | several RabbitMQ nodes, tried in order (`machinist-amqp`) | broker | `amqp` |
//! | `amqps://…` | AMQP over TLS (rustls; the system's roots plus `tls.ca_file`) | broker, backend | `amqp-tls` |
//! | `https://sqs…` | AWS SQS | broker | `sqs` (not in this version) |
//! | `gcppubsub://PROJECT/SUBSCRIPTION` | GCP Pub/Sub | broker | `gcppubsub` (not in this version) |
//! | `memcache://` | Memcache | backend | `memcache` (not in this version) |
//! | `mongodb://`, `mongodb+srv://` | MongoDB | backend | `mongodb` (not in this version) |
//! | `https://dynamodb…` | AWS DynamoDB | backend | `dynamodb` (not in this version) |
//!
//! Sharing: within one process the same in-memory URL always gives the same instance (so a
//! server and a worker built from two [`connect`] calls share their queues and results), and
//! within one [`connect`] call the roles that name the same SQLite URL share one
//! `SqliteStore` (one file, one writer), and the roles that name the same Redis URL share one
//! `RedisConnection` (one multiplexed socket, plus one per consumer for blocking pops).
//!
//! The `redis:` section of the config applies to the Redis adapters: `cluster_enabled`,
//! `master_name` and `sentinel_password` (Sentinel, as go-redis's failover client: a master
//! name wins over the cluster form, the URL's hosts are then sentinels and its password the
//! master's), `delayed_tasks_key`, `delayed_tasks_poll_period`, `normal_tasks_poll_period` (how
//! long a consumer blocks), `connect_timeout`, `read_timeout` / `write_timeout` (one reply
//! timeout, the larger of the two), plus `default_queue`, `results_expire_in` and `lease`.
//! Go's pool settings (`max_idle`, `max_active`, `max_idle_timeout`, `wait`) and `client_name`
//! have no effect (one multiplexed connection replaces Go's pool). For `rediss://` the `tls:`
//! section applies: `ca_file` (trusted instead of the system's roots), `cert_file` +
//! `key_file` (a client certificate), `insecure_skip_verify`.
//!
//! The `amqp:` section of the config applies to the AMQP adapters, as Go reads it: `exchange`,
//! `exchange_type`, `queue_declare_args`, `queue_binding_args`, `binding_key`,
//! `prefetch_count`, `auto_delete`, `delayed_queue`, plus `default_queue`,
//! `results_expire_in` and, for `amqps://`, `tls.ca_file` (trusted besides the system's
//! roots). The broker and the result backend each open their own connection, even on the same
//! URL, and connect at once (a RabbitMQ that does not answer is an error of the role); client
//! certificates and `tls.insecure_skip_verify` are refused for `amqps://` (not supported
//! yet). The AMQP result backend keeps one queue per task, as Go's does: prefer `redis://` or
//! `sqlite://` results beside an AMQP broker (see `machinist_amqp`'s "Limits").
//!
//! Errors are [`machinist_core::Error::Broker`], [`Backend`](machinist_core::Error::Backend) or
//! [`Lock`](machinist_core::Error::Lock) after the role, with a [`ConnectError`] as their source
//! when the URL itself is the problem ([`ConnectError::find`] gets it back). Errors and logs
//! show URLs redacted to `scheme://host`, never with credentials.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, OnceLock};

use machinist_core::config::redact_url;
use machinist_core::memory::{MemoryBackend, MemoryBroker, MemoryLock};
use machinist_core::{Backend, Broker, Config, Error, Lock, Result, Server};

/// The URL used for a role whose URL is empty: one SQLite file in the working directory.
pub const DEFAULT_URL: &str = "sqlite://machinist.db";

/// The three adapters a [`Server`] runs on.
#[derive(Clone)]
pub struct Adapters {
    /// Moves task messages.
    pub broker: Arc<dyn Broker>,
    /// Stores states and results.
    pub backend: Arc<dyn Backend>,
    /// Expiring locks (periodic tasks).
    pub lock: Arc<dyn Lock>,
}

impl fmt::Debug for Adapters {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Adapters")
            .field("broker", &self.broker.describe())
            .field("backend", &self.backend.describe())
            .field("lock", &self.lock.describe())
            .finish()
    }
}

impl Adapters {
    /// Closes the broker and the backend (stored messages and states stay stored).
    pub async fn close(&self) {
        self.broker.close().await;
        self.backend.close().await;
    }
}

/// Connects the broker, result backend and lock named by `config` (see the
/// [module documentation](self) for the URLs understood).
///
/// # Errors
///
/// A URL with an unknown scheme, a scheme for another role (a `memcache://` broker), or one
/// whose adapter is not compiled in gives an error with a [`ConnectError`] source that says
/// what to do; an adapter that fails to open (an unreadable SQLite file …) gives its own error.
pub async fn connect(config: &Config) -> Result<Adapters> {
    // Boxed: the adapters' connect futures nest deeply, and callers' own futures (a `main`
    // awaiting `server(config)`) would otherwise hit the compiler's type-depth limit.
    Box::pin(connect_with(config, &mut Opened::default())).await
}

/// [`connect`], recording the stores it opened in `opened`.
async fn connect_with(config: &Config, opened: &mut Opened) -> Result<Adapters> {
    let broker_plan = Plan::new(Role::Broker, &config.broker).map_err(Error::from)?;
    let backend_plan =
        Plan::new(Role::ResultBackend, &config.result_backend).map_err(Error::from)?;
    let lock_plan = Plan::new(Role::Lock, &config.lock).map_err(Error::from)?;

    let broker: Arc<dyn Broker> = match broker_plan.adapter {
        Adapter::Memory => memory_instances(|m| {
            Arc::clone(
                m.brokers
                    .entry(broker_plan.memory_name())
                    .or_insert_with(|| Arc::new(MemoryBroker::new())),
            )
        }),
        #[cfg(feature = "sqlite")]
        Adapter::Sqlite => Arc::new(
            opened
                .sqlite(Role::Broker, &broker_plan, config)
                .await?
                .broker(),
        ),
        #[cfg(feature = "redis")]
        Adapter::Redis => Arc::new(machinist_redis::RedisBroker::new(
            opened.redis(Role::Broker, &broker_plan, config).await?,
        )),
        #[cfg(feature = "amqp")]
        Adapter::Amqp => Arc::new(
            machinist_amqp::AmqpBroker::connect(amqp_options(Role::Broker, &broker_plan, config)?)
                .await
                .map_err(|e| role_error(Role::Broker, e))?,
        ),
        other => return Err(not_compiled(other, &broker_plan)),
    };
    let backend: Arc<dyn Backend> = match backend_plan.adapter {
        Adapter::Memory => memory_instances(|m| {
            Arc::clone(
                m.backends
                    .entry(backend_plan.memory_name())
                    .or_insert_with(|| Arc::new(MemoryBackend::new(config.results_ttl()))),
            )
        }),
        #[cfg(feature = "sqlite")]
        Adapter::Sqlite => Arc::new(
            opened
                .sqlite(Role::ResultBackend, &backend_plan, config)
                .await?
                .backend(),
        ),
        #[cfg(feature = "redis")]
        Adapter::Redis => Arc::new(machinist_redis::RedisBackend::new(
            opened
                .redis(Role::ResultBackend, &backend_plan, config)
                .await?,
        )),
        #[cfg(feature = "amqp")]
        Adapter::Amqp => Arc::new(
            machinist_amqp::AmqpBackend::connect(amqp_options(
                Role::ResultBackend,
                &backend_plan,
                config,
            )?)
            .await
            .map_err(|e| role_error(Role::ResultBackend, e))?,
        ),
        other => return Err(not_compiled(other, &backend_plan)),
    };
    let lock: Arc<dyn Lock> = match lock_plan.adapter {
        Adapter::Memory => memory_instances(|m| {
            Arc::clone(
                m.locks
                    .entry(lock_plan.memory_name())
                    .or_insert_with(|| Arc::new(MemoryLock::new())),
            )
        }),
        #[cfg(feature = "sqlite")]
        Adapter::Sqlite => Arc::new(opened.sqlite(Role::Lock, &lock_plan, config).await?.lock()),
        #[cfg(feature = "redis")]
        Adapter::Redis => Arc::new(machinist_redis::RedisLock::new(
            opened.redis(Role::Lock, &lock_plan, config).await?,
        )),
        other => return Err(not_compiled(other, &lock_plan)),
    };
    #[cfg(not(any(feature = "sqlite", feature = "redis")))]
    let _ = opened;
    tracing::debug!(
        broker = %broker.describe(),
        backend = %backend.describe(),
        lock = %lock.describe(),
        "adapters connected"
    );
    Ok(Adapters {
        broker,
        backend,
        lock,
    })
}

/// A [`Server`] on the adapters [`connect`] chooses for `config`.
///
/// ```no_run
/// # async fn run() -> machinist::Result<()> {
/// let config = machinist::Config {
///     broker: "sqlite://tasks.db".into(),
///     ..machinist::Config::default()
/// };
/// // Backend and lock are empty: they use the embedded default too.
/// let server = machinist::server(config).await?;
/// # drop(server);
/// # Ok(())
/// # }
/// ```
///
/// # Errors
///
/// As [`connect`].
pub async fn server(config: Config) -> Result<Server> {
    let adapters = connect(&config).await?;
    Ok(Server::new(
        config,
        adapters.broker,
        adapters.backend,
        adapters.lock,
    ))
}

/// Only adapters that [`Plan::new`] accepted reach the `match`es in [`connect`], and it accepts
/// only compiled-in ones; this keeps the `match`es exhaustive whatever the features, without a
/// panic in library code.
fn not_compiled(adapter: Adapter, plan: &Plan) -> Error {
    Error::Other(format!(
        "the {adapter} adapter is not compiled in ({})",
        shown(&plan.url)
    ))
}

/// SQLite stores and Redis connections opened by one [`connect`] call, by URL, so that roles
/// naming the same URL share one store (one writer for the file) or one connection.
#[derive(Default)]
struct Opened {
    #[cfg(feature = "sqlite")]
    sqlite: HashMap<String, machinist_sqlite::SqliteStore>,
    #[cfg(feature = "redis")]
    redis: HashMap<String, machinist_redis::RedisConnection>,
}

/// Wraps an adapter's error as the error of `role`.
#[cfg(any(feature = "sqlite", feature = "redis", feature = "amqp"))]
fn role_error(role: Role, e: impl std::error::Error + Send + Sync + 'static) -> Error {
    match role {
        Role::Broker => Error::broker(e),
        Role::ResultBackend => Error::backend(e),
        Role::Lock => Error::lock(e),
    }
}

#[cfg(feature = "redis")]
impl Opened {
    /// The connection for `plan`'s URL, opened on first use with the `redis:` settings of
    /// `config` ([`redis_options`]).
    async fn redis(
        &mut self,
        role: Role,
        plan: &Plan,
        config: &Config,
    ) -> Result<machinist_redis::RedisConnection> {
        if let Some(conn) = self.redis.get(&plan.url) {
            return Ok(conn.clone());
        }
        let options = redis_options(role, &plan.url, config)?;
        let described = options.describe();
        let conn = machinist_redis::RedisConnection::connect(options)
            .await
            .map_err(|e| role_error(role, e))?;
        tracing::debug!(redis = %described, "connected to Redis");
        self.redis.insert(plan.url.clone(), conn.clone());
        Ok(conn)
    }
}

/// The Redis settings [`connect`] uses for a Redis URL: Go's URL forms
/// (`RedisOptions::from_url`), then the config's `default_queue`, `results_expire_in`, `lease`
/// and `redis:` section (see the [module documentation](self) for which keys apply). A zero
/// duration keeps the adapter's default, as Go does for its poll periods.
#[cfg(feature = "redis")]
fn redis_options(role: Role, url: &str, config: &Config) -> Result<machinist_redis::RedisOptions> {
    let redis = &config.redis;
    // Schemes are case-insensitive here (as in `Adapter::detect`); the adapter wants them lower.
    let url = match url.split_once("://") {
        Some((scheme, rest)) => format!("{}://{rest}", scheme.to_ascii_lowercase()),
        None => url.to_owned(),
    };
    let mut options = machinist_redis::RedisOptions::from_url(&url)
        .map_err(|e| role_error(role, e))?
        .with_config(config)
        .with_cluster(redis.cluster_enabled);
    if !redis.master_name.trim().is_empty() {
        options = options
            .with_sentinel(redis.master_name.trim())
            .with_sentinel_password(redis.sentinel_password.as_str());
    }
    let tls = &config.tls;
    if let Some(ca_file) = &tls.ca_file {
        options = options.with_tls_ca_file(ca_file);
    }
    match (&tls.cert_file, &tls.key_file) {
        (Some(cert), Some(key)) => options = options.with_tls_client_cert(cert, key),
        (None, None) => {}
        _ => {
            return Err(Error::Config(format!(
                "{role}: {}: `tls.cert_file` and `tls.key_file` go together: set both or neither",
                shown(&url)
            )));
        }
    }
    if tls.insecure_skip_verify {
        options = options.with_tls_insecure_skip_verify(true);
    }
    if !redis.delayed_tasks_key.trim().is_empty() {
        options = options.with_delayed_tasks_key(redis.delayed_tasks_key.trim());
    }
    if !redis.delayed_tasks_poll_period.is_zero() {
        options = options.with_delayed_tasks_poll_period(redis.delayed_tasks_poll_period);
    }
    if !redis.normal_tasks_poll_period.is_zero() {
        options = options.with_block_timeout(redis.normal_tasks_poll_period);
    }
    if !config.lease.is_zero() {
        options = options.with_lease(config.lease);
    }
    if !redis.connect_timeout.is_zero() {
        options.connect_timeout = redis.connect_timeout;
    }
    let reply = redis.read_timeout.max(redis.write_timeout);
    if !reply.is_zero() {
        options.response_timeout = reply;
    }
    Ok(options)
}

/// The AMQP settings [`connect`] uses for `plan`'s URL: for the broker, the URL list split by
/// `multiple_broker_separator` (`AmqpOptions::broker_from_config`); for the result backend,
/// one URL (`AmqpOptions::backend_from_config`); then the config's `amqp:` section,
/// `default_queue`, `results_expire_in` and `tls.ca_file`. Schemes are lowered first (as
/// [`Adapter::detect`] reads them case-insensitively).
#[cfg(feature = "amqp")]
fn amqp_options(role: Role, plan: &Plan, config: &Config) -> Result<machinist_amqp::AmqpOptions> {
    let tls = &config.tls;
    if needs_amqp_tls(&plan.url) {
        let unsupported = if tls.cert_file.is_some() || tls.key_file.is_some() {
            Some("a client certificate (`tls.cert_file`, `tls.key_file`) for amqps://")
        } else if tls.insecure_skip_verify {
            Some("`tls.insecure_skip_verify` for amqps://")
        } else {
            None
        };
        if let Some(what) = unsupported {
            return Err(ConnectError::Unsupported {
                role,
                url: shown(&plan.url),
                what,
            }
            .into());
        }
    }
    let mut config = config.clone();
    let separator = config.multiple_broker_separator.clone();
    let options = match role {
        Role::Broker => {
            config.broker = lower_schemes(&plan.url, &separator);
            machinist_amqp::AmqpOptions::broker_from_config(&config)
        }
        _ => {
            config.result_backend = lower_schemes(&plan.url, "");
            machinist_amqp::AmqpOptions::backend_from_config(&config)
        }
    };
    options.map_err(|e| role_error(role, e))
}

/// `urls` (several split by `separator`, none when it is empty) with each scheme in lower case.
#[cfg(feature = "amqp")]
fn lower_schemes(urls: &str, separator: &str) -> String {
    let lower = |url: &str| match url.trim().split_once("://") {
        Some((scheme, rest)) => format!("{}://{rest}", scheme.to_ascii_lowercase()),
        None => url.trim().to_owned(),
    };
    if separator.is_empty() {
        lower(urls)
    } else {
        urls.split(separator)
            .map(lower)
            .collect::<Vec<_>>()
            .join(separator)
    }
}

#[cfg(feature = "sqlite")]
impl Opened {
    /// The store for `plan`'s URL, opened on first use. Opening blocks (it may wait for another
    /// process's write lock, then migrates the file), so it runs on the blocking pool.
    async fn sqlite(
        &mut self,
        role: Role,
        plan: &Plan,
        config: &Config,
    ) -> Result<machinist_sqlite::SqliteStore> {
        if let Some(store) = self.sqlite.get(&plan.url) {
            return Ok(store.clone());
        }
        let mut options = machinist_sqlite::SqliteOptions::from_config(config);
        if !config.lease.is_zero() {
            options = options.with_lease(config.lease);
        }
        let url = plan.url.clone();
        let opened =
            tokio::task::spawn_blocking(move || machinist_sqlite::SqliteStore::open(&url, options))
                .await
                .map_err(|e| Error::Other(format!("opening {}: {e}", shown(&plan.url))))?;
        let store = opened.map_err(|e| role_error(role, e))?;
        tracing::debug!(url = %shown(&plan.url), "opened SQLite store");
        self.sqlite.insert(plan.url.clone(), store.clone());
        Ok(store)
    }
}

/// The in-memory adapters of this process, by name (`memory://NAME`; `memory` and `eager`
/// are the name `""`). They live as long as the process.
#[derive(Default)]
struct MemoryInstances {
    brokers: HashMap<String, Arc<MemoryBroker>>,
    backends: HashMap<String, Arc<MemoryBackend>>,
    locks: HashMap<String, Arc<MemoryLock>>,
}

fn memory_instances<T>(f: impl FnOnce(&mut MemoryInstances) -> T) -> T {
    static INSTANCES: OnceLock<Mutex<MemoryInstances>> = OnceLock::new();
    let mut guard = INSTANCES
        .get_or_init(Mutex::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    f(&mut guard)
}

/// What one role will connect to: an accepted adapter and the URL (the default filled in).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Plan {
    adapter: Adapter,
    url: String,
}

impl Plan {
    /// Checks `url` for `role`: a known scheme, an adapter that can play the role, compiled in.
    fn new(role: Role, url: &str) -> Result<Plan, ConnectError> {
        let given = url.trim();
        let defaulted = given.is_empty();
        let url = if defaulted { DEFAULT_URL } else { given };
        let shown_url = if defaulted {
            format!("{DEFAULT_URL} (the default when no {} is set)", role.key())
        } else {
            shown(url)
        };
        let Some(adapter) = Adapter::detect(url) else {
            return Err(ConnectError::UnknownScheme {
                role,
                url: shown_url,
                supported: supported_schemes(role),
            });
        };
        if !adapter.roles().contains(&role) {
            return Err(ConnectError::WrongRole {
                role,
                url: shown_url,
                adapter,
            });
        }
        if !adapter.is_compiled() {
            let feature = adapter.feature().unwrap_or_default();
            return Err(if adapter.feature_exists() {
                ConnectError::FeatureDisabled {
                    role,
                    url: shown_url,
                    adapter,
                    feature,
                }
            } else {
                ConnectError::NotAvailable {
                    role,
                    url: shown_url,
                    adapter,
                    feature,
                }
            });
        }
        if adapter == Adapter::Redis && needs_tls(url) && !cfg!(feature = "redis-tls") {
            return Err(ConnectError::FeatureDisabled {
                role,
                url: shown_url,
                adapter,
                feature: "redis-tls",
            });
        }
        if adapter == Adapter::Amqp && needs_amqp_tls(url) && !cfg!(feature = "amqp-tls") {
            return Err(ConnectError::FeatureDisabled {
                role,
                url: shown_url,
                adapter,
                feature: "amqp-tls",
            });
        }
        Ok(Plan {
            adapter,
            url: url.to_owned(),
        })
    }

    /// The instance name of a `memory`/`eager` URL: what follows `://`, or `""`.
    fn memory_name(&self) -> String {
        self.url
            .split_once("://")
            .map_or_else(String::new, |(_, name)| name.to_owned())
    }
}

/// True for a `rediss://` URL (TLS).
fn needs_tls(url: &str) -> bool {
    url.get(..9)
        .is_some_and(|scheme| scheme.eq_ignore_ascii_case("rediss://"))
}

/// True when `url` (or one of several broker URLs) is an `amqps://` URL (TLS).
fn needs_amqp_tls(url: &str) -> bool {
    url.to_ascii_lowercase().contains("amqps://")
}

/// The role a URL is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Role {
    /// `broker` / `BROKER`.
    Broker,
    /// `result_backend` / `RESULT_BACKEND`.
    ResultBackend,
    /// `lock` / `LOCK`.
    Lock,
}

impl Role {
    /// The configuration key (YAML) of this role's URL.
    pub fn key(self) -> &'static str {
        match self {
            Role::Broker => "broker",
            Role::ResultBackend => "result_backend",
            Role::Lock => "lock",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Role::Broker => "broker",
            Role::ResultBackend => "result backend",
            Role::Lock => "lock",
        })
    }
}

/// An adapter, known by its URL schemes whether or not this build has it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Adapter {
    /// `memory`, `eager`, `memory://NAME`: in-process, nothing survives the process.
    Memory,
    /// `sqlite://…`, `sqlite::memory:`: the embedded default.
    Sqlite,
    /// `redis://`, `rediss://`, `redis+socket://`.
    Redis,
    /// `amqp://`, `amqps://`.
    Amqp,
    /// `https://sqs…`.
    Sqs,
    /// `gcppubsub://`.
    GcpPubSub,
    /// `memcache://`.
    Memcache,
    /// `mongodb://`, `mongodb+srv://`.
    MongoDb,
    /// `https://dynamodb…`.
    DynamoDb,
}

/// Every adapter, in the order error messages list them.
const ADAPTERS: [Adapter; 9] = [
    Adapter::Sqlite,
    Adapter::Memory,
    Adapter::Redis,
    Adapter::Amqp,
    Adapter::Sqs,
    Adapter::GcpPubSub,
    Adapter::Memcache,
    Adapter::MongoDb,
    Adapter::DynamoDb,
];

impl Adapter {
    /// The adapter a URL names, by its scheme (case-insensitive); `None` for an unknown one.
    pub fn detect(url: &str) -> Option<Adapter> {
        let url = url.trim().to_ascii_lowercase();
        let has = |prefix: &str| url.starts_with(prefix);
        Some(
            if url == "memory" || url == "eager" || has("memory://") || has("eager://") {
                Adapter::Memory
            } else if has("sqlite:") {
                Adapter::Sqlite
            } else if has("redis://") || has("rediss://") || has("redis+socket://") {
                Adapter::Redis
            } else if has("amqp://") || has("amqps://") {
                Adapter::Amqp
            } else if has("https://sqs") {
                Adapter::Sqs
            } else if has("gcppubsub://") {
                Adapter::GcpPubSub
            } else if has("memcache://") {
                Adapter::Memcache
            } else if has("mongodb://") || has("mongodb+srv://") {
                Adapter::MongoDb
            } else if has("https://dynamodb") {
                Adapter::DynamoDb
            } else {
                return None;
            },
        )
    }

    /// The adapter `url` names for `role`, checked as [`connect`] checks it (known scheme,
    /// right role, compiled in) but without connecting. An empty URL names the embedded
    /// default ([`DEFAULT_URL`]).
    ///
    /// ```
    /// use machinist::{Adapter, Role};
    ///
    /// assert_eq!(Adapter::resolve(Role::Broker, "memory"), Ok(Adapter::Memory));
    /// assert!(Adapter::resolve(Role::Broker, "memcache://localhost").is_err());
    /// ```
    pub fn resolve(role: Role, url: &str) -> Result<Adapter, ConnectError> {
        Plan::new(role, url).map(|plan| plan.adapter)
    }

    /// The URL forms, as documentation shows them.
    pub fn schemes(self) -> &'static [&'static str] {
        match self {
            Adapter::Memory => &["memory", "eager", "memory://NAME"],
            Adapter::Sqlite => &["sqlite://PATH", "sqlite::memory:"],
            Adapter::Redis => &["redis://", "rediss://", "redis+socket://"],
            Adapter::Amqp => &["amqp://", "amqps://"],
            Adapter::Sqs => &["https://sqs…"],
            Adapter::GcpPubSub => &["gcppubsub://"],
            Adapter::Memcache => &["memcache://"],
            Adapter::MongoDb => &["mongodb://", "mongodb+srv://"],
            Adapter::DynamoDb => &["https://dynamodb…"],
        }
    }

    /// The roles it can play.
    pub fn roles(self) -> &'static [Role] {
        const ALL: &[Role] = &[Role::Broker, Role::ResultBackend, Role::Lock];
        match self {
            Adapter::Memory | Adapter::Sqlite | Adapter::Redis => ALL,
            Adapter::Amqp => &[Role::Broker, Role::ResultBackend],
            Adapter::Sqs | Adapter::GcpPubSub => &[Role::Broker],
            Adapter::Memcache | Adapter::MongoDb | Adapter::DynamoDb => &[Role::ResultBackend],
        }
    }

    /// The Cargo feature of `machinist` that provides it (`None`: always there).
    pub fn feature(self) -> Option<&'static str> {
        Some(match self {
            Adapter::Memory => return None,
            Adapter::Sqlite => "sqlite",
            Adapter::Redis => "redis",
            Adapter::Amqp => "amqp",
            Adapter::Sqs => "sqs",
            Adapter::GcpPubSub => "gcppubsub",
            Adapter::Memcache => "memcache",
            Adapter::MongoDb => "mongodb",
            Adapter::DynamoDb => "dynamodb",
        })
    }

    /// True when this build has it.
    pub fn is_compiled(self) -> bool {
        const COMPILED: &[Adapter] = &[
            Adapter::Memory,
            #[cfg(feature = "sqlite")]
            Adapter::Sqlite,
            #[cfg(feature = "redis")]
            Adapter::Redis,
            #[cfg(feature = "amqp")]
            Adapter::Amqp,
        ];
        COMPILED.contains(&self)
    }

    /// True when this version of machinist has the adapter at all (behind its feature).
    pub fn feature_exists(self) -> bool {
        matches!(
            self,
            Adapter::Memory | Adapter::Sqlite | Adapter::Redis | Adapter::Amqp
        )
    }
}

impl fmt::Display for Adapter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Adapter::Memory => "in-memory",
            Adapter::Sqlite => "SQLite",
            Adapter::Redis => "Redis",
            Adapter::Amqp => "AMQP",
            Adapter::Sqs => "SQS",
            Adapter::GcpPubSub => "GCP Pub/Sub",
            Adapter::Memcache => "Memcache",
            Adapter::MongoDb => "MongoDB",
            Adapter::DynamoDb => "DynamoDB",
        })
    }
}

/// The schemes `role` accepts: those this build has, then those of other features.
fn supported_schemes(role: Role) -> String {
    let list = |compiled: bool| {
        ADAPTERS
            .iter()
            .filter(|a| a.roles().contains(&role) && a.is_compiled() == compiled)
            .flat_map(|a| a.schemes().iter().copied())
            .collect::<Vec<_>>()
            .join(", ")
    };
    let here = list(true);
    let elsewhere = list(false);
    if elsewhere.is_empty() {
        here
    } else {
        format!("{here} (and, with adapters not in this build: {elsewhere})")
    }
}

/// A URL as errors and logs may show it: `scheme://host[:port]`, without credentials, path or
/// query ([`redact_url`]).
fn shown(url: &str) -> String {
    redact_url(url)
}

/// A URL that cannot be connected as it is: what is wrong and what to do.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectError {
    /// The scheme is not one machinist knows.
    #[error("unknown URL scheme in {url:?} for the {role}; supported: {supported}")]
    UnknownScheme {
        /// The role the URL was given for.
        role: Role,
        /// The URL, redacted.
        url: String,
        /// The schemes the role accepts.
        supported: String,
    },
    /// The adapter exists but cannot play this role (a `memcache://` broker).
    #[error("{url}: {adapter} cannot be the {role} (it can be: {})", roles_text(*adapter))]
    WrongRole {
        /// The role the URL was given for.
        role: Role,
        /// The URL, redacted.
        url: String,
        /// The adapter it names.
        adapter: Adapter,
    },
    /// The adapter is behind a Cargo feature this build does not enable.
    #[error(
        "{url}: the {adapter} {role} needs the `{feature}` Cargo feature of machinist, which \
         this build does not enable (machinist = {{ features = [\"{feature}\"] }})"
    )]
    FeatureDisabled {
        /// The role the URL was given for.
        role: Role,
        /// The URL, redacted.
        url: String,
        /// The adapter it names.
        adapter: Adapter,
        /// The feature that provides it.
        feature: &'static str,
    },
    /// The URL or a setting asks for something the adapter does not support yet.
    #[error("{url}: {what} is not supported yet")]
    Unsupported {
        /// The role the URL was given for.
        role: Role,
        /// The URL, redacted.
        url: String,
        /// What is not supported.
        what: &'static str,
    },
    /// The adapter will come as a Cargo feature of machinist, but this version does not have it.
    #[error(
        "{url}: the {adapter} {role} (Cargo feature `{feature}` of machinist) is not available \
         in this version of machinist"
    )]
    NotAvailable {
        /// The role the URL was given for.
        role: Role,
        /// The URL, redacted.
        url: String,
        /// The adapter it names.
        adapter: Adapter,
        /// The feature that will provide it.
        feature: &'static str,
    },
}

fn roles_text(adapter: Adapter) -> String {
    adapter
        .roles()
        .iter()
        .map(Role::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

impl ConnectError {
    /// The role whose URL is the problem.
    pub fn role(&self) -> Role {
        match self {
            ConnectError::UnknownScheme { role, .. }
            | ConnectError::WrongRole { role, .. }
            | ConnectError::FeatureDisabled { role, .. }
            | ConnectError::Unsupported { role, .. }
            | ConnectError::NotAvailable { role, .. } => *role,
        }
    }

    /// The `ConnectError` inside an error [`connect`] returned, if the URL was the problem.
    pub fn find(error: &Error) -> Option<&ConnectError> {
        match error {
            Error::Broker(source) | Error::Backend(source) | Error::Lock(source) => {
                source.downcast_ref::<ConnectError>()
            }
            _ => None,
        }
    }
}

impl From<ConnectError> for Error {
    fn from(e: ConnectError) -> Self {
        match e.role() {
            Role::Broker => Error::broker(e),
            Role::ResultBackend => Error::backend(e),
            Role::Lock => Error::lock(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Registers `add` on `server`, runs `add(a, b)` through a worker and checks the sum within
    /// `within`; returns the task's result handle.
    #[cfg(any(feature = "amqp", feature = "redis", feature = "sqlite"))]
    async fn add_round_trip(
        server: &Server,
        (a, b): (i64, i64),
        within: std::time::Duration,
    ) -> machinist_core::AsyncResult {
        server.register_task("add", |a: i64, b: i64| async move { a + b });
        let worker = server.new_worker("w", 2).launch_async();
        let mut r = server
            .send_task(machinist_core::Signature::new("add").args((a, b)))
            .await
            .expect("send");
        let sum: i64 = r.results(within).await.expect("result");
        assert_eq!(sum, a + b);
        worker.quit().await.expect("quit");
        r
    }

    /// Through a worker of `server`: `add(1, 2)` and a chord of two `add`s into `multiply`,
    /// each result checked within `within`; returns the `add` task's UUID.
    #[cfg(any(feature = "amqp", feature = "redis"))]
    async fn add_then_chord(server: &Server, within: std::time::Duration) -> String {
        use machinist_core::{Chord, Group, Signature, Variadic};

        server.register_task("add", |a: i64, b: i64| async move { a + b });
        server.register_task("multiply", |Variadic(xs): Variadic<i64>| async move {
            xs.iter().product::<i64>()
        });
        let worker = server.new_worker("w", 2).launch_async();
        let mut r = server
            .send_task(Signature::new("add").args((1i64, 2i64)))
            .await
            .expect("send");
        let sum: i64 = r.results(within).await.expect("result");
        assert_eq!(sum, 3);
        let chord = Chord::new(
            Group::new(vec![
                Signature::new("add").args((1i64, 1i64)),
                Signature::new("add").args((2i64, 2i64)),
            ]),
            Signature::new("multiply"),
        );
        let product: i64 = server
            .send_chord(chord, 0)
            .await
            .expect("chord")
            .results(within)
            .await
            .expect("chord result");
        assert_eq!(product, 8);
        worker.quit().await.expect("quit");
        r.uuid().to_owned()
    }

    fn config(broker: &str, backend: &str, lock: &str) -> Config {
        Config {
            broker: broker.into(),
            result_backend: backend.into(),
            lock: lock.into(),
            ..Config::default()
        }
    }

    fn plan_err(role: Role, url: &str) -> ConnectError {
        Plan::new(role, url).expect_err(url)
    }

    #[test]
    fn empty_means_the_embedded_default() {
        for role in [Role::Broker, Role::ResultBackend, Role::Lock] {
            for url in ["", "  "] {
                let plan = Plan::new(role, url);
                #[cfg(feature = "sqlite")]
                {
                    let plan = plan.expect("the default");
                    assert_eq!(plan.adapter, Adapter::Sqlite);
                    assert_eq!(plan.url, DEFAULT_URL);
                }
                #[cfg(not(feature = "sqlite"))]
                {
                    let e = plan.expect_err("no sqlite in this build");
                    assert!(matches!(e, ConnectError::FeatureDisabled { .. }), "{e}");
                    assert!(e.to_string().contains("sqlite://machinist.db"), "{e}");
                    assert!(e.to_string().contains("`sqlite`"), "{e}");
                }
            }
        }
    }

    #[test]
    fn schemes_are_detected() {
        let cases = [
            ("memory", Adapter::Memory),
            ("eager", Adapter::Memory),
            ("memory://jobs", Adapter::Memory),
            ("EAGER", Adapter::Memory),
            ("sqlite://machinist.db", Adapter::Sqlite),
            ("sqlite:///var/lib/q.db", Adapter::Sqlite),
            ("sqlite::memory:", Adapter::Sqlite),
            ("redis://localhost:6379", Adapter::Redis),
            ("rediss://:pw@host:6380/1", Adapter::Redis),
            ("redis+socket:///tmp/redis.sock", Adapter::Redis),
            ("amqp://guest:guest@localhost:5672/", Adapter::Amqp),
            ("amqps://host", Adapter::Amqp),
            (
                "https://sqs.us-east-1.amazonaws.com/123456789012",
                Adapter::Sqs,
            ),
            ("gcppubsub://project/subscription", Adapter::GcpPubSub),
            ("memcache://h1:11211,h2:11211", Adapter::Memcache),
            ("mongodb://user:pw@host:27017", Adapter::MongoDb),
            ("mongodb+srv://cluster.example.com", Adapter::MongoDb),
            (
                "https://dynamodb.us-east-1.amazonaws.com",
                Adapter::DynamoDb,
            ),
        ];
        for (url, adapter) in cases {
            assert_eq!(Adapter::detect(url), Some(adapter), "{url}");
        }
        for url in ["http://example.com", "foo://x", "memoryx", "postgres://db"] {
            assert_eq!(Adapter::detect(url), None, "{url}");
        }
    }

    #[test]
    fn adapters_not_in_this_version_name_their_feature() {
        let cases = [
            (
                Role::Broker,
                "https://sqs.eu-west-1.amazonaws.com/1/q",
                "sqs",
            ),
            (Role::Broker, "gcppubsub://project/sub", "gcppubsub"),
            (Role::ResultBackend, "memcache://m1:11211", "memcache"),
            (
                Role::ResultBackend,
                "mongodb://root:pw@mongo:27017",
                "mongodb",
            ),
            (
                Role::ResultBackend,
                "mongodb+srv://cluster.example.com",
                "mongodb",
            ),
            (
                Role::ResultBackend,
                "https://dynamodb.us-east-1.amazonaws.com",
                "dynamodb",
            ),
        ];
        for (role, url, feature) in cases {
            let e = plan_err(role, url);
            let ConnectError::NotAvailable {
                feature: named,
                role: r,
                ..
            } = &e
            else {
                panic!("{url}: {e:?}");
            };
            assert_eq!(*named, feature, "{url}");
            assert_eq!(*r, role);
            let text = e.to_string();
            assert!(text.contains(&format!("`{feature}`")), "{text}");
            assert!(text.contains("not available in this version"), "{text}");
            for secret in ["secret", "hunter2", "pw@", "root"] {
                assert!(!text.contains(secret), "{text}");
            }
        }
    }

    #[cfg(not(feature = "amqp"))]
    #[tokio::test]
    async fn amqp_without_its_feature_names_it() {
        for (role, url) in [
            (Role::Broker, "amqp://guest:hunter2@rabbit:5672/"),
            (Role::ResultBackend, "amqps://guest:hunter2@rabbit"),
            (Role::Broker, "AMQP://guest:hunter2@rabbit:5672/vhost"),
        ] {
            let e = plan_err(role, url);
            let ConnectError::FeatureDisabled {
                feature, adapter, ..
            } = &e
            else {
                panic!("{url}: {e:?}");
            };
            assert_eq!((*feature, *adapter), ("amqp", Adapter::Amqp), "{url}");
            let text = e.to_string();
            assert!(text.contains("`amqp` Cargo feature of machinist"), "{text}");
            assert!(text.contains("rabbit"), "{text}");
            assert!(!text.contains("hunter2"), "{text}");
        }
        let e = connect(&config("amqp://guest:guest@rabbit/", "memory", "memory"))
            .await
            .expect_err("not compiled");
        assert!(matches!(e, Error::Broker(_)), "{e:?}");
        assert!(matches!(
            ConnectError::find(&e),
            Some(ConnectError::FeatureDisabled {
                feature: "amqp",
                ..
            })
        ));
    }

    #[cfg(all(feature = "amqp", not(feature = "amqp-tls")))]
    #[test]
    fn amqps_without_amqp_tls_names_it() {
        for (role, url) in [
            (Role::Broker, "amqps://guest:hunter2@rabbit:5671/"),
            (Role::ResultBackend, "AMQPS://rabbit"),
            (Role::Broker, "amqp://rabbit-1/,amqps://rabbit-2/"),
        ] {
            let e = plan_err(role, url);
            assert!(
                matches!(
                    e,
                    ConnectError::FeatureDisabled {
                        feature: "amqp-tls",
                        adapter: Adapter::Amqp,
                        ..
                    }
                ),
                "{url}: {e:?}"
            );
            assert!(!e.to_string().contains("hunter2"), "{e}");
        }
        assert_eq!(
            Adapter::resolve(Role::Broker, "amqp://rabbit/"),
            Ok(Adapter::Amqp)
        );
    }

    #[tokio::test]
    async fn amqp_is_no_lock() {
        let e = connect(&config("memory", "memory", "amqp://guest:hunter2@rabbit/"))
            .await
            .expect_err("AMQP has no lock");
        assert!(matches!(e, Error::Lock(_)), "{e:?}");
        assert!(
            matches!(
                ConnectError::find(&e),
                Some(ConnectError::WrongRole {
                    adapter: Adapter::Amqp,
                    role: Role::Lock,
                    ..
                })
            ),
            "{e:?}"
        );
        assert_eq!(
            e.to_string(),
            "lock: amqp://rabbit: AMQP cannot be the lock (it can be: broker, result backend)"
        );
    }

    #[cfg(feature = "amqp")]
    #[test]
    fn amqps_settings_not_supported_yet_are_refused() {
        let plan = Plan {
            adapter: Adapter::Amqp,
            url: "amqps://guest:hunter2@rabbit:5671/".into(),
        };
        let mut cfg = config(&plan.url, &plan.url, "memory");
        cfg.tls.cert_file = Some("client.crt".into());
        cfg.tls.key_file = Some("client.key".into());
        let e = amqp_options(Role::Broker, &plan, &cfg).expect_err("no client certificates");
        assert!(matches!(e, Error::Broker(_)), "{e:?}");
        assert!(
            matches!(
                ConnectError::find(&e),
                Some(ConnectError::Unsupported { .. })
            ),
            "{e:?}"
        );
        assert!(e.to_string().contains("tls.cert_file"), "{e}");
        assert!(!e.to_string().contains("hunter2"), "{e}");
        cfg.tls.cert_file = None;
        cfg.tls.key_file = None;
        cfg.tls.insecure_skip_verify = true;
        let e = amqp_options(Role::ResultBackend, &plan, &cfg).expect_err("verification stays on");
        assert!(e.to_string().contains("insecure_skip_verify"), "{e}");
        // Plain amqp:// does not read the `tls:` section.
        let plain = Plan {
            adapter: Adapter::Amqp,
            url: "amqp://guest:guest@rabbit/".into(),
        };
        assert!(amqp_options(Role::Broker, &plain, &cfg).is_ok());
    }

    #[cfg(feature = "amqp")]
    #[test]
    fn amqp_schemes_are_lowered_url_by_url() {
        assert_eq!(
            lower_schemes(" AMQP://G:P@h/VHost ", ""),
            "amqp://G:P@h/VHost"
        );
        assert_eq!(
            lower_schemes("Amqp://a/|AMQPS://b/", "|"),
            "amqp://a/|amqps://b/"
        );
        assert_eq!(
            lower_schemes("amqp://a/,AMQP://b/", ""),
            "amqp://a/,AMQP://b/"
        );
    }

    /// The RabbitMQ the AMQP tests use (`AMQP_URL`, default the local guest account), or
    /// `None` (the test is skipped, saying so) when nothing listens there.
    #[cfg(feature = "amqp")]
    fn rabbit() -> Option<String> {
        machinist_testkit::rabbitmq::reachable()
    }

    /// A config whose task queue is this test's own: the default exchange (nothing declared
    /// that outlives the test), binding key = queue, queues that delete themselves a minute
    /// after their last use.
    #[cfg(feature = "amqp")]
    fn amqp_config(broker: &str, backend: &str, tag: &str) -> Config {
        use std::sync::atomic::{AtomicU32, Ordering};
        static SEQ: AtomicU32 = AtomicU32::new(0);
        let queue = format!(
            "machinist_facade_{tag}_{}_{}_{}",
            std::process::id(),
            chrono::Utc::now().timestamp_micros(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        );
        let mut cfg = Config {
            no_unix_signals: true,
            default_queue: queue.clone(),
            results_expire_in: 60,
            ..config(broker, backend, "memory")
        };
        cfg.amqp.exchange = String::new();
        cfg.amqp.binding_key = queue;
        cfg.amqp
            .queue_declare_args
            .insert("x-expires".into(), 60_000.into());
        cfg
    }

    #[cfg(feature = "amqp")]
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn amqp_round_trip_with_amqp_results() {
        use std::time::Duration;

        let Some(url) = rabbit() else {
            return;
        };
        let cfg = amqp_config(&url, &url, "amqp");
        let server = server(cfg.clone()).await.expect("server");
        assert!(
            server.broker().describe().contains("amqp"),
            "{}",
            server.broker().describe()
        );
        let uuid = add_then_chord(&server, Duration::from_secs(20)).await;

        // Another connect (another process, say) reads the stored state from RabbitMQ.
        let again = connect(&cfg).await.expect("reconnect");
        let state = again
            .backend
            .get_state(&uuid)
            .await
            .expect("read")
            .expect("stored");
        assert!(state.is_success(), "{state:?}");
        assert_eq!(state.task_name, "add");
        again.close().await;
        server.broker().close().await;
        server.backend().close().await;
    }

    #[cfg(feature = "amqp")]
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn amqp_broker_list_skips_a_dead_first_host() {
        use std::time::Duration;

        let Some(url) = rabbit() else {
            return;
        };
        // A closed port on loopback: refused at once.
        let dead = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
            l.local_addr().expect("addr").port()
        };
        // Schemes are case-insensitive, as for every adapter.
        let upper = url.replacen("amqp://", "AMQP://", 1);
        let mut cfg = amqp_config(
            &format!("amqp://guest:guest@127.0.0.1:{dead}/;{upper}"),
            "memory://amqp-list",
            "list",
        );
        cfg.multiple_broker_separator = ";".into();
        let server = server(cfg).await.expect("the second URL answers");
        add_round_trip(&server, (20, 22), Duration::from_secs(20)).await;
        server.broker().close().await;
    }

    #[cfg(feature = "amqp")]
    #[tokio::test]
    async fn an_unreachable_rabbitmq_is_an_error_of_its_role() {
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
            l.local_addr().expect("addr").port()
        };
        let url = format!("amqp://guest:hunter2@127.0.0.1:{port}/");
        let e = connect(&config(&url, "memory", "memory"))
            .await
            .expect_err("refused");
        assert!(matches!(e, Error::Broker(_)), "{e:?}");
        assert!(e.to_string().contains(&format!("127.0.0.1:{port}")), "{e}");
        assert!(!e.to_string().contains("hunter2"), "{e}");
        let e = connect(&config("memory", &url, "memory"))
            .await
            .expect_err("refused");
        assert!(matches!(e, Error::Backend(_)), "{e:?}");
        let bad = Config {
            multiple_broker_separator: ",".into(),
            ..config(
                "amqp://rabbit/,amqp://u:hunter2@rabbit:port/",
                "memory",
                "memory",
            )
        };
        let e = connect(&bad)
            .await
            .expect_err("a port that is not a number");
        assert!(matches!(e, Error::Broker(_)), "{e:?}");
        assert!(!e.to_string().contains("hunter2"), "{e}");
    }

    #[test]
    fn an_adapter_in_the_wrong_role_says_what_it_can_be() {
        let e = plan_err(Role::Broker, "memcache://m1:11211");
        assert!(matches!(e, ConnectError::WrongRole { .. }), "{e:?}");
        assert_eq!(
            e.to_string(),
            "memcache://m1:11211: Memcache cannot be the broker (it can be: result backend)"
        );
        let e = plan_err(Role::Lock, "amqp://u:p@rabbit/");
        assert!(
            e.to_string()
                .contains("cannot be the lock (it can be: broker, result backend)"),
            "{e}"
        );
        assert!(!e.to_string().contains("u:p"), "{e}");
        let e = plan_err(
            Role::ResultBackend,
            "https://sqs.us-east-1.amazonaws.com/1/q",
        );
        assert!(matches!(e, ConnectError::WrongRole { .. }), "{e:?}");
    }

    #[test]
    fn unknown_schemes_list_the_supported_ones() {
        let e = plan_err(Role::Broker, "postgres://admin:pw@db:5432/app");
        let text = e.to_string();
        assert!(matches!(e, ConnectError::UnknownScheme { .. }), "{e:?}");
        assert!(text.contains("postgres://db:5432"), "{text}");
        assert!(!text.contains("admin") && !text.contains("pw"), "{text}");
        assert!(text.contains("memory, eager"), "{text}");
        assert!(text.contains("redis://"), "{text}");
        assert!(text.contains("https://sqs…"), "{text}");
        assert!(!text.contains("memcache://"), "brokers only: {text}");
        let backend = plan_err(Role::ResultBackend, "ftp://x").to_string();
        assert!(backend.contains("memcache://"), "{backend}");
        assert!(backend.contains("mongodb+srv://"), "{backend}");
        assert_eq!(
            cfg!(feature = "sqlite"),
            text.starts_with(
                "unknown URL scheme in \"postgres://db:5432\" for the broker; supported: \
                 sqlite://PATH"
            ),
            "{text}"
        );
    }

    #[test]
    fn urls_are_redacted_to_scheme_and_host() {
        assert_eq!(shown("redis://:pw@host:6379/0"), "redis://host:6379");
        assert_eq!(
            shown("amqp://guest:guest@rabbit:5672/vhost"),
            "amqp://rabbit:5672"
        );
        assert_eq!(
            shown("https://sqs.amazonaws.com/1/q?token=t"),
            "https://sqs.amazonaws.com"
        );
        assert_eq!(shown("memory://jobs"), "memory://jobs");
        assert_eq!(shown("eager"), "eager");
        let e = plan_err(Role::Lock, "amqp://guest:hunter2@rabbit:5672/");
        assert!(e.to_string().starts_with("amqp://rabbit:5672: "), "{e}");
    }

    #[test]
    fn errors_are_typed_by_role() {
        let e = Error::from(plan_err(Role::Lock, "memcache://localhost"));
        assert!(matches!(e, Error::Lock(_)), "{e:?}");
        let found = ConnectError::find(&e).expect("a ConnectError source");
        assert_eq!(found.role(), Role::Lock);
        assert!(
            e.to_string()
                .starts_with("lock: memcache://localhost: Memcache cannot be the lock"),
            "{e}"
        );
        assert!(ConnectError::find(&Error::Shutdown).is_none());
    }

    #[tokio::test]
    async fn connect_reports_the_first_bad_role() {
        let e = connect(&config("memory", "memory", "memcache://x"))
            .await
            .expect_err("not a lock");
        assert!(matches!(e, Error::Lock(_)), "{e}");
        let e = connect(&config("memory", "foo://x", "memory"))
            .await
            .expect_err("unknown");
        assert!(matches!(e, Error::Backend(_)), "{e}");
        assert!(matches!(
            ConnectError::find(&e),
            Some(ConnectError::UnknownScheme { .. })
        ));
    }

    #[tokio::test]
    async fn memory_urls_give_one_instance_per_name() {
        let a = connect(&config("memory://t1", "memory://t1", "memory://t1"))
            .await
            .expect("memory");
        let b = connect(&config("memory://t1", "memory://t1", "memory://t1"))
            .await
            .expect("memory");
        let c = connect(&config("memory://t2", "memory://t2", "memory://t2"))
            .await
            .expect("memory");
        assert!(Arc::ptr_eq(&a.broker, &b.broker));
        assert!(Arc::ptr_eq(&a.backend, &b.backend));
        assert!(Arc::ptr_eq(&a.lock, &b.lock));
        assert!(!Arc::ptr_eq(&a.broker, &c.broker));
        assert!(!Arc::ptr_eq(&a.backend, &c.backend));
        // `memory` and `eager` are one instance.
        let m = connect(&config("memory", "memory", "memory"))
            .await
            .expect("m");
        let e = connect(&config("eager", "eager://", "EAGER"))
            .await
            .expect("e");
        assert!(Arc::ptr_eq(&m.broker, &e.broker));
        assert!(Arc::ptr_eq(&m.backend, &e.backend));
        assert!(Arc::ptr_eq(&m.lock, &e.lock));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_server_and_a_worker_from_two_connects_share_memory() {
        use std::time::Duration;

        let cfg = Config {
            no_unix_signals: true,
            ..config("memory://shared", "memory://shared", "memory://shared")
        };
        let producer = server(cfg.clone()).await.expect("producer");
        let consumer = server(cfg).await.expect("consumer");
        consumer.register_task("double", |x: i64| async move { x * 2 });
        let worker = consumer.new_worker("w", 1).launch_async();
        let mut r = producer
            .send_task(machinist_core::Signature::new("double").args(21i64))
            .await
            .expect("send");
        let v: i64 = r.results(Duration::from_secs(5)).await.expect("result");
        assert_eq!(v, 42);
        worker.quit().await.expect("quit");
    }

    #[test]
    fn redis_urls_need_the_redis_feature() {
        let cases = [
            (Role::Broker, "redis://:secret@cache.internal:6379/0"),
            (Role::ResultBackend, "redis://h1:7000,h2:7001,h3:7002/0"),
            (Role::Lock, "redis+socket://pw@/tmp/r.sock:/1"),
            (Role::Broker, "REDIS://localhost"),
        ];
        for (role, url) in cases {
            let plan = Plan::new(role, url);
            if cfg!(feature = "redis") {
                let plan = plan.expect(url);
                assert_eq!(plan.adapter, Adapter::Redis, "{url}");
                assert_eq!(plan.url, url);
            } else {
                let e = plan.expect_err(url);
                let ConnectError::FeatureDisabled { feature, .. } = &e else {
                    panic!("{url}: {e:?}");
                };
                assert_eq!(*feature, "redis");
                let text = e.to_string();
                assert!(text.contains("features = [\"redis\"]"), "{text}");
                assert!(!text.contains("secret") && !text.contains("pw@"), "{text}");
            }
        }
    }

    #[test]
    fn rediss_needs_the_redis_tls_feature() {
        for url in ["rediss://:hunter2@cache.internal:6380/0", "REDISS://h"] {
            let plan = Plan::new(Role::Broker, url);
            if cfg!(feature = "redis-tls") {
                assert_eq!(plan.expect(url).adapter, Adapter::Redis);
                continue;
            }
            let e = plan.expect_err(url);
            let ConnectError::FeatureDisabled { feature, .. } = &e else {
                panic!("{url}: {e:?}");
            };
            let want = if cfg!(feature = "redis") {
                "redis-tls"
            } else {
                "redis"
            };
            assert_eq!(*feature, want, "{url}");
            assert!(!e.to_string().contains("hunter2"), "{e}");
        }
        assert!(needs_tls("rediss://x") && needs_tls("Rediss://x"));
        assert!(!needs_tls("redis://x") && !needs_tls("redis+socket:///s"));
    }

    #[cfg(feature = "redis")]
    #[test]
    fn redis_settings_come_from_the_config() {
        use std::time::Duration;

        let mut cfg = Config::default();
        let o = redis_options(Role::Broker, "redis://:pw@localhost:6379/2", &cfg).expect("ok");
        assert!(!o.is_cluster());
        assert_eq!(o.describe(), "redis://localhost:6379/2");
        assert_eq!(o.default_queue, "machinery_tasks");
        assert_eq!(o.delayed_tasks_key, "delayed_tasks");
        assert_eq!(o.block_timeout, Duration::from_secs(1));
        assert_eq!(o.delayed_tasks_poll_period, Duration::from_millis(500));
        assert_eq!(o.connect_timeout, Duration::from_secs(15), "Go's default");
        assert_eq!(o.response_timeout, Duration::from_secs(15), "Go's default");
        assert_eq!(o.lease, Duration::from_secs(30));
        assert_eq!(o.results_expire_in, Duration::from_secs(3600));

        cfg.default_queue = "jobs".into();
        cfg.results_expire_in = 60;
        cfg.lease = Duration::from_secs(5);
        cfg.redis.delayed_tasks_key = "later".into();
        cfg.redis.normal_tasks_poll_period = Duration::from_millis(200);
        cfg.redis.delayed_tasks_poll_period = Duration::from_millis(100);
        cfg.redis.connect_timeout = Duration::from_secs(2);
        cfg.redis.read_timeout = Duration::from_secs(3);
        cfg.redis.write_timeout = Duration::from_secs(4);
        cfg.redis.cluster_enabled = true;
        let o = redis_options(Role::Broker, "redis://localhost:7000", &cfg).expect("ok");
        assert!(o.is_cluster(), "cluster_enabled");
        assert_eq!(o.default_queue, "jobs");
        assert_eq!(o.results_expire_in, Duration::from_secs(60));
        assert_eq!(o.lease, Duration::from_secs(5));
        assert_eq!(o.delayed_tasks_key, "later");
        assert_eq!(o.block_timeout, Duration::from_millis(200));
        assert_eq!(o.delayed_tasks_poll_period, Duration::from_millis(100));
        assert_eq!(o.connect_timeout, Duration::from_secs(2));
        assert_eq!(
            o.response_timeout,
            Duration::from_secs(4),
            "the larger of the two"
        );

        // Zero keeps the defaults, as Go does for its poll periods.
        let mut zero = Config::default();
        zero.redis.normal_tasks_poll_period = Duration::ZERO;
        zero.redis.delayed_tasks_poll_period = Duration::ZERO;
        zero.redis.delayed_tasks_key = String::new();
        let o = redis_options(Role::Broker, "redis://localhost", &zero).expect("ok");
        assert_eq!(o.block_timeout, Duration::from_secs(1));
        assert_eq!(o.delayed_tasks_poll_period, Duration::from_millis(500));
        assert_eq!(o.delayed_tasks_key, "delayed_tasks");

        // Go's multi-host form is a cluster; the socket form is not.
        let o = redis_options(Role::Lock, "redis://pw@h1:7000,h2:7001", &Config::default())
            .expect("cluster");
        assert!(o.is_cluster());
        assert_eq!(o.describe(), "redis://h1:7000,h2:7001 (cluster)");
        let o = redis_options(
            Role::Lock,
            "redis+socket://pw@/tmp/r.sock:/3",
            &Config::default(),
        )
        .expect("socket");
        assert_eq!(o.describe(), "redis+socket:///tmp/r.sock:/3");
        let o = redis_options(Role::Lock, "Redis://h:1/0", &Config::default()).expect("case");
        assert_eq!(o.describe(), "redis://h:1/0");
    }

    #[cfg(feature = "redis")]
    #[test]
    fn redis_master_name_means_sentinel() {
        let mut cfg = Config::default();
        cfg.redis.master_name = "mymaster".into();
        cfg.redis.sentinel_password = "sentinel-pw".into();
        // Several hosts are several sentinels (go-redis: a master name wins over the cluster
        // form), also with `cluster_enabled`.
        cfg.redis.cluster_enabled = true;
        let o =
            redis_options(Role::Broker, "redis://:pw@s1:26379,s2:26379/2", &cfg).expect("sentinel");
        assert!(o.is_sentinel() && !o.is_cluster());
        assert_eq!(o.sentinel_master(), Some("mymaster"));
        assert_eq!(
            o.describe(),
            "redis://s1:26379,s2:26379/2 (sentinel mymaster)"
        );
        assert!(!format!("{o:?}").contains("sentinel-pw"), "{o:?}");
        cfg.redis.master_name = " ".into();
        let o = redis_options(Role::Broker, "redis://:pw@s1:26379/2", &cfg).expect("plain");
        assert!(!o.is_sentinel());
    }

    #[cfg(feature = "redis")]
    #[test]
    fn unusable_redis_settings_are_errors_of_their_role() {
        // Half a client certificate.
        let mut cfg = Config::default();
        cfg.tls.cert_file = Some("client.pem".into());
        let e = redis_options(Role::ResultBackend, "redis://:pw@host:6380", &cfg)
            .expect_err("half a client certificate");
        assert!(matches!(e, Error::Config(_)), "{e:?}");
        assert!(e.to_string().contains("result backend"), "{e}");
        assert!(e.to_string().contains("tls.key_file"), "{e}");
        assert!(!e.to_string().contains("pw"), "{e}");
        let e = redis_options(
            Role::Broker,
            "redis://:pw@host:6379/notanumber",
            &Config::default(),
        )
        .expect_err("bad db");
        assert!(matches!(e, Error::Broker(_)), "{e:?}");
        assert!(e.to_string().contains("not a number"), "{e}");
        assert!(!e.to_string().contains("pw"), "{e}");
    }

    #[cfg(feature = "redis")]
    #[tokio::test]
    async fn an_unreachable_redis_is_an_error_of_its_role() {
        // A closed port on loopback: refused at once.
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
            l.local_addr().expect("addr").port()
        };
        let url = format!("redis://:hunter2@127.0.0.1:{port}/0");
        let e = connect(&config("memory", &url, "memory"))
            .await
            .expect_err("refused");
        assert!(matches!(e, Error::Backend(_)), "{e:?}");
        assert!(e.to_string().contains(&format!("127.0.0.1:{port}")), "{e}");
        assert!(!e.to_string().contains("hunter2"), "{e}");
    }

    #[cfg(feature = "redis")]
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn redis_round_trip_with_one_shared_connection() {
        use std::time::Duration;

        use machinist_testkit::redis_server::RedisServer;

        let Some(redis) = RedisServer::start() else {
            return;
        };
        let url = redis.url_db(3);
        let mut opened = Opened::default();
        let adapters = connect_with(&config(&url, &url, &url), &mut opened)
            .await
            .expect("redis");
        assert_eq!(opened.redis.len(), 1, "one URL, one connection");
        assert!(adapters.broker.describe().contains("redis"), "{adapters:?}");

        let cfg = Config {
            no_unix_signals: true,
            ..config(&url, &url, &url)
        };
        let server = server(cfg.clone()).await.expect("server");
        let uuid = add_then_chord(&server, Duration::from_secs(10)).await;

        // Another connect (another process, say) reads the stored state.
        let again = connect(&cfg).await.expect("reconnect");
        let state = again
            .backend
            .get_state(&uuid)
            .await
            .expect("read")
            .expect("stored");
        assert!(state.is_success(), "{state:?}");
        assert_eq!(
            redis.command(&["EXISTS", &uuid]).as_deref(),
            Some(":0\r\n"),
            "the state is in the URL's database (3), not in 0"
        );
        adapters.close().await;
        again.close().await;
    }

    #[cfg(feature = "redis")]
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn go_multi_host_form_is_a_cluster() {
        use std::time::Duration;

        use machinist_testkit::redis_server::RedisCluster;

        let Some(cluster) = RedisCluster::start(3) else {
            return;
        };
        let url = cluster.url();
        assert!(url.contains(','), "{url}");
        let cfg = Config {
            no_unix_signals: true,
            ..config(&url, &url, &url)
        };
        let server = server(cfg).await.expect("cluster");
        assert!(
            server.broker().describe().contains("(cluster)"),
            "{}",
            server.broker().describe()
        );
        add_round_trip(&server, (20, 22), Duration::from_secs(10)).await;
    }

    #[cfg(feature = "redis")]
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn redis_master_name_goes_through_the_sentinels() {
        use std::time::Duration;

        use machinist_testkit::redis_server::{RedisSentinel, SentinelSetup};

        let Some(deployment) = RedisSentinel::start(SentinelSetup {
            password: Some("master-pw".into()),
            sentinel_password: Some("sentinel-pw".into()),
            ..SentinelSetup::default()
        }) else {
            return;
        };
        let url = deployment.url();
        let mut cfg = Config {
            no_unix_signals: true,
            ..config(&url, &url, &url)
        };
        cfg.redis.master_name = deployment.master_name().into();
        cfg.redis.sentinel_password = "sentinel-pw".into();
        let server = server(cfg).await.expect("sentinel");
        assert!(
            server.broker().describe().contains("(sentinel mymaster)"),
            "{}",
            server.broker().describe()
        );
        let r = add_round_trip(&server, (20, 22), Duration::from_secs(10)).await;
        let master = deployment.master().expect("master");
        assert!(
            master
                .command(&["EXISTS", r.uuid()])
                .is_some_and(|reply| reply.starts_with(":1")),
            "the state is on the master the sentinel names"
        );
    }

    #[cfg(feature = "redis-tls")]
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn rediss_trusts_tls_ca_file() {
        use std::time::Duration;

        use machinist_testkit::redis_server::{RedisServer, TlsCerts};

        let Some(certs) = TlsCerts::generate() else {
            return;
        };
        let Some(redis) = RedisServer::start_tls(&certs, false) else {
            return;
        };
        let url = redis.url();
        let mut cfg = Config {
            no_unix_signals: true,
            ..config(&url, &url, &url)
        };
        let e = connect(&cfg)
            .await
            .expect_err("the system's roots do not know the test CA");
        assert!(e.to_string().contains("tls.ca_file"), "{e}");
        cfg.tls.ca_file = Some(certs.ca_cert.clone());
        let server = server(cfg).await.expect("rediss");
        add_round_trip(&server, (1, 2), Duration::from_secs(10)).await;
    }

    #[cfg(feature = "redis")]
    #[tokio::test]
    async fn different_redis_urls_are_different_connections() {
        use machinist_testkit::redis_server::RedisServer;

        let Some(redis) = RedisServer::start() else {
            return;
        };
        let Some(socket) = RedisServer::start_unix() else {
            return;
        };
        let mut opened = Opened::default();
        let a = connect_with(
            &config(&redis.url_db(0), &redis.url_db(1), &socket.url()),
            &mut opened,
        )
        .await
        .expect("redis");
        assert_eq!(opened.redis.len(), 3);
        let until = chrono::Utc::now() + chrono::Duration::seconds(5);
        assert!(
            a.lock
                .try_lock("facade-lock", until)
                .await
                .expect("lock over the socket")
        );
        assert!(
            socket
                .command(&["KEYS", "*facade-lock*"])
                .is_some_and(|keys| keys.contains("facade-lock")),
            "the lock lives on the socket server"
        );
        a.close().await;
    }

    /// A fresh SQLite file path in the temp directory, removed (with its WAL files) on drop.
    #[cfg(feature = "sqlite")]
    struct TempDb(std::path::PathBuf);

    #[cfg(feature = "sqlite")]
    impl TempDb {
        fn new(tag: &str) -> Self {
            use std::sync::atomic::{AtomicU32, Ordering};
            static SEQ: AtomicU32 = AtomicU32::new(0);
            let n = SEQ.fetch_add(1, Ordering::Relaxed);
            TempDb(std::env::temp_dir().join(format!(
                "machinist-facade-{tag}-{}-{n}.db",
                std::process::id()
            )))
        }
        fn url(&self) -> String {
            format!("sqlite://{}", self.0.display())
        }
    }

    #[cfg(feature = "sqlite")]
    impl Drop for TempDb {
        fn drop(&mut self) {
            for suffix in ["", "-wal", "-shm"] {
                let mut p = self.0.clone().into_os_string();
                p.push(suffix);
                let _ = std::fs::remove_file(p);
            }
        }
    }

    #[cfg(feature = "sqlite")]
    #[tokio::test]
    async fn one_sqlite_url_is_one_store() {
        let db = TempDb::new("share");
        let other = TempDb::new("share-lock");
        let mut opened = Opened::default();
        let a = connect_with(&config(&db.url(), &db.url(), &db.url()), &mut opened)
            .await
            .expect("sqlite");
        assert_eq!(opened.sqlite.len(), 1);
        assert!(a.broker.describe().contains("sqlite"), "{a:?}");

        let mut opened = Opened::default();
        connect_with(&config(&db.url(), &db.url(), &other.url()), &mut opened)
            .await
            .expect("sqlite");
        assert_eq!(opened.sqlite.len(), 2);

        let mut opened = Opened::default();
        connect_with(
            &config("sqlite::memory:", "sqlite::memory:", "memory"),
            &mut opened,
        )
        .await
        .expect("sqlite memory");
        assert_eq!(opened.sqlite.len(), 1);
    }

    #[cfg(feature = "sqlite")]
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sqlite_round_trip_and_durable_state() {
        use std::time::Duration;

        let db = TempDb::new("round-trip");
        let cfg = Config {
            no_unix_signals: true,
            ..config(&db.url(), &db.url(), &db.url())
        };
        let server = server(cfg.clone()).await.expect("server");
        let r = add_round_trip(&server, (1, 2), Duration::from_secs(10)).await;
        let uuid = r.uuid().to_owned();
        server.broker().close().await;
        server.backend().close().await;
        drop(server);

        let again = connect(&cfg).await.expect("reopen");
        let state = again
            .backend
            .get_state(&uuid)
            .await
            .expect("read")
            .expect("stored");
        assert!(state.is_success(), "{state:?}");
        assert_eq!(state.task_name, "add");
    }

    #[cfg(feature = "sqlite")]
    #[tokio::test]
    async fn a_file_that_is_not_a_machinist_database_is_refused() {
        let db = TempDb::new("garbage");
        std::fs::write(&db.0, b"this is not an SQLite database, not even close").expect("write");
        let e = connect(&config(&db.url(), "memory", "memory"))
            .await
            .expect_err("refused");
        assert!(matches!(e, Error::Broker(_)), "{e:?}");
        assert!(e.to_string().contains(&db.0.display().to_string()), "{e}");
        let e = connect(&config("memory", &db.url(), "memory"))
            .await
            .expect_err("refused");
        assert!(matches!(e, Error::Backend(_)), "{e:?}");
        assert_eq!(
            std::fs::read(&db.0).expect("read"),
            b"this is not an SQLite database, not even close"
        );
    }
}
