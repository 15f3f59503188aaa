//! Every `TYPE:VALUE` form, through a broker and a worker and back, and bad input.

use serde_json::{Value, json};

use crate::util::{Db, machinist, text};

/// One argument of every Go type name, with edge values.
const EVERY_FORM: &[&str] = &[
    "bool:true",
    "int:-1",
    "int8:-128",
    "int16:32767",
    "int32:-2147483648",
    "int64:9223372036854775807",
    "uint:7",
    "uint8:255",
    "uint16:65535",
    "uint32:4294967295",
    "uint64:18446744073709551615",
    "float32:1.5",
    "float64:2.0",
    "float64:-0.1",
    "string:a:b c",
    "string:",
    "[]bool:[true,false]",
    "[]int:[1,-2]",
    "[]int8:[-128,127]",
    "[]int16:[1]",
    "[]int32:[]",
    "[]int64:[1,2,3]",
    "[]uint:[0]",
    "[]uint8:[1,2,3]",
    "[]uint16:[65535]",
    "[]uint32:[1]",
    "[]uint64:[18446744073709551615]",
    "[]float32:[0.5,1]",
    "[]float64:[1.5,2.7]",
    "[]byte:AQID",
    r#"[]string:["a","b c"]"#,
];

/// The `Args` of the message `encode` prints for `echo EVERY_FORM…` (Go's exact encoding).
fn encoded_args() -> Vec<Value> {
    let mut args = vec!["encode", "echo"];
    args.extend_from_slice(EVERY_FORM);
    let out = machinist(&args, b"");
    assert!(out.status.success(), "{}", text(&out.stderr));
    let msg: Value = serde_json::from_slice(&out.stdout).expect("message");
    msg["Args"].as_array().expect("Args").clone()
}

#[test]
fn every_form_round_trips_through_a_worker() {
    let db = Db::new("every-form");
    let mut worker = db.worker(&[]);
    let mut args = vec!["send", "echo"];
    args.extend_from_slice(EVERY_FORM);
    args.extend_from_slice(&["--wait", "--json", "--timeout", "20s"]);
    let out = db.run(&args);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let state: Value = serde_json::from_slice(&out.stdout).expect("state");
    assert_eq!(state["State"], "SUCCESS", "{state}");
    let results = state["Results"].as_array().expect("Results");
    let sent = encoded_args();
    assert_eq!(results.len(), EVERY_FORM.len());
    for ((form, result), arg) in EVERY_FORM.iter().zip(results).zip(&sent) {
        assert_eq!(result["Type"], arg["Type"], "{form}");
        assert_eq!(result["Value"], arg["Value"], "{form}");
    }
    // A few by value: what Go would put on the wire.
    let value = |i: usize| &results[i]["Value"];
    assert_eq!(value(10), &json!(u64::MAX));
    assert_eq!(value(5), &json!(i64::MAX));
    assert_eq!(value(12), &json!(2), "float64:2.0 is written 2, as Go does");
    assert_eq!(value(14), &json!("a:b c"));
    assert_eq!(value(23), &json!("AQID"), "[]uint8 travels as base64");
    assert_eq!(results[29]["Type"], "[]byte");
    assert_eq!(value(29), &json!("AQID"));
    assert_eq!(value(30), &json!(["a", "b c"]));
    assert_eq!(worker.stop().code(), Some(0), "{}", worker.log());
}

#[test]
fn every_form_is_stored_as_encoded() {
    let db = Db::new("every-form-pending");
    let mut args = vec!["send", "echo"];
    args.extend_from_slice(EVERY_FORM);
    db.send(&args[1..]);
    let pending: Vec<Value> =
        serde_json::from_str(&db.ok(&["inspect", "pending", "--json"])).expect("array");
    assert_eq!(pending.len(), 1);
    assert_eq!(pending[0]["Args"], Value::Array(encoded_args()));
}

#[test]
fn bad_input_exits_2_and_shows_the_expected_form() {
    let db = Db::new("bad-input");
    let cases: &[(&[&str], &[&str])] = &[
        (&["send", "add", "int64"], &["int64", "expected TYPE:VALUE"]),
        (
            &["send", "add", "int64:1.5"],
            &["int64:1.5", "is not int64"],
        ),
        (&["send", "add", "int8:300"], &["int8:300", "overflows"]),
        (&["send", "add", "complex128:1"], &["unknown type", "int64"]),
        (
            &["send", "add", "bool:yes"],
            &["bool:yes", "not a valid bool"],
        ),
        (&["send", "add", "[]int64:1,2"], &["[]int64:1,2", "[]int64"]),
        (&["send", "add", "--delay", "soon"], &["soon", "\"30s\""]),
        (
            &["send", "add", "--eta", "tomorrow"],
            &["tomorrow", "RFC 3339"],
        ),
        (
            &[
                "send",
                "add",
                "--eta",
                "2030-01-02T03:04:05Z",
                "--delay",
                "1s",
            ],
            &["cannot be used with"],
        ),
        (&["send", "add", "--timeout", "1s"], &["--wait"]),
        (&["send", "add", "--json"], &["--wait"]),
        (&["send", "add", "--count", "0"], &["--count", "0"]),
        (&["send", "add", "--retry", "-1"], &["--retry"]),
        (&["send", ""], &["NAME"]),
        (&["status"], &["UUID"]),
        (&["worker", "--concurrency", "many"], &["many"]),
        (&["inspect"], &["pending", "delayed"]),
    ];
    for (args, wanted) in cases {
        let out = db.run(args);
        assert_eq!(
            out.status.code(),
            Some(2),
            "{args:?}: stderr {}",
            text(&out.stderr)
        );
        assert!(out.stdout.is_empty(), "{args:?}: {}", text(&out.stdout));
        let err = text(&out.stderr);
        for w in *wanted {
            assert!(err.contains(w), "{args:?}: {w:?} not in {err}");
        }
    }
    // Nothing was sent.
    assert_eq!(db.ok(&["inspect", "pending", "--json"]), "[\n]\n");
}

#[test]
fn an_argument_the_task_cannot_take_fails_the_task_with_a_reason() {
    let db = Db::new("wrong-arg");
    let mut worker = db.worker(&[]);
    let out = db.run(&[
        "send",
        "add",
        "string:one",
        "--wait",
        "--json",
        "--timeout",
        "20s",
    ]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}\nworker log:\n{}",
        text(&out.stderr),
        worker.log()
    );
    let state: Value = serde_json::from_slice(&out.stdout).expect("state");
    assert_eq!(state["State"], "FAILURE");
    let error = state["Error"].as_str().expect("Error");
    assert!(error.contains("argument #1"), "{error}");
    assert!(error.contains("int64"), "{error}");
    assert_eq!(worker.stop().code(), Some(0), "{}", worker.log());
}
