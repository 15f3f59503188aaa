//! A result backend that fails for a while: the worker keeps running, gives the message back
//! instead of acknowledging it, and completes the task once the backend is back. Nothing is lost
//! and nothing panics.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use machinist_core::memory::{MemoryBackend, MemoryBroker, MemoryLock};
use machinist_core::{
    Backend, Config, Error, GroupMeta, Result, Server, Signature, State, TaskState,
};

/// Delegates to a memory backend, but fails every write while `down` is set.
struct Flaky {
    inner: MemoryBackend,
    down: AtomicBool,
    refused: AtomicUsize,
}

impl Flaky {
    fn check(&self) -> Result<()> {
        if self.down.load(Ordering::SeqCst) {
            self.refused.fetch_add(1, Ordering::SeqCst);
            return Err(Error::backend("connection refused (simulated outage)"));
        }
        Ok(())
    }
}

#[async_trait]
impl Backend for Flaky {
    async fn set_state(&self, state: &TaskState) -> Result<()> {
        self.check()?;
        self.inner.set_state(state).await
    }
    async fn get_state(&self, uuid: &str) -> Result<Option<TaskState>> {
        self.inner.get_state(uuid).await
    }
    async fn init_group(&self, group: &str, uuids: &[String]) -> Result<()> {
        self.check()?;
        self.inner.init_group(group, uuids).await
    }
    async fn get_group(&self, group: &str) -> Result<Option<GroupMeta>> {
        self.inner.get_group(group).await
    }
    async fn group_states(&self, group: &str, count: usize) -> Result<Vec<TaskState>> {
        self.inner.group_states(group, count).await
    }
    async fn trigger_chord(&self, group: &str) -> Result<bool> {
        self.check()?;
        self.inner.trigger_chord(group).await
    }
    async fn purge_state(&self, uuid: &str) -> Result<()> {
        self.inner.purge_state(uuid).await
    }
    async fn purge_group(&self, group: &str) -> Result<()> {
        self.inner.purge_group(group).await
    }
    fn describe(&self) -> String {
        "flaky".into()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backend_outage_loses_nothing() {
    let config = Config {
        no_unix_signals: true,
        default_queue: "outage_tasks".into(),
        ..Config::default()
    };
    let broker = MemoryBroker::new();
    let backend = Arc::new(Flaky {
        inner: MemoryBackend::new(config.results_ttl()),
        down: AtomicBool::new(false),
        refused: AtomicUsize::new(0),
    });
    let server = Server::new(
        config,
        Arc::new(broker.clone()),
        backend.clone(),
        Arc::new(MemoryLock::new()),
    );
    let runs = Arc::new(AtomicUsize::new(0));
    let r = runs.clone();
    // Counted inside the future, which is what runs: the worker decodes the arguments (and so
    // calls this closure) before it stores RECEIVED and STARTED together.
    server.register_task("add", move |a: i64, b: i64| {
        let r = r.clone();
        async move {
            r.fetch_add(1, Ordering::SeqCst);
            a + b
        }
    });
    let mut result = server
        .send_task(Signature::new("add").args((2i64, 3i64)))
        .await
        .expect("send");

    // The backend goes down before any worker sees the task: RECEIVED cannot be stored.
    backend.down.store(true, Ordering::SeqCst);
    let errors = Arc::new(AtomicUsize::new(0));
    let e = errors.clone();
    let mut worker = server.new_worker("outage", 2);
    worker.set_error_handler(move |_| {
        e.fetch_add(1, Ordering::SeqCst);
    });
    let handle = worker.launch_async();
    for _ in 0..500 {
        if backend.refused.load(Ordering::SeqCst) >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(
        backend.refused.load(Ordering::SeqCst) >= 2,
        "worker retried"
    );
    assert_eq!(runs.load(Ordering::SeqCst), 0, "not run without RECEIVED");
    assert!(errors.load(Ordering::SeqCst) >= 1, "error handler told");
    assert_eq!(
        result.get_state().await.expect("state").map(|s| s.state),
        Some(State::Pending)
    );

    // Back up: the message was never acknowledged, so the task completes.
    backend.down.store(false, Ordering::SeqCst);
    let sum: i64 = result
        .results(Duration::from_secs(10))
        .await
        .expect("result");
    assert_eq!(sum, 5);
    assert_eq!(runs.load(Ordering::SeqCst), 1);
    handle.quit().await.expect("quit");
    assert_eq!(broker.in_flight(), 0);
    assert_eq!(broker.len("outage_tasks"), 0);
}
