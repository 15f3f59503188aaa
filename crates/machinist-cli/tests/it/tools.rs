//! The message tools (`encode`, `decode`, `tasks`) and the in-process `demo`: no broker.

use crate::util::{machinist, text};

#[test]
fn encode_output_decodes_back() {
    let enc = machinist(
        &["encode", "add", "int64:1", "int64:2", "--uuid", "task_x"],
        b"",
    );
    assert!(enc.status.success(), "{}", text(&enc.stderr));
    let body = text(&enc.stdout);
    assert!(
        body.starts_with(
            r#"{"UUID":"task_x","Name":"add","RoutingKey":"machinery_tasks","ETA":null,"GroupUUID":"","GroupTaskCount":0,"Args":[{"Name":"","Type":"int64","Value":1},{"Name":"","Type":"int64","Value":2}],"Headers":{},"Priority":0,"#
        ),
        "{body}"
    );

    let dec = machinist(&["decode"], &enc.stdout);
    assert!(dec.status.success(), "{}", text(&dec.stderr));
    let summary = text(&dec.stdout);
    assert!(summary.starts_with("add(1, 2)\n"), "{summary}");
    assert!(summary.contains("task_x"), "{summary}");
    assert!(summary.contains("#2 int64"), "{summary}");
}

#[test]
fn encode_generates_a_task_uuid_and_slices() {
    let enc = machinist(&["encode", "concat", r#"[]string:["foo","bar"]"#], b"");
    assert!(enc.status.success(), "{}", text(&enc.stderr));
    let json: serde_json::Value = serde_json::from_slice(&enc.stdout).expect("JSON");
    let uuid = json["UUID"].as_str().expect("UUID");
    assert!(uuid.starts_with("task_"), "{uuid}");
    assert_eq!(
        json["Args"][0],
        serde_json::json!({"Name": "", "Type": "[]string", "Value": ["foo", "bar"]})
    );
}

#[test]
fn encode_rejects_bad_values_with_exit_code_2() {
    for bad in ["int64:1.5", "int64", "complex128:1", "bool:yes"] {
        let out = machinist(&["encode", "add", bad], b"");
        assert_eq!(out.status.code(), Some(2), "{bad}: {}", text(&out.stderr));
        let err = text(&out.stderr);
        assert!(err.contains(bad), "{bad}: {err}");
        assert!(out.stdout.is_empty());
    }
}

#[test]
fn decode_of_garbage_exits_1_with_a_message() {
    let out = machinist(&["decode"], b"this is not a message");
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("not a task message"),
        "{}",
        text(&out.stderr)
    );
    assert!(out.stdout.is_empty());
}

#[test]
fn decode_applies_go_type_rules() {
    let body = br#"{"Name":"add","Args":[{"Type":"int64","Value":"1"}]}"#;
    let out = machinist(&["decode"], body);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(err.contains("Args[0] (int64)"), "{err}");
    assert!(err.contains("is not int64"), "{err}");
}

#[test]
fn decode_reads_a_file() {
    let path = std::env::temp_dir().join(format!("machinist-cli-it-{}.json", std::process::id()));
    std::fs::write(
        &path,
        br#"{"Name":"split","Args":[{"Type":"string","Value":"foo"}]}"#,
    )
    .expect("write");
    let out = machinist(&["decode", path.to_str().expect("utf-8 path")], b"");
    let _ = std::fs::remove_file(&path);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).starts_with("split(\"foo\")\n"));
}

#[test]
fn tasks_lists_go_signatures() {
    let out = machinist(&["tasks"], b"");
    assert!(out.status.success());
    let list = text(&out.stdout);
    assert!(
        list.contains("func(args ...int64) (int64, error)"),
        "{list}"
    );
    for name in [
        "add",
        "sum_floats",
        "panic_task",
        "long_running_task",
        "flaky",
    ] {
        assert!(list.lines().any(|l| l.starts_with(name)), "{name}: {list}");
    }
}

#[test]
fn demo_runs_the_example_flow() {
    let out = machinist(&["demo"], b"");
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(stdout.contains("= 88\n"), "{stdout}");
    assert!(stdout.contains("= 68\n"), "{stdout}");
    // The expected panic and task failure are not printed as errors.
    let stderr = text(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(!stderr.contains("ERROR"), "{stderr}");
}
