//! Bad input: garbage bodies, no content type, an empty body, messages over the size limits
//! (machinist's and RabbitMQ's), garbage in a result queue. Clear errors, dead letters with a
//! reason, no panic, and the worker goes on.

use std::time::Duration;

use bytes::Bytes;
use lapin::BasicProperties;
use lapin::options::BasicPublishOptions;
use lapin::types::AMQPValue;
use machinist_amqp::{AmqpBroker, QUEUE_HEADER, REASON_HEADER};
use machinist_core::{Broker, Signature, State, TaskState};

use crate::common::{
    cleanup, config, options, poll_until, rabbit, raw, server, unique, wait_for_consumer, within,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_empty_and_untyped_messages() {
    let Some(url) = rabbit() else { return };
    let ns = unique("garbage");
    let queue = format!("{ns}_tasks");
    let mut cfg = config(&queue);
    cfg.max_message_size = 4096;
    let srv = server(options(&url, &ns, &cfg), &cfg).await;
    let worker = srv.new_worker("w", 2).launch_async();

    let conn = raw(&url).await;
    wait_for_consumer(&conn, &queue).await;
    let ch = conn.create_channel().await.unwrap();
    ch.confirm_select(Default::default()).await.unwrap();
    let publish = |body: Vec<u8>, props: BasicProperties| {
        let ch = ch.clone();
        let queue = queue.clone();
        async move {
            ch.basic_publish(
                "".into(),
                queue.as_str().into(),
                BasicPublishOptions::default(),
                &body,
                props,
            )
            .await
            .unwrap()
            .await
            .unwrap();
        }
    };
    // No content type at all, and not JSON.
    publish(b"{not json".to_vec(), BasicProperties::default()).await;
    // Binary, claiming to be JSON.
    publish(
        vec![0xff, 0xfe, b'{', 0x00],
        BasicProperties::default().with_content_type("application/json".into()),
    )
    .await;
    // Empty (Go nacks these without requeue: "RabbitMQ down?").
    publish(Vec::new(), BasicProperties::default()).await;
    // Valid JSON but larger than max_message_size.
    let big = Signature::new("add")
        .with_uuid(format!("task_{ns}_big"))
        .routing_key(queue.clone());
    let mut big_body = big.to_vec().unwrap();
    let pad = format!(r#","Pad":"{}"}}"#, "x".repeat(5000));
    big_body.pop();
    big_body.extend_from_slice(pad.as_bytes());
    publish(big_body, BasicProperties::default()).await;
    // A valid task with no content type: processed (Go ignores the content type too).
    let ok = Signature::new("add")
        .with_uuid(format!("task_{ns}_ok"))
        .args((3i64, 4i64))
        .routing_key(queue.clone());
    publish(ok.to_vec().unwrap(), BasicProperties::default()).await;

    let dead = poll_until(15, "four dead letters", || {
        let srv = srv.clone();
        let queue = queue.clone();
        async move {
            let dead = srv.broker().dead_letters(&queue, 10).await.ok()?;
            (dead.len() == 4).then_some(dead)
        }
    })
    .await;
    let bodies: Vec<&Bytes> = dead.iter().map(|(_, b)| b).collect();
    assert!(bodies.contains(&&Bytes::from_static(b"{not json")));
    assert!(bodies.contains(&&Bytes::from_static(&[0xff, 0xfe, b'{', 0x00])));
    assert!(bodies.contains(&&Bytes::new()));
    assert!(
        dead.iter().all(|(reason, _)| !reason.is_empty()),
        "{dead:?}"
    );
    assert!(
        dead.iter()
            .any(|(reason, body)| reason.contains("exceeds the maximum") && body.len() > 5000),
        "{dead:?}"
    );
    let mut r = srv.async_result(format!("task_{ns}_ok"));
    assert_eq!(r.results::<i64>(Duration::from_secs(10)).await.unwrap(), 7);

    // The dead letters carry the reason and the queue as headers, and keep the original
    // content type.
    let dl = ch
        .basic_get(
            format!("{queue}.dead_letters").as_str().into(),
            Default::default(),
        )
        .await
        .unwrap()
        .unwrap();
    let headers = dl.delivery.properties.headers().clone().unwrap();
    assert!(matches!(
        headers.inner().get(REASON_HEADER),
        Some(AMQPValue::LongString(_))
    ));
    assert_eq!(
        headers.inner().get(QUEUE_HEADER),
        Some(&AMQPValue::LongString(queue.as_str().into()))
    );
    assert_eq!(*dl.delivery.properties.delivery_mode(), Some(2));

    // The worker survived all of it.
    let mut r = srv
        .send_task(Signature::new("add").args((1i64, 2i64)))
        .await
        .unwrap();
    assert_eq!(r.results::<i64>(Duration::from_secs(10)).await.unwrap(), 3);
    within(10, "quit", worker.quit()).await.unwrap();
    let _ = conn.close(200, "bye".into()).await;
    cleanup(
        &url,
        &[queue.clone(), format!("{queue}.dead_letters")],
        &[format!("{ns}_ex")],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_300_mb_body_is_refused_with_a_clear_error() {
    let Some(url) = rabbit() else { return };
    let ns = unique("huge");
    let queue = format!("{ns}_tasks");
    let cfg = config(&queue);
    let opts = options(&url, &ns, &cfg);
    let sig = Signature::new("add").routing_key(queue.clone());
    let huge = Bytes::from(vec![b' '; 300 * 1024 * 1024]);

    // Refused before anything is sent: larger than RabbitMQ's default maximum (128 MiB).
    let broker = AmqpBroker::connect(opts.clone()).await.unwrap();
    let err = broker
        .publish(&sig, huge.clone())
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("larger than RabbitMQ's maximum"), "{err}");

    // Without that check, RabbitMQ itself refuses it; the error says so, and the broker goes on.
    let unchecked = AmqpBroker::connect(opts.with_max_message_size(usize::MAX))
        .await
        .unwrap();
    let started = std::time::Instant::now();
    let err = within(60, "RabbitMQ's refusal", unchecked.publish(&sig, huge))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("larger than RabbitMQ's maximum") || err.contains("406"),
        "{err}"
    );
    println!("RabbitMQ refused 300 MB in {:?}: {err}", started.elapsed());
    let small = Signature::new("add")
        .args((1i64, 1i64))
        .routing_key(queue.clone());
    unchecked
        .publish(&small, Bytes::from(small.to_vec().unwrap()))
        .await
        .expect("the broker publishes again after the refusal");
    assert_eq!(unchecked.pending(&queue, 10).await.unwrap().len(), 1);
    broker.close().await;
    unchecked.close().await;
    cleanup(&url, &[queue], &[format!("{ns}_ex")]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_in_a_result_queue_is_a_clear_error() {
    let Some(url) = rabbit() else { return };
    let ns = unique("bad_state");
    let cfg = config(&format!("{ns}_tasks"));
    let srv = server(options(&url, &ns, &cfg), &cfg).await;
    let uuid = format!("task_{ns}");
    srv.backend()
        .set_state(&TaskState::pending(&uuid, "add"))
        .await
        .unwrap();
    let conn = raw(&url).await;
    let ch = conn.create_channel().await.unwrap();
    ch.confirm_select(Default::default()).await.unwrap();
    ch.basic_publish(
        "".into(),
        uuid.as_str().into(),
        BasicPublishOptions::default(),
        b"\x00garbage",
        BasicProperties::default(),
    )
    .await
    .unwrap()
    .await
    .unwrap();
    // The newest message is garbage: the latest readable state is still returned.
    let s = srv.backend().get_state(&uuid).await.unwrap().unwrap();
    assert_eq!(s.state, State::Pending);
    // A queue with nothing readable: a clear error, no panic.
    let only_garbage = format!("task_{ns}_2");
    srv.backend()
        .set_state(&TaskState::pending(&only_garbage, "add"))
        .await
        .unwrap();
    srv.backend().purge_state(&only_garbage).await.unwrap();
    assert!(
        srv.backend()
            .get_state(&only_garbage)
            .await
            .unwrap()
            .is_none()
    );
    srv.backend()
        .set_state(&TaskState::pending(&only_garbage, "add"))
        .await
        .unwrap();
    ch.queue_purge(only_garbage.as_str().into(), Default::default())
        .await
        .unwrap();
    ch.basic_publish(
        "".into(),
        only_garbage.as_str().into(),
        BasicPublishOptions::default(),
        b"not a state",
        BasicProperties::default(),
    )
    .await
    .unwrap()
    .await
    .unwrap();
    let err = srv
        .backend()
        .get_state(&only_garbage)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("no message in the queue is a task state"),
        "{err}"
    );
    // Storing a state again repairs it.
    srv.backend()
        .set_state(&TaskState::success(&only_garbage, vec![]))
        .await
        .unwrap();
    let s = srv
        .backend()
        .get_state(&only_garbage)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(s.state, State::Success);
    let _ = conn.close(200, "bye".into()).await;
    cleanup(&url, &[uuid, only_garbage], &[]).await;
}
