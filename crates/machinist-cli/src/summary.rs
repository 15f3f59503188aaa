//! `machinist decode`: checking a task message the way a worker would read it, and describing
//! it for a person.
//!
//! A message is valid when it decodes as a `Signature` (Go's lenient rules: any key case,
//! `null` for any field, unknown keys kept), names a task, fits the workers' size limit, and
//! every argument — also in nested callbacks and the chord callback — decodes as its declared
//! Go type ([`Arg::decode`]). Those are the checks after which a worker would run the task
//! rather than dead-letter it or fail it for its arguments.

use std::fmt::Write as _;

use anyhow::{anyhow, bail};
use machinist::{Arg, Config, GoValue, Signature};

/// Checks `bytes` and returns the summary, or an error listing every problem found.
pub fn check(bytes: &[u8]) -> anyhow::Result<String> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        bail!("empty input: expected a task message (a JSON object)");
    }
    let sig = Signature::from_slice(bytes).map_err(|e| anyhow!("not a task message: {e}"))?;
    let mut problems = Vec::new();
    validate(&sig, "", &mut problems);
    let max = Config::default().max_message_size;
    if bytes.len() > max {
        problems.push(format!(
            "the message is {} bytes; workers accept at most {max}",
            bytes.len()
        ));
    }
    if !problems.is_empty() {
        bail!("invalid task message:\n  {}", problems.join("\n  "));
    }
    Ok(describe(&sig))
}

/// Collects what a worker would refuse in `sig` and the signatures nested in it.
fn validate(sig: &Signature, at: &str, problems: &mut Vec<String>) {
    if sig.name.is_empty() {
        problems.push(format!(
            "{at}Name: the message names no task (a worker dead-letters it)"
        ));
    }
    for (i, arg) in sig.args.iter().enumerate() {
        if let Err(e) = arg.decode() {
            problems.push(format!("{at}Args[{i}] ({}): {e}", arg.type_name));
        }
    }
    for (i, cb) in sig.on_success.iter().enumerate() {
        validate(cb, &format!("{at}OnSuccess[{i}]."), problems);
    }
    for (i, cb) in sig.on_error.iter().enumerate() {
        validate(cb, &format!("{at}OnError[{i}]."), problems);
    }
    if let Some(cb) = &sig.chord_callback {
        validate(cb, &format!("{at}ChordCallback."), problems);
    }
}

/// The summary of a valid message.
fn describe(sig: &Signature) -> String {
    let mut s = String::new();
    let mut line = |key: &str, value: &dyn std::fmt::Display| {
        let _ = writeln!(s, "  {key:<14}{value}");
    };
    line("UUID", &or_dash(&sig.uuid));
    line("RoutingKey", &or_dash(&sig.routing_key));
    line(
        "ETA",
        &sig.eta.as_ref().map_or_else(
            || "none (runs at once)".to_owned(),
            machinist::time::display,
        ),
    );
    line("RetryCount", &sig.retry_count);
    line("RetryTimeout", &format_args!("{} s", sig.retry_timeout));
    line("Priority", &sig.priority);
    line("Immutable", &sig.immutable);
    line("Headers", &headers(sig));
    if !sig.group_uuid.is_empty() {
        line(
            "GroupUUID",
            &format_args!("{} ({} tasks)", sig.group_uuid, sig.group_task_count),
        );
    }
    if sig.ignore_when_task_not_registered {
        line("IgnoreWhenTaskNotRegistered", &true);
    }
    if sig.stop_task_deletion_on_error {
        line("StopTaskDeletionOnError", &true);
    }
    if !sig.broker_message_group_id.is_empty() {
        line("BrokerMessageGroupId", &sig.broker_message_group_id);
    }
    if !sig.extra.is_empty() {
        let keys: Vec<&str> = sig.extra.iter().map(|(k, _)| k.as_str()).collect();
        line("unknown keys", &format_args!("{} (kept)", keys.join(", ")));
    }

    let mut out = format!("{}\n", call(sig));
    out.push_str(&s);
    if !sig.args.is_empty() {
        out.push_str("  Args\n");
        for (i, arg) in sig.args.iter().enumerate() {
            let name = if arg.name.is_empty() {
                String::new()
            } else {
                format!(" ({})", arg.name)
            };
            let _ = writeln!(
                out,
                "    #{} {:<10} {}{name}",
                i + 1,
                arg.type_name,
                value(arg)
            );
        }
    }
    callbacks(&mut out, "OnSuccess", &sig.on_success, 2);
    callbacks(&mut out, "OnError", &sig.on_error, 2);
    if let Some(cb) = &sig.chord_callback {
        callbacks(&mut out, "ChordCallback", std::slice::from_ref(cb), 2);
    }
    out
}

/// Nested callbacks, one per line, with their own callbacks indented below them.
fn callbacks(out: &mut String, label: &str, list: &[Signature], indent: usize) {
    if list.is_empty() {
        return;
    }
    let _ = writeln!(out, "{:indent$}{label}", "");
    for cb in list {
        let _ = writeln!(out, "{:indent$}  {}  [{}]", "", call(cb), or_dash(&cb.uuid));
        callbacks(out, "OnSuccess", &cb.on_success, indent + 4);
        callbacks(out, "OnError", &cb.on_error, indent + 4);
    }
}

/// `add(1, 2)`: the task as a call.
pub fn call(sig: &Signature) -> String {
    let args: Vec<String> = sig.args.iter().map(value).collect();
    format!("{}({})", sig.name, args.join(", "))
}

/// An argument's value as text: strings quoted, the rest as Go prints them.
fn value(arg: &Arg) -> String {
    match arg.decode() {
        Ok(GoValue::String(s)) => format!("{s:?}"),
        Ok(v) => v.to_string(),
        Err(_) => arg.value.to_string(),
    }
}

fn headers(sig: &Signature) -> String {
    match &sig.headers {
        None => "null".to_owned(),
        Some(h) => serde_json::Value::Object(h.0.clone()).to_string(),
    }
}

fn or_dash(s: &str) -> &str {
    if s.is_empty() { "-" } else { s }
}

#[cfg(test)]
mod tests {
    use machinist::{Chain, Chord, Group};

    use super::*;

    #[test]
    fn describes_a_message() {
        let sig = Signature::new("concat")
            .with_uuid("task_1")
            .args(vec!["foo", "bar"])
            .args(2.5f64);
        let text = check(&sig.to_vec().expect("encode")).expect("valid");
        assert!(
            text.starts_with("concat([\"foo\", \"bar\"], 2.5)\n"),
            "{text}"
        );
        assert!(text.contains("#1 []string"), "{text}");
        assert!(text.contains("#2 float64    2.5"), "{text}");
        assert!(text.contains("task_1"), "{text}");
    }

    #[test]
    fn shows_nested_workflows() {
        let chain = Chain::new(vec![
            Signature::new("add").args((1i64, 1i64)),
            Signature::new("add").args((2i64, 2i64)),
            Signature::new("multiply").args(4i64),
        ]);
        let text = check(&chain.tasks[0].to_vec().expect("encode")).expect("valid");
        assert!(text.contains("OnSuccess\n    add(2, 2)"), "{text}");
        assert!(
            text.contains("      OnSuccess\n        multiply(4)"),
            "{text}"
        );

        let chord = Chord::new(
            Group::new(vec![Signature::new("add")]),
            Signature::new("multiply"),
        );
        let text = check(&chord.group.tasks[0].to_vec().expect("encode")).expect("valid");
        assert!(text.contains("ChordCallback\n    multiply()"), "{text}");
        assert!(text.contains("(1 tasks)"), "{text}");
    }

    #[test]
    fn rejects_what_a_worker_would() {
        let err = |body: &str| check(body.as_bytes()).expect_err(body).to_string();
        assert!(err("").contains("empty input"));
        assert!(err("not json").contains("not a task message"));
        assert!(err(r#"{"Name":""}"#).contains("names no task"));
        let bad = r#"{"Name":"add","Args":[{"Type":"int64","Value":1.5}]}"#;
        assert!(
            err(bad).contains("Args[0] (int64): 1.5 is not int64"),
            "{}",
            err(bad)
        );
        let nested = r#"{"Name":"a","OnSuccess":[{"Name":"b","Args":[{"Type":"map","Value":1}]}]}"#;
        assert!(
            err(nested).contains("OnSuccess[0].Args[0] (map)"),
            "{}",
            err(nested)
        );
    }

    #[test]
    fn accepts_go_leniency() {
        let text = check(
            br#"{"name":"add","args":[{"type":"int64","value":1}],"Headers":null,"Index":3}"#,
        )
        .expect("valid");
        assert!(text.starts_with("add(1)\n"), "{text}");
        assert!(text.contains("unknown keys  Index (kept)"), "{text}");
    }
}
