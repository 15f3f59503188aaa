//! Redis Sentinel (Go's `master_name`): the URL's hosts are sentinels the tests start next to a
//! password-protected master (`redis-server --sentinel` with `sentinel monitor mymaster …`).
//! A representative part of the conformance suite runs through them, then a failover: the
//! master is killed, the sentinel promotes the replica, and the worker carries on by itself.

use std::time::{Duration, Instant};

use async_trait::async_trait;
use machinist_core::{Config, Signature, Stopped};
use machinist_redis::{RedisBackend, RedisConnection, RedisOptions};
use machinist_testkit::redis_server::{RedisSentinel, SentinelSetup};
use machinist_testkit::{Adapters, Factory};

use crate::common::{adapters, config, options, poll_until, raw, server, unique, within};

const PASSWORD: &str = "master-secret";
const SENTINEL_PASSWORD: &str = "sentinel-secret";

fn setup(replicas: usize) -> SentinelSetup {
    SentinelSetup {
        sentinels: 1,
        replicas,
        password: Some(PASSWORD.to_owned()),
        sentinel_password: Some(SENTINEL_PASSWORD.to_owned()),
    }
}

/// Options reaching `deployment`'s master through its sentinels.
fn sentinel_options(deployment: &RedisSentinel, namespace: &str, config: &Config) -> RedisOptions {
    let opts = options(&deployment.url(), namespace, config)
        .with_sentinel(deployment.master_name())
        .with_sentinel_password(SENTINEL_PASSWORD);
    assert!(opts.is_sentinel() && !opts.is_cluster());
    opts
}

/// Conformance adapters on a fresh master + sentinel per test.
pub struct SentinelFactory {
    pub deployment: RedisSentinel,
}

impl SentinelFactory {
    pub fn start() -> Option<Self> {
        Some(SentinelFactory {
            deployment: RedisSentinel::start(setup(0))?,
        })
    }
}

#[async_trait]
impl Factory for SentinelFactory {
    async fn adapters(&self, namespace: &str, config: &Config) -> Adapters {
        adapters(sentinel_options(&self.deployment, namespace, config)).await
    }
}

/// Send/consume/ack, chains, chords (and their exactly-once trigger), ETA, the lock, redelivery,
/// inspection: the scenarios that touch every connection kind (shared, blocking, scripts).
mod conformance {
    machinist_testkit::__conformance_tests! {
        match super::SentinelFactory::start() {
            Some(factory) => factory,
            None => return,
        };
        send_task_add,
        group_send_concurrency_2,
        chord_multiply,
        chain_add_add_multiply,
        eta_delays_task,
        retry_with_fibonacci_backoff,
        chord_exactly_once_under_concurrent_finishers,
        pending_tasks_and_purge,
        backend_state_sequence,
        backend_trigger_chord_exactly_once,
        lock_contract,
        broker_redelivers_undecided_and_requeued,
        broker_eta_is_kept_by_broker,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn worker_follows_a_failover() {
    let Some(mut deployment) = RedisSentinel::start(setup(1)) else {
        return;
    };
    let queue = unique("failover");
    let cfg = config(&queue);
    let srv = server(sentinel_options(&deployment, &queue, &cfg), &cfg).await;
    let worker = srv.new_worker("follower", 2).launch_async();
    let mut r = srv
        .send_task(Signature::new("add").args((1i64, 2i64)))
        .await
        .unwrap();
    let v: i64 = r.results(Duration::from_secs(10)).await.unwrap();
    assert_eq!(v, 3);
    let first_master = deployment.master_port().unwrap();

    let killed_at = Instant::now();
    assert_eq!(deployment.kill_master(), Some(first_master));
    let promoted = deployment.wait_for_failover(first_master, Duration::from_secs(25));
    assert_ne!(promoted, first_master);
    let promotion = killed_at.elapsed();

    // The producer's shared connection asks the sentinels again after its first failure.
    let mut r = poll_until(20, "a send after the failover", || {
        let srv = srv.clone();
        async move {
            srv.send_task(Signature::new("add").args((2i64, 3i64)))
                .await
                .ok()
        }
    })
    .await;
    let v: i64 = within(
        20,
        "a task sent after the failover",
        r.results(Duration::from_secs(20)),
    )
    .await
    .unwrap();
    assert_eq!(v, 5);
    let mut r = srv
        .send_task(
            Signature::new("add")
                .args((4i64, 4i64))
                .countdown(Duration::from_millis(200)),
        )
        .await
        .unwrap();
    let v: i64 = within(
        10,
        "a delayed task after the failover",
        r.results(Duration::from_secs(10)),
    )
    .await
    .unwrap();
    assert_eq!(v, 8);
    let promoted_server = deployment.master().expect("the promoted master");
    assert_eq!(promoted_server.port(), Some(promoted));
    assert!(
        promoted_server
            .command(&["EXISTS", r.uuid()])
            .is_some_and(|reply| reply.starts_with(":1")),
        "the new state lives on the promoted replica"
    );
    println!(
        "failover: promoted after {promotion:?}, worker done after {:?}",
        killed_at.elapsed()
    );
    assert_eq!(
        within(10, "quit", worker.quit()).await.unwrap(),
        Stopped::Gracefully
    );
}

#[tokio::test]
async fn an_unreachable_sentinel_is_skipped() {
    let Some(deployment) = RedisSentinel::start(setup(0)) else {
        return;
    };
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let live = deployment.sentinels()[0].port().unwrap();
    let url = format!("redis://{PASSWORD}@127.0.0.1:{dead},127.0.0.1:{live}/2");
    let opts = RedisOptions::from_url(&url)
        .unwrap()
        .with_sentinel(deployment.master_name())
        .with_sentinel_password(SENTINEL_PASSWORD);
    assert_eq!(
        opts.describe(),
        format!("redis://127.0.0.1:{dead},127.0.0.1:{live}/2 (sentinel mymaster)")
    );
    let backend = RedisBackend::new(RedisConnection::connect(opts).await.unwrap());
    use machinist_core::Backend;
    backend
        .set_state(&machinist_core::TaskState::pending("task_s1", "add"))
        .await
        .unwrap();
    // Stored on the master, in the URL's database.
    let master = deployment.master().unwrap().port().unwrap();
    let mut c = raw(&format!("redis://:{PASSWORD}@127.0.0.1:{master}/2")).await;
    let stored: Option<String> = redis::AsyncCommands::get(&mut c, "task_s1").await.unwrap();
    assert!(stored.is_some_and(|s| s.contains("\"TaskName\":\"add\"")));
    let state = backend.get_state("task_s1").await.unwrap().unwrap();
    assert_eq!(state.task_name, "add");
}

#[tokio::test]
async fn sentinel_errors_are_clear() {
    let Some(deployment) = RedisSentinel::start(setup(0)) else {
        return;
    };
    let cfg = config("unused");
    // A master name no sentinel monitors.
    let opts = options(&deployment.url(), "x", &cfg)
        .with_sentinel("nosuchmaster")
        .with_sentinel_password(SENTINEL_PASSWORD)
        .with_lease(Duration::from_secs(1));
    let e = RedisConnection::connect(opts)
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("sentinel nosuchmaster"), "{e}");
    assert!(e.to_lowercase().contains("not found"), "{e}");
    // The wrong sentinel password.
    let opts = options(&deployment.url(), "x", &cfg)
        .with_sentinel(deployment.master_name())
        .with_sentinel_password("wrong");
    let e = RedisConnection::connect(opts)
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("sentinel mymaster"), "{e}");
    assert!(!e.contains(PASSWORD) && !e.contains("wrong@"), "{e}");
    // A sentinel password without a master name is a settings error.
    let e = RedisConnection::connect(
        RedisOptions::from_url(&deployment.url())
            .unwrap()
            .with_sentinel_password("x"),
    )
    .await
    .unwrap_err()
    .to_string();
    assert!(e.contains("master name"), "{e}");
}
