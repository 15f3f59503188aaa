//! `amqps://` for real: a private RabbitMQ node (as the restart test's) with a TLS listener
//! whose certificate a throwaway CA signed (`machinist_testkit`'s [`TlsCerts`], made with
//! `openssl`). Only with the `tls` feature; every test here has "tls" in its name, so
//! `cargo test -p machinist-amqp --features tls -- tls` runs exactly them.

#![cfg(feature = "tls")]

use std::time::Duration;

use machinist_amqp::{AmqpBackend, AmqpBroker, AmqpOptions};
use machinist_core::memory::MemoryLock;
use machinist_core::{Broker, Chord, Config, Group, Server, Signature};
use machinist_testkit::redis_server::TlsCerts;

use crate::common::{config, unique, within};
use crate::restart::{PrivateNode, free_port};

/// A private node listening for AMQP over TLS on `tls_port` (and plain AMQP on its own port).
fn tls_node(certs: &TlsCerts, tls_port: u16) -> Option<PrivateNode> {
    PrivateNode::start_with_conf(|_| {
        format!(
            "listeners.ssl.default = 127.0.0.1:{tls_port}\n\
             ssl_options.cacertfile = {}\n\
             ssl_options.certfile = {}\n\
             ssl_options.keyfile = {}\n\
             ssl_options.verify = verify_none\n\
             ssl_options.fail_if_no_peer_cert = false\n",
            certs.ca_cert.display(),
            certs.server_cert.display(),
            certs.server_key.display(),
        )
    })
}

/// Waits until the TLS listener accepts connections (it may open after the plain one).
async fn wait_for_port(port: u16) {
    within(60, "the TLS listener", async {
        let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
        while tokio::net::TcpStream::connect(addr).await.is_err() {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
}

#[test]
fn amqps_round_trip_with_tls_ca_file() {
    let Some(certs) = TlsCerts::generate() else {
        return;
    };
    let tls_port = free_port();
    let Some(node) = tls_node(&certs, tls_port) else {
        return;
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        wait_for_port(tls_port).await;
        let url = format!("amqps://guest:guest@127.0.0.1:{tls_port}/");
        let ns = unique("tls");
        let mut cfg: Config = config(&format!("{ns}_tasks"));
        cfg.broker.clone_from(&url);
        cfg.result_backend.clone_from(&url);
        cfg.amqp.exchange = format!("{ns}_ex");
        cfg.amqp.binding_key = cfg.default_queue.clone();

        // The system's roots do not know the test CA: a clear refusal, no hang.
        let untrusted = AmqpOptions::broker_from_config(&cfg)
            .expect("options")
            .with_connect_timeout(Duration::from_secs(10));
        let e = AmqpBroker::connect(untrusted)
            .await
            .expect_err("an unknown CA is refused");
        assert!(
            e.to_string().contains(&format!("127.0.0.1:{tls_port}")),
            "{e}"
        );
        assert!(!e.to_string().contains("guest:guest"), "{e}");

        cfg.tls.ca_file = Some(certs.ca_cert.clone());
        let broker = AmqpBroker::connect(AmqpOptions::broker_from_config(&cfg).expect("options"))
            .await
            .expect("amqps:// with tls.ca_file");
        assert!(
            broker.describe().starts_with("amqps://"),
            "{}",
            broker.describe()
        );
        let backend =
            AmqpBackend::connect(AmqpOptions::backend_from_config(&cfg).expect("options"))
                .await
                .expect("amqps:// results");
        let server = Server::new(
            cfg.clone(),
            std::sync::Arc::new(broker),
            std::sync::Arc::new(backend),
            std::sync::Arc::new(MemoryLock::new()),
        );
        machinist_testkit::tasks::register_all(&server);
        let worker = server.new_worker("tls", 4).launch_async();

        let mut results = Vec::new();
        for i in 0..20i64 {
            results.push(
                server
                    .send_task(Signature::new("add").args((i, 1i64)))
                    .await
                    .expect("send over TLS"),
            );
        }
        for (i, r) in results.iter_mut().enumerate() {
            let sum: i64 = r.results(Duration::from_secs(30)).await.expect("result");
            assert_eq!(sum, i64::try_from(i).expect("small") + 1);
        }
        // A delayed task (Go's delay queue) and a chord (group completion and the trigger on
        // the AMQP result backend), over TLS too.
        let mut delayed = Signature::new("add").args((2i64, 3i64));
        delayed.eta = Some(chrono::Utc::now() + chrono::Duration::milliseconds(300));
        let mut r = server.send_task(delayed).await.expect("delayed");
        let sum: i64 = r
            .results(Duration::from_secs(30))
            .await
            .expect("delayed result");
        assert_eq!(sum, 5);
        let chord = Chord::new(
            Group::new(vec![
                Signature::new("add").args((1i64, 1i64)),
                Signature::new("add").args((2i64, 2i64)),
            ]),
            Signature::new("multiply"),
        );
        let product: i64 = server
            .send_chord(chord, 0)
            .await
            .expect("chord")
            .results(Duration::from_secs(30))
            .await
            .expect("chord result");
        assert_eq!(product, 8);
        let state = server
            .backend()
            .get_state(r.uuid())
            .await
            .expect("read")
            .expect("stored");
        assert!(state.is_success(), "{state:?}");
        worker.quit().await.expect("quit");
        server.broker().close().await;
        server.backend().close().await;
    });
    drop(node);
}
