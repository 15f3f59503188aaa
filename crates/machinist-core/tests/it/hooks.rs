//! The extension points a user wires into a server and a worker: the pre-publish hook, the
//! pre-task / post-task / pre-consume / error handlers, a custom-queue worker, several queues per
//! worker, `blocking` tasks and `register_tasks`.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use machinist_core::memory::{MemoryBackend, MemoryBroker, MemoryLock};
use machinist_core::{Config, Error, Server, Signature, TaskContext, TaskError, blocking, task};

const WAIT: Duration = Duration::from_secs(10);

fn server(queue: &str) -> Server {
    let config = Config {
        no_unix_signals: true,
        default_queue: queue.into(),
        ..Config::default()
    };
    Server::new(
        config.clone(),
        Arc::new(MemoryBroker::new()),
        Arc::new(MemoryBackend::new(config.results_ttl())),
        Arc::new(MemoryLock::new()),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hooks_run_in_order_and_see_every_task() {
    let server = server("hooks_tasks");
    server.register_tasks([
        ("multiply", task(blocking(|a: i64, b: i64| a * b))),
        (
            "header",
            task(|ctx: TaskContext| async move {
                ctx.headers()
                    .and_then(|h| h.get_str("tenant"))
                    .unwrap_or_default()
                    .to_owned()
            }),
        ),
        (
            "fail",
            task(|| async { Err::<(), _>(TaskError::fatal("bad")) }),
        ),
    ]);
    server.set_pre_publish_hook(|sig| {
        if sig.name == "header" {
            sig.headers
                .get_or_insert_with(Default::default)
                .insert("tenant", "acme");
        }
    });

    let events = Arc::new(Mutex::new(Vec::<String>::new()));
    let errors = Arc::new(Mutex::new(Vec::<String>::new()));
    let consults = Arc::new(AtomicUsize::new(0));
    let mut worker = server.new_custom_queue_worker("hooks", 1, "hooks_custom");
    let (e1, e2, errs, c) = (
        events.clone(),
        events.clone(),
        errors.clone(),
        consults.clone(),
    );
    worker.set_pre_task_handler(move |sig| e1.lock().unwrap().push(format!("pre {}", sig.name)));
    worker.set_post_task_handler(move |sig| e2.lock().unwrap().push(format!("post {}", sig.name)));
    worker.set_error_handler(move |e| {
        if let Error::TaskFailed(text) = e {
            errs.lock().unwrap().push(text.clone());
        }
    });
    // Refuses the first two fetches: the worker must come back and fetch anyway.
    worker.set_pre_consume_handler(move || c.fetch_add(1, Ordering::SeqCst) >= 2);
    assert_eq!(worker.queues(), ["hooks_custom"]);
    let handle = worker.launch_async();

    let send = |sig: Signature| server.send_task(sig.routing_key("hooks_custom"));
    let mut product = send(Signature::new("multiply").args((6i64, 7i64)))
        .await
        .unwrap();
    assert_eq!(product.results::<i64>(WAIT).await.unwrap(), 42);
    let mut header = send(Signature::new("header")).await.unwrap();
    assert_eq!(header.results::<String>(WAIT).await.unwrap(), "acme");
    let mut fail = send(Signature::new("fail")).await.unwrap();
    assert!(matches!(fail.results::<()>(WAIT).await, Err(Error::TaskFailed(t)) if t == "bad"));
    handle.quit().await.unwrap();

    assert_eq!(
        *events.lock().unwrap(),
        [
            "pre multiply",
            "post multiply",
            "pre header",
            "post header",
            "pre fail",
            "post fail"
        ]
    );
    let errors = errors.lock().unwrap();
    assert_eq!(errors.len(), 1);
    assert!(errors[0].contains("bad"), "{errors:?}");
    assert!(consults.load(Ordering::SeqCst) >= 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_consumes_several_queues() {
    let server = server("multi_a");
    server.register_task("echo", |s: String| async move { s });
    let mut worker = server.new_worker("multi", 2);
    worker.add_queue("multi_b");
    assert_eq!(worker.queues(), ["multi_a", "multi_b"]);
    let handle = worker.launch_async();
    let mut a = server
        .send_task(Signature::new("echo").args("a"))
        .await
        .unwrap();
    let mut b = server
        .send_task(Signature::new("echo").args("b").routing_key("multi_b"))
        .await
        .unwrap();
    assert_eq!(a.results::<String>(WAIT).await.unwrap(), "a");
    assert_eq!(b.results::<String>(WAIT).await.unwrap(), "b");
    handle.quit().await.unwrap();
}

/// A worker that follows the configuration runs more tasks at once after `set_config` raises
/// `concurrency`, and fewer after it lowers it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrency_follows_the_configuration() {
    let server = server("live_tasks");
    let running = Arc::new(AtomicUsize::new(0));
    let peak = Arc::new(AtomicUsize::new(0));
    let (r, p) = (running.clone(), peak.clone());
    server.register_task("hold", move |ms: u64| {
        let (r, p) = (r.clone(), p.clone());
        async move {
            let now = r.fetch_add(1, Ordering::SeqCst) + 1;
            p.fetch_max(now, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(ms)).await;
            r.fetch_sub(1, Ordering::SeqCst);
        }
    });
    server.set_config(Config {
        concurrency: 1,
        ..(*server.config()).clone()
    });
    let mut worker = server.new_worker("live", 8);
    worker.follow_config();
    assert_eq!(worker.concurrency(), 1);
    let handle = worker.launch_async();

    async fn batch(server: &Server, n: usize, peak: &AtomicUsize) -> usize {
        peak.store(0, Ordering::SeqCst);
        let mut results = Vec::new();
        for _ in 0..n {
            let sig = Signature::new("hold").args(100u64);
            results.push(server.send_task(sig).await.unwrap());
        }
        for r in &mut results {
            r.get_with_timeout(WAIT, Duration::from_millis(5))
                .await
                .unwrap();
        }
        peak.load(Ordering::SeqCst)
    }

    assert_eq!(batch(&server, 4, &peak).await, 1);
    server.set_config(Config {
        concurrency: 4,
        ..(*server.config()).clone()
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(batch(&server, 8, &peak).await, 4);
    server.set_config(Config {
        concurrency: 2,
        ..(*server.config()).clone()
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(batch(&server, 6, &peak).await, 2);
    handle.quit().await.unwrap();
}
