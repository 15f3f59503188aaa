//! Golden wire tests: JSON exactly as a Go Machinery v2 peer writes it (`wire-format.md` §2, §15)
//! must decode, and re-encode byte for byte; lenient decoding; Go's escapes and float forms;
//! invalid input is an error, never a panic.

use chrono::{DateTime, Duration, Utc};
use machinist_core::{Arg, GroupMeta, Headers, Signature, State, TaskResult, TaskState, time};
use serde_json::{Value, json};

/// Decodes a Go message and re-encodes it; the bytes must be identical.
fn assert_signature_round_trip(go: &str) -> Signature {
    let sig = Signature::from_slice(go.as_bytes()).expect("decode Go signature");
    let out = sig.to_vec().expect("encode signature");
    assert_eq!(String::from_utf8(out).expect("utf-8"), go);
    sig
}

/// Same for a stored task state.
fn assert_state_round_trip(go: &str) -> TaskState {
    let st = TaskState::from_slice(go.as_bytes()).expect("decode Go state");
    let out = st.to_vec().expect("encode state");
    assert_eq!(String::from_utf8(out).expect("utf-8"), go);
    st
}

fn encode(sig: &Signature) -> String {
    String::from_utf8(sig.to_vec().expect("encode")).expect("utf-8")
}

fn utc(s: &str) -> DateTime<Utc> {
    time::parse(s).expect("valid time").expect("not zero")
}

fn int64(v: i64) -> Arg {
    Arg {
        name: String::new(),
        type_name: "int64".into(),
        value: json!(v),
    }
}

/// Every Go key after `Headers`, at Go's zero values (shared tail of the fixtures).
const ZERO_TAIL: &str = r#""Priority":0,"Immutable":false,"RetryCount":0,"RetryTimeout":0,"OnSuccess":null,"OnError":null,"ChordCallback":null,"BrokerMessageGroupId":"","SQSReceiptHandle":"","StopTaskDeletionOnError":false,"IgnoreWhenTaskNotRegistered":false"#;

// ---------------------------------------------------------------------------------------------
// Signatures as Go sends them

#[test]
fn go_add_message_round_trips() {
    let go = format!(
        concat!(
            r#"{{"UUID":"task_9f0d3c5e-2b7a-4c1e-8d6f-0a1b2c3d4e5f","Name":"add","#,
            r#""RoutingKey":"machinery_tasks","ETA":null,"GroupUUID":"","GroupTaskCount":0,"#,
            r#""Args":[{{"Name":"","Type":"int64","Value":1}},{{"Name":"","Type":"int64","Value":1}}],"#,
            r#""Headers":{{}},{}}}"#
        ),
        ZERO_TAIL
    );
    let sig = assert_signature_round_trip(&go);
    assert_eq!(sig.uuid, "task_9f0d3c5e-2b7a-4c1e-8d6f-0a1b2c3d4e5f");
    assert_eq!(sig.name, "add");
    assert_eq!(sig.routing_key, "machinery_tasks");
    assert_eq!(sig.eta, None);
    assert_eq!(sig.args, vec![int64(1), int64(1)]);
    assert_eq!(sig.headers, Some(Headers::new()));
    assert!(sig.on_success.is_empty() && sig.chord_callback.is_none());
    assert!(sig.extra.is_empty());

    // Built by hand, the same signature encodes to the same bytes.
    let mut built = Signature::new("add")
        .with_uuid("task_9f0d3c5e-2b7a-4c1e-8d6f-0a1b2c3d4e5f")
        .routing_key("machinery_tasks")
        .arg(int64(1))
        .arg(int64(1));
    built.headers = Some(Headers::new());
    assert_eq!(encode(&built), go);
}

#[test]
fn go_chain_round_trips() {
    // add(2,2) -> add(5,6) -> multiply(4), as Go's SendChain publishes it: only the first task
    // has its routing key and `{}` headers; the nested ones still carry `""` and `null`.
    let multiply = format!(
        concat!(
            r#"{{"UUID":"task_33333333-3333-4333-8333-333333333333","Name":"multiply","#,
            r#""RoutingKey":"","ETA":null,"GroupUUID":"","GroupTaskCount":0,"#,
            r#""Args":[{{"Name":"","Type":"int64","Value":4}}],"Headers":null,{}}}"#
        ),
        ZERO_TAIL
    );
    let add56 = format!(
        concat!(
            r#"{{"UUID":"task_22222222-2222-4222-8222-222222222222","Name":"add","#,
            r#""RoutingKey":"","ETA":null,"GroupUUID":"","GroupTaskCount":0,"#,
            r#""Args":[{{"Name":"","Type":"int64","Value":5}},{{"Name":"","Type":"int64","Value":6}}],"#,
            r#""Headers":null,"Priority":0,"Immutable":false,"RetryCount":0,"RetryTimeout":0,"#,
            r#""OnSuccess":[{}],"OnError":null,"ChordCallback":null,"BrokerMessageGroupId":"","#,
            r#""SQSReceiptHandle":"","StopTaskDeletionOnError":false,"IgnoreWhenTaskNotRegistered":false}}"#
        ),
        multiply
    );
    let go = format!(
        concat!(
            r#"{{"UUID":"task_11111111-1111-4111-8111-111111111111","Name":"add","#,
            r#""RoutingKey":"machinery_tasks","ETA":null,"GroupUUID":"","GroupTaskCount":0,"#,
            r#""Args":[{{"Name":"","Type":"int64","Value":2}},{{"Name":"","Type":"int64","Value":2}}],"#,
            r#""Headers":{{}},"Priority":0,"Immutable":false,"RetryCount":0,"RetryTimeout":0,"#,
            r#""OnSuccess":[{}],"OnError":null,"ChordCallback":null,"BrokerMessageGroupId":"","#,
            r#""SQSReceiptHandle":"","StopTaskDeletionOnError":false,"IgnoreWhenTaskNotRegistered":false}}"#
        ),
        add56
    );
    let sig = assert_signature_round_trip(&go);
    assert_eq!(sig.on_success.len(), 1);
    let second = &sig.on_success[0];
    assert_eq!(second.uuid, "task_22222222-2222-4222-8222-222222222222");
    assert_eq!(second.routing_key, "");
    assert_eq!(second.headers, None);
    assert_eq!(second.args, vec![int64(5), int64(6)]);
    let third = &second.on_success[0];
    assert_eq!(third.name, "multiply");
    assert!(third.on_success.is_empty());

    // Each nested task is itself a complete message that round-trips.
    assert_eq!(encode(second), add56);
    assert_eq!(encode(third), multiply);
}

#[test]
fn go_chord_member_round_trips() {
    // A member of group(add(1,1), add(5,5)) with chord callback multiply(): the callback has no
    // args (`null`), no routing key and `null` headers until a worker sends it.
    let callback = format!(
        concat!(
            r#"{{"UUID":"chord_44444444-4444-4444-8444-444444444444","Name":"multiply","#,
            r#""RoutingKey":"","ETA":null,"GroupUUID":"","GroupTaskCount":0,"Args":null,"#,
            r#""Headers":null,{}}}"#
        ),
        ZERO_TAIL
    );
    let go = format!(
        concat!(
            r#"{{"UUID":"task_55555555-5555-4555-8555-555555555555","Name":"add","#,
            r#""RoutingKey":"machinery_tasks","ETA":null,"#,
            r#""GroupUUID":"group_66666666-6666-4666-8666-666666666666","GroupTaskCount":2,"#,
            r#""Args":[{{"Name":"","Type":"int64","Value":1}},{{"Name":"","Type":"int64","Value":1}}],"#,
            r#""Headers":{{}},"Priority":0,"Immutable":false,"RetryCount":3,"RetryTimeout":0,"#,
            r#""OnSuccess":null,"OnError":null,"ChordCallback":{},"BrokerMessageGroupId":"","#,
            r#""SQSReceiptHandle":"","StopTaskDeletionOnError":false,"IgnoreWhenTaskNotRegistered":false}}"#
        ),
        callback
    );
    let sig = assert_signature_round_trip(&go);
    assert_eq!(sig.group_uuid, "group_66666666-6666-4666-8666-666666666666");
    assert_eq!(sig.group_task_count, 2);
    assert_eq!(sig.retry_count, 3);
    let cb = sig.chord_callback.as_deref().expect("chord callback");
    assert_eq!(cb.uuid, "chord_44444444-4444-4444-8444-444444444444");
    assert!(cb.args.is_empty());
    assert_eq!(cb.headers, None);
    assert_eq!(encode(cb), callback);
}

#[test]
fn go_message_with_every_field_set_round_trips() {
    let go = concat!(
        r#"{"UUID":"task_1","Name":"send_email","RoutingKey":"emails","#,
        r#""ETA":"2024-05-01T10:00:28.29704155Z","GroupUUID":"","GroupTaskCount":0,"#,
        r#""Args":[{"Name":"to","Type":"string","Value":"a@b.c"},{"Name":"","Type":"[]byte","Value":"aGk="},"#,
        r#"{"Name":"","Type":"[]string","Value":["x","y"]},{"Name":"","Type":"float64","Value":200}],"#,
        r#""Headers":{"a":1,"traceparent":"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01","z":{"k":[true,null]}},"#,
        r#""Priority":255,"Immutable":true,"RetryCount":5,"RetryTimeout":13,"#,
        r#""OnSuccess":null,"OnError":[{"UUID":"task_2","Name":"log_error","RoutingKey":"","ETA":null,"#,
        r#""GroupUUID":"","GroupTaskCount":0,"Args":null,"Headers":null,"Priority":0,"Immutable":false,"#,
        r#""RetryCount":0,"RetryTimeout":0,"OnSuccess":null,"OnError":null,"ChordCallback":null,"#,
        r#""BrokerMessageGroupId":"","SQSReceiptHandle":"","StopTaskDeletionOnError":false,"#,
        r#""IgnoreWhenTaskNotRegistered":false}],"ChordCallback":null,"BrokerMessageGroupId":"g1","#,
        r#""SQSReceiptHandle":"AQEB+/x=","StopTaskDeletionOnError":true,"IgnoreWhenTaskNotRegistered":true}"#
    );
    let sig = assert_signature_round_trip(go);
    assert_eq!(sig.eta, Some(utc("2024-05-01T10:00:28.297041550Z")));
    assert_eq!(sig.priority, 255);
    assert!(sig.immutable && sig.stop_task_deletion_on_error);
    assert!(sig.ignore_when_task_not_registered);
    assert_eq!((sig.retry_count, sig.retry_timeout), (5, 13));
    assert_eq!(sig.args[0].name, "to");
    let headers = sig.headers.as_ref().expect("headers");
    assert_eq!(
        headers.get_str("traceparent"),
        Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")
    );
    assert_eq!(sig.on_error[0].name, "log_error");
    assert_eq!(sig.broker_message_group_id, "g1");
    assert_eq!(sig.sqs_receipt_handle, "AQEB+/x=");
}

#[test]
fn headers_are_written_with_sorted_keys() {
    let sig = Signature::new("t")
        .header("zeta", 1)
        .header("Alpha", "x")
        .header("alpha", true)
        .header("_", Value::Null);
    let out = encode(&sig);
    assert!(
        out.contains(r#""Headers":{"Alpha":"x","_":null,"alpha":true,"zeta":1},"#),
        "{out}"
    );
}

// ---------------------------------------------------------------------------------------------
// Task states and group meta

#[test]
fn go_task_states_round_trip() {
    let pending = assert_state_round_trip(concat!(
        r#"{"TaskUUID":"task_1","TaskName":"add","State":"PENDING","Results":null,"Error":"","#,
        r#""CreatedAt":"2024-05-01T10:00:28.29704155Z","TTL":0}"#
    ));
    assert_eq!(pending.state, State::Pending);
    assert_eq!(pending.results, None);
    assert_eq!(
        pending.created_at,
        Some(utc("2024-05-01T10:00:28.29704155Z"))
    );

    let success = assert_state_round_trip(concat!(
        r#"{"TaskUUID":"task_1","TaskName":"add","State":"SUCCESS","#,
        r#""Results":[{"Type":"int64","Value":2},{"Type":"[]uint8","Value":"AAE="},{"Type":"float64","Value":-3.25e-7}],"#,
        r#""Error":"","CreatedAt":"2024-05-01T10:00:28Z","TTL":0}"#
    ));
    assert_eq!(success.state, State::Success);
    let results = success.results.as_deref().expect("results");
    assert_eq!(
        results[0],
        TaskResult {
            type_name: "int64".into(),
            value: json!(2)
        }
    );
    assert_eq!(results[2].value, json!(-3.25e-7));

    // A task that returns nothing: `[]`, not `null`.
    let empty = assert_state_round_trip(concat!(
        r#"{"TaskUUID":"task_2","TaskName":"noop","State":"SUCCESS","Results":[],"Error":"","#,
        r#""CreatedAt":"2024-05-01T10:00:28.1Z","TTL":0}"#
    ));
    assert_eq!(empty.results, Some(vec![]));

    // A worker-written state with no PENDING before it: empty name, zero time.
    let failure = assert_state_round_trip(concat!(
        r#"{"TaskUUID":"task_3","TaskName":"","State":"FAILURE","Results":null,"#,
        r#""Error":"boom: \"x\" \u003c 1 \u0026\u0026 y \u003e 2\n","CreatedAt":"0001-01-01T00:00:00Z","TTL":0}"#
    ));
    assert_eq!(failure.state, State::Failure);
    assert_eq!(failure.error, "boom: \"x\" < 1 && y > 2\n");
    assert_eq!(failure.created_at, None);

    // DynamoDB's TTL and a state name this version does not know.
    let other = assert_state_round_trip(concat!(
        r#"{"TaskUUID":"task_4","TaskName":"x","State":"REVOKED","Results":null,"Error":"","#,
        r#""CreatedAt":"2024-05-01T10:00:28.000000001Z","TTL":1714561228}"#
    ));
    assert_eq!(other.state, State::Other("REVOKED".into()));
    assert_eq!(other.ttl, 1_714_561_228);
}

#[test]
fn built_states_encode_like_go() {
    let mut st = TaskState::success("task_1", vec![]);
    st.task_name = "noop".into();
    assert_eq!(
        String::from_utf8(st.to_vec().expect("encode")).expect("utf-8"),
        r#"{"TaskUUID":"task_1","TaskName":"noop","State":"SUCCESS","Results":[],"Error":"","CreatedAt":"0001-01-01T00:00:00Z","TTL":0}"#
    );
    let st = TaskState::received("task_1");
    assert_eq!(
        String::from_utf8(st.to_vec().expect("encode")).expect("utf-8"),
        r#"{"TaskUUID":"task_1","TaskName":"","State":"RECEIVED","Results":null,"Error":"","CreatedAt":"0001-01-01T00:00:00Z","TTL":0}"#
    );
}

#[test]
fn go_group_meta_round_trips() {
    let go = concat!(
        r#"{"GroupUUID":"group_66666666-6666-4666-8666-666666666666","#,
        r#""TaskUUIDs":["task_55555555-5555-4555-8555-555555555555","task_77777777-7777-4777-8777-777777777777"],"#,
        r#""ChordTriggered":true,"Lock":false,"CreatedAt":"2024-05-01T10:00:28.29704155Z","TTL":0}"#
    );
    let g = GroupMeta::from_slice(go.as_bytes()).expect("decode");
    assert_eq!(g.task_uuids.len(), 2);
    assert!(g.chord_triggered && !g.lock);
    assert_eq!(
        String::from_utf8(g.to_vec().expect("encode")).expect("utf-8"),
        go
    );

    let empty = r#"{"GroupUUID":"","TaskUUIDs":null,"ChordTriggered":false,"Lock":true,"CreatedAt":"0001-01-01T00:00:00Z","TTL":7}"#;
    let g = GroupMeta::from_slice(empty.as_bytes()).expect("decode");
    assert_eq!((g.lock, g.ttl, g.created_at), (true, 7, None));
    assert_eq!(
        String::from_utf8(g.to_vec().expect("encode")).expect("utf-8"),
        empty
    );
}

// ---------------------------------------------------------------------------------------------
// Lenient decoding

#[test]
fn keys_match_case_insensitively() {
    let sig = Signature::from_slice(
        br#"{"uuid":"task_1","NAME":"add","routingkey":"q","Args":[{"name":"n","TYPE":"int64","value":7}],"retryCOUNT":2,"onsuccess":[{"Uuid":"task_2"}]}"#,
    )
    .expect("decode");
    assert_eq!(sig.uuid, "task_1");
    assert_eq!(sig.name, "add");
    assert_eq!(sig.routing_key, "q");
    assert_eq!(sig.args, vec![int64(7).named("n")]);
    assert_eq!(sig.retry_count, 2);
    assert_eq!(sig.on_success[0].uuid, "task_2");
    assert!(sig.extra.is_empty());

    let st = TaskState::from_slice(
        br#"{"taskuuid":"task_1","STATE":"SUCCESS","results":[{"type":"string","VALUE":"ok"}],"ttl":3}"#,
    )
    .expect("decode");
    assert_eq!(st.task_uuid, "task_1");
    assert_eq!(st.state, State::Success);
    assert_eq!(
        st.results.as_deref().map(|r| r[0].value.clone()),
        Some(json!("ok"))
    );
    assert_eq!(st.ttl, 3);

    let g = GroupMeta::from_slice(
        br#"{"groupuuid":"group_1","TASKUUIDS":["a"],"chordtriggered":true}"#,
    )
    .expect("decode");
    assert_eq!(
        (g.group_uuid.as_str(), g.task_uuids.len(), g.chord_triggered),
        ("group_1", 1, true)
    );
}

#[test]
fn null_everywhere_and_missing_keys_mean_zero_values() {
    let nulls = concat!(
        r#"{"UUID":null,"Name":null,"RoutingKey":null,"ETA":null,"GroupUUID":null,"#,
        r#""GroupTaskCount":null,"Args":null,"Headers":null,"Priority":null,"Immutable":null,"#,
        r#""RetryCount":null,"RetryTimeout":null,"OnSuccess":null,"OnError":null,"#,
        r#""ChordCallback":null,"BrokerMessageGroupId":null,"SQSReceiptHandle":null,"#,
        r#""StopTaskDeletionOnError":null,"IgnoreWhenTaskNotRegistered":null}"#
    );
    let zero = format!(
        concat!(
            r#"{{"UUID":"","Name":"","RoutingKey":"","ETA":null,"GroupUUID":"","#,
            r#""GroupTaskCount":0,"Args":null,"Headers":null,{}}}"#
        ),
        ZERO_TAIL
    );
    for input in [nulls, "{}"] {
        let sig = Signature::from_slice(input.as_bytes()).expect("decode");
        assert_eq!(sig, Signature::default(), "{input}");
        assert_eq!(encode(&sig), zero);
    }

    // An Arg with null or missing fields.
    let sig = Signature::from_slice(br#"{"Args":[{"Name":null,"Type":"int64","Value":null},{}]}"#)
        .expect("decode");
    assert_eq!(sig.args[0].type_name, "int64");
    assert_eq!(sig.args[0].value, Value::Null);
    assert_eq!(sig.args[1].type_name, "");

    let st = TaskState::from_slice(
        br#"{"TaskUUID":null,"TaskName":null,"State":null,"Results":null,"Error":null,"CreatedAt":null,"TTL":null}"#,
    )
    .expect("decode");
    assert_eq!(
        String::from_utf8(st.to_vec().expect("encode")).expect("utf-8"),
        r#"{"TaskUUID":"","TaskName":"","State":"","Results":null,"Error":"","CreatedAt":"0001-01-01T00:00:00Z","TTL":0}"#
    );
    let st = TaskState::from_slice(b"{}").expect("decode");
    assert_eq!((st.results, st.created_at, st.ttl), (None, None, 0));

    let g = GroupMeta::from_slice(
        br#"{"GroupUUID":null,"TaskUUIDs":null,"ChordTriggered":null,"Lock":null,"CreatedAt":null,"TTL":null}"#,
    )
    .expect("decode");
    assert_eq!(g, GroupMeta::default());
}

#[test]
fn unknown_keys_are_kept_in_order_after_go_keys() {
    // The fork's extra fields, placed first and in between the known ones.
    let input = concat!(
        r#"{"Index":3,"UUID":"task_1","ChainUUID":"chain_1","Name":"add","#,
        r#""ChainTaskCount":2,"Weird":{"b":[1,"<"]}}"#
    );
    let sig = Signature::from_slice(input.as_bytes()).expect("decode");
    assert_eq!(
        sig.extra,
        vec![
            ("Index".to_owned(), json!(3)),
            ("ChainUUID".to_owned(), json!("chain_1")),
            ("ChainTaskCount".to_owned(), json!(2)),
            ("Weird".to_owned(), json!({"b": [1, "<"]})),
        ]
    );
    let want = format!(
        concat!(
            r#"{{"UUID":"task_1","Name":"add","RoutingKey":"","ETA":null,"GroupUUID":"","#,
            r#""GroupTaskCount":0,"Args":null,"Headers":null,{},"#,
            r#""Index":3,"ChainUUID":"chain_1","ChainTaskCount":2,"Weird":{{"b":[1,"\u003c"]}}}}"#
        ),
        ZERO_TAIL
    );
    assert_eq!(encode(&sig), want);
    // Re-decoding the output keeps the same extras (stable through many hops).
    let again = Signature::from_slice(want.as_bytes()).expect("decode");
    assert_eq!(again, sig);

    // Duplicate unknown key: the last value wins, at its last position (as Go's last-wins).
    let sig = Signature::from_slice(br#"{"Index":1,"Other":0,"Index":2}"#).expect("decode");
    assert_eq!(
        sig.extra,
        vec![
            ("Other".to_owned(), json!(0)),
            ("Index".to_owned(), json!(2))
        ]
    );

    let st = TaskState::from_slice(br#"{"TaskUUID":"t","Extra":[1]}"#).expect("decode");
    assert_eq!(
        String::from_utf8(st.to_vec().expect("encode")).expect("utf-8"),
        r#"{"TaskUUID":"t","TaskName":"","State":"","Results":null,"Error":"","CreatedAt":"0001-01-01T00:00:00Z","TTL":0,"Extra":[1]}"#
    );
    let g = GroupMeta::from_slice(br#"{"GroupUUID":"g","Extra":true}"#).expect("decode");
    assert_eq!(
        String::from_utf8(g.to_vec().expect("encode")).expect("utf-8"),
        r#"{"GroupUUID":"g","TaskUUIDs":null,"ChordTriggered":false,"Lock":false,"CreatedAt":"0001-01-01T00:00:00Z","TTL":0,"Extra":true}"#
    );
}

#[test]
fn eta_offsets_and_fraction_digits_decode_to_one_instant() {
    let want = utc("2024-05-01T10:00:28.297041550Z");
    for eta in [
        "2024-05-01T10:00:28.29704155Z",
        "2024-05-01T10:00:28.297041550Z",
        "2024-05-01T12:00:28.29704155+02:00",
        "2024-05-01T05:30:28.29704155-04:30",
        "2024-05-01T10:00:28.29704155+00:00",
    ] {
        let input = format!(r#"{{"ETA":"{eta}"}}"#);
        let sig = Signature::from_slice(input.as_bytes()).expect("decode");
        assert_eq!(sig.eta, Some(want), "{eta}");
        assert!(
            encode(&sig).contains(r#""ETA":"2024-05-01T10:00:28.29704155Z","#),
            "{eta}"
        );
    }

    // 0 to 9 fraction digits.
    let base = utc("2024-05-01T10:00:28Z");
    let digits = "123456789";
    for n in 0..=9 {
        let frac = if n == 0 {
            String::new()
        } else {
            format!(".{}", &digits[..n])
        };
        let input = format!(r#"{{"ETA":"2024-05-01T12:00:28{frac}+02:00"}}"#);
        let sig = Signature::from_slice(input.as_bytes()).expect("decode");
        let nanos: i64 = format!("{:0<9}", &digits[..n]).parse().expect("digits");
        assert_eq!(
            sig.eta,
            Some(base + Duration::nanoseconds(nanos)),
            "{input}"
        );
        let out = encode(&sig);
        assert!(
            out.contains(&format!(r#""ETA":"2024-05-01T10:00:28{frac}Z","#)),
            "{out}"
        );
    }

    // Trailing zeros are dropped on output, as Go does.
    let sig =
        Signature::from_slice(br#"{"ETA":"2024-05-01T10:00:28.500000000Z"}"#).expect("decode");
    assert!(encode(&sig).contains(r#""ETA":"2024-05-01T10:00:28.5Z","#));
}

#[test]
fn zero_time_eta_means_unset() {
    for input in [
        r#"{"ETA":"0001-01-01T00:00:00Z"}"#,
        r#"{"eta":"0001-01-01T00:00:00Z"}"#,
        r#"{"ETA":null}"#,
        "{}",
    ] {
        let sig = Signature::from_slice(input.as_bytes()).expect("decode");
        assert_eq!(sig.eta, None, "{input}");
        assert!(encode(&sig).contains(r#""ETA":null,"#));
    }
    let st = TaskState::from_slice(br#"{"CreatedAt":"0001-01-01T00:00:00Z"}"#).expect("decode");
    assert_eq!(st.created_at, None);
}

#[test]
fn eta_outside_go_years_is_an_encode_error() {
    let far = utc("9999-12-31T23:59:59.999999999Z") + Duration::nanoseconds(1);
    let sig = Signature::new("t").eta(far);
    assert!(sig.to_vec().is_err());
    let mut st = TaskState::received("t");
    st.created_at = Some(far);
    assert!(st.to_vec().is_err());
    let ok = Signature::new("t").eta(utc("9999-12-31T23:59:59.999999999Z"));
    assert!(encode(&ok).contains(r#""ETA":"9999-12-31T23:59:59.999999999Z","#));
}

// ---------------------------------------------------------------------------------------------
// Escapes and numbers

fn single_arg(type_name: &str, value: Value) -> Signature {
    Signature::new("t").arg(Arg {
        name: String::new(),
        type_name: type_name.into(),
        value,
    })
}

/// The `Args` part of an encoded one-argument signature.
fn args_json(sig: &Signature) -> String {
    let out = encode(sig);
    let start = out.find(r#""Args":"#).expect("Args key");
    let end = out.find(r#","Headers":"#).expect("Headers key");
    out[start..end].to_owned()
}

#[test]
fn strings_are_escaped_like_go() {
    for (value, want) in [
        ("<a&b>", r#""\u003ca\u0026b\u003e""#),
        ("line\u{2028}para\u{2029}", r#""line\u2028para\u2029""#),
        ("q\"b\\s/", r#""q\"b\\s/""#),
        ("\n\r\t", r#""\n\r\t""#),
        ("\u{0}\u{1}\u{1f}", r#""\u0000\u0001\u001f""#),
        ("é 日本 😀 \u{85} \u{7f}", "\"é 日本 😀 \u{85} \u{7f}\""),
    ] {
        let sig = single_arg("string", json!(value));
        assert_eq!(
            args_json(&sig),
            format!(r#""Args":[{{"Name":"","Type":"string","Value":{want}}}]"#),
            "{value:?}"
        );
        let back = Signature::from_slice(&sig.to_vec().expect("encode")).expect("decode");
        assert_eq!(back.args[0].value, json!(value));
    }
}

#[test]
fn backspace_and_form_feed_decode_either_way() {
    // Go 1.21 and earlier wrote \u0008 and \u000c, Go 1.22 and later \b and \f.
    for input in [r#"{"Name":"a\bb\fc"}"#, r#"{"Name":"a\u0008b\u000cc"}"#] {
        let sig = Signature::from_slice(input.as_bytes()).expect("decode");
        assert_eq!(sig.name, "a\u{8}b\u{c}c");
    }
    let out = encode(&Signature::new("a\u{8}b\u{c}c"));
    assert!(out.contains(r#""Name":"a\bb\fc","#), "{out}");
}

#[test]
fn escaped_go_input_round_trips() {
    let go = format!(
        concat!(
            r#"{{"UUID":"task_1","Name":"html","RoutingKey":"","ETA":null,"GroupUUID":"","#,
            r#""GroupTaskCount":0,"Args":[{{"Name":"","Type":"string","#,
            r#""Value":"\u003cp class=\"x\"\u003eA \u0026 B\u2028\u003c/p\u003e\tü"}}],"#,
            r#""Headers":{{"\u003ckey\u003e":"\u0026"}},{}}}"#
        ),
        ZERO_TAIL
    );
    let sig = assert_signature_round_trip(&go);
    assert_eq!(
        sig.args[0].value,
        json!("<p class=\"x\">A & B\u{2028}</p>\tü")
    );
    assert_eq!(sig.headers.expect("headers").get_str("<key>"), Some("&"));
}

#[test]
fn numbers_are_written_like_go() {
    for (value, want) in [
        (json!(200.0), "200"),
        (json!(1e21), "1e+21"),
        (json!(-3.25e-7), "-3.25e-7"),
        (json!(0.1), "0.1"),
        (json!(u64::MAX), "18446744073709551615"),
        (json!(i64::MIN), "-9223372036854775808"),
        (json!(1e20), "100000000000000000000"),
        (json!(1e-6), "0.000001"),
        (json!(1.5e-10), "1.5e-10"),
        (json!(f64::MAX), "1.7976931348623157e+308"),
        (json!(-0.0), "-0"),
        (json!(2.5_f32), "2.5"),
    ] {
        let sig = single_arg("float64", value.clone());
        assert_eq!(
            args_json(&sig),
            format!(r#""Args":[{{"Name":"","Type":"float64","Value":{want}}}]"#),
            "{value}"
        );
    }
}

#[test]
fn go_numbers_round_trip_byte_for_byte() {
    let values = concat!(
        "[200,1e+21,-3.25e-7,0.1,18446744073709551615,-9223372036854775808,0,-0,",
        "100000000000000000000,0.000001,1.5e-10,1.7976931348623157e+308,5e-324,",
        "0.30000000000000004,3.4028235e+38,123456789.125]"
    );
    let go = format!(
        concat!(
            r#"{{"UUID":"","Name":"","RoutingKey":"","ETA":null,"GroupUUID":"","#,
            r#""GroupTaskCount":0,"Args":[{{"Name":"","Type":"[]float64","Value":{}}}],"#,
            r#""Headers":null,{}}}"#
        ),
        values, ZERO_TAIL
    );
    assert_signature_round_trip(&go);

    let state = format!(
        concat!(
            r#"{{"TaskUUID":"t","TaskName":"","State":"SUCCESS","Results":[{{"Type":"[]float64","Value":{}}}],"#,
            r#""Error":"","CreatedAt":"0001-01-01T00:00:00Z","TTL":0}}"#
        ),
        values
    );
    assert_state_round_trip(&state);
}

#[test]
fn go_float_digits_survive_decoding() {
    // Without `float_roundtrip`, serde_json parses about one in ten 17-digit floats one ULP off,
    // so a relayed Go result changes value and text (985.6906946328695 -> …696).
    for text in [
        "985.6906946328695",
        "212.91890726713459",
        "479.60756426982596",
        "92.42132512813595",
        "1.0715660391465826e-75",
        "-1.603964615428183e+143",
    ] {
        let go = format!(
            r#"{{"TaskUUID":"t","TaskName":"","State":"SUCCESS","Results":[{{"Type":"float64","Value":{text}}}],"Error":"","CreatedAt":"0001-01-01T00:00:00Z","TTL":0}}"#
        );
        assert_state_round_trip(&go);
    }
}

// ---------------------------------------------------------------------------------------------
// Invalid input

#[test]
fn invalid_input_is_an_error() {
    let cases: &[&[u8]] = &[
        br#"{"ETA":"yesterday"}"#,
        br#"{"ETA":5}"#,
        br#"{"ETA":"2024-05-01 10:00:28"}"#,
        b"[1,2]",
        b"null",
        b"42",
        b"\"task\"",
        br#"{"Args":{}}"#,
        br#"{"Args":[1]}"#,
        br#"{"Args":[{"Type":5}]}"#,
        br#"{"Headers":[]}"#,
        br#"{"Priority":256}"#,
        br#"{"Priority":-1}"#,
        br#"{"GroupTaskCount":1.5}"#,
        br#"{"RetryCount":"3"}"#,
        br#"{"Immutable":"true"}"#,
        br#"{"OnSuccess":{}}"#,
        br#"{"ChordCallback":[]}"#,
        br#"{"UUID":"task_1","Name":"ad"#,
        br#"{"UUID":"task_1","#,
        b"{",
        b"",
        b"{\"Name\":\"\xff\xfe\"}",
        b"{\"Name\":\"a\xc3\"}",
        br#"{"UUID":"a"} trailing"#,
    ];
    for input in cases {
        let shown = String::from_utf8_lossy(input);
        assert!(Signature::from_slice(input).is_err(), "Signature {shown}");
    }

    let states: &[&[u8]] = &[
        br#"{"CreatedAt":"yesterday"}"#,
        br#"{"Results":{}}"#,
        br#"{"Results":[{"Type":1}]}"#,
        br#"{"State":1}"#,
        br#"{"TTL":"0"}"#,
        b"[1,2]",
        br#"{"TaskUUID":"t"#,
        b"{\"Error\":\"\xff\"}",
    ];
    for input in states {
        let shown = String::from_utf8_lossy(input);
        assert!(TaskState::from_slice(input).is_err(), "TaskState {shown}");
    }

    let groups: &[&[u8]] = &[
        br#"{"TaskUUIDs":{}}"#,
        br#"{"TaskUUIDs":[1]}"#,
        br#"{"ChordTriggered":1}"#,
        br#"{"CreatedAt":"yesterday"}"#,
        b"[1,2]",
        br#"{"GroupUUID":"#,
        b"{\"GroupUUID\":\"\xff\"}",
    ];
    for input in groups {
        let shown = String::from_utf8_lossy(input);
        assert!(GroupMeta::from_slice(input).is_err(), "GroupMeta {shown}");
    }
}
