//! The table of every leaf field of [`Config`]: its YAML key (dotted for sections), aliases,
//! environment variables, whether a change applies live, and how its value is read and shown.
//! YAML loading, the environment layer, `redacted`, `changes` and the hot reload all walk it.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde_saphyr::Spanned;

use super::Config;
use super::duration::{Unit, format_duration, format_size, parse_size, parse_with_unit};
use super::redact::redact_url;
use super::yaml::Node;

/// A value to read into a field: a YAML node, or an environment variable (always `Str`).
#[derive(Debug, Clone, Copy)]
pub(crate) enum Input<'a> {
    Null,
    Bool(bool),
    Int(i128),
    Float(f64),
    Str(&'a str),
    Map(&'a [(Spanned<String>, Spanned<Node>)]),
    Seq(&'a [Spanned<Node>]),
}

impl Input<'_> {
    /// How the value looks, for "got …" in messages.
    pub(crate) fn describe(&self) -> String {
        match self {
            Input::Null => "no value".to_owned(),
            Input::Bool(b) => format!("`{b}`"),
            Input::Int(i) => format!("`{i}`"),
            Input::Float(x) => format!("`{x}`"),
            Input::Str(s) => format!("`{s}`"),
            Input::Map(_) => "a mapping".to_owned(),
            Input::Seq(_) => "a list".to_owned(),
        }
    }

    /// The scalar as text (`None` for mappings and lists).
    fn text(&self) -> Option<String> {
        match self {
            Input::Null => Some(String::new()),
            Input::Bool(b) => Some(b.to_string()),
            Input::Int(i) => Some(i.to_string()),
            Input::Float(x) => Some(x.to_string()),
            Input::Str(s) => Some((*s).to_owned()),
            Input::Map(_) | Input::Seq(_) => None,
        }
    }
}

/// One leaf field.
pub(crate) struct Field {
    /// The YAML key, dotted for sections (`redis.read_timeout`).
    pub key: &'static str,
    /// Other accepted YAML keys (`sqs.visibility_hearth_beat`).
    pub aliases: &'static [&'static str],
    /// Environment variables, first found wins.
    pub env: &'static [&'static str],
    /// Whether running components pick a change up.
    pub live: bool,
    /// Reads a value into the field; the error says what was expected.
    pub set: fn(&mut Config, &Input<'_>) -> Result<(), String>,
    /// The value as `redacted` shows it.
    pub show: fn(&Config) -> String,
    /// Whether two configs agree on the field.
    pub same: fn(&Config, &Config) -> bool,
    /// Copies the field from the first config into the second.
    pub copy: fn(&Config, &mut Config),
}

impl Field {
    /// Whether `key` (dotted) names this field.
    pub(crate) fn answers_to(&self, key: &str) -> bool {
        self.key == key || self.aliases.contains(&key)
    }
}

/// The sections of the YAML file (mappings of fields).
pub(crate) const SECTIONS: &[&str] = &[
    "amqp",
    "sqs",
    "redis",
    "gcp_pubsub",
    "mongodb",
    "dynamodb",
    "tls",
];

const LIVE: bool = true;
const RESTART: bool = false;

/// How one kind of field is read and shown.
trait Kind {
    type T;
    fn parse(v: &Input<'_>) -> Result<Self::T, String>;
    fn show(v: &Self::T) -> String;
}

fn got(expected: &str, v: &Input<'_>) -> String {
    format!("expected {expected}, got {}", v.describe())
}

/// Free text; YAML numbers and booleans are taken as their text, as Go's YAML loader does.
struct Text;
impl Kind for Text {
    type T = String;
    fn parse(v: &Input<'_>) -> Result<String, String> {
        v.text().ok_or_else(|| got("a string", v))
    }
    fn show(v: &String) -> String {
        if v.is_empty() {
            "\"\"".to_owned()
        } else {
            v.clone()
        }
    }
}

/// A connection URL: shown redacted.
struct Url;
impl Kind for Url {
    type T = String;
    fn parse(v: &Input<'_>) -> Result<String, String> {
        Text::parse(v)
    }
    fn show(v: &String) -> String {
        Text::show(&redact_url(v))
    }
}

/// A password: shown as `***`.
struct Secret;
impl Kind for Secret {
    type T = String;
    fn parse(v: &Input<'_>) -> Result<String, String> {
        match v {
            Input::Map(_) | Input::Seq(_) => {
                Err(format!("expected a string, got {}", v.describe()))
            }
            _ => Ok(v.text().unwrap_or_default()),
        }
    }
    fn show(v: &String) -> String {
        if v.is_empty() { "\"\"" } else { "***" }.to_owned()
    }
}

/// A boolean: YAML's, or `true/false`, `1/0`, `t/f`, `yes/no`, `on/off` (any case).
struct Flag;
impl Kind for Flag {
    type T = bool;
    fn parse(v: &Input<'_>) -> Result<bool, String> {
        const EXPECTED: &str = "true or false";
        match v {
            Input::Null => Ok(false),
            Input::Bool(b) => Ok(*b),
            Input::Int(0) => Ok(false),
            Input::Int(1) => Ok(true),
            Input::Str(s) => match s.trim().to_ascii_lowercase().as_str() {
                "true" | "t" | "1" | "yes" | "y" | "on" => Ok(true),
                "false" | "f" | "0" | "no" | "n" | "off" => Ok(false),
                _ => Err(got(EXPECTED, v)),
            },
            _ => Err(got(EXPECTED, v)),
        }
    }
    fn show(v: &bool) -> String {
        v.to_string()
    }
}

fn parse_uint(v: &Input<'_>, max: u128) -> Result<u128, String> {
    let expected = format!("a whole number from 0 to {max}");
    let n = match v {
        Input::Null => 0,
        Input::Int(i) => u128::try_from(*i).map_err(|_| got(&expected, v))?,
        Input::Str(s) => s.trim().parse::<u128>().map_err(|_| got(&expected, v))?,
        _ => return Err(got(&expected, v)),
    };
    if n > max {
        return Err(got(&expected, v));
    }
    Ok(n)
}

macro_rules! uint_kind {
    ($name:ident, $t:ty) => {
        struct $name;
        impl Kind for $name {
            type T = $t;
            fn parse(v: &Input<'_>) -> Result<$t, String> {
                let n = parse_uint(v, <$t>::MAX as u128)?;
                <$t>::try_from(n).map_err(|_| got("a smaller number", v))
            }
            fn show(v: &$t) -> String {
                v.to_string()
            }
        }
    };
}
uint_kind!(U16, u16);
uint_kind!(U32, u32);
uint_kind!(Count, usize);

/// A duration from a YAML/env value: a bare number in `unit`, or text with units.
fn parse_dur(v: &Input<'_>, unit: Unit) -> Option<Duration> {
    match v {
        Input::Null => Some(Duration::ZERO),
        Input::Int(i) => {
            let n = u64::try_from(*i).ok()?;
            Some(match unit {
                Unit::Seconds => Duration::from_secs(n),
                Unit::Millis => Duration::from_millis(n),
            })
        }
        Input::Float(x) if x.is_finite() && *x >= 0.0 => {
            let secs = match unit {
                Unit::Seconds => *x,
                Unit::Millis => *x / 1000.0,
            };
            Duration::try_from_secs_f64(secs).ok()
        }
        Input::Str(s) => parse_with_unit(s, unit),
        _ => None,
    }
}

/// Go's integer seconds (`*_timeout`); units accepted too.
struct GoSecs;
impl Kind for GoSecs {
    type T = Duration;
    fn parse(v: &Input<'_>) -> Result<Duration, String> {
        parse_dur(v, Unit::Seconds).ok_or_else(|| {
            got(
                "a whole number of seconds (e.g. 15) or a duration (e.g. \"15s\")",
                v,
            )
        })
    }
    fn show(v: &Duration) -> String {
        format_duration(*v)
    }
}

/// Go's integer milliseconds (`*_poll_period`); units accepted too.
struct GoMillis;
impl Kind for GoMillis {
    type T = Duration;
    fn parse(v: &Input<'_>) -> Result<Duration, String> {
        parse_dur(v, Unit::Millis).ok_or_else(|| {
            got(
                "a whole number of milliseconds (e.g. 1000) or a duration (e.g. \"1s\")",
                v,
            )
        })
    }
    fn show(v: &Duration) -> String {
        format_duration(*v)
    }
}

/// `results_expire_in`: whole seconds as an integer (Go's `int`); `"1h"` accepted too.
struct SecsInt;
impl Kind for SecsInt {
    type T = u64;
    fn parse(v: &Input<'_>) -> Result<u64, String> {
        const EXPECTED: &str = "a whole number of seconds (e.g. 3600) or a duration (e.g. \"1h\")";
        match parse_dur(v, Unit::Seconds) {
            Some(d) if d.subsec_nanos() == 0 => Ok(d.as_secs()),
            _ => Err(got(EXPECTED, v)),
        }
    }
    fn show(v: &u64) -> String {
        v.to_string()
    }
}

/// A machinist duration: `"30s"`, `"500ms"`, or a bare number of seconds.
struct Dur;
impl Kind for Dur {
    type T = Duration;
    fn parse(v: &Input<'_>) -> Result<Duration, String> {
        parse_dur(v, Unit::Seconds).ok_or_else(|| {
            got(
                "a duration (e.g. \"30s\", \"500ms\", \"1m30s\") or a number of seconds",
                v,
            )
        })
    }
    fn show(v: &Duration) -> String {
        format_duration(*v)
    }
}

/// A machinist duration that must be more than zero.
struct PosDur;
impl Kind for PosDur {
    type T = Duration;
    fn parse(v: &Input<'_>) -> Result<Duration, String> {
        match Dur::parse(v)? {
            d if d.is_zero() => Err(got("a duration greater than zero (e.g. \"30s\")", v)),
            d => Ok(d),
        }
    }
    fn show(v: &Duration) -> String {
        format_duration(*v)
    }
}

/// An optional duration where absent, `0` and `none` mean `None` (no limit / the default).
struct Limit;
impl Kind for Limit {
    type T = Option<Duration>;
    fn parse(v: &Input<'_>) -> Result<Option<Duration>, String> {
        if let Input::Str(s) = v
            && matches!(s.trim().to_ascii_lowercase().as_str(), "none" | "off" | "")
        {
            return Ok(None);
        }
        let d = parse_dur(v, Unit::Seconds).ok_or_else(|| {
            got(
                "a duration (e.g. \"10m\", \"30s\"), a number of seconds, or none",
                v,
            )
        })?;
        Ok(Some(d).filter(|d| !d.is_zero()))
    }
    fn show(v: &Option<Duration>) -> String {
        v.map_or_else(|| "none".to_owned(), format_duration)
    }
}

/// Go's `*int` seconds (`receive_visibility_timeout`): absent means `None`, `0` is a value.
struct OptGoSecs;
impl Kind for OptGoSecs {
    type T = Option<Duration>;
    fn parse(v: &Input<'_>) -> Result<Option<Duration>, String> {
        match v {
            Input::Null => Ok(None),
            Input::Str(s) if matches!(s.trim().to_ascii_lowercase().as_str(), "none" | "") => {
                Ok(None)
            }
            _ => match parse_dur(v, Unit::Seconds) {
                Some(d) if d.subsec_nanos() == 0 => Ok(Some(d)),
                _ => Err(got(
                    "a whole number of seconds (e.g. 30), a duration in whole seconds, or none",
                    v,
                )),
            },
        }
    }
    fn show(v: &Option<Duration>) -> String {
        Limit::show(v)
    }
}

/// A size in bytes greater than zero: `16777216` or `"16MiB"`.
struct Size;
impl Kind for Size {
    type T = usize;
    fn parse(v: &Input<'_>) -> Result<usize, String> {
        const EXPECTED: &str = "a size in bytes greater than zero (e.g. 16777216 or \"16MiB\")";
        let n = match v {
            Input::Int(i) => u64::try_from(*i).ok(),
            Input::Str(s) => parse_size(s),
            _ => None,
        };
        n.and_then(|n| usize::try_from(n).ok())
            .filter(|n| *n > 0)
            .ok_or_else(|| got(EXPECTED, v))
    }
    fn show(v: &usize) -> String {
        format_size(*v as u64)
    }
}

/// `log_level`: a level, or comma-separated `target=level` directives.
struct Level;
impl Kind for Level {
    type T = String;
    fn parse(v: &Input<'_>) -> Result<String, String> {
        const EXPECTED: &str = "a level (trace, debug, info, warn, error, off) or directives such as \"info,machinist=debug\"";
        let Input::Str(s) = v else {
            return Err(got(EXPECTED, v));
        };
        let s = s.trim();
        let is_level = |l: &str| {
            matches!(
                l.trim().to_ascii_lowercase().as_str(),
                "trace" | "debug" | "info" | "warn" | "error" | "off"
            )
        };
        let ok = !s.is_empty()
            && s.split(',').all(|d| match d.rsplit_once('=') {
                Some((target, level)) => !target.trim().is_empty() && is_level(level),
                None => is_level(d),
            });
        if ok {
            Ok(s.to_owned())
        } else {
            Err(got(EXPECTED, v))
        }
    }
    fn show(v: &String) -> String {
        Text::show(v)
    }
}

/// An optional file path (`None` when absent or empty).
struct OptPath;
impl Kind for OptPath {
    type T = Option<PathBuf>;
    fn parse(v: &Input<'_>) -> Result<Option<PathBuf>, String> {
        match v {
            Input::Null => Ok(None),
            Input::Str(s) if s.trim().is_empty() => Ok(None),
            Input::Str(s) => Ok(Some(PathBuf::from(s.trim()))),
            _ => Err(got("a file path", v)),
        }
    }
    fn show(v: &Option<PathBuf>) -> String {
        v.as_ref()
            .map_or_else(|| "none".to_owned(), |p| p.display().to_string())
    }
}

type Args = BTreeMap<String, serde_json::Value>;

/// A YAML node as JSON (for AMQP argument tables and periodic task arguments).
pub(crate) fn node_to_json(node: &Node) -> Result<serde_json::Value, String> {
    use serde_json::Value as J;
    Ok(match node {
        Node::Null => J::Null,
        Node::Bool(b) => J::Bool(*b),
        Node::Int(i) => {
            if let Ok(n) = i64::try_from(*i) {
                J::from(n)
            } else if let Ok(n) = u64::try_from(*i) {
                J::from(n)
            } else {
                return Err(format!("number {i} is too large"));
            }
        }
        Node::Float(x) => serde_json::Number::from_f64(*x)
            .map(J::Number)
            .ok_or_else(|| format!("number {x} cannot be stored"))?,
        Node::Str(s) => J::String(s.clone()),
        Node::Seq(items) => J::Array(
            items
                .iter()
                .map(|n| node_to_json(&n.value))
                .collect::<Result<_, _>>()?,
        ),
        Node::Map(entries) => J::Object(
            entries
                .iter()
                .map(|(k, v)| Ok((k.value.clone(), node_to_json(&v.value)?)))
                .collect::<Result<_, String>>()?,
        ),
    })
}

/// Go's `k:v,k2:v2` form; `typed` turns whole numbers and booleans into JSON ones.
fn parse_pairs(s: &str, typed: bool) -> Result<Args, String> {
    let mut out = Args::new();
    if s.trim().is_empty() {
        return Ok(out);
    }
    for pair in s.split(',') {
        let parts: Vec<&str> = pair.split(':').collect();
        let [k, v] = parts[..] else {
            return Err(format!(
                "expected `key:value,key2:value2`, got the item `{pair}`"
            ));
        };
        let value = if typed {
            if let Ok(n) = v.parse::<i64>() {
                serde_json::Value::from(n)
            } else if let Ok(b) = v.parse::<bool>() {
                serde_json::Value::Bool(b)
            } else {
                serde_json::Value::String(v.to_owned())
            }
        } else {
            serde_json::Value::String(v.to_owned())
        };
        out.insert(k.to_owned(), value);
    }
    Ok(out)
}

fn parse_args(v: &Input<'_>, typed: bool) -> Result<Args, String> {
    match v {
        Input::Null => Ok(Args::new()),
        Input::Map(entries) => entries
            .iter()
            .map(|(k, v)| Ok((k.value.clone(), node_to_json(&v.value)?)))
            .collect(),
        Input::Str(s) => parse_pairs(s, typed),
        _ => Err(got("a mapping (or `key:value,key2:value2`)", v)),
    }
}

fn show_args(v: &Args) -> String {
    serde_json::to_string(v).unwrap_or_default()
}

/// `queue_declare_args`: from the environment, numbers and booleans are typed.
struct DeclareArgs;
impl Kind for DeclareArgs {
    type T = Args;
    fn parse(v: &Input<'_>) -> Result<Args, String> {
        parse_args(v, true)
    }
    fn show(v: &Args) -> String {
        show_args(v)
    }
}

/// `queue_binding_args`: from the environment, values stay strings (as Go).
struct BindingArgs;
impl Kind for BindingArgs {
    type T = Args;
    fn parse(v: &Input<'_>) -> Result<Args, String> {
        parse_args(v, false)
    }
    fn show(v: &Args) -> String {
        show_args(v)
    }
}

/// `periodic_tasks`: a YAML list of entries; from the environment, one `SPEC | TASK [TYPE:VALUE
/// ...]` line per entry.
struct PeriodicTasks;
impl Kind for PeriodicTasks {
    type T = Vec<super::PeriodicTaskConfig>;
    fn parse(v: &Input<'_>) -> Result<Self::T, String> {
        match v {
            Input::Null => Ok(Vec::new()),
            Input::Seq(items) => super::periodic::from_yaml(items),
            Input::Str(s) => super::periodic::from_lines(s),
            _ => Err(got(
                "a list of periodic tasks ({spec, task, args …} or \"SPEC | TASK [TYPE:VALUE ...]\")",
                v,
            )),
        }
    }
    fn show(v: &Self::T) -> String {
        let entries: Vec<String> = v.iter().map(ToString::to_string).collect();
        format!("[{}]", entries.join(", "))
    }
}

macro_rules! field {
    ($key:literal $(| $alias:literal)*, [$($env:literal),*], $live:expr, $kind:ident, $($path:ident).+) => {
        Field {
            key: $key,
            aliases: &[$($alias),*],
            env: &[$($env),*],
            live: $live,
            set: |c, v| {
                c.$($path).+ = <$kind as Kind>::parse(v)?;
                Ok(())
            },
            show: |c| <$kind as Kind>::show(&c.$($path).+),
            same: |a, b| a.$($path).+ == b.$($path).+,
            copy: |a, b| b.$($path).+ = a.$($path).+.clone(),
        }
    };
}

/// Every leaf field of [`Config`], in declaration order.
pub(crate) static FIELDS: &[Field] = &[
    field!("broker", ["BROKER"], RESTART, Url, broker),
    field!("lock", ["LOCK"], RESTART, Url, lock),
    field!(
        "multiple_broker_separator",
        ["MULTIPLE_BROKER_SEPARATOR", "MULTIPLE_BROKEN_SEPARATOR"],
        RESTART,
        Text,
        multiple_broker_separator
    ),
    field!(
        "default_queue",
        ["DEFAULT_QUEUE"],
        RESTART,
        Text,
        default_queue
    ),
    field!(
        "result_backend",
        ["RESULT_BACKEND"],
        RESTART,
        Url,
        result_backend
    ),
    field!(
        "results_expire_in",
        ["RESULTS_EXPIRE_IN"],
        LIVE,
        SecsInt,
        results_expire_in
    ),
    // amqp
    field!(
        "amqp.exchange",
        ["AMQP_AMQP_EXCHANGE", "AMQP_EXCHANGE"],
        RESTART,
        Text,
        amqp.exchange
    ),
    field!(
        "amqp.exchange_type",
        ["AMQP_AMQP_EXCHANGE_TYPE", "AMQP_EXCHANGE_TYPE"],
        RESTART,
        Text,
        amqp.exchange_type
    ),
    field!(
        "amqp.queue_declare_args",
        ["AMQP_AMQP_QUEUE_DECLARE_ARGS", "AMQP_QUEUE_DECLARE_ARGS"],
        RESTART,
        DeclareArgs,
        amqp.queue_declare_args
    ),
    field!(
        "amqp.queue_binding_args",
        ["AMQP_AMQP_QUEUE_BINDING_ARGS", "AMQP_QUEUE_BINDING_ARGS"],
        RESTART,
        BindingArgs,
        amqp.queue_binding_args
    ),
    field!(
        "amqp.binding_key",
        ["AMQP_AMQP_BINDING_KEY", "AMQP_BINDING_KEY"],
        RESTART,
        Text,
        amqp.binding_key
    ),
    field!(
        "amqp.prefetch_count",
        ["AMQP_AMQP_PREFETCH_COUNT", "AMQP_PREFETCH_COUNT"],
        RESTART,
        U16,
        amqp.prefetch_count
    ),
    field!(
        "amqp.auto_delete",
        ["AMQP_AMQP_AUTO_DELETE", "AMQP_AUTO_DELETE"],
        RESTART,
        Flag,
        amqp.auto_delete
    ),
    field!(
        "amqp.delayed_queue",
        ["AMQP_AMQP_DELAYED_QUEUE", "AMQP_DELAYED_QUEUE"],
        RESTART,
        Text,
        amqp.delayed_queue
    ),
    // sqs
    field!(
        "sqs.receive_wait_time_seconds",
        ["SQS_SQS_WAIT_TIME_SECONDS", "SQS_WAIT_TIME_SECONDS"],
        LIVE,
        U32,
        sqs.wait_time_seconds
    ),
    field!(
        "sqs.receive_visibility_timeout",
        ["SQS_SQS_VISIBILITY_TIMEOUT", "SQS_VISIBILITY_TIMEOUT"],
        LIVE,
        OptGoSecs,
        sqs.visibility_timeout
    ),
    field!(
        "sqs.visibility_heartbeat" | "sqs.visibility_hearth_beat",
        ["SQS_SQS_VISIBILITY_HEARTBEAT", "SQS_VISIBILITY_HEARTBEAT"],
        RESTART,
        Flag,
        sqs.visibility_heartbeat
    ),
    // redis
    field!(
        "redis.max_idle",
        ["REDIS_REDIS_MAX_IDLE", "REDIS_MAX_IDLE"],
        RESTART,
        U32,
        redis.max_idle
    ),
    field!(
        "redis.max_active",
        ["REDIS_REDIS_MAX_ACTIVE", "REDIS_MAX_ACTIVE"],
        RESTART,
        U32,
        redis.max_active
    ),
    field!(
        "redis.max_idle_timeout",
        ["REDIS_REDIS_IDLE_TIMEOUT", "REDIS_IDLE_TIMEOUT"],
        RESTART,
        GoSecs,
        redis.max_idle_timeout
    ),
    field!(
        "redis.wait",
        ["REDIS_REDIS_WAIT", "REDIS_WAIT"],
        RESTART,
        Flag,
        redis.wait
    ),
    field!(
        "redis.read_timeout",
        ["REDIS_REDIS_READ_TIMEOUT", "REDIS_READ_TIMEOUT"],
        RESTART,
        GoSecs,
        redis.read_timeout
    ),
    field!(
        "redis.write_timeout",
        ["REDIS_REDIS_WRITE_TIMEOUT", "REDIS_WRITE_TIMEOUT"],
        RESTART,
        GoSecs,
        redis.write_timeout
    ),
    field!(
        "redis.connect_timeout",
        ["REDIS_REDIS_CONNECT_TIMEOUT", "REDIS_CONNECT_TIMEOUT"],
        RESTART,
        GoSecs,
        redis.connect_timeout
    ),
    field!(
        "redis.normal_tasks_poll_period",
        [
            "REDIS_REDIS_NORMAL_TASKS_POLL_PERIOD",
            "REDIS_NORMAL_TASKS_POLL_PERIOD"
        ],
        LIVE,
        GoMillis,
        redis.normal_tasks_poll_period
    ),
    field!(
        "redis.delayed_tasks_poll_period",
        [
            "REDIS_REDIS_DELAYED_TASKS_POLL_PERIOD",
            "REDIS_DELAYED_TASKS_POLL_PERIOD"
        ],
        LIVE,
        GoMillis,
        redis.delayed_tasks_poll_period
    ),
    field!(
        "redis.delayed_tasks_key",
        ["REDIS_REDIS_DELAYED_TASKS_KEY", "REDIS_DELAYED_TASKS_KEY"],
        RESTART,
        Text,
        redis.delayed_tasks_key
    ),
    field!(
        "redis.client_name",
        ["REDIS_REDIS_CLIENT_NAME", "REDIS_CLIENT_NAME"],
        RESTART,
        Text,
        redis.client_name
    ),
    field!(
        "redis.master_name",
        ["REDIS_REDIS_MASTER_NAME", "REDIS_MASTER_NAME"],
        RESTART,
        Text,
        redis.master_name
    ),
    field!(
        "redis.cluster_enabled" | "redis.cluster_mode",
        [
            "REDIS_REDIS_CLUSTER_ENABLED",
            "REDIS_CLUSTER_ENABLED",
            "REDIS_CLUSTER_MODE"
        ],
        RESTART,
        Flag,
        redis.cluster_enabled
    ),
    field!(
        "redis.sentinel_password",
        ["REDIS_REDIS_SENTINEL_PASSWORD", "REDIS_SENTINEL_PASSWORD"],
        RESTART,
        Secret,
        redis.sentinel_password
    ),
    // machinist sections
    field!(
        "gcp_pubsub.max_extension",
        ["MACHINIST_GCP_PUBSUB_MAX_EXTENSION"],
        RESTART,
        Limit,
        gcp_pubsub.max_extension
    ),
    field!(
        "mongodb.database",
        ["MACHINIST_MONGODB_DATABASE"],
        RESTART,
        Text,
        mongodb.database
    ),
    // dynamodb
    field!(
        "dynamodb.task_states_table",
        ["DYNAMODB_TASK_STATES_TABLE", "TASK_STATES_TABLE"],
        RESTART,
        Text,
        dynamodb.task_states_table
    ),
    field!(
        "dynamodb.group_metas_table",
        ["DYNAMODB_GROUP_METAS_TABLE", "GROUP_METAS_TABLE"],
        RESTART,
        Text,
        dynamodb.group_metas_table
    ),
    // tls
    field!(
        "tls.ca_file",
        ["MACHINIST_TLS_CA_FILE"],
        RESTART,
        OptPath,
        tls.ca_file
    ),
    field!(
        "tls.cert_file",
        ["MACHINIST_TLS_CERT_FILE"],
        RESTART,
        OptPath,
        tls.cert_file
    ),
    field!(
        "tls.key_file",
        ["MACHINIST_TLS_KEY_FILE"],
        RESTART,
        OptPath,
        tls.key_file
    ),
    field!(
        "tls.insecure_skip_verify",
        ["MACHINIST_TLS_INSECURE_SKIP_VERIFY"],
        RESTART,
        Flag,
        tls.insecure_skip_verify
    ),
    field!(
        "no_unix_signals",
        ["NO_UNIX_SIGNALS"],
        RESTART,
        Flag,
        no_unix_signals
    ),
    // machinist's own
    field!("log_level", ["MACHINIST_LOG_LEVEL"], LIVE, Level, log_level),
    field!(
        "concurrency",
        ["MACHINIST_CONCURRENCY"],
        LIVE,
        Count,
        concurrency
    ),
    field!("lease", ["MACHINIST_LEASE"], LIVE, PosDur, lease),
    field!(
        "result_poll_interval",
        ["MACHINIST_RESULT_POLL_INTERVAL"],
        LIVE,
        PosDur,
        result_poll_interval
    ),
    field!(
        "shutdown_timeout",
        ["MACHINIST_SHUTDOWN_TIMEOUT"],
        LIVE,
        Dur,
        shutdown_timeout
    ),
    field!(
        "task_time_limit",
        ["MACHINIST_TASK_TIME_LIMIT"],
        LIVE,
        Limit,
        task_time_limit
    ),
    field!(
        "time_limit_grace",
        ["MACHINIST_TIME_LIMIT_GRACE"],
        LIVE,
        Dur,
        time_limit_grace
    ),
    field!(
        "max_message_size",
        ["MACHINIST_MAX_MESSAGE_SIZE"],
        LIVE,
        Size,
        max_message_size
    ),
    field!(
        "max_retry_later",
        ["MACHINIST_MAX_RETRY_LATER"],
        LIVE,
        U32,
        max_retry_later
    ),
    field!(
        "unregistered_max_requeues",
        ["MACHINIST_UNREGISTERED_MAX_REQUEUES"],
        LIVE,
        U32,
        unregistered_max_requeues
    ),
    field!(
        "unregistered_max_backoff",
        ["MACHINIST_UNREGISTERED_MAX_BACKOFF"],
        LIVE,
        Dur,
        unregistered_max_backoff
    ),
    field!(
        "periodic_tasks",
        ["MACHINIST_PERIODIC_TASKS"],
        RESTART,
        PeriodicTasks,
        periodic_tasks
    ),
];

/// The field `key` (dotted) names, by its key or an alias.
pub(crate) fn find(key: &str) -> Option<&'static Field> {
    FIELDS.iter().find(|f| f.answers_to(key))
}

/// The keys valid right under `prefix` (`""` for the top level, `"redis."` for a section),
/// section names included, for "did you mean" suggestions.
pub(crate) fn keys_under(prefix: &str) -> Vec<String> {
    let mut out: Vec<String> = FIELDS
        .iter()
        .flat_map(|f| std::iter::once(f.key).chain(f.aliases.iter().copied()))
        .filter_map(|k| k.strip_prefix(prefix))
        .filter(|k| !k.contains('.'))
        .map(str::to_owned)
        .collect();
    if prefix.is_empty() {
        out.extend(SECTIONS.iter().map(|s| (*s).to_owned()));
    }
    out
}
