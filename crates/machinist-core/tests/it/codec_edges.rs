//! Edge cases of the fast paths in the codec: the byte-scanning escaper (`<`, `>`, `&`, U+2028 /
//! U+2029 beside other `E2 80 xx` characters, control characters), key matching without
//! allocation (every key in mixed case, escaped keys, duplicates, unknown keys), invalid UTF-8,
//! and Go's time text written by hand.

use chrono::{DateTime, Utc};
use machinist_core::{Arg, GroupMeta, Headers, Signature, State, TaskState, time};
use serde_json::{Value, json};

fn encode(sig: &Signature) -> String {
    String::from_utf8(sig.to_vec().expect("encode")).expect("utf-8")
}

/// What Go's `json.Marshal` writes for a string (HTML-safe), built char by char: the reference
/// the byte scanner must match.
fn go_quote(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '<' | '>' | '&' | '\u{2028}' | '\u{2029}' => {
                out.push_str(&format!("\\u{:04x}", u32::from(c)));
            }
            c if u32::from(c) < 0x20 => out.push_str(&format!("\\u{:04x}", u32::from(c))),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[test]
fn escapes_at_every_position_and_beside_lookalikes() {
    // `†` (E2 80 A0), `‰` (E2 80 B0), `€` (E2 82 AC), U+2027 (E2 80 A7), U+202A (E2 80 AA)
    // share the lead byte of U+2028 / U+2029 and must stay raw.
    let pieces = [
        "<", ">", "&", "\u{2028}", "\u{2029}", "†", "‰", "€", "\u{2027}", "\u{202a}", "a", "é",
        "\u{0}", "\u{1f}", "\n", "\"", "\\", "/", "\u{7f}", "😀",
    ];
    let mut cases: Vec<String> = vec![String::new()];
    for a in pieces {
        cases.push(a.to_owned());
        for b in pieces {
            cases.push(format!("{a}{b}"));
            cases.push(format!("x{a}y{b}z"));
        }
    }
    cases.push("\u{2028}\u{2029}\u{2028}<<>>&&".to_owned());
    cases.push("plain ascii text with no escapes at all, quite long to be one run".to_owned());
    for s in &cases {
        let sig = Signature::new(s.as_str());
        let out = encode(&sig);
        let want = format!(r#"{{"UUID":"","Name":{},"RoutingKey""#, go_quote(s));
        assert!(out.starts_with(&want), "{s:?}: {out}");
        let back = Signature::from_slice(out.as_bytes()).expect("decode");
        assert_eq!(&back.name, s);
    }
}

#[test]
fn escapes_in_keys_values_and_extras() {
    let mut headers = Headers::new();
    headers.insert("<h>\u{2029}", "a&b");
    let mut sig = Signature::new("n").arg(Arg::new("<v>".to_owned()));
    sig.headers = Some(headers);
    sig.extra.push(("X&\u{2028}".to_owned(), json!(["<", "‰"])));
    let out = encode(&sig);
    assert!(
        out.contains(r#""Value":"\u003cv\u003e""#),
        "argument value: {out}"
    );
    assert!(
        out.contains(r#""Headers":{"\u003ch\u003e\u2029":"a\u0026b"}"#),
        "header: {out}"
    );
    assert!(
        out.ends_with(r#""X\u0026\u2028":["\u003c","‰"]}"#),
        "extra: {out}"
    );
    let back = Signature::from_slice(out.as_bytes()).expect("decode");
    assert_eq!(back, sig);
}

#[test]
fn invalid_utf8_is_refused_in_keys_and_values() {
    for input in [
        &b"{\"\xff\":1}"[..],
        b"{\"Na\xc3\":\"x\"}",
        b"{\"Name\":\"\xed\xa0\x80\"}",
        b"{\"Args\":[{\"T\xffype\":\"int64\"}]}",
        b"{\"ETA\":\"2024-05-01T10:00:28Z\xff\"}",
    ] {
        let shown = String::from_utf8_lossy(input);
        assert!(Signature::from_slice(input).is_err(), "{shown}");
    }
    assert!(TaskState::from_slice(b"{\"Created\xffAt\":1}").is_err());
    assert!(TaskState::from_slice(b"{\"CreatedAt\":\"\xff\"}").is_err());
    assert!(GroupMeta::from_slice(b"{\"\xc3\":1}").is_err());
}

/// `key` with its letters in alternating case, starting with the other case of the first.
fn wobble(key: &str, upper_first: bool) -> String {
    key.chars()
        .enumerate()
        .map(|(i, c)| {
            if (i % 2 == 0) == upper_first {
                c.to_ascii_uppercase()
            } else {
                c.to_ascii_lowercase()
            }
        })
        .collect()
}

#[test]
fn every_key_matches_in_any_ascii_case() {
    let sig = Signature {
        uuid: "task_1".into(),
        name: "add".into(),
        routing_key: "q".into(),
        eta: Some(
            time::parse("2024-05-01T10:00:28.5Z")
                .expect("time")
                .expect("set"),
        ),
        group_uuid: "group_1".into(),
        group_task_count: 3,
        args: vec![Arg::new(7i64).named("n")],
        headers: Some(Headers::new()),
        priority: 9,
        immutable: true,
        retry_count: 2,
        retry_timeout: 5,
        on_success: vec![Signature::new("cb")],
        on_error: vec![Signature::new("eb")],
        chord_callback: Some(Box::new(Signature::new("ch"))),
        broker_message_group_id: "mg".into(),
        sqs_receipt_handle: "rh".into(),
        stop_task_deletion_on_error: true,
        ignore_when_task_not_registered: true,
        created_at: time::parse("2024-05-01T09:00:00Z").expect("time"),
        extra: Vec::new(),
    };
    let text = encode(&sig);
    let map: serde_json::Map<String, Value> = serde_json::from_str(&text).expect("object");
    assert_eq!(map.len(), 20, "Go's 19 keys and machinist's CreatedAt");
    for upper_first in [false, true] {
        for lower in [false, true] {
            let mut out = serde_json::Map::new();
            for (k, v) in &map {
                let k = if lower {
                    k.to_ascii_lowercase()
                } else {
                    wobble(k, upper_first)
                };
                out.insert(k, v.clone());
            }
            let input = serde_json::to_vec(&out).expect("json");
            let back = Signature::from_slice(&input).expect("decode");
            assert_eq!(back, sig, "upper_first={upper_first} lower={lower}");
        }
    }

    let st = TaskState::from_slice(
        br#"{"tASKuUID":"t","TASKNAME":"n","sTaTe":"FAILURE","rEsUlTs":[{"tYpE":"bool","vAlUe":true,"nAmE":"x"}],"eRROR":"e","cREATEDaT":"2024-05-01T10:00:28Z","tTl":4}"#,
    )
    .expect("decode");
    assert_eq!(
        (st.task_uuid.as_str(), st.task_name.as_str(), &st.state),
        ("t", "n", &State::Failure)
    );
    let results = st.results.expect("results");
    assert_eq!(
        (results[0].type_name.as_str(), &results[0].value),
        ("bool", &json!(true))
    );
    assert_eq!((st.error.as_str(), st.ttl), ("e", 4));
    assert!(st.created_at.is_some());
    assert!(st.extra.is_empty());

    let g = GroupMeta::from_slice(
        br#"{"GROUPuuid":"g","taskUUIDS":["a","b"],"CHORDtriggered":true,"LOCK":true,"createdAT":"2024-05-01T10:00:28Z","Ttl":9}"#,
    )
    .expect("decode");
    assert_eq!(
        (
            g.group_uuid.as_str(),
            g.task_uuids.len(),
            g.chord_triggered,
            g.lock,
            g.ttl
        ),
        ("g", 2, true, true, 9)
    );
    assert!(g.created_at.is_some() && g.extra.is_empty());
}

#[test]
fn escaped_keys_and_near_misses() {
    // A key written with escapes is matched after unescaping, as Go does.
    let sig =
        Signature::from_slice(br#"{"\u0055UID":"task_1","N\u0061me":"add"}"#).expect("decode");
    assert_eq!((sig.uuid.as_str(), sig.name.as_str()), ("task_1", "add"));
    assert!(sig.extra.is_empty());

    // Only ASCII case is ignored; other near misses are unknown keys, kept as they came.
    let sig = Signature::from_slice(
        "{\"UUID \":1,\"UUIDs\":2,\"UUI\":3,\"ℕame\":4,\"Name\\u0000\":5}".as_bytes(),
    )
    .expect("decode");
    assert_eq!(sig.uuid, "");
    assert_eq!(sig.name, "");
    let keys: Vec<&str> = sig.extra.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(keys, ["UUID ", "UUIDs", "UUI", "ℕame", "Name\u{0}"]);

    // Unknown keys of Arg and TaskResult are dropped, `Name` is not a TaskResult key.
    let sig = Signature::from_slice(br#"{"Args":[{"Type":"int64","Value":1,"Extra":{"a":[1]}}]}"#)
        .expect("decode");
    assert_eq!(sig.args, vec![Arg::new(1i64)]);
    let st = TaskState::from_slice(br#"{"Results":[{"Name":"x","Type":"int64","Value":2}]}"#)
        .expect("decode");
    let r = &st.results.expect("results")[0];
    assert_eq!((r.type_name.as_str(), &r.value), ("int64", &json!(2)));
}

#[test]
fn duplicate_keys_keep_the_last_value() {
    // Known keys in any case: the last one wins.
    let sig = Signature::from_slice(
        br#"{"Name":"first","NAME":"second","name":"third","RetryCount":1,"retrycount":null}"#,
    )
    .expect("decode");
    assert_eq!(sig.name, "third");
    assert_eq!(sig.retry_count, 0);

    // Unknown keys are kept by exact text: a repeat replaces the earlier one and moves to its
    // place, another case is another key.
    let sig =
        Signature::from_slice(br#"{"Index":1,"INDEX":2,"Other":0,"Index":3}"#).expect("decode");
    assert_eq!(
        sig.extra,
        vec![
            ("INDEX".to_owned(), json!(2)),
            ("Other".to_owned(), json!(0)),
            ("Index".to_owned(), json!(3)),
        ]
    );
    let st = TaskState::from_slice(br#"{"X":1,"Y":2,"X":3}"#).expect("decode");
    assert_eq!(
        st.extra,
        vec![("Y".to_owned(), json!(2)), ("X".to_owned(), json!(3))]
    );
    let g = GroupMeta::from_slice(br#"{"X":1,"x":2,"X":3}"#).expect("decode");
    assert_eq!(
        g.extra,
        vec![("x".to_owned(), json!(2)), ("X".to_owned(), json!(3))]
    );
}

/// Go's text for a UTC time, by the long way (chrono's own formatting).
fn reference_text(t: &DateTime<Utc>) -> String {
    let base = t.format("%Y-%m-%dT%H:%M:%S").to_string();
    let nanos = t.timestamp_subsec_nanos() % 1_000_000_000;
    if nanos == 0 {
        return format!("{base}Z");
    }
    let frac = format!("{nanos:09}");
    format!("{base}.{}Z", frac.trim_end_matches('0'))
}

#[test]
fn times_written_by_hand_match_the_long_way() {
    let mut times = vec![
        "0000-01-01T00:00:00Z",
        "0001-01-01T00:00:00.000000001Z",
        "1970-01-01T00:00:00Z",
        "1999-12-31T23:59:59.9Z",
        "2024-02-29T12:34:56.120000000Z",
        "2024-05-01T10:00:28.29704155Z",
        "9999-12-31T23:59:59.999999999Z",
    ]
    .into_iter()
    .map(|s| {
        DateTime::parse_from_rfc3339(s)
            .expect("time")
            .with_timezone(&Utc)
    })
    .collect::<Vec<_>>();
    let mut nanos = 1u32;
    for i in 0..200u32 {
        nanos = nanos.wrapping_mul(1_103_515_245).wrapping_add(12_345) % 1_000_000_000;
        let secs = i64::from(i) * 7_919_123 + 1_600_000_000;
        times.push(DateTime::from_timestamp(secs, nanos).expect("in range"));
        times.push(DateTime::from_timestamp(secs, (nanos / 1000) * 1000).expect("in range"));
    }
    for t in &times {
        assert_eq!(time::format(t), reference_text(t), "{t:?}");
        assert_eq!(time::try_format(t), Some(reference_text(t)), "{t:?}");
    }

    // Years Go cannot encode are still formatted by `format` (for logs), refused by the encoder.
    let far = DateTime::parse_from_rfc3339("9999-12-31T23:59:59Z")
        .expect("time")
        .with_timezone(&Utc)
        + chrono::Duration::days(400);
    assert_eq!(time::format(&far), "10001-02-03T23:59:59Z");
    assert_eq!(time::try_format(&far), None);
    let before = DateTime::parse_from_rfc3339("0000-01-01T00:00:00Z")
        .expect("time")
        .with_timezone(&Utc)
        - chrono::Duration::days(1);
    assert_eq!(time::format(&before), "-001-12-31T00:00:00Z");
    assert!(Signature::new("t").eta(before).to_vec().is_err());

    // A state's CreatedAt goes through the same text.
    let st = TaskState {
        created_at: Some(times[5]),
        ..TaskState::from_slice(b"{}").expect("decode")
    };
    let out = String::from_utf8(st.to_vec().expect("encode")).expect("utf-8");
    assert!(
        out.contains(r#""CreatedAt":"2024-05-01T10:00:28.29704155Z""#),
        "{out}"
    );
}
