//! Go interop: messages, properties, states and declarations byte-exact as Go Machinery makes
//! them (`wire-format.md` §5, §14, §15), published and read with a raw lapin client as a Go
//! process would; a broker string whose first URL is dead.

use std::collections::BTreeMap;
use std::time::Duration;

use lapin::options::{
    BasicGetOptions, BasicNackOptions, BasicPublishOptions, ExchangeDeclareOptions,
    QueueBindOptions, QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldTable, LongString};
use lapin::{BasicProperties, Channel, ExchangeKind};
use machinist_amqp::{AmqpBroker, AmqpOptions};
use machinist_core::{Broker, Signature, State};

use crate::common::{
    cleanup, config, options, poll_until, rabbit, raw, server, unique, wait_for_consumer, within,
};

/// A Go message: every key in Go's order, `Headers` as given, int64 args.
fn go_message(uuid: &str, name: &str, routing_key: &str, args: &[i64], headers: &str) -> String {
    let args: Vec<String> = args
        .iter()
        .map(|a| format!(r#"{{"Name":"","Type":"int64","Value":{a}}}"#))
        .collect();
    format!(
        r#"{{"UUID":"{uuid}","Name":"{name}","RoutingKey":"{routing_key}","ETA":null,"GroupUUID":"","GroupTaskCount":0,"Args":[{}],"Headers":{headers},"Priority":0,"Immutable":false,"RetryCount":0,"RetryTimeout":0,"OnSuccess":null,"OnError":null,"ChordCallback":null,"BrokerMessageGroupId":"","SQSReceiptHandle":"","StopTaskDeletionOnError":false,"IgnoreWhenTaskNotRegistered":false}}"#,
        args.join(",")
    )
}

/// Go's properties for a task: JSON, persistent, headers only when there are some.
fn go_properties(headers: Option<FieldTable>) -> BasicProperties {
    let p = BasicProperties::default()
        .with_content_type("application/json".into())
        .with_delivery_mode(2);
    match headers {
        Some(h) => p.with_headers(h),
        None => p,
    }
}

/// Go's `Connect` for a task queue: durable exchange, durable queue with `args`, binding.
async fn go_declare_task_queue(
    ch: &Channel,
    exchange: &str,
    queue: &str,
    binding_key: &str,
    args: FieldTable,
) {
    ch.exchange_declare(
        exchange.into(),
        ExchangeKind::Direct,
        ExchangeDeclareOptions {
            durable: true,
            ..Default::default()
        },
        FieldTable::default(),
    )
    .await
    .expect("Go's exchange declaration");
    ch.queue_declare(
        queue.into(),
        QueueDeclareOptions {
            durable: true,
            ..Default::default()
        },
        args,
    )
    .await
    .expect("Go's queue declaration");
    ch.queue_bind(
        queue.into(),
        exchange.into(),
        binding_key.into(),
        QueueBindOptions::default(),
        FieldTable::default(),
    )
    .await
    .expect("Go's binding");
}

/// Go's result queue arguments: `x-message-ttl`, `x-expires` as int32.
fn go_result_args(ms: i32) -> FieldTable {
    let mut t = FieldTable::default();
    t.insert("x-message-ttl".into(), AMQPValue::LongInt(ms));
    t.insert("x-expires".into(), AMQPValue::LongInt(ms));
    t
}

/// Every message in `queue` (read with `basic.get`, then put back).
async fn peek(ch: &Channel, queue: &str) -> Vec<lapin::message::BasicGetMessage> {
    let mut out = Vec::new();
    while let Some(m) = ch
        .basic_get(queue.into(), BasicGetOptions::default())
        .await
        .expect("basic.get")
    {
        let last = m.message_count == 0;
        out.push(m);
        if last {
            break;
        }
    }
    if let Some(last) = out.last() {
        last.acker
            .nack(BasicNackOptions {
                multiple: true,
                requeue: true,
            })
            .await
            .expect("requeue");
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn go_message_with_properties_and_headers_is_processed() {
    let Some(url) = rabbit() else { return };
    let ns = unique("go_in");
    let exchange = format!("{ns}_ex");
    let queue = format!("{ns}_tasks");
    // Go's defaults have a binding key that differs from the default queue (machinery_task vs
    // machinery_tasks): the worker's queue is bound with the binding key.
    let binding_key = format!("{ns}_task");
    let cfg = config(&queue);
    let opts = options(&url, &ns, &cfg).with_binding_key(binding_key.clone());
    let srv = server(opts, &cfg).await;
    let worker = srv.new_worker("w", 2).launch_async();

    let conn = raw(&url).await;
    wait_for_consumer(&conn, &queue).await;
    let ch = conn.create_channel().await.unwrap();
    ch.confirm_select(Default::default()).await.unwrap();
    // A Go producer: routing key "" → binding key; its publisher declares that queue too.
    go_declare_task_queue(
        &ch,
        &exchange,
        &binding_key,
        &binding_key,
        FieldTable::default(),
    )
    .await;
    let uuid = "task_3f1d7c4e-6a61-4b1a-9c55-0d2b8e6f7a10";
    let trace = "4bf92f3577b34da6:a3ce929d0e0e4736:0:1";
    let body = go_message(
        uuid,
        "add",
        &binding_key,
        &[1, 1],
        &format!(r#"{{"uber-trace-id":"{trace}"}}"#),
    );
    let mut headers = FieldTable::default();
    headers.insert(
        "uber-trace-id".into(),
        AMQPValue::LongString(LongString::from(trace)),
    );
    // Go's PENDING first, in its own result queue (Go's args, int32).
    ch.queue_declare(
        uuid.into(),
        QueueDeclareOptions {
            auto_delete: true,
            ..Default::default()
        },
        go_result_args(120_000),
    )
    .await
    .unwrap();
    let pending = format!(
        r#"{{"TaskUUID":"{uuid}","TaskName":"add","State":"PENDING","Results":null,"Error":"","CreatedAt":"2025-11-20T10:00:00.29704155Z","TTL":0}}"#
    );
    ch.basic_publish(
        "".into(),
        uuid.into(),
        BasicPublishOptions::default(),
        pending.as_bytes(),
        go_properties(None),
    )
    .await
    .unwrap()
    .await
    .unwrap();
    ch.basic_publish(
        exchange.as_str().into(),
        binding_key.as_str().into(),
        BasicPublishOptions::default(),
        body.as_bytes(),
        go_properties(Some(headers)),
    )
    .await
    .unwrap()
    .await
    .unwrap();

    let mut r = srv.async_result(uuid);
    let v: i64 = within(
        20,
        "the Go message's result",
        r.results(Duration::from_secs(15)),
    )
    .await
    .unwrap();
    assert_eq!(v, 2);
    let state = srv.backend().get_state(uuid).await.unwrap().unwrap();
    assert_eq!(state.state, State::Success);
    assert_eq!(state.task_name, "add", "carried over from Go's PENDING");
    assert_eq!(
        state.created_at.map(|t| t.to_rfc3339()),
        Some("2025-11-20T10:00:00.297041550+00:00".to_owned())
    );
    // What is left in the result queue is Go's TaskState JSON, persistent, typed JSON. (The
    // read above put the states back with a nack that may still be on its way.)
    let states = poll_until(5, "the states back in their queue", || async {
        let states = peek(&ch, uuid).await;
        (!states.is_empty()).then_some(states)
    })
    .await;
    for m in &states {
        assert_eq!(
            m.delivery
                .properties
                .content_type()
                .as_ref()
                .map(|c| c.as_str()),
            Some("application/json")
        );
        assert_eq!(*m.delivery.properties.delivery_mode(), Some(2));
        let text = String::from_utf8(m.delivery.data.clone()).unwrap();
        assert!(
            text.starts_with(&format!(r#"{{"TaskUUID":"{uuid}","TaskName":"#)),
            "{text}"
        );
        assert!(text.ends_with(r#","TTL":0}"#), "{text}");
    }
    let last = String::from_utf8(states.last().unwrap().delivery.data.clone()).unwrap();
    assert!(
        last.contains(r#""State":"SUCCESS","Results":[{"Type":"int64","Value":2}],"Error":"""#),
        "{last}"
    );
    within(10, "quit", worker.quit()).await.unwrap();
    let _ = conn.close(200, "bye".into()).await;
    cleanup(&url, &[queue, binding_key, uuid.to_owned()], &[exchange]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn machinist_publishes_what_go_publishes() {
    let Some(url) = rabbit() else { return };
    let ns = unique("go_out");
    let exchange = format!("{ns}_ex");
    let queue = format!("{ns}_tasks");
    let binding_key = format!("{ns}_task");
    let cfg = config(&queue);
    let opts = options(&url, &ns, &cfg).with_binding_key(binding_key.clone());
    let srv = server(opts, &cfg).await;
    let conn = raw(&url).await;
    let ch = conn.create_channel().await.unwrap();

    // No worker: the message stays in the routing-key queue the publisher declared (Go's
    // quirk: direct exchange, routing key = binding key).
    let uuid = "task_5b0c3f0e-2d4e-4f7e-8c3a-6a7b9d0e1f22";
    let before = chrono::Utc::now();
    srv.send_task(Signature::new("add").with_uuid(uuid).args((1i64, 1i64)))
        .await
        .unwrap();
    let after = chrono::Utc::now();
    let msgs = peek(&ch, &binding_key).await;
    assert_eq!(msgs.len(), 1);
    let m = &msgs[0];
    // Go's bytes, then machinist's own key (Go ignores it): when it was sent.
    let body = String::from_utf8(m.delivery.data.clone()).unwrap();
    let go = go_message(uuid, "add", &binding_key, &[1, 1], "{}");
    let (head, created_at) = body.split_once(r#","CreatedAt":""#).expect("CreatedAt");
    assert_eq!(head, &go[..go.len() - 1], "the body is Go's, byte for byte");
    let created_at = machinist_core::time::parse(created_at.trim_end_matches(['"', '}']))
        .unwrap()
        .unwrap();
    assert!(before <= created_at && created_at <= after, "{body}");
    assert_eq!(m.delivery.exchange.as_str(), exchange);
    assert_eq!(m.delivery.routing_key.as_str(), binding_key);
    let p = &m.delivery.properties;
    assert_eq!(
        p.content_type().as_ref().map(|c| c.as_str()),
        Some("application/json")
    );
    assert_eq!(*p.delivery_mode(), Some(2));
    assert_eq!(*p.priority(), None, "priority 0 is not sent");
    assert!(p.headers().is_none(), "empty headers are not sent");
    // The PENDING the producer stored first, in Go's shape and queue.
    let states = peek(&ch, uuid).await;
    assert_eq!(states.len(), 1);
    let text = String::from_utf8(states[0].delivery.data.clone()).unwrap();
    assert!(
        text.starts_with(&format!(
            r#"{{"TaskUUID":"{uuid}","TaskName":"add","State":"PENDING","Results":null,"Error":"","CreatedAt":""#
        )),
        "{text}"
    );
    // Go re-declares that result queue with its args: no 406.
    ch.queue_declare(
        uuid.into(),
        QueueDeclareOptions {
            auto_delete: true,
            ..Default::default()
        },
        go_result_args(120_000),
    )
    .await
    .expect("the result queue has Go's flags and int32 arguments");

    // Priority and headers are sent when set.
    let uuid2 = "task_9a8b7c6d-5e4f-4a3b-8c2d-1e0f9a8b7c6d";
    let mut sig = Signature::new("add").with_uuid(uuid2).priority(3);
    sig.headers = Some(machinist_core::Headers::new());
    if let Some(h) = sig.headers.as_mut() {
        h.insert("uber-trace-id", "abc:def:0:1");
    }
    srv.send_task(sig).await.unwrap();
    let msgs = peek(&ch, &binding_key).await;
    let m = msgs.last().unwrap();
    assert_eq!(*m.delivery.properties.priority(), Some(3));
    assert_eq!(
        m.delivery
            .properties
            .headers()
            .as_ref()
            .and_then(|h| h.inner().get("uber-trace-id").cloned()),
        Some(AMQPValue::LongString("abc:def:0:1".into()))
    );
    let _ = conn.close(200, "bye".into()).await;
    cleanup(
        &url,
        &[queue, binding_key, uuid.to_owned(), uuid2.to_owned()],
        &[exchange],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queues_declared_by_go_are_reused_without_406() {
    let Some(url) = rabbit() else { return };
    let ns = unique("go_decl");
    let exchange = format!("{ns}_ex");
    let queue = format!("{ns}_tasks");
    let delayed = format!("{ns}_delayed");
    let conn = raw(&url).await;
    let ch = conn.create_channel().await.unwrap();

    // Go declared first: the task queue with `queue_declare_args: {x-max-priority: 10}` (a
    // YAML int: AMQP type I), the single delayed queue, a result queue.
    let mut prio = FieldTable::default();
    prio.insert("x-max-priority".into(), AMQPValue::LongInt(10));
    go_declare_task_queue(&ch, &exchange, &queue, &queue, prio).await;
    let mut dl = FieldTable::default();
    dl.insert(
        "x-dead-letter-exchange".into(),
        AMQPValue::LongString(exchange.as_str().into()),
    );
    dl.insert(
        "x-dead-letter-routing-key".into(),
        AMQPValue::LongString(queue.as_str().into()),
    );
    go_declare_task_queue(&ch, &exchange, &delayed, &delayed, dl).await;
    let uuid = "task_0c1d2e3f-4a5b-4c6d-8e7f-8091a2b3c4d5";
    ch.queue_declare(
        uuid.into(),
        QueueDeclareOptions {
            auto_delete: true,
            ..Default::default()
        },
        go_result_args(120_000),
    )
    .await
    .unwrap();

    let cfg = config(&queue);
    let mut args = BTreeMap::new();
    args.insert("x-max-priority".to_owned(), serde_json::json!(10));
    let opts = options(&url, &ns, &cfg)
        .with_queue_declare_args(args)
        .with_delayed_queue(delayed.clone());
    let srv = server(opts.clone(), &cfg).await;
    let worker = srv.new_worker("w", 2).launch_async();
    let mut now = srv
        .send_task(Signature::new("add").args((2i64, 3i64)).priority(7))
        .await
        .expect("publish to Go's queue");
    let mut later = srv
        .send_task(
            Signature::new("add")
                .args((4i64, 4i64))
                .countdown(Duration::from_millis(300)),
        )
        .await
        .expect("publish to Go's delayed queue");
    assert_eq!(
        now.results::<i64>(Duration::from_secs(10)).await.unwrap(),
        5
    );
    assert_eq!(
        later.results::<i64>(Duration::from_secs(10)).await.unwrap(),
        8
    );
    srv.backend()
        .set_state(&machinist_core::TaskState::pending(uuid, "add"))
        .await
        .expect("a state in Go's result queue");
    assert_eq!(
        srv.backend().get_state(uuid).await.unwrap().unwrap().state,
        State::Pending
    );
    within(10, "quit", worker.quit()).await.unwrap();

    // A per-delay queue machinist made is one Go can declare (its args are int64 there).
    let broker = AmqpBroker::connect(opts.clone().with_delayed_queue(""))
        .await
        .unwrap();
    let sig = Signature::new("add")
        .with_uuid("task_per_delay")
        .routing_key(queue.clone())
        .countdown(Duration::from_secs(60));
    let body = bytes::Bytes::from(sig.to_vec().unwrap());
    broker.publish(&sig, body).await.unwrap();
    let mut found = None;
    for ms in [60_001i64, 60_000, 59_999, 59_998] {
        let name = format!("delay.{ms}.{exchange}.{queue}");
        let probe = conn.create_channel().await.unwrap();
        if probe
            .queue_declare(
                name.as_str().into(),
                QueueDeclareOptions {
                    passive: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await
            .is_ok()
        {
            found = Some((ms, name));
            break;
        }
    }
    let (ms, name) = found.expect("the delay queue delay.<ms>.<exchange>.<routing key>");
    let go_args = |ttl: AMQPValue, expires: AMQPValue| {
        let mut t = FieldTable::default();
        t.insert(
            "x-dead-letter-exchange".into(),
            AMQPValue::LongString(exchange.as_str().into()),
        );
        t.insert(
            "x-dead-letter-routing-key".into(),
            AMQPValue::LongString(queue.as_str().into()),
        );
        t.insert("x-message-ttl".into(), ttl);
        t.insert("x-expires".into(), expires);
        t
    };
    let go = conn.create_channel().await.unwrap();
    go.queue_declare(
        name.as_str().into(),
        QueueDeclareOptions {
            durable: true,
            ..Default::default()
        },
        go_args(AMQPValue::LongLongInt(ms), AMQPValue::LongLongInt(2 * ms)),
    )
    .await
    .expect("Go's declaration of the same delay queue (int64 args) is accepted");
    // Another value is refused (RabbitMQ compares these numeric arguments by value).
    let wrong = conn.create_channel().await.unwrap();
    let err = wrong
        .queue_declare(
            name.as_str().into(),
            QueueDeclareOptions {
                durable: true,
                ..Default::default()
            },
            go_args(
                AMQPValue::LongLongInt(ms + 1),
                AMQPValue::LongLongInt(2 * ms),
            ),
        )
        .await
        .expect_err("another TTL differs");
    assert!(err.to_string().contains("inequivalent arg"), "{err}");

    // machinist declaring with other arguments than Go's gets a clear error, not a hang.
    let mut other = BTreeMap::new();
    other.insert("x-max-priority".to_owned(), serde_json::json!(5));
    let bad = AmqpBroker::connect(opts.with_queue_declare_args(other))
        .await
        .unwrap();
    let err = match bad.consume(std::slice::from_ref(&queue), 1).await {
        Err(e) => e.to_string(),
        Ok(_) => panic!("a 406 was expected"),
    };
    assert!(
        err.contains("406") && err.contains("x-max-priority"),
        "{err}"
    );
    bad.close().await;
    broker.close().await;

    let del = conn.create_channel().await.unwrap();
    let _ = del
        .queue_delete(name.as_str().into(), QueueDeleteOptions::default())
        .await;
    let _ = conn.close(200, "bye".into()).await;
    cleanup(&url, &[queue, delayed, uuid.to_owned()], &[exchange]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_first_url_does_not_stop_the_worker() {
    let Some(url) = rabbit() else { return };
    let ns = unique("multi_url");
    let queue = format!("{ns}_tasks");
    let cfg = config(&queue);
    // Port 1 on loopback refuses at once; a host that does not resolve fails too.
    let urls = format!(
        "amqp://guest:guest@127.0.0.1:1/,amqp://guest:guest@nonexistent.invalid:5672/,{url}"
    );
    let opts = AmqpOptions::from_urls(&urls, ",")
        .unwrap()
        .with_config(&cfg)
        .with_exchange(format!("{ns}_ex"))
        .with_binding_key(queue.clone())
        .with_connection_name(ns.clone());
    let srv = server(opts, &cfg).await;
    let worker = srv.new_worker("w", 2).launch_async();
    let mut r = srv
        .send_task(Signature::new("add").args((20i64, 22i64)))
        .await
        .unwrap();
    assert_eq!(r.results::<i64>(Duration::from_secs(10)).await.unwrap(), 42);
    within(10, "quit", worker.quit()).await.unwrap();

    // With every URL dead, the error names each.
    let dead = AmqpOptions::from_urls(
        "amqp://guest:guest@127.0.0.1:1/|amqp://guest:guest@127.0.0.1:2/",
        "|",
    )
    .unwrap();
    let err = AmqpBroker::connect(dead).await.unwrap_err().to_string();
    assert!(
        err.contains("127.0.0.1:1") && err.contains("127.0.0.1:2") && !err.contains("guest"),
        "{err}"
    );
    cleanup(&url, &[queue], &[format!("{ns}_ex")]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chord_sent_by_go_is_completed_by_machinist_workers() {
    let Some(url) = rabbit() else { return };
    let ns = unique("go_chord");
    let exchange = format!("{ns}_ex");
    let queue = format!("{ns}_tasks");
    let cfg = config(&queue);
    let srv = server(options(&url, &ns, &cfg), &cfg).await;
    let worker = srv.new_worker("w", 3).launch_async();
    let conn = raw(&url).await;
    wait_for_consumer(&conn, &queue).await;
    let ch = conn.create_channel().await.unwrap();
    ch.confirm_select(Default::default()).await.unwrap();

    // What a Go producer sends for a chord on AMQP: the members, each carrying the group and
    // the callback, published straight to the queue. Go's AMQP InitGroup stores nothing, so
    // machinist has no GroupMeta: it learns each member's group from the message it runs.
    let group = machinist_core::Group::new(vec![
        Signature::new("add")
            .args((1i64, 1i64))
            .routing_key(queue.clone()),
        Signature::new("add")
            .args((2i64, 2i64))
            .routing_key(queue.clone()),
        Signature::new("add")
            .args((5i64, 6i64))
            .routing_key(queue.clone()),
    ]);
    let group_uuid = group.group_uuid.clone();
    let chord =
        machinist_core::Chord::new(group, Signature::new("multiply").routing_key(queue.clone()));
    for member in &chord.group.tasks {
        let mut member = member.clone();
        member.headers = Some(machinist_core::Headers::new());
        ch.basic_publish(
            exchange.as_str().into(),
            queue.as_str().into(),
            BasicPublishOptions::default(),
            &member.to_vec().unwrap(),
            go_properties(None),
        )
        .await
        .unwrap()
        .await
        .unwrap();
    }
    let mut callback = srv.async_result(chord.callback.uuid.clone());
    let v: i64 = within(
        20,
        "the chord callback",
        callback.results(Duration::from_secs(15)),
    )
    .await
    .unwrap();
    assert_eq!(v, 2 * 4 * 11);
    // Go's completion record: the members' final states in the group's queue, and Go's marker
    // telling Go workers the chord was triggered.
    poll_until(5, "the three final states in the group queue", || async {
        (peek(&ch, &group_uuid).await.len() == 3).then_some(())
    })
    .await;
    let marker = machinist_amqp::chord_triggered_queue(&group_uuid);
    let probe = conn.create_channel().await.unwrap();
    let q = probe
        .queue_declare(
            marker.as_str().into(),
            QueueDeclareOptions {
                passive: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .expect("Go's <group>_chord_triggered marker exists");
    assert_eq!(q.message_count(), 1);
    within(10, "quit", worker.quit()).await.unwrap();
    let _ = conn.close(200, "bye".into()).await;
    cleanup(
        &url,
        &[
            queue,
            group_uuid.clone(),
            marker,
            machinist_amqp::group_meta_queue(&group_uuid),
        ],
        &[exchange],
    )
    .await;
}
