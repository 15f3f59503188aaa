//! `periodic_tasks:` — periodic tasks started from configuration, so that a scheduler runs
//! without code ([`Server::register_configured_periodic_tasks`]).
//!
//! [`Server::register_configured_periodic_tasks`]: crate::Server::register_configured_periodic_tasks
//!
//! ```yaml
//! periodic_tasks:
//!   - spec: "0 6 * * ?"            # see the `periodic` module for the grammar
//!     name: morning-report         # part of the lock key; default: the task name
//!     task: report                 # the registered task to send
//!     args: ["int64:7", "string:daily"]        # TYPE:VALUE, as the CLI's `send`
//!     queue: reports               # optional routing key
//!     retries: 3                   # optional retry count
//!   - spec: "@every 10s"
//!     task: poll
//!     args: [{type: "[]string", value: [a, b]}]  # or {type, value} mappings
//!     misfire: catch_up_last       # skip (default) or catch_up_last
//!   - "*/5 * * * * | cleanup string:tmp"       # or one line: SPEC | TASK [TYPE:VALUE ...]
//! ```
//!
//! The environment variable `MACHINIST_PERIODIC_TASKS` takes one entry per line in the line
//! form, as the CLI's `--periodic`. In the line form arguments are separated by spaces, so a
//! value cannot contain one (use YAML for that).

use std::fmt;

use serde_json::Value;
use serde_saphyr::Spanned;

use crate::arg::Arg;
use crate::periodic::{Misfire, PeriodicError, PeriodicJob, Schedule};
use crate::signature::Signature;
use crate::types::GoValue;

use super::fields::node_to_json;
use super::yaml::Node;

/// One periodic task of the configuration: at every tick of `spec`, send `task(args…)`.
#[derive(Debug, Clone, PartialEq)]
pub struct PeriodicTaskConfig {
    /// The schedule (checked when the configuration is read).
    pub spec: String,
    /// The job name, part of the lock key (default: `task`).
    pub name: String,
    /// The registered task to send.
    pub task: String,
    /// Its arguments.
    pub args: Vec<Arg>,
    /// The routing key (`None`: the default queue).
    pub queue: Option<String>,
    /// Automatic retries of each sent task (`None`: 0).
    pub retries: Option<u32>,
    /// What to do with a tick the scheduler woke up too late for.
    pub misfire: Misfire,
}

impl PeriodicTaskConfig {
    /// An entry sending `task` with no arguments, named after it.
    pub fn new(spec: impl Into<String>, task: impl Into<String>) -> Self {
        let task = task.into();
        PeriodicTaskConfig {
            spec: spec.into(),
            name: task.clone(),
            task,
            args: Vec::new(),
            queue: None,
            retries: None,
            misfire: Misfire::Skip,
        }
    }

    /// Parses the line form `SPEC | TASK [TYPE:VALUE ...]` (what `--periodic` and
    /// `MACHINIST_PERIODIC_TASKS` take): the spec is checked, the job is named after the task,
    /// and each argument is read as the CLI's `send` reads it ([`parse_typed_arg`]).
    ///
    /// ```
    /// use machinist_core::config::PeriodicTaskConfig;
    ///
    /// let e = PeriodicTaskConfig::parse_line("*/10 * * * * * | add int64:1 int64:2").unwrap();
    /// assert_eq!((e.spec.as_str(), e.task.as_str(), e.args.len()), ("*/10 * * * * *", "add", 2));
    /// assert!(PeriodicTaskConfig::parse_line("* * * | add").is_err());
    /// ```
    pub fn parse_line(line: &str) -> Result<Self, String> {
        const FORM: &str = "expected `SPEC | TASK [TYPE:VALUE ...]`";
        let Some((spec, rest)) = line.split_once('|') else {
            return Err(format!("{FORM}, got {line:?}"));
        };
        let spec = spec.trim();
        let mut words = rest.split_whitespace();
        let Some(task) = words.next() else {
            return Err(format!("{FORM}: no task name after `|` in {line:?}"));
        };
        let mut entry = PeriodicTaskConfig::new(spec, task);
        for word in words {
            entry
                .args
                .push(parse_typed_arg(word).map_err(|e| format!("argument {word:?}: {e}"))?);
        }
        entry.check()?;
        Ok(entry)
    }

    /// Checks the spec and the names.
    fn check(&self) -> Result<(), String> {
        Schedule::parse(&self.spec).map_err(|e| e.to_string())?;
        if self.task.trim().is_empty() {
            return Err("the task name is empty".into());
        }
        if self.name.trim().is_empty() {
            return Err("the name is empty".into());
        }
        Ok(())
    }

    /// The signature sent at each tick.
    pub fn signature(&self) -> Signature {
        let mut sig = Signature::new(&self.task);
        sig.args.clone_from(&self.args);
        if let Some(queue) = &self.queue {
            sig.routing_key.clone_from(queue);
        }
        if let Some(retries) = self.retries {
            sig.retry_count = i64::from(retries);
        }
        sig
    }

    /// The job to register.
    pub fn job(&self) -> Result<PeriodicJob, PeriodicError> {
        Ok(PeriodicJob::task(&self.spec, &self.name, self.signature())?.misfire(self.misfire))
    }
}

/// Shows the entry in the line form, with its other settings after it.
impl fmt::Display for PeriodicTaskConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} | {}", self.spec, self.task)?;
        for arg in &self.args {
            write!(f, " {}", show_arg(arg))?;
        }
        if self.name != self.task {
            write!(f, " (name {})", self.name)?;
        }
        if let Some(queue) = &self.queue {
            write!(f, " (queue {queue})")?;
        }
        if let Some(retries) = self.retries {
            write!(f, " (retries {retries})")?;
        }
        if self.misfire == Misfire::CatchUpLast {
            f.write_str(" (misfire catch_up_last)")?;
        }
        Ok(())
    }
}

fn show_arg(arg: &Arg) -> String {
    match &arg.value {
        Value::String(s) => format!("{}:{s}", arg.type_name),
        v => format!("{}:{v}", arg.type_name),
    }
}

/// Parses `TYPE:VALUE` (split at the first `:`) into a Go-typed argument, as the CLI's `send`
/// does: `string:` takes the rest as is, `[]uint8:`/`[]byte:` take base64 or a JSON array,
/// everything else is JSON (`int64:1`, `[]string:["a","b"]`), checked with Go's rules and
/// re-encoded as Go encodes it.
pub fn parse_typed_arg(s: &str) -> Result<Arg, String> {
    let Some((type_name, text)) = s.split_once(':') else {
        return Err("expected TYPE:VALUE, e.g. int64:1 or []string:[\"a\",\"b\"]".to_owned());
    };
    let json = match type_name {
        "string" => Value::String(text.to_owned()),
        "[]uint8" | "[]byte" if !text.trim_start().starts_with(['[', '"']) => {
            Value::String(text.to_owned())
        }
        _ => serde_json::from_str(text)
            .map_err(|e| format!("{text:?} is not a valid {type_name} value: {e}"))?,
    };
    typed(type_name, &json)
}

fn typed(type_name: &str, json: &Value) -> Result<Arg, String> {
    let value = GoValue::decode(type_name, json).map_err(|e| e.to_string())?;
    Arg::typed(type_name, value.to_json()).map_err(|e| e.to_string())
}

/// Reads the list under `periodic_tasks:`; errors name the entry and its line.
pub(crate) fn from_yaml(items: &[Spanned<Node>]) -> Result<Vec<PeriodicTaskConfig>, String> {
    items
        .iter()
        .enumerate()
        .map(|(i, item)| {
            entry(&item.value)
                .map_err(|e| format!("entry {} (line {}): {e}", i + 1, item.referenced.line()))
        })
        .collect()
}

/// Reads `MACHINIST_PERIODIC_TASKS`: one line-form entry per non-empty line.
pub(crate) fn from_lines(text: &str) -> Result<Vec<PeriodicTaskConfig>, String> {
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| PeriodicTaskConfig::parse_line(l).map_err(|e| format!("line {}: {e}", i + 1)))
        .collect()
}

fn text(node: &Node, key: &str) -> Result<String, String> {
    match node {
        Node::Str(s) => Ok(s.clone()),
        Node::Int(i) => Ok(i.to_string()),
        _ => Err(format!("`{key}` must be a string")),
    }
}

fn entry(node: &Node) -> Result<PeriodicTaskConfig, String> {
    let entries = match node {
        Node::Str(line) => return PeriodicTaskConfig::parse_line(line),
        Node::Map(entries) => entries,
        _ => {
            return Err(
                "expected a mapping {spec, name, task, args, queue, retries, misfire} or a line \
                 `SPEC | TASK [TYPE:VALUE ...]`"
                    .into(),
            );
        }
    };
    let mut spec = None;
    let mut task = None;
    let mut name = None;
    let mut e = PeriodicTaskConfig::new("", "");
    for (key, value) in entries {
        let value = &value.value;
        match key.value.as_str() {
            "spec" => spec = Some(text(value, "spec")?),
            "task" => task = Some(text(value, "task")?),
            "name" => name = Some(text(value, "name")?),
            "queue" => e.queue = Some(text(value, "queue")?),
            "retries" => match value {
                Node::Int(n) => {
                    e.retries = Some(
                        u32::try_from(*n)
                            .map_err(|_| format!("`retries` must be 0 to {}", u32::MAX))?,
                    );
                }
                _ => return Err("`retries` must be a whole number".into()),
            },
            "misfire" => {
                e.misfire = match value {
                    Node::Str(s) if s == "skip" => Misfire::Skip,
                    Node::Str(s) if s == "catch_up_last" => Misfire::CatchUpLast,
                    _ => return Err("`misfire` must be `skip` or `catch_up_last`".into()),
                };
            }
            "args" => {
                let Node::Seq(args) = value else {
                    return Err("`args` must be a list".into());
                };
                for (i, arg) in args.iter().enumerate() {
                    e.args.push(
                        yaml_arg(&arg.value).map_err(|m| format!("argument {}: {m}", i + 1))?,
                    );
                }
            }
            other => {
                return Err(format!(
                    "unknown key `{other}` (expected spec, name, task, args, queue, retries, misfire)"
                ));
            }
        }
    }
    e.spec = spec.ok_or("`spec` is missing")?;
    e.task = task.ok_or("`task` is missing")?;
    e.name = name.unwrap_or_else(|| e.task.clone());
    e.check()?;
    Ok(e)
}

fn yaml_arg(node: &Node) -> Result<Arg, String> {
    match node {
        Node::Str(s) => parse_typed_arg(s),
        Node::Map(entries) => {
            let (mut type_name, mut value) = (None, None);
            for (k, v) in entries {
                match k.value.as_str() {
                    "type" => type_name = Some(text(&v.value, "type")?),
                    "value" => value = Some(node_to_json(&v.value)?),
                    other => return Err(format!("unknown key `{other}` (expected type, value)")),
                }
            }
            let type_name = type_name.ok_or("`type` is missing")?;
            typed(&type_name, &value.unwrap_or(Value::Null))
        }
        _ => Err("expected \"TYPE:VALUE\" or {type, value}".into()),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::config::Config;

    #[test]
    fn yaml_forms() {
        let c = Config::from_yaml_str(
            "periodic_tasks:\n\
             - spec: \"0 6 * * ?\"\n  name: report\n  task: send_report\n  args: [\"int64:7\", \"string:a b\"]\n  queue: q\n  retries: 2\n\
             - spec: \"@every 10s\"\n  task: poll\n  args: [{type: \"[]string\", value: [a, b]}, {type: float64, value: 2.0}]\n  misfire: catch_up_last\n\
             - \"*/5 * * * * * | cleanup string:tmp\"\n",
        )
        .unwrap();
        let p = &c.periodic_tasks;
        assert_eq!(p.len(), 3);
        assert_eq!(p[0].name, "report");
        assert_eq!(p[0].args, vec![Arg::new(7i64), Arg::new("a b")]);
        let sig = p[0].signature();
        assert_eq!((sig.routing_key.as_str(), sig.retry_count), ("q", 2));
        assert_eq!(p[1].name, "poll");
        assert_eq!(p[1].args[0].value, serde_json::json!(["a", "b"]));
        assert_eq!(p[1].args[1].value, serde_json::json!(2));
        assert_eq!(p[1].misfire, Misfire::CatchUpLast);
        assert_eq!(p[2].task, "cleanup");
        assert_eq!(p[2].to_string(), "*/5 * * * * * | cleanup string:tmp");
        assert!(
            c.redacted()
                .contains("periodic_tasks: [0 6 * * ? | send_report")
        );
    }

    #[test]
    fn module_doc_example_loads() {
        let source = include_str!("periodic.rs");
        let start = source.find("//! ```yaml\n").unwrap() + "//! ```yaml\n".len();
        let end = start + source[start..].find("//! ```\n").unwrap();
        let yaml: String = source[start..end]
            .lines()
            .map(|l| format!("{}\n", l.strip_prefix("//! ").unwrap_or("")))
            .collect();
        let c = Config::from_yaml_str(&yaml).unwrap();
        assert_eq!(c.periodic_tasks.len(), 3);
        assert_eq!(c.periodic_tasks[0].name, "morning-report");
        assert_eq!(c.periodic_tasks[1].misfire, Misfire::CatchUpLast);
    }

    #[test]
    fn yaml_errors_name_entry_line_and_reason() {
        let err = |y: &str| Config::from_yaml_str(y).unwrap_err().to_string();
        let e = err("periodic_tasks:\n  - {spec: \"* * *\", task: a}\n");
        assert!(
            e.contains("periodic_tasks") && e.contains("entry 1 (line 2)"),
            "{e}"
        );
        assert!(
            e.contains("\"* * *\"") && e.contains("expected 5 fields"),
            "{e}"
        );
        let e = err("periodic_tasks:\n  - {spec: \"* * * * *\"}\n");
        assert!(e.contains("`task` is missing"), "{e}");
        let e = err("periodic_tasks:\n  - {spec: \"* * * * *\", task: a, args: [\"int8:300\"]}\n");
        assert!(e.contains("argument 1") && e.contains("overflows"), "{e}");
        let e = err("periodic_tasks:\n  - {spec: \"* * * * *\", task: a, every: 1}\n");
        assert!(e.contains("unknown key `every`"), "{e}");
        let e = err("periodic_tasks: 5\n");
        assert!(e.contains("list"), "{e}");
    }

    #[test]
    fn env_lines() {
        let c = Config::from_env_with(|k| {
            (k == "MACHINIST_PERIODIC_TASKS")
                .then(|| "@hourly | a int64:1\n\n*/2 * * * * * | b\n".to_owned())
        })
        .unwrap();
        assert_eq!(c.periodic_tasks.len(), 2);
        assert_eq!(c.periodic_tasks[1].spec, "*/2 * * * * *");
        let e = Config::from_env_with(|k| {
            (k == "MACHINIST_PERIODIC_TASKS").then(|| "@hourly a".to_owned())
        })
        .unwrap_err();
        assert!(e.to_string().contains("SPEC | TASK"), "{e}");
    }

    #[test]
    fn typed_args() {
        assert_eq!(parse_typed_arg("int64:1").unwrap(), Arg::new(1i64));
        assert_eq!(parse_typed_arg("string:a:b").unwrap(), Arg::new("a:b"));
        assert_eq!(
            parse_typed_arg("[]uint8:[1,2,3]").unwrap().value,
            serde_json::json!("AQID")
        );
        assert!(parse_typed_arg("int64").is_err());
        assert!(parse_typed_arg("int128:1").is_err());
    }
}
