//! `rediss://` against a real TLS redis-server (`--port 0 --tls-port P`), with a CA and
//! certificates the test makes with `openssl` (skipped with a message when it is missing).
//! Built only with the crate's `tls` feature: `cargo test -p machinist-redis --features tls`.

use std::time::Duration;

use machinist_core::Signature;
use machinist_redis::RedisConnection;
use machinist_testkit::redis_server::{RedisServer, TlsCerts};

use crate::common::{config, options, server, unique, within};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_runs_end_to_end_over_tls() {
    let Some(certs) = TlsCerts::generate() else {
        return;
    };
    let Some(redis) = RedisServer::start_tls(&certs, false) else {
        return;
    };
    let url = redis.url();
    assert!(url.starts_with("rediss://127.0.0.1:"), "{url}");
    let queue = unique("tls");
    let cfg = config(&queue);
    let opts = options(&url, &queue, &cfg).with_tls_ca_file(&certs.ca_cert);
    assert!(
        opts.describe().starts_with("rediss://"),
        "{}",
        opts.describe()
    );
    let srv = server(opts, &cfg).await;
    let worker = srv.new_worker("tls", 2).launch_async();
    let mut r = srv
        .send_task(Signature::new("add").args((40i64, 2i64)))
        .await
        .unwrap();
    let v: i64 = within(10, "the task over TLS", r.results(Duration::from_secs(10)))
        .await
        .unwrap();
    assert_eq!(v, 42);
    // A delayed task too (the mover) and the state is on the TLS server.
    let mut r = srv
        .send_task(
            Signature::new("add")
                .args((1i64, 1i64))
                .countdown(Duration::from_millis(100)),
        )
        .await
        .unwrap();
    let v: i64 = r.results(Duration::from_secs(10)).await.unwrap();
    assert_eq!(v, 2);
    assert!(
        redis
            .command(&["EXISTS", r.uuid()])
            .is_some_and(|reply| reply.starts_with(":1"))
    );
    worker.quit().await.unwrap();
}

#[tokio::test]
async fn a_server_signed_by_another_ca_is_refused_clearly() {
    let Some(certs) = TlsCerts::generate() else {
        return;
    };
    let Some(redis) = RedisServer::start_tls(&certs, false) else {
        return;
    };
    let cfg = config("unused");
    let opts = options(&redis.url(), "x", &cfg).with_tls_ca_file(&certs.other_ca_cert);
    let e = RedisConnection::connect(opts)
        .await
        .unwrap_err()
        .to_string();
    let port = redis.port().unwrap();
    assert!(e.contains(&format!("rediss://127.0.0.1:{port}")), "{e}");
    assert!(e.contains("certificate"), "{e}");
    println!("wrong CA: {e}");
    // The system's roots do not know the test CA either.
    let e = RedisConnection::connect(options(&redis.url(), "x", &cfg))
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("certificate"), "{e}");
    // A CA file that does not exist names the file.
    let e = RedisConnection::connect(
        options(&redis.url(), "x", &cfg).with_tls_ca_file("/nonexistent/ca.pem"),
    )
    .await
    .unwrap_err()
    .to_string();
    assert!(e.contains("/nonexistent/ca.pem"), "{e}");
    // Verification off (tests only) connects whatever signed the certificate.
    RedisConnection::connect(
        options(&redis.url(), "x", &cfg)
            .with_tls_ca_file(&certs.other_ca_cert)
            .with_tls_insecure_skip_verify(true),
    )
    .await
    .unwrap();
}

#[tokio::test]
async fn client_certificates_are_presented() {
    let Some(certs) = TlsCerts::generate() else {
        return;
    };
    let Some(redis) = RedisServer::start_tls(&certs, true) else {
        return;
    };
    let cfg = config("unused");
    let without = options(&redis.url(), "x", &cfg).with_tls_ca_file(&certs.ca_cert);
    assert!(RedisConnection::connect(without.clone()).await.is_err());
    let with = without.with_tls_client_cert(&certs.client_cert, &certs.client_key);
    let conn = RedisConnection::connect(with).await.unwrap();
    let backend = machinist_redis::RedisBackend::new(conn);
    use machinist_core::Backend;
    backend
        .set_state(&machinist_core::TaskState::pending("task_mtls", "add"))
        .await
        .unwrap();
    assert!(backend.get_state("task_mtls").await.unwrap().is_some());
}
