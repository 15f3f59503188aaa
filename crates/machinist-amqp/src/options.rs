//! [`AmqpOptions`]: where RabbitMQ is and how machinist declares and uses it, from Go
//! Machinery's URL list and `amqp:` settings (see the type's docs); and the conversions from
//! JSON (config arguments, task headers) to AMQP field tables.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use lapin::types::{AMQPValue, FieldArray, FieldTable, LongString, ShortString};
use lapin::uri::AMQPUri;
use machinist_core::Config;
use serde_json::Value;

use crate::error::AmqpError;

/// RabbitMQ's default `max_message_size` (128 MiB since 3.8).
pub const RABBITMQ_MAX_MESSAGE_SIZE: usize = 128 * 1024 * 1024;

/// One parsed broker URL.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct AmqpUrl {
    pub(crate) uri: AMQPUri,
    /// `scheme://host:port/vhost`, no credentials.
    pub(crate) display: String,
}

impl std::fmt::Debug for AmqpUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.display)
    }
}

/// Settings of the AMQP broker and result backend. Build with [`AmqpOptions::from_url`] (or
/// [`AmqpOptions::from_urls`] for Go's list of brokers), then [`AmqpOptions::with_config`] and
/// the `with_*` methods; or at once with [`AmqpOptions::broker_from_config`] /
/// [`AmqpOptions::backend_from_config`].
///
/// | URL | meaning |
/// |---|---|
/// | `amqp://user:password@host:5672/` | vhost `/` (as Go: an empty path or `/` is the default vhost) |
/// | `amqp://user:password@host:5672/%2f` | vhost `/`, spelt out |
/// | `amqp://user:password@host:5672/jobs` | vhost `jobs` |
/// | `amqps://…` | TLS (crate feature `tls`), port 5671 by default |
/// | `amqp://h1:5672/,amqp://h2:5672/` | several brokers split by `multiple_broker_separator` (here `,`), tried in order |
///
/// Query parameters `heartbeat`, `connection_timeout` (ms), `frame_max`, `channel_max` and
/// `auth_mechanism` are honoured as lapin reads them. Credentials are percent-decoded.
/// Without `frame_max`, machinist asks for frames of at most [`DEFAULT_FRAME_MAX`] bytes
/// rather than RabbitMQ's 128 KiB: lapin gives every connection a read and a write buffer of
/// 32 frames, filled in at once (8 MiB a connection at 128 KiB, 1 MiB at 16 KiB); larger
/// messages simply travel as several frames.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct AmqpOptions {
    pub(crate) urls: Vec<AmqpUrl>,
    /// The exchange tasks are published to (Go's `exchange`, default `machinery_exchange`).
    /// Empty: the default exchange, no exchange declared and no bindings made.
    pub exchange: String,
    /// Its type: `direct`, `fanout`, `topic`, `headers` or a plugin's (Go's `exchange_type`,
    /// default `direct`). Declared durable, not auto-deleted, not internal, no arguments.
    pub exchange_type: String,
    /// Arguments of every task queue's `queue.declare` (Go's `queue_declare_args`), e.g.
    /// `x-max-priority`. JSON integers that fit go out as 32-bit AMQP ints (as Go's `int`),
    /// others as 64-bit; floats as doubles; strings as long strings.
    pub queue_declare_args: BTreeMap<String, Value>,
    /// Arguments of every task queue's `queue.bind` (Go's `queue_binding_args`).
    pub queue_binding_args: BTreeMap<String, Value>,
    /// The binding key of consumed queues and the routing key of tasks without one on a
    /// `direct` exchange (Go's `binding_key`, default `machinery_task`).
    pub binding_key: String,
    /// `basic.qos` prefetch when the worker does not give one (Go's `prefetch_count`,
    /// default 3). A worker passes its concurrency, which wins.
    pub prefetch_count: u16,
    /// Declare delay queues auto-delete (Go's `auto_delete`).
    pub auto_delete: bool,
    /// The one queue delayed tasks wait in with a per-message expiration (Go's
    /// `delayed_queue`); empty: one `delay.<ms>.<exchange>.<routing key>` queue per delay.
    pub delayed_queue: String,
    /// Where tasks without a routing key go on non-direct exchanges, and the queue a worker
    /// consumes by default (`default_queue`, default `machinery_tasks`).
    pub default_queue: String,
    /// How long result queues live unused and how long each state message lives
    /// (`results_expire_in`, default 3600 s; sent in milliseconds as 32-bit ints).
    pub results_expire_in: Duration,
    /// The `connection_name` shown by `rabbitmqctl list_connections user_provided_name` and
    /// the management UI; each connection adds its role (`publisher`, `consumer`, `backend`).
    pub connection_name: String,
    /// Time allowed to open one connection, per URL tried (default 10 s).
    pub connect_timeout: Duration,
    /// How long an operation keeps retrying through an outage (RabbitMQ restarting, the
    /// connection dropped) before it fails (default 30 s).
    pub retry_for: Duration,
    /// The longest one operation (a publish and its confirm, a declaration, a read, an ack)
    /// may take before it counts as lost to an outage and is retried or given up (default
    /// 30 s). Guards against a connection that died without telling.
    pub operation_timeout: Duration,
    /// The largest body published; larger ones fail before anything is sent (default
    /// 128 MiB, RabbitMQ's own default `max_message_size`).
    pub max_message_size: usize,
    /// Appended to a queue's name to name its dead-letter queue (default `.dead_letters`).
    pub dead_letter_suffix: String,
    /// A PEM file of CA certificates `amqps://` trusts besides the system's (`tls.ca_file`).
    pub ca_file: Option<PathBuf>,
}

impl AmqpOptions {
    /// Parses one URL (see the type's docs).
    pub fn from_url(url: &str) -> Result<Self, AmqpError> {
        Self::from_urls(url, "")
    }

    /// Parses Go's broker string: several URLs split by `separator` (none when empty), tried
    /// in order at every connection.
    pub fn from_urls(urls: &str, separator: &str) -> Result<Self, AmqpError> {
        let parts: Vec<&str> = if separator.is_empty() {
            vec![urls]
        } else {
            urls.split(separator).collect()
        };
        let urls = parts
            .into_iter()
            .map(str::trim)
            .filter(|u| !u.is_empty())
            .map(parse_url)
            .collect::<Result<Vec<_>, _>>()?;
        if urls.is_empty() {
            return Err(AmqpError::config("no AMQP URL given"));
        }
        let amqp = machinist_core::config::AmqpConfig::default();
        Ok(AmqpOptions {
            urls,
            exchange: amqp.exchange,
            exchange_type: amqp.exchange_type,
            queue_declare_args: amqp.queue_declare_args,
            queue_binding_args: amqp.queue_binding_args,
            binding_key: amqp.binding_key,
            prefetch_count: amqp.prefetch_count,
            auto_delete: amqp.auto_delete,
            delayed_queue: amqp.delayed_queue,
            default_queue: "machinery_tasks".to_owned(),
            results_expire_in: Duration::from_secs(3600),
            connection_name: "machinist".to_owned(),
            connect_timeout: Duration::from_secs(10),
            retry_for: Duration::from_secs(30),
            operation_timeout: Duration::from_secs(30),
            max_message_size: RABBITMQ_MAX_MESSAGE_SIZE,
            dead_letter_suffix: ".dead_letters".to_owned(),
            ca_file: None,
        })
    }

    /// Options for the broker of `config`: `broker` split by `multiple_broker_separator`, then
    /// [`AmqpOptions::with_config`].
    pub fn broker_from_config(config: &Config) -> Result<Self, AmqpError> {
        Ok(Self::from_urls(&config.broker, &config.multiple_broker_separator)?.with_config(config))
    }

    /// Options for the result backend of `config`: `result_backend` (one URL, as Go), then
    /// [`AmqpOptions::with_config`].
    pub fn backend_from_config(config: &Config) -> Result<Self, AmqpError> {
        Ok(Self::from_url(&config.result_backend)?.with_config(config))
    }

    /// Takes the `amqp:` section, `default_queue`, `results_expire_in` and `tls.ca_file` from a
    /// machinist [`Config`].
    pub fn with_config(mut self, config: &Config) -> Self {
        let amqp = &config.amqp;
        self.exchange.clone_from(&amqp.exchange);
        self.exchange_type.clone_from(&amqp.exchange_type);
        self.queue_declare_args.clone_from(&amqp.queue_declare_args);
        self.queue_binding_args.clone_from(&amqp.queue_binding_args);
        self.binding_key.clone_from(&amqp.binding_key);
        self.prefetch_count = amqp.prefetch_count;
        self.auto_delete = amqp.auto_delete;
        self.delayed_queue.clone_from(&amqp.delayed_queue);
        self.default_queue.clone_from(&config.default_queue);
        self.results_expire_in = config.results_ttl();
        self.ca_file.clone_from(&config.tls.ca_file);
        self
    }

    /// Sets [`AmqpOptions::exchange`].
    pub fn with_exchange(mut self, exchange: impl Into<String>) -> Self {
        self.exchange = exchange.into();
        self
    }
    /// Sets [`AmqpOptions::exchange_type`].
    pub fn with_exchange_type(mut self, kind: impl Into<String>) -> Self {
        self.exchange_type = kind.into();
        self
    }
    /// Sets [`AmqpOptions::binding_key`].
    pub fn with_binding_key(mut self, key: impl Into<String>) -> Self {
        self.binding_key = key.into();
        self
    }
    /// Sets [`AmqpOptions::default_queue`].
    pub fn with_default_queue(mut self, queue: impl Into<String>) -> Self {
        self.default_queue = queue.into();
        self
    }
    /// Sets [`AmqpOptions::queue_declare_args`].
    pub fn with_queue_declare_args(mut self, args: BTreeMap<String, Value>) -> Self {
        self.queue_declare_args = args;
        self
    }
    /// Sets [`AmqpOptions::queue_binding_args`].
    pub fn with_queue_binding_args(mut self, args: BTreeMap<String, Value>) -> Self {
        self.queue_binding_args = args;
        self
    }
    /// Sets [`AmqpOptions::delayed_queue`].
    pub fn with_delayed_queue(mut self, queue: impl Into<String>) -> Self {
        self.delayed_queue = queue.into();
        self
    }
    /// Sets [`AmqpOptions::auto_delete`].
    pub fn with_auto_delete(mut self, auto_delete: bool) -> Self {
        self.auto_delete = auto_delete;
        self
    }
    /// Sets [`AmqpOptions::results_expire_in`].
    pub fn with_results_expire_in(mut self, expire_in: Duration) -> Self {
        self.results_expire_in = expire_in;
        self
    }
    /// Sets [`AmqpOptions::connection_name`].
    pub fn with_connection_name(mut self, name: impl Into<String>) -> Self {
        self.connection_name = name.into();
        self
    }
    /// Sets [`AmqpOptions::connect_timeout`].
    pub fn with_connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }
    /// Sets [`AmqpOptions::retry_for`].
    pub fn with_retry_for(mut self, retry_for: Duration) -> Self {
        self.retry_for = retry_for;
        self
    }
    /// Sets [`AmqpOptions::operation_timeout`].
    pub fn with_operation_timeout(mut self, timeout: Duration) -> Self {
        self.operation_timeout = timeout;
        self
    }
    /// Sets [`AmqpOptions::max_message_size`].
    pub fn with_max_message_size(mut self, max: usize) -> Self {
        self.max_message_size = max;
        self
    }

    /// The brokers with no credentials, for logs: `amqp://host:5672/%2f`, several joined by
    /// `, `.
    pub fn describe(&self) -> String {
        self.urls
            .iter()
            .map(|u| u.display.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// True when tasks without a routing key go to the binding key (a `direct` exchange).
    pub(crate) fn is_direct(&self) -> bool {
        self.exchange_type == "direct"
    }

    /// `results_expire_in` in milliseconds as Go sends it: a 32-bit int (Go's `int32(...)`),
    /// clamped instead of overflowing.
    pub(crate) fn results_ttl_ms(&self) -> i32 {
        let ms = self.results_expire_in.as_millis();
        let ms = if ms == 0 { 3_600_000 } else { ms };
        i32::try_from(ms).unwrap_or(i32::MAX)
    }

    /// Checks what can be checked before connecting.
    pub(crate) fn validate(&self) -> Result<(), AmqpError> {
        for (what, name) in [
            ("exchange", &self.exchange),
            ("binding_key", &self.binding_key),
            ("default_queue", &self.default_queue),
            ("delayed_queue", &self.delayed_queue),
        ] {
            short(name).map_err(|_| {
                AmqpError::config(format!("amqp {what} is longer than 255 bytes: {name:?}"))
            })?;
        }
        to_table(&self.queue_declare_args)
            .map_err(|e| AmqpError::config(format!("amqp queue_declare_args: {e}")))?;
        to_table(&self.queue_binding_args)
            .map_err(|e| AmqpError::config(format!("amqp queue_binding_args: {e}")))?;
        Ok(())
    }
}

/// The largest AMQP frame machinist asks for when the URL sets no `frame_max` (see
/// [`AmqpOptions`]); RabbitMQ's own default is 131,072.
pub const DEFAULT_FRAME_MAX: u32 = 16_384;

/// Parses one `amqp://` or `amqps://` URL with Go's defaults (vhost `/` for an empty path).
pub(crate) fn parse_url(url: &str) -> Result<AmqpUrl, AmqpError> {
    let (scheme, rest) = url
        .split_once("://")
        .ok_or_else(|| AmqpError::config(format!("not an AMQP URL: {}", redact(url))))?;
    let tls = match scheme {
        "amqp" => false,
        "amqps" => true,
        _ => {
            return Err(AmqpError::config(format!(
                "not an AMQP URL (scheme {scheme:?}): {}",
                redact(url)
            )));
        }
    };
    if tls && !cfg!(feature = "tls") {
        return Err(AmqpError::config(
            "amqps:// needs machinist-amqp's `tls` feature (machinist's `amqp-tls`)",
        ));
    }
    let mut uri: AMQPUri = url
        .parse()
        .map_err(|e| AmqpError::config(format!("invalid AMQP URL {}: {e}", redact(url))))?;
    // lapin takes the host from `Url::domain`, which is empty for IP addresses: take it from
    // the authority ourselves.
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let host = if let Some(v6) = host_port.strip_prefix('[') {
        v6.split(']').next().unwrap_or_default()
    } else {
        host_port.split(':').next().unwrap_or_default()
    };
    if !host.is_empty() {
        host.clone_into(&mut uri.authority.host);
    }
    // Smaller buffers (see `AmqpOptions`); the URL's own `frame_max` wins.
    uri.query.frame_max.get_or_insert(DEFAULT_FRAME_MAX);
    // Go: an empty path and `/` both mean the default vhost `/` (lapin reads `/` as "").
    if uri.vhost.is_empty() {
        "/".clone_into(&mut uri.vhost);
    }
    let vhost = if uri.vhost == "/" {
        "%2f".to_owned()
    } else {
        uri.vhost.clone()
    };
    let display = format!(
        "{scheme}://{}:{}/{vhost}",
        if uri.authority.host.contains(':') {
            format!("[{}]", uri.authority.host)
        } else {
            uri.authority.host.clone()
        },
        uri.authority.port
    );
    Ok(AmqpUrl { uri, display })
}

/// `url` without its credentials, for error messages.
fn redact(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) => {
            let (authority, path) = rest.split_at(rest.find(['/', '?']).unwrap_or(rest.len()));
            let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
            format!("{scheme}://{host}{path}")
        }
        None => "<unparsable URL>".to_owned(),
    }
}

/// A short string (queue, exchange, routing key, header key: at most 255 bytes).
pub(crate) fn short(s: &str) -> Result<ShortString, AmqpError> {
    ShortString::try_new(s).map_err(|_| {
        AmqpError::config(format!(
            "AMQP names are at most 255 bytes; {:?}… is {} bytes",
            s.chars().take(40).collect::<String>(),
            s.len()
        ))
    })
}

/// A JSON object as an AMQP field table (Go's `amqp.Table` of decoded YAML/JSON values).
pub(crate) fn to_table<'a>(
    map: impl IntoIterator<Item = (&'a String, &'a Value)>,
) -> Result<FieldTable, AmqpError> {
    let mut table = FieldTable::default();
    for (k, v) in map {
        table.insert(short(k)?, to_value(v)?);
    }
    Ok(table)
}

/// One JSON value as an AMQP field value, typed as Go's amqp091 encodes the Go value a JSON or
/// YAML decoder gives: `int` → 32-bit `I` when it fits (else 64-bit `l`), float → `d`,
/// string → `S`, bool → `t`, null → `V`, array → `A`, object → `F`.
pub(crate) fn to_value(v: &Value) -> Result<AMQPValue, AmqpError> {
    Ok(match v {
        Value::Null => AMQPValue::Void,
        Value::Bool(b) => AMQPValue::Boolean(*b),
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                match i32::try_from(i) {
                    Ok(i) => AMQPValue::LongInt(i),
                    Err(_) => AMQPValue::LongLongInt(i),
                }
            } else if let Some(u) = n.as_u64() {
                match i64::try_from(u) {
                    Ok(i) => AMQPValue::LongLongInt(i),
                    Err(_) => AMQPValue::Double(u as f64),
                }
            } else {
                AMQPValue::Double(n.as_f64().unwrap_or_default())
            }
        }
        Value::String(s) => AMQPValue::LongString(LongString::from(s.as_str())),
        Value::Array(a) => AMQPValue::FieldArray(FieldArray::from(
            a.iter().map(to_value).collect::<Result<Vec<_>, _>>()?,
        )),
        Value::Object(o) => AMQPValue::FieldTable(to_table(o)?),
    })
}

/// An AMQP field value as text, for reading header values back (dead-letter reasons).
pub(crate) fn value_text(v: &AMQPValue) -> Option<String> {
    match v {
        AMQPValue::LongString(s) => Some(String::from_utf8_lossy(s.as_bytes()).into_owned()),
        AMQPValue::ShortString(s) => Some(s.as_str().to_owned()),
        _ => None,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn urls_follow_go() {
        let u = parse_url("amqp://guest:guest@127.0.0.1:5672/").unwrap();
        assert_eq!(u.uri.authority.host, "127.0.0.1");
        assert_eq!(u.uri.vhost, "/");
        assert_eq!(u.uri.authority.userinfo.username, "guest");
        assert_eq!(u.display, "amqp://127.0.0.1:5672/%2f");
        let u = parse_url("amqp://u:p%40ss@10.1.2.3/jobs").unwrap();
        assert_eq!(u.uri.authority.host, "10.1.2.3");
        assert_eq!(u.uri.authority.port, 5672);
        assert_eq!(u.uri.authority.userinfo.password, "p@ss");
        assert_eq!(u.uri.vhost, "jobs");
        let u = parse_url("amqp://localhost").unwrap();
        assert_eq!(u.uri.vhost, "/");
        let u = parse_url("amqp://[::1]:5673/%2f").unwrap();
        assert_eq!(u.uri.authority.host, "::1");
        assert_eq!(u.display, "amqp://[::1]:5673/%2f");
        assert_eq!(u.uri.query.frame_max, Some(DEFAULT_FRAME_MAX));
        let u = parse_url("amqp://localhost/?frame_max=131072&heartbeat=10").unwrap();
        assert_eq!(
            u.uri.query.frame_max,
            Some(131_072),
            "the URL's frame_max wins"
        );
        assert_eq!(u.uri.query.heartbeat, Some(10));
        assert!(parse_url("redis://localhost").is_err());
        let e = parse_url("http://user:secret@host")
            .unwrap_err()
            .to_string();
        assert!(!e.contains("secret"), "{e}");
    }

    #[test]
    fn several_urls_split_by_the_separator() {
        let o = AmqpOptions::from_urls(
            "amqp://guest:guest@127.0.0.1:1/, amqp://guest:guest@127.0.0.1:5672/",
            ",",
        )
        .unwrap();
        assert_eq!(o.urls.len(), 2);
        assert_eq!(
            o.describe(),
            "amqp://127.0.0.1:1/%2f, amqp://127.0.0.1:5672/%2f"
        );
        assert!(AmqpOptions::from_urls("", ",").is_err());
    }

    #[test]
    fn json_values_take_gos_amqp_types() {
        let v: Value = serde_json::json!({"x-max-priority": 10, "big": 5_000_000_000i64,
            "f": 1.5, "s": "a", "b": true, "n": null, "a": [1], "o": {"k": "v"}});
        let Value::Object(map) = v else { panic!() };
        let t = to_table(&map).unwrap();
        let get = |k: &str| t.inner().get(k).cloned().unwrap();
        assert_eq!(get("x-max-priority"), AMQPValue::LongInt(10));
        assert_eq!(get("big"), AMQPValue::LongLongInt(5_000_000_000));
        assert_eq!(get("f"), AMQPValue::Double(1.5));
        assert_eq!(get("s"), AMQPValue::LongString("a".into()));
        assert_eq!(get("b"), AMQPValue::Boolean(true));
        assert_eq!(get("n"), AMQPValue::Void);
        assert!(matches!(get("a"), AMQPValue::FieldArray(_)));
        assert!(matches!(get("o"), AMQPValue::FieldTable(_)));
        assert!(short(&"x".repeat(256)).is_err());
    }

    #[test]
    fn results_ttl_is_a_clamped_i32() {
        let o = AmqpOptions::from_url("amqp://localhost").unwrap();
        assert_eq!(o.results_ttl_ms(), 3_600_000);
        let o = o.with_results_expire_in(Duration::from_secs(10 * 365 * 86_400));
        assert_eq!(o.results_ttl_ms(), i32::MAX);
    }
}
