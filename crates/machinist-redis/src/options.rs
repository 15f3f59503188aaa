//! [`RedisOptions`]: where Redis is and how machinist uses it, parsed from Go Machinery's URL
//! forms (see the type's docs).

use std::path::PathBuf;
use std::time::Duration;

use machinist_core::Config;
use redis::{ConnectionAddr, ConnectionInfo, IntoConnectionInfo, RedisConnectionInfo};

use crate::error::RedisError;

/// Go's `delayed_tasks_key` default.
pub const DEFAULT_DELAYED_TASKS_KEY: &str = "delayed_tasks";

/// Where the server(s) are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Endpoint {
    /// TCP host and port.
    Tcp {
        /// Host name or address (IPv6 without brackets).
        host: String,
        /// Port.
        port: u16,
    },
    /// A unix socket path.
    Unix(PathBuf),
}

/// Credentials and database, as parsed.
#[derive(Clone, Default, PartialEq, Eq)]
pub(crate) struct Auth {
    pub(crate) username: Option<String>,
    pub(crate) password: Option<String>,
    pub(crate) db: i64,
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Auth")
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("db", &self.db)
            .finish()
    }
}

/// The parsed location: one or more endpoints, TLS, credentials.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Target {
    pub(crate) endpoints: Vec<Endpoint>,
    pub(crate) tls: bool,
    pub(crate) auth: Auth,
}

/// Redis Sentinel: the URL's hosts are sentinels that name the master of `master_name`.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct SentinelSettings {
    pub(crate) master_name: String,
    pub(crate) password: Option<String>,
}

impl std::fmt::Debug for SentinelSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SentinelSettings")
            .field("master_name", &self.master_name)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

/// TLS material for `rediss://` (files are read when a connection is opened).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct TlsFiles {
    pub(crate) ca_file: Option<PathBuf>,
    pub(crate) cert_file: Option<PathBuf>,
    pub(crate) key_file: Option<PathBuf>,
    pub(crate) insecure: bool,
}

/// Settings of the Redis adapters. Build with [`RedisOptions::from_url`], then
/// [`RedisOptions::with_config`] and the `with_*` methods.
///
/// | URL | meaning |
/// |---|---|
/// | `redis://host:port/db` | one server over TCP (port 6379 and db 0 when left out) |
/// | `redis://password@host:port/db` | with a password: a userinfo without `:` is the password, as in Go |
/// | `redis://user:password@host:port/db` | with an ACL user |
/// | `rediss://…` | the same over TLS (crate feature `tls`) |
/// | `redis+socket://[password@]/path/to.sock:/db` | a unix socket (Go's form, rewritten for redis-rs) |
/// | `redis://[password@]h1:p1,h2:p2,h3:p3/db` | a Redis Cluster, seeded with these nodes |
///
/// A single host becomes a cluster too with [`RedisOptions::with_cluster`] (Go's
/// `cluster_enabled`). Passwords in TCP URLs are percent-decoded (Go parses them with
/// `net/url`); in the socket form they are taken verbatim, as Go does.
///
/// **Sentinel** (Go's `master_name`): with [`RedisOptions::with_sentinel`] the URL's hosts
/// (`redis://[password@]s1:26379,s2:26379/db`) are the sentinels, asked for the address of the
/// named master; the URL's password and db are the master's, the sentinels' own password is
/// [`RedisOptions::with_sentinel_password`]. As in go-redis, a master name wins over the
/// cluster form: several hosts then mean several sentinels.
///
/// **TLS** (`rediss://`): the server is verified against the system's root certificates, or
/// against [`RedisOptions::with_tls_ca_file`] instead; a client certificate is sent with
/// [`RedisOptions::with_tls_client_cert`]. With Sentinel, the sentinels are reached over TLS
/// too, with the same material.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct RedisOptions {
    pub(crate) target: Target,
    pub(crate) sentinel: Option<SentinelSettings>,
    pub(crate) tls_files: TlsFiles,
    /// Use the cluster client even with one seed node (Go's `cluster_enabled`). Several hosts in
    /// the URL always mean a cluster.
    pub cluster: bool,
    /// The sorted set holding tasks with a future ETA (Go's `delayed_tasks_key`, default
    /// `delayed_tasks`). Shared with Go producers and workers using the same key.
    pub delayed_tasks_key: String,
    /// The longest the delayed-task mover sleeps between two looks at the sorted set (Go's
    /// `delayed_tasks_poll_period`, default 500 ms). It sleeps less when a task is due sooner.
    pub delayed_tasks_poll_period: Duration,
    /// How long an idle consumer blocks on its queue per round trip (Go's
    /// `normal_tasks_poll_period`, default 1 s).
    pub block_timeout: Duration,
    /// With several queues, how long an idle consumer blocks on the first one before looking at
    /// all of them again (default 250 ms): the longest a message on another queue waits for an
    /// idle consumer.
    pub multi_queue_block: Duration,
    /// How long a consumer's lease lives without renewal (default 30 s). Each consumer renews it
    /// every third of that; once it lapses, any other consumer returns its unacknowledged
    /// messages to their queues.
    pub lease: Duration,
    /// How many messages one fetch moves at most (default 100), and how many due delayed tasks
    /// one round of the mover moves.
    pub batch: usize,
    /// How many dead letters are kept per queue, newest last (default 10 000).
    pub dead_letter_max: usize,
    /// Where tasks with no routing key go (the mover's fallback; default `machinery_tasks`).
    pub default_queue: String,
    /// How long states and group metadata live after each write (Go's `results_expire_in`,
    /// default 3600 s).
    pub results_expire_in: Duration,
    /// The prefix of the keys machinist adds (processing lists, dead letters, consumer leases;
    /// default `machinist`). Must not contain `{` or `}`.
    pub key_prefix: String,
    /// Time allowed to open a connection (default 5 s).
    pub connect_timeout: Duration,
    /// Time allowed for a reply to an ordinary command (default 10 s; Go's `read_timeout` is
    /// 15 s). Blocking pops use their own connection with a longer timeout.
    pub response_timeout: Duration,
    /// Announce every final state write (SUCCESS, FAILURE) on a pub/sub channel,
    /// `<key_prefix>:state:<task uuid>`, and wake result waiters by subscribing to it (default
    /// true; standalone and Sentinel, not in a cluster). Off: no `PUBLISH`, waiters poll.
    pub notify_states: bool,
    /// The longest a result waiter sleeps between two reads of a state when no notice comes
    /// (default 1 s): states written by Go workers announce nothing, so they are seen by this
    /// poll (or at once, when the server has keyspace notifications on: see the crate docs).
    pub state_poll: Duration,
}

impl RedisOptions {
    /// Parses one of Go Machinery's Redis URL forms (see the module docs).
    pub fn from_url(url: &str) -> Result<Self, RedisError> {
        let target = parse_url(url)?;
        let cluster = target.endpoints.len() > 1;
        Ok(RedisOptions {
            target,
            sentinel: None,
            tls_files: TlsFiles::default(),
            cluster,
            delayed_tasks_key: DEFAULT_DELAYED_TASKS_KEY.to_owned(),
            delayed_tasks_poll_period: Duration::from_millis(500),
            block_timeout: Duration::from_secs(1),
            multi_queue_block: Duration::from_millis(250),
            lease: Duration::from_secs(30),
            batch: 100,
            dead_letter_max: 10_000,
            default_queue: "machinery_tasks".to_owned(),
            results_expire_in: Duration::from_secs(3600),
            key_prefix: "machinist".to_owned(),
            connect_timeout: Duration::from_secs(5),
            response_timeout: Duration::from_secs(10),
            notify_states: true,
            state_poll: Duration::from_secs(1),
        })
    }

    /// Takes `default_queue` and `results_expire_in` from a machinist [`Config`].
    pub fn with_config(mut self, config: &Config) -> Self {
        self.default_queue.clone_from(&config.default_queue);
        self.results_expire_in = config.results_ttl();
        self
    }

    /// Sets [`RedisOptions::cluster`].
    pub fn with_cluster(mut self, cluster: bool) -> Self {
        self.cluster = cluster || self.target.endpoints.len() > 1;
        self
    }

    /// Uses Redis Sentinel (Go's `master_name`): the URL's hosts are sentinels, asked for the
    /// master named `master_name`. An empty name turns Sentinel off.
    pub fn with_sentinel(mut self, master_name: impl Into<String>) -> Self {
        let master_name = master_name.into();
        if master_name.is_empty() {
            self.sentinel = None;
        } else {
            let password = self.sentinel.take().and_then(|s| s.password);
            self.sentinel = Some(SentinelSettings {
                master_name,
                password,
            });
        }
        self
    }

    /// The sentinels' own password (Go's `sentinel_password`; empty: none). Takes effect with
    /// [`RedisOptions::with_sentinel`], in either order.
    pub fn with_sentinel_password(mut self, password: impl Into<String>) -> Self {
        let password = Some(password.into()).filter(|p| !p.is_empty());
        match &mut self.sentinel {
            Some(s) => s.password = password,
            None => {
                self.sentinel = password.map(|password| SentinelSettings {
                    master_name: String::new(),
                    password: Some(password),
                });
            }
        }
        self
    }

    /// The master name when Sentinel is used.
    pub fn sentinel_master(&self) -> Option<&str> {
        self.sentinel
            .as_ref()
            .map(|s| s.master_name.as_str())
            .filter(|n| !n.is_empty())
    }

    /// `rediss://`: trust the CA certificates of this PEM file instead of the system's roots
    /// (`tls.ca_file`).
    pub fn with_tls_ca_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.tls_files.ca_file = Some(path.into());
        self
    }

    /// `rediss://`: present this PEM client certificate and private key (`tls.cert_file`,
    /// `tls.key_file`), for servers started with `tls-auth-clients yes`.
    pub fn with_tls_client_cert(
        mut self,
        cert_file: impl Into<PathBuf>,
        key_file: impl Into<PathBuf>,
    ) -> Self {
        self.tls_files.cert_file = Some(cert_file.into());
        self.tls_files.key_file = Some(key_file.into());
        self
    }

    /// `rediss://`: accept any server certificate (`tls.insecure_skip_verify`; tests only).
    pub fn with_tls_insecure_skip_verify(mut self, insecure: bool) -> Self {
        self.tls_files.insecure = insecure;
        self
    }

    /// Sets [`RedisOptions::notify_states`].
    pub fn with_notify_states(mut self, notify: bool) -> Self {
        self.notify_states = notify;
        self
    }

    /// Sets [`RedisOptions::state_poll`].
    pub fn with_state_poll(mut self, poll: Duration) -> Self {
        self.state_poll = poll;
        self
    }
    /// Sets [`RedisOptions::delayed_tasks_key`].
    pub fn with_delayed_tasks_key(mut self, key: impl Into<String>) -> Self {
        self.delayed_tasks_key = key.into();
        self
    }
    /// Sets [`RedisOptions::delayed_tasks_poll_period`].
    pub fn with_delayed_tasks_poll_period(mut self, period: Duration) -> Self {
        self.delayed_tasks_poll_period = period;
        self
    }
    /// Sets [`RedisOptions::block_timeout`].
    pub fn with_block_timeout(mut self, timeout: Duration) -> Self {
        self.block_timeout = timeout;
        self
    }
    /// Sets [`RedisOptions::lease`].
    pub fn with_lease(mut self, lease: Duration) -> Self {
        self.lease = lease;
        self
    }
    /// Sets [`RedisOptions::batch`].
    pub fn with_batch(mut self, batch: usize) -> Self {
        self.batch = batch;
        self
    }
    /// Sets [`RedisOptions::default_queue`].
    pub fn with_default_queue(mut self, queue: impl Into<String>) -> Self {
        self.default_queue = queue.into();
        self
    }
    /// Sets [`RedisOptions::results_expire_in`].
    pub fn with_results_expire_in(mut self, expire_in: Duration) -> Self {
        self.results_expire_in = expire_in;
        self
    }
    /// Sets [`RedisOptions::key_prefix`].
    pub fn with_key_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.key_prefix = prefix.into();
        self
    }

    /// True when the cluster client is used (never with Sentinel).
    pub fn is_cluster(&self) -> bool {
        (self.cluster || self.target.endpoints.len() > 1) && self.sentinel_master().is_none()
    }

    /// True when the master is found through Sentinel.
    pub fn is_sentinel(&self) -> bool {
        self.sentinel_master().is_some()
    }

    /// The location with no credentials, for logs: `redis://host:port/db`,
    /// `redis+socket:///path.sock:/db`, `redis://h1:p1,h2:p2 (cluster)`,
    /// `redis://s1:p1,s2:p2/db (sentinel mymaster)`.
    pub fn describe(&self) -> String {
        let scheme = if self.target.tls { "rediss" } else { "redis" };
        let db = self.target.auth.db;
        match self.target.endpoints.as_slice() {
            [Endpoint::Unix(path)] => format!("redis+socket://{}:/{db}", path.display()),
            endpoints => {
                let hosts: Vec<String> = endpoints
                    .iter()
                    .map(|e| match e {
                        Endpoint::Tcp { host, port } if host.contains(':') => {
                            format!("[{host}]:{port}")
                        }
                        Endpoint::Tcp { host, port } => format!("{host}:{port}"),
                        Endpoint::Unix(path) => path.display().to_string(),
                    })
                    .collect();
                if let Some(master) = self.sentinel_master() {
                    format!("{scheme}://{}/{db} (sentinel {master})", hosts.join(","))
                } else if self.is_cluster() {
                    format!("{scheme}://{} (cluster)", hosts.join(","))
                } else {
                    format!("{scheme}://{}/{db}", hosts.join(","))
                }
            }
        }
    }

    /// Checks the settings that cannot be checked while parsing.
    pub(crate) fn validate(&self) -> Result<(), RedisError> {
        if self.key_prefix.contains(['{', '}']) {
            return Err(RedisError::config(format!(
                "key prefix {:?} must not contain braces",
                self.key_prefix
            )));
        }
        if self.is_cluster()
            && self
                .target
                .endpoints
                .iter()
                .any(|e| matches!(e, Endpoint::Unix(_)))
        {
            return Err(RedisError::config(
                "a cluster cannot be reached over a unix socket",
            ));
        }
        if let Some(s) = &self.sentinel {
            if s.master_name.is_empty() {
                return Err(RedisError::config(
                    "a sentinel password is set but no master name (`redis.master_name`)",
                ));
            }
            if self
                .target
                .endpoints
                .iter()
                .any(|e| matches!(e, Endpoint::Unix(_)))
            {
                return Err(RedisError::config(
                    "sentinels are reached over TCP: give their host:port list in the URL",
                ));
            }
        }
        if self.tls_files.cert_file.is_some() != self.tls_files.key_file.is_some() {
            return Err(RedisError::config(
                "a TLS client certificate needs both a certificate file and a key file",
            ));
        }
        if self.lease < Duration::from_millis(300) {
            return Err(RedisError::config("the lease must be at least 300 ms"));
        }
        if self.batch == 0 {
            return Err(RedisError::config("batch must be at least 1"));
        }
        Ok(())
    }

    /// The credentials and db of the data nodes (no db in a cluster).
    pub(crate) fn redis_settings(&self) -> RedisConnectionInfo {
        let auth = &self.target.auth;
        let mut settings = RedisConnectionInfo::default();
        if let Some(user) = &auth.username {
            settings = settings.set_username(user);
        }
        if let Some(password) = &auth.password {
            settings = settings.set_password(password);
        }
        if !self.is_cluster() {
            settings = settings.set_db(auth.db);
        }
        settings
    }

    /// redis-rs connection infos, one per endpoint: the data nodes, or the sentinels (with
    /// the sentinels' password) when Sentinel is used.
    pub(crate) fn connection_infos(&self) -> Result<Vec<ConnectionInfo>, RedisError> {
        let settings = match &self.sentinel {
            Some(s) => {
                let mut settings = RedisConnectionInfo::default();
                if let Some(password) = &s.password {
                    settings = settings.set_password(password);
                }
                settings
            }
            None => self.redis_settings(),
        };
        self.target
            .endpoints
            .iter()
            .map(|e| {
                let addr = match e {
                    Endpoint::Unix(path) => ConnectionAddr::Unix(path.clone()),
                    Endpoint::Tcp { host, port } if self.target.tls => {
                        tls_addr(host, *port, &self.tls_files)?
                    }
                    Endpoint::Tcp { host, port } => ConnectionAddr::Tcp(host.clone(), *port),
                };
                let info = addr
                    .into_connection_info()
                    .map_err(|e| RedisError::config(e.to_string()))?;
                Ok(info.set_redis_settings(settings.clone()))
            })
            .collect()
    }

    /// The CA and client certificate files, read (`None` when neither is set).
    #[cfg(feature = "tls")]
    pub(crate) fn tls_certificates(&self) -> Result<Option<redis::TlsCertificates>, RedisError> {
        read_tls_files(&self.tls_files)
    }
}

/// The CA and client certificate files, read (`None` when neither is set).
#[cfg(feature = "tls")]
fn read_tls_files(files: &TlsFiles) -> Result<Option<redis::TlsCertificates>, RedisError> {
    if files.ca_file.is_none() && files.cert_file.is_none() {
        return Ok(None);
    }
    let read = |what: &str, path: &PathBuf| {
        std::fs::read(path).map_err(|e| {
            RedisError::config(format!("reading the TLS {what} {}: {e}", path.display()))
        })
    };
    let root_cert = files
        .ca_file
        .as_ref()
        .map(|p| read("CA file", p))
        .transpose()?;
    let client_tls = match (&files.cert_file, &files.key_file) {
        (Some(cert), Some(key)) => Some(redis::ClientTlsConfig {
            client_cert: read("client certificate", cert)?,
            client_key: read("client key", key)?,
        }),
        _ => None,
    };
    Ok(Some(redis::TlsCertificates {
        client_tls,
        root_cert,
    }))
}

/// A TLS address carrying the CA and client certificate of `files`.
#[cfg(feature = "tls")]
fn tls_addr(host: &str, port: u16, files: &TlsFiles) -> Result<ConnectionAddr, RedisError> {
    crate::conn::install_crypto_provider();
    let addr = ConnectionAddr::TcpTls {
        host: host.to_owned(),
        port,
        insecure: files.insecure,
        tls_params: None,
    };
    let certificates = read_tls_files(files)?;
    let Some(certificates) = certificates else {
        return Ok(addr);
    };
    // redis-rs builds its TLS parameters (parsing the PEM) only through a client.
    let info = addr
        .into_connection_info()
        .map_err(|e| RedisError::config(e.to_string()))?;
    let client = redis::Client::build_with_tls(info, certificates)
        .map_err(|e| RedisError::config(format!("TLS settings: {e}")))?;
    Ok(client.get_connection_info().addr().clone())
}

#[cfg(not(feature = "tls"))]
fn tls_addr(_host: &str, _port: u16, _files: &TlsFiles) -> Result<ConnectionAddr, RedisError> {
    Err(RedisError::config(
        "rediss:// needs TLS: build machinist-redis with the `tls` feature",
    ))
}

/// Parses a URL into a [`Target`].
pub(crate) fn parse_url(url: &str) -> Result<Target, RedisError> {
    let bad = |why: &str| RedisError::config(format!("invalid Redis URL {}: {why}", redact(url)));
    if let Some(rest) = url.strip_prefix("redis+socket://") {
        return parse_socket(rest).map_err(|why| bad(&why));
    }
    let (tls, rest) = if let Some(rest) = url.strip_prefix("redis://") {
        (false, rest)
    } else if let Some(rest) = url.strip_prefix("rediss://") {
        if !cfg!(feature = "tls") {
            return Err(RedisError::config(
                "rediss:// needs TLS: build machinist-redis with the `tls` feature",
            ));
        }
        (true, rest)
    } else {
        return Err(bad(
            "expected redis://, rediss:// or redis+socket:// (Go Machinery's forms)",
        ));
    };
    // Userinfo ends at the last '@' (Go's lock does the same; passwords may contain '@').
    let (userinfo, hosts_and_path) = match rest.rfind('@') {
        Some(i) => (Some(&rest[..i]), &rest[i + 1..]),
        None => (None, rest),
    };
    let (hosts, path) = match hosts_and_path.find(['/', '?', '#']) {
        Some(i) => (&hosts_and_path[..i], &hosts_and_path[i..]),
        None => (hosts_and_path, ""),
    };
    let mut auth = Auth::default();
    if let Some(userinfo) = userinfo {
        match userinfo.split_once(':') {
            Some((user, password)) => {
                let user = percent_decode(user).map_err(|e| bad(&e))?;
                if !user.is_empty() {
                    auth.username = Some(user);
                }
                auth.password = Some(percent_decode(password).map_err(|e| bad(&e))?);
            }
            // Go: a userinfo without ':' is the password.
            None => auth.password = Some(percent_decode(userinfo).map_err(|e| bad(&e))?),
        }
        if auth.password.as_deref() == Some("") {
            auth.password = None;
        }
    }
    auth.db = parse_db(path).map_err(|e| bad(&e))?;
    let endpoints = hosts
        .split(',')
        .map(parse_host)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad(&e))?;
    Ok(Target {
        endpoints,
        tls,
        auth,
    })
}

/// `[password@]/path/to.sock[:/db]` (Go's `ParseRedisSocketURL`; a `user:password` userinfo is
/// also accepted).
fn parse_socket(rest: &str) -> Result<Target, String> {
    let mut auth = Auth::default();
    let remainder = match rest.split_once('@') {
        Some((userinfo, remainder)) => {
            match userinfo.split_once(':') {
                Some((user, password)) => {
                    if !user.is_empty() {
                        auth.username = Some(user.to_owned());
                    }
                    auth.password = Some(password.to_owned());
                }
                None => auth.password = Some(userinfo.to_owned()),
            }
            if auth.password.as_deref() == Some("") {
                auth.password = None;
            }
            remainder
        }
        None => rest,
    };
    let (path, db) = match remainder.split_once(':') {
        Some((path, db)) => (path, db),
        None => (remainder, ""),
    };
    if path.is_empty() {
        return Err("no socket path (expected redis+socket://[password@]/path/to.sock:/db)".into());
    }
    auth.db = parse_db(db)?;
    Ok(Target {
        endpoints: vec![Endpoint::Unix(PathBuf::from(path))],
        tls: false,
        auth,
    })
}

/// The database number from a path such as `/3` (empty or `/` is 0).
fn parse_db(path: &str) -> Result<i64, String> {
    let path = path.split(['?', '#']).next().unwrap_or("");
    let db = path.trim_start_matches('/');
    if db.is_empty() {
        return Ok(0);
    }
    match db.parse::<i64>() {
        Ok(n) if n >= 0 => Ok(n),
        _ => Err(format!("database {db:?} is not a number")),
    }
}

/// `host[:port]` or `[v6]:port`; port 6379 when missing.
fn parse_host(s: &str) -> Result<Endpoint, String> {
    if s.is_empty() {
        return Err("empty host".into());
    }
    let (host, port) = if let Some(v6) = s.strip_prefix('[') {
        let (host, after) = v6
            .split_once(']')
            .ok_or_else(|| format!("unclosed '[' in {s:?}"))?;
        let port = match after.strip_prefix(':') {
            Some(p) => Some(p),
            None if after.is_empty() => None,
            None => return Err(format!("unexpected {after:?} after {host:?}")),
        };
        (host, port)
    } else {
        match s.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (s, None),
        }
    };
    if host.is_empty() {
        return Err(format!("empty host in {s:?}"));
    }
    let port = match port {
        Some(p) => p
            .parse::<u16>()
            .map_err(|_| format!("port {p:?} is not a number"))?,
        None => 6379,
    };
    Ok(Endpoint::Tcp {
        host: host.to_owned(),
        port,
    })
}

/// Decodes `%XX` escapes.
fn percent_decode(s: &str) -> Result<String, String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| "bad percent escape in userinfo".to_owned())?;
            out.push(hex);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| "userinfo is not UTF-8 once decoded".to_owned())
}

/// The URL with any userinfo replaced, for error messages.
pub(crate) fn redact(url: &str) -> String {
    let Some(scheme_end) = url.find("://") else {
        return "<unparsable URL>".to_owned();
    };
    let rest = &url[scheme_end + 3..];
    match rest.rfind('@') {
        Some(i) => format!("{}://<redacted>@{}", &url[..scheme_end], &rest[i + 1..]),
        None => url.to_owned(),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn tcp(host: &str, port: u16) -> Endpoint {
        Endpoint::Tcp {
            host: host.into(),
            port,
        }
    }

    #[test]
    fn go_tcp_forms() {
        let t = parse_url("redis://localhost:6380/3").unwrap();
        assert_eq!(t.endpoints, [tcp("localhost", 6380)]);
        assert_eq!(t.auth.db, 3);
        assert_eq!(t.auth.password, None);

        // A userinfo without ':' is the password (Go).
        let t = parse_url("redis://s3cret@h:1/0").unwrap();
        assert_eq!(t.auth.password.as_deref(), Some("s3cret"));
        assert_eq!(t.auth.username, None);

        let t = parse_url("redis://alice:p%40ss@h/").unwrap();
        assert_eq!(t.auth.username.as_deref(), Some("alice"));
        assert_eq!(t.auth.password.as_deref(), Some("p@ss"));
        assert_eq!(t.endpoints, [tcp("h", 6379)]);
        assert_eq!(t.auth.db, 0);

        let t = parse_url("redis://:pw@h:7").unwrap();
        assert_eq!(
            (t.auth.username, t.auth.password.as_deref()),
            (None, Some("pw"))
        );

        let t = parse_url("redis://[::1]:6390/2").unwrap();
        assert_eq!(t.endpoints, [tcp("::1", 6390)]);
        assert_eq!(t.auth.db, 2);

        assert!(parse_url("redis://h:notaport").is_err());
        assert!(parse_url("redis://h/x").is_err());
        assert!(parse_url("http://h").is_err());
        assert!(parse_url("redis://").is_err());
    }

    #[test]
    fn go_socket_form() {
        let t = parse_url("redis+socket:///tmp/r.sock:/4").unwrap();
        assert_eq!(t.endpoints, [Endpoint::Unix("/tmp/r.sock".into())]);
        assert_eq!(t.auth.db, 4);
        let t = parse_url("redis+socket://pw@/var/run/redis.sock").unwrap();
        assert_eq!(t.auth.password.as_deref(), Some("pw"));
        assert_eq!(t.auth.db, 0);
        let t = parse_url("redis+socket://u:pw@/s.sock:/1").unwrap();
        assert_eq!(t.auth.username.as_deref(), Some("u"));
        assert_eq!(t.auth.password.as_deref(), Some("pw"));
        assert!(parse_url("redis+socket://pw@").is_err());
    }

    #[test]
    fn multi_host_is_cluster() {
        let o = RedisOptions::from_url("redis://pw@h1:7000,h2:7001,h3:7002/0").unwrap();
        assert!(o.is_cluster());
        assert_eq!(
            o.target.endpoints,
            [tcp("h1", 7000), tcp("h2", 7001), tcp("h3", 7002)]
        );
        assert_eq!(o.target.auth.password.as_deref(), Some("pw"));
        assert_eq!(o.describe(), "redis://h1:7000,h2:7001,h3:7002 (cluster)");
        let single = RedisOptions::from_url("redis://h1:7000").unwrap();
        assert!(!single.is_cluster());
        assert!(single.with_cluster(true).is_cluster());
    }

    #[test]
    fn tls_needs_the_feature() {
        let r = RedisOptions::from_url("rediss://h:6380");
        if cfg!(feature = "tls") {
            assert!(r.unwrap().target.tls);
        } else {
            let e = r.unwrap_err().to_string();
            assert!(e.contains("tls"), "{e}");
        }
    }

    #[test]
    fn describe_and_redact_hide_credentials() {
        let o = RedisOptions::from_url("redis://user:secret@h:1/2").unwrap();
        assert_eq!(o.describe(), "redis://h:1/2");
        assert!(!format!("{o:?}").contains("secret"));
        let e = parse_url("redis://user:secret@h:x")
            .unwrap_err()
            .to_string();
        assert!(!e.contains("secret"), "{e}");
        let o = RedisOptions::from_url("redis+socket://pw@/tmp/s.sock:/1").unwrap();
        assert_eq!(o.describe(), "redis+socket:///tmp/s.sock:/1");
    }

    #[test]
    fn validation() {
        let o = RedisOptions::from_url("redis://h").unwrap();
        assert!(o.clone().with_key_prefix("a{b").validate().is_err());
        assert!(
            o.clone()
                .with_lease(Duration::from_millis(10))
                .validate()
                .is_err()
        );
        assert!(o.validate().is_ok());
    }
}
