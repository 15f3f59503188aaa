//! Connection loss. The shared RabbitMQ must not be stopped (other tests use it), so the
//! restart test starts a private RabbitMQ node of its own (own node name, ports, data and log
//! directories) and stops and starts it in the middle of 1,000 tasks. The queue-deletion test
//! runs on the shared RabbitMQ.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use lapin::options::QueueDeleteOptions;
use machinist_amqp::{AmqpBackend, AmqpBroker};
use machinist_core::memory::{MemoryBackend, MemoryLock};
use machinist_core::{Backend, Server, Signature, State, Stopped, TaskState, task};

use crate::common::{
    Captured, cleanup, config, options, poll_until, rabbit, raw, server, unique, within,
};

/// A RabbitMQ node of our own on free loopback ports, in a temporary directory; stopped and
/// removed on drop. (Also the TLS tests' node, with a `rabbitmq.conf`.)
pub(crate) struct PrivateNode {
    dir: PathBuf,
    node: String,
    port: u16,
    dist_port: u16,
    server_bin: PathBuf,
    ctl_bin: PathBuf,
}

pub(crate) fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

impl PrivateNode {
    /// Starts a node, or `None` (after saying why) when RabbitMQ is not installed. The server
    /// scripts are run directly (not Debian's wrapper, which switches user), with `HOME` in
    /// the node's directory so that the node and `rabbitmqctl` share one Erlang cookie.
    fn start() -> Option<Self> {
        Self::start_with_conf(|_| String::new())
    }

    /// [`PrivateNode::start`] with a `rabbitmq.conf`: `conf` gets the node's directory and
    /// returns the file's text.
    pub(crate) fn start_with_conf(conf: impl FnOnce(&std::path::Path) -> String) -> Option<Self> {
        let server_bin = std::env::var_os("RABBITMQ_SERVER_BIN")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("/usr/lib/rabbitmq/bin/rabbitmq-server"));
        if !server_bin.exists() {
            assert!(
                std::env::var_os("MACHINIST_REQUIRE_SERVERS").is_none(),
                "{} not found and MACHINIST_REQUIRE_SERVERS is set",
                server_bin.display()
            );
            println!(
                "skipped: rabbitmq-server not found ({})",
                server_bin.display()
            );
            return None;
        }
        let ctl_bin = server_bin.with_file_name("rabbitmqctl");
        use std::sync::atomic::AtomicU64;
        static SEQ: AtomicU64 = AtomicU64::new(0);
        let n = SEQ.fetch_add(1, Ordering::Relaxed);
        let pid = std::process::id();
        let dir = std::env::temp_dir().join(format!("machinist-amqp-node-{pid}-{n}"));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("node directory");
        std::fs::write(dir.join("enabled_plugins"), "[].\n").expect("plugins file");
        std::fs::write(dir.join("rabbitmq-env.conf"), "").expect("env file");
        std::fs::write(dir.join("rabbitmq.conf"), conf(&dir)).expect("config file");
        let node = PrivateNode {
            node: format!("machinist{pid}x{n}@localhost"),
            port: free_port(),
            dist_port: free_port(),
            dir,
            server_bin,
            ctl_bin,
        };
        node.boot();
        Some(node)
    }

    fn command(&self, bin: &PathBuf) -> Command {
        let mut c = Command::new(bin);
        let d = |p: &str| self.dir.join(p);
        c.env("HOME", &self.dir)
            .env("RABBITMQ_NODENAME", &self.node)
            .env("RABBITMQ_NODE_IP_ADDRESS", "127.0.0.1")
            .env("RABBITMQ_NODE_PORT", self.port.to_string())
            .env("RABBITMQ_DIST_PORT", self.dist_port.to_string())
            .env("RABBITMQ_MNESIA_BASE", d("mnesia"))
            .env("RABBITMQ_LOG_BASE", d("log"))
            .env("RABBITMQ_PID_FILE", d("pid"))
            .env("RABBITMQ_CONFIG_FILE", d("rabbitmq"))
            .env("RABBITMQ_ENABLED_PLUGINS_FILE", d("enabled_plugins"))
            .env("RABBITMQ_CONF_ENV_FILE", d("rabbitmq-env.conf"))
            .env(
                "RABBITMQ_SERVER_START_ARGS",
                "-kernel inet_dist_use_interface {127,0,0,1}",
            )
            .env("ERL_EPMD_ADDRESS", "127.0.0.1");
        c
    }

    /// Starts the node and waits until it accepts AMQP connections.
    fn boot(&self) {
        let status = self
            .command(&self.server_bin)
            .arg("-detached")
            .status()
            .expect("run rabbitmq-server");
        assert!(status.success(), "rabbitmq-server -detached failed");
        // The AMQP listener opens last in the boot sequence.
        let deadline = Instant::now() + Duration::from_secs(90);
        let addr = std::net::SocketAddr::from(([127, 0, 0, 1], self.port));
        while std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
            if Instant::now() > deadline {
                let log = std::fs::read_dir(self.dir.join("log"))
                    .ok()
                    .and_then(|mut d| d.next())
                    .and_then(|e| e.ok())
                    .and_then(|e| std::fs::read_to_string(e.path()).ok())
                    .unwrap_or_default();
                panic!("the private RabbitMQ node did not start within 90 s:\n{log}");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Stops the node (`rabbitmqctl stop`: the whole Erlang VM goes).
    fn stop(&self) {
        let _ = self
            .command(&self.ctl_bin)
            .args(["-n", &self.node, "stop"])
            .output();
    }

    fn url(&self) -> String {
        format!("amqp://guest:guest@127.0.0.1:{}/", self.port)
    }
}

impl Drop for PrivateNode {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A runtime whose threads log into `logs` (so the test counts only its own lines).
fn runtime_logging_to(logs: &Captured) -> (tokio::runtime::Runtime, tracing::Dispatch) {
    let writer = logs.clone();
    let dispatch = tracing::Dispatch::new(
        tracing_subscriber::fmt()
            .with_ansi(false)
            .with_env_filter(tracing_subscriber::EnvFilter::new(
                "info,machinist_amqp=debug",
            ))
            .with_writer(move || writer.clone())
            .finish(),
    );
    let for_threads = dispatch.clone();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .on_thread_start(move || {
            // The guard would restore the previous default when dropped: keep it for the
            // thread's life.
            std::mem::forget(tracing::dispatcher::set_default(&for_threads));
        })
        .build()
        .expect("runtime");
    (rt, dispatch)
}

const TASKS: usize = 1000;

#[test]
fn a_thousand_tasks_survive_a_rabbitmq_restart() {
    let Some(node) = PrivateNode::start() else {
        return;
    };
    let logs = Captured::default();
    let (rt, dispatch) = runtime_logging_to(&logs);
    let _default = tracing::dispatcher::set_default(&dispatch);
    let url = node.url();
    let node = Arc::new(node);
    let run = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        rt.block_on(async move {
        let ns = unique("restart");
        let queue = format!("{ns}_tasks");
        let cfg = config(&queue);
        let opts = options(&url, &ns, &cfg).with_retry_for(Duration::from_secs(90));
        let broker = Arc::new(AmqpBroker::connect(opts.clone()).await.unwrap());
        let backend = Arc::new(MemoryBackend::new(Duration::from_secs(600)));
        let srv = Server::new(cfg, broker, backend, Arc::new(MemoryLock::new()));
        let runs = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&runs);
        srv.register(
            "slow_add",
            task(move |a: i64, b: i64| {
                let counter = Arc::clone(&counter);
                async move {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    counter.fetch_add(1, Ordering::Relaxed);
                    a + b
                }
            }),
        );
        // A state stored in an AMQP result backend on the same node, to see the backend come
        // back too (its queues are not durable, as Go's: the state itself does not survive).
        let results = AmqpBackend::connect(opts.clone()).await.unwrap();
        let probe = format!("task_{ns}_probe");
        results
            .set_state(&TaskState::pending(&probe, "slow_add"))
            .await
            .unwrap();

        let worker = srv.new_worker("survivor", 8).launch_async();
        let mut uuids = Vec::with_capacity(TASKS);
        for i in 0..700 {
            let r = srv
                .send_task(Signature::new("slow_add").args((i as i64, 1i64)))
                .await
                .unwrap();
            uuids.push(r.uuid().to_owned());
        }
        poll_until(60, "150 tasks done before the restart", || {
            let runs = Arc::clone(&runs);
            async move { (runs.load(Ordering::Relaxed) >= 150).then_some(()) }
        })
        .await;

        // Down goes RabbitMQ, with tasks queued, running and being published.
        let stopper = Arc::clone(&node);
        let stopped_at = Instant::now();
        tokio::task::spawn_blocking(move || stopper.stop())
            .await
            .unwrap();
        let done_before = runs.load(Ordering::Relaxed);
        assert!(
            done_before < 650,
            "tasks were still queued when RabbitMQ went down ({done_before} done)"
        );
        let during = {
            let srv = srv.clone();
            tokio::spawn(async move {
                let mut sent = Vec::new();
                for i in 700..TASKS {
                    let r = srv
                        .send_task(Signature::new("slow_add").args((i as i64, 1i64)))
                        .await
                        .expect("a publisher rides the outage out");
                    sent.push(r.uuid().to_owned());
                }
                sent
            })
        };
        tokio::time::sleep(Duration::from_secs(1)).await;
        let starter = Arc::clone(&node);
        tokio::task::spawn_blocking(move || starter.boot())
            .await
            .unwrap();
        println!("RabbitMQ was down for {:?}", stopped_at.elapsed());
        uuids.extend(
            within(90, "the sends during the outage", during)
                .await
                .unwrap(),
        );

        let backend = srv.backend().clone();
        let started = Instant::now();
        poll_until(120, "all 1000 tasks to succeed", || {
            let backend = backend.clone();
            let uuids = uuids.clone();
            async move {
                for u in &uuids {
                    let s = backend.get_state(u).await.ok()??;
                    if s.state != State::Success {
                        return None;
                    }
                }
                Some(())
            }
        })
        .await;
        println!(
            "{done_before} tasks done when RabbitMQ stopped; all {TASKS} done {:?} after it was \
             back; {} runs in all (a task running at the stop runs again)",
            started.elapsed(),
            runs.load(Ordering::Relaxed)
        );
        for (i, u) in uuids.iter().enumerate() {
            let s = backend.get_state(u).await.unwrap().unwrap();
            assert_eq!(
                s.results.unwrap_or_default(),
                [machinist_core::TaskResult::new(i as i64 + 1)],
                "task {i}"
            );
        }
        assert!(runs.load(Ordering::Relaxed) >= TASKS);

        // The AMQP backend reconnects; its (non-durable) queue did not survive the restart.
        assert!(results.get_state(&probe).await.unwrap().is_none());
        results
            .set_state(&TaskState::pending(&probe, "slow_add"))
            .await
            .unwrap();
        assert_eq!(
            results.get_state(&probe).await.unwrap().unwrap().state,
            State::Pending
        );

        assert_eq!(
            within(20, "quit", worker.quit()).await.unwrap(),
            Stopped::Gracefully
        );
        results.close().await;
        srv.broker().close().await;
        })
    }));
    if let Err(panic) = run {
        let all = logs.lines_with("");
        let tail = all.len().saturating_sub(150);
        eprintln!(
            "--- the test's last log lines ---\n{}",
            all[tail..].join("\n")
        );
        std::panic::resume_unwind(panic);
    }
    drop(rt);
    let lines = |text: &str, adapter: &str| {
        logs.lines_with(text)
            .into_iter()
            .filter(|l| l.contains(&format!("adapter=\"{adapter}\"")))
            .collect::<Vec<_>>()
    };
    let down = lines("RabbitMQ unreachable", "broker");
    let up = lines("RabbitMQ reachable again", "broker");
    assert_eq!(down.len(), 1, "one warning per outage: {down:#?}");
    assert_eq!(up.len(), 1, "one line when it is back: {up:#?}");
    // The backend, used only after the restart, may not even notice it; never more than once.
    assert!(lines("RabbitMQ unreachable", "backend").len() <= 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_queue_is_declared_again_and_consumed() {
    let Some(url) = rabbit() else { return };
    let ns = unique("deleted");
    let queue = format!("{ns}_tasks");
    let cfg = config(&queue);
    let srv = server(options(&url, &ns, &cfg), &cfg).await;
    let worker = srv.new_worker("w", 2).launch_async();
    let mut r = srv
        .send_task(Signature::new("add").args((1i64, 2i64)))
        .await
        .unwrap();
    assert_eq!(r.results::<i64>(Duration::from_secs(10)).await.unwrap(), 3);

    // An operator deletes the queue: RabbitMQ cancels the consumer.
    let conn = raw(&url).await;
    let ch = conn.create_channel().await.unwrap();
    ch.queue_delete(queue.as_str().into(), QueueDeleteOptions::default())
        .await
        .unwrap();

    // The publisher finds its message unroutable and declares the queue again; the consumer
    // declares it again and consumes.
    let mut r = srv
        .send_task(Signature::new("add").args((2i64, 3i64)))
        .await
        .unwrap();
    assert_eq!(r.results::<i64>(Duration::from_secs(15)).await.unwrap(), 5);
    within(10, "quit", worker.quit()).await.unwrap();
    let _ = conn.close(200, "bye".into()).await;
    cleanup(&url, &[queue], &[format!("{ns}_ex")]).await;
}
