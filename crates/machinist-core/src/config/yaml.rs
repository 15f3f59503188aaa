//! The YAML loader: serde-saphyr parses the document into a tree of [`Node`]s that keep their
//! line numbers; walking that tree against the field table gives errors that name the key and
//! the line for unknown keys and bad values alike.

use std::collections::HashMap;
use std::fmt;
use std::path::Path;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_saphyr::Spanned;

use super::fields::{self, Input, SECTIONS};
use super::redact::redact_urls_in;
use super::{Config, ConfigError};

/// A YAML value with the locations of its parts.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Node {
    Null,
    Bool(bool),
    Int(i128),
    Float(f64),
    Str(String),
    Seq(Vec<Spanned<Node>>),
    Map(Vec<(Spanned<String>, Spanned<Node>)>),
}

impl Node {
    fn input(&self) -> Input<'_> {
        match self {
            Node::Null => Input::Null,
            Node::Bool(b) => Input::Bool(*b),
            Node::Int(i) => Input::Int(*i),
            Node::Float(x) => Input::Float(*x),
            Node::Str(s) => Input::Str(s),
            Node::Seq(items) => Input::Seq(items),
            Node::Map(entries) => Input::Map(entries),
        }
    }
}

impl<'de> Deserialize<'de> for Node {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct NodeVisitor;
        impl<'de> Visitor<'de> for NodeVisitor {
            type Value = Node;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("any YAML value")
            }
            fn visit_unit<E>(self) -> Result<Node, E> {
                Ok(Node::Null)
            }
            fn visit_none<E>(self) -> Result<Node, E> {
                Ok(Node::Null)
            }
            fn visit_some<D2: Deserializer<'de>>(self, d: D2) -> Result<Node, D2::Error> {
                Node::deserialize(d)
            }
            fn visit_bool<E>(self, v: bool) -> Result<Node, E> {
                Ok(Node::Bool(v))
            }
            fn visit_i64<E>(self, v: i64) -> Result<Node, E> {
                Ok(Node::Int(v.into()))
            }
            fn visit_u64<E>(self, v: u64) -> Result<Node, E> {
                Ok(Node::Int(v.into()))
            }
            fn visit_i128<E>(self, v: i128) -> Result<Node, E> {
                Ok(Node::Int(v))
            }
            fn visit_u128<E: de::Error>(self, v: u128) -> Result<Node, E> {
                i128::try_from(v)
                    .map(Node::Int)
                    .map_err(|_| E::custom("number too large"))
            }
            fn visit_f64<E>(self, v: f64) -> Result<Node, E> {
                Ok(Node::Float(v))
            }
            fn visit_str<E>(self, v: &str) -> Result<Node, E> {
                Ok(Node::Str(v.to_owned()))
            }
            fn visit_string<E>(self, v: String) -> Result<Node, E> {
                Ok(Node::Str(v))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Node, A::Error> {
                let mut items = Vec::new();
                while let Some(item) = seq.next_element()? {
                    items.push(item);
                }
                Ok(Node::Seq(items))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Node, A::Error> {
                let mut entries = Vec::new();
                while let Some(key) = map.next_key::<Spanned<String>>()? {
                    let value = map.next_value()?;
                    entries.push((key, value));
                }
                Ok(Node::Map(entries))
            }
        }
        d.deserialize_any(NodeVisitor)
    }
}

/// Reads the whole file as UTF-8.
pub(crate) fn read_file(path: &Path) -> Result<String, ConfigError> {
    let bytes = std::fs::read(path).map_err(|source| ConfigError::Io {
        file: path.display().to_string(),
        source,
    })?;
    decode(bytes, &path.display().to_string())
}

/// The file's bytes as text (a UTF-8 BOM is dropped).
pub(crate) fn decode(bytes: Vec<u8>, file: &str) -> Result<String, ConfigError> {
    String::from_utf8(bytes).map_err(|e| {
        let before = &e.as_bytes()[..e.utf8_error().valid_up_to()];
        ConfigError::Syntax {
            file: file.to_owned(),
            line: u64::try_from(before.iter().filter(|b| **b == b'\n').count() + 1)
                .unwrap_or(u64::MAX),
            message: "the file is not UTF-8".to_owned(),
        }
    })
}

/// Parses YAML text over the defaults; `file` names the source in errors.
pub(crate) fn parse(text: &str, file: &str) -> Result<Config, ConfigError> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let root: Spanned<Node> = serde_saphyr::from_str(text).map_err(|e| {
        let line = e.location().map_or(0, |l| l.line());
        let message = e.without_snippet().to_string();
        // The parser's text starts with its own "error: line L column C: ".
        let message = match message.split_once(": ") {
            Some((head, rest)) if head.starts_with("error") => rest.to_owned(),
            _ => message,
        };
        // Advice about the parser's options means nothing to a user.
        let message = message.replace(", set DuplicateKeyPolicy in Options if acceptable", "");
        ConfigError::Syntax {
            file: file.to_owned(),
            line,
            message: redact_urls_in(&message),
        }
    })?;
    let mut config = Config::default();
    let mut walker = Walker {
        file,
        config: &mut config,
        seen: HashMap::new(),
    };
    match &root.value {
        Node::Null => {}
        Node::Map(entries) => walker.mapping("", entries)?,
        other => {
            return Err(ConfigError::Syntax {
                file: file.to_owned(),
                line: root.referenced.line(),
                message: format!(
                    "expected a mapping of settings (`broker: …`), got {}",
                    other.input().describe()
                ),
            });
        }
    }
    Ok(config)
}

struct Walker<'a> {
    file: &'a str,
    config: &'a mut Config,
    /// Field key → (line, key as written): catches a field set twice through an alias.
    seen: HashMap<&'static str, (u64, String)>,
}

impl Walker<'_> {
    fn mapping(
        &mut self,
        prefix: &str,
        entries: &[(Spanned<String>, Spanned<Node>)],
    ) -> Result<(), ConfigError> {
        for (key, value) in entries {
            let line = key.referenced.line();
            // Extension keys (`x-common: &common …`) hold anchors for the rest of the file.
            if prefix.is_empty() && key.value.starts_with("x-") {
                continue;
            }
            let dotted = format!("{prefix}{}", key.value);
            if let Some(field) = fields::find(&dotted) {
                if let Some((first_line, first_key)) =
                    self.seen.insert(field.key, (line, dotted.clone()))
                {
                    return Err(self.invalid(
                        line,
                        &dotted,
                        format!(
                            "`{}` is already set on line {first_line} (as `{first_key}`)",
                            field.key
                        ),
                    ));
                }
                (field.set)(self.config, &value.value.input())
                    .map_err(|message| self.invalid(line, &dotted, message))?;
            } else if prefix.is_empty() && SECTIONS.contains(&key.value.as_str()) {
                match &value.value {
                    // `redis:` with nothing under it: the section's defaults.
                    Node::Null => {}
                    Node::Map(inner) => self.mapping(&format!("{dotted}."), inner)?,
                    other => {
                        return Err(self.invalid(
                            line,
                            &dotted,
                            format!(
                                "expected a mapping of `{dotted}` settings, got {}",
                                other.input().describe()
                            ),
                        ));
                    }
                }
            } else {
                return Err(ConfigError::UnknownKey {
                    file: self.file.to_owned(),
                    line,
                    suggestion: suggest(prefix, &key.value),
                    key: dotted,
                });
            }
        }
        Ok(())
    }

    fn invalid(&self, line: u64, key: &str, message: String) -> ConfigError {
        ConfigError::InvalidValue {
            file: self.file.to_owned(),
            line,
            key: key.to_owned(),
            message,
        }
    }
}

/// A known key under `prefix` spelt like `key`, dotted.
fn suggest(prefix: &str, key: &str) -> Option<String> {
    let key_lower = key.to_ascii_lowercase();
    let candidates = fields::keys_under(prefix);
    let (best, distance) = candidates
        .iter()
        .map(|c| (c, edit_distance(&key_lower, c)))
        .min_by_key(|(_, d)| *d)?;
    let limit = (key.len() / 3).max(2);
    if distance <= limit {
        return Some(format!("{prefix}{best}"));
    }
    // A section key at the wrong level (`read_timeout:` at the top level).
    if prefix.is_empty() {
        for section in SECTIONS {
            let dotted = format!("{section}.{key_lower}");
            if fields::find(&dotted).is_some() {
                return Some(dotted);
            }
        }
    }
    None
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != *cb);
            cur[j + 1] = (prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn err(yaml: &str) -> ConfigError {
        Config::from_yaml_str(yaml).expect_err(yaml)
    }

    #[test]
    fn empty_and_comment_only_documents_are_defaults() {
        for yaml in ["", "---\n", "# nothing\n", "---\n# c\n...\n"] {
            assert_eq!(Config::from_yaml_str(yaml).expect(yaml), Config::default());
        }
    }

    #[test]
    fn unknown_keys_name_key_and_line() {
        let e = err("broker: x\n\ndefualt_queue: q\n");
        assert_eq!(e.line(), Some(3));
        assert_eq!(e.key(), Some("defualt_queue"));
        assert!(
            e.to_string().contains("did you mean `default_queue`"),
            "{e}"
        );

        let e = err("redis:\n  max_idle: 1\n  max_idel: 2\n");
        assert_eq!((e.line(), e.key()), (Some(3), Some("redis.max_idel")));
        assert!(e.to_string().contains("`redis.max_idle`"), "{e}");

        let e = err("read_timeout: 3\n");
        assert!(e.to_string().contains("`redis.read_timeout`"), "{e}");

        let e = err("amqp:\n  wait_time_seconds: 3\n");
        assert_eq!(e.key(), Some("amqp.wait_time_seconds"));
        assert!(
            matches!(
                e,
                ConfigError::UnknownKey {
                    suggestion: None,
                    ..
                }
            ),
            "{e}"
        );
    }

    #[test]
    fn bad_values_name_key_line_and_expectation() {
        let e = err("broker: x\nresults_expire_in: abc\n");
        assert_eq!((e.line(), e.key()), (Some(2), Some("results_expire_in")));
        let text = e.to_string();
        assert!(
            text.contains("whole number of seconds") && text.contains("`abc`"),
            "{text}"
        );

        let e = err("redis:\n  wait: maybe\n");
        assert_eq!((e.line(), e.key()), (Some(2), Some("redis.wait")));
        assert!(e.to_string().contains("true or false"), "{e}");

        let e = err("amqp:\n  prefetch_count: 70000\n");
        assert!(e.to_string().contains("0 to 65535"), "{e}");

        let e = err("redis: 5\n");
        assert!(e.to_string().contains("expected a mapping"), "{e}");

        let e = err("lease: 0\n");
        assert!(e.to_string().contains("greater than zero"), "{e}");

        let e = err("log_level: loud\n");
        assert_eq!(e.key(), Some("log_level"));

        let e = err("broker: [a, b]\n");
        assert!(e.to_string().contains("got a list"), "{e}");
    }

    #[test]
    fn syntax_errors_have_lines_and_no_secrets() {
        let e = err("broker: redis://:hunter2@h:1/0\n  bad: indent: here\n");
        assert!(matches!(e, ConfigError::Syntax { .. }), "{e}");
        assert_eq!(e.line(), Some(2));
        assert!(!e.to_string().contains("hunter2"), "{e}");

        let e = err("- a\n- b\n");
        assert!(e.to_string().contains("expected a mapping"), "{e}");

        let e = err("a: 1\na: 2\n");
        assert!(matches!(e, ConfigError::Syntax { line: 2, .. }), "{e}");
    }

    #[test]
    fn aliases_and_double_setting() {
        let c = Config::from_yaml_str("sqs:\n  visibility_hearth_beat: true\n").expect("go key");
        assert!(c.sqs.visibility_heartbeat);
        let c = Config::from_yaml_str("sqs:\n  visibility_heartbeat: true\n").expect("key");
        assert!(c.sqs.visibility_heartbeat);
        let e = err("sqs:\n  visibility_heartbeat: true\n  visibility_hearth_beat: false\n");
        assert_eq!(e.line(), Some(3));
        assert!(e.to_string().contains("already set on line 2"), "{e}");
        let c = Config::from_yaml_str("redis: {cluster_mode: true}\n").expect("v1 key");
        assert!(c.redis.cluster_enabled);
    }

    #[test]
    fn values_in_several_forms() {
        let c = Config::from_yaml_str(
            "redis:\n  read_timeout: 20s\n  normal_tasks_poll_period: 250\n  delayed_tasks_poll_period: \"2s\"\n\
             lease: 45\nshutdown_timeout: 1m30s\nresult_poll_interval: 0.1\ntask_time_limit: none\n\
             max_message_size: 1MiB\nresults_expire_in: 1h\ndefault_queue: 123\nno_unix_signals: yes\n\
             sqs:\n  receive_visibility_timeout: 0\n",
        )
        .expect("load");
        assert_eq!(c.redis.read_timeout, Duration::from_secs(20));
        assert_eq!(c.redis.normal_tasks_poll_period, Duration::from_millis(250));
        assert_eq!(c.redis.delayed_tasks_poll_period, Duration::from_secs(2));
        assert_eq!(c.lease, Duration::from_secs(45));
        assert_eq!(c.shutdown_timeout, Duration::from_secs(90));
        assert_eq!(c.result_poll_interval, Duration::from_millis(100));
        assert_eq!(c.task_time_limit, None);
        assert_eq!(c.max_message_size, 1 << 20);
        assert_eq!(c.results_expire_in, 3600);
        assert_eq!(c.default_queue, "123");
        assert!(c.no_unix_signals);
        assert_eq!(c.sqs.visibility_timeout, Some(Duration::ZERO));

        let c = Config::from_yaml_str("task_time_limit: 10m\nbroker:\nredis:\n").expect("load");
        assert_eq!(c.task_time_limit, Some(Duration::from_secs(600)));
        assert_eq!(c.broker, "");
        assert_eq!(c.redis, Config::default().redis);
    }

    #[test]
    fn merge_keys_and_anchors() {
        let c = Config::from_yaml_str(
            "x-timeouts: &t\n  read_timeout: 7\n  write_timeout: 8\n\
             redis:\n  <<: *t\n  write_timeout: 9\n\
             amqp:\n  queue_declare_args: &a {x-max-priority: 10}\n  queue_binding_args: *a\n",
        )
        .expect("anchors");
        assert_eq!(c.redis.read_timeout, Duration::from_secs(7));
        assert_eq!(c.redis.write_timeout, Duration::from_secs(9));
        assert_eq!(c.amqp.queue_binding_args["x-max-priority"], 10);
        // `x-` keys are skipped at the top level only.
        assert!(Config::from_yaml_str("redis:\n  x-foo: 1\n").is_err());
    }
}
