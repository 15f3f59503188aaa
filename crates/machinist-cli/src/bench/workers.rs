//! The workers a scenario runs: one in this process, or `machinist worker` child processes
//! (this very executable) on the same URLs, each measured from `/proc`.

use std::collections::VecDeque;
use std::io::{BufRead as _, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use machinist::{Server, WorkerHandle};

use super::sys::{self, Pid};

/// How long a child gets to say `worker started`.
const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a child gets to stop after SIGTERM before it is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(30);
/// The log filter of the children: quiet, except the core worker's start line the bench waits
/// for (the `machinist worker` command otherwise logs every task at `info`). Only that line's
/// own target: enabling `machinist_core::worker` at `info` also enabled the worker's per-task
/// span, about 5% of a worker's CPU per task, which a worker logging at `warn` does not pay.
const CHILD_LOG: &str = "warn,machinist_core::worker::started=info";

/// What a child worker is started with.
#[derive(Debug, Clone)]
pub struct ChildSpec {
    /// The broker URL.
    pub broker: String,
    /// The result backend URL.
    pub backend: String,
    /// The queue to consume.
    pub queue: String,
    /// Tasks at once in each child.
    pub concurrency: usize,
    /// Runtime threads of each child.
    pub threads: u64,
}

/// Running workers.
pub enum Workers {
    /// One worker in this process.
    InProcess(WorkerHandle),
    /// Child processes, ready (each logged `worker started`).
    Children(Vec<ChildWorker>),
}

/// What the children used, measured just before they were stopped.
#[derive(Debug, Clone, Copy, Default)]
pub struct ChildUsage {
    /// The largest peak RSS of one child, in MB.
    pub peak_rss_mb: Option<f64>,
    /// CPU seconds of all children since they were ready.
    pub cpu_s: Option<f64>,
}

impl Workers {
    /// Launches a worker in this process on `server`, consuming `queue`.
    pub fn in_process(server: &Server, queue: &str, concurrency: usize) -> Self {
        let mut worker = server.new_custom_queue_worker("machinist_bench", concurrency, queue);
        worker.set_error_handler(|e| tracing::warn!("bench worker: {e}"));
        Workers::InProcess(worker.launch_async())
    }

    /// Starts `n` `machinist worker` processes and waits until each is consuming.
    pub async fn spawn_children(n: usize, spec: &ChildSpec) -> anyhow::Result<Self> {
        let exe = std::env::current_exe().context("finding the machinist executable")?;
        let mut children = Vec::with_capacity(n);
        let mut ready = Vec::with_capacity(n);
        for i in 0..n {
            let (child, rx) = ChildWorker::spawn(&exe, spec, i)?;
            children.push(child);
            ready.push(rx);
        }
        for (child, rx) in children.iter_mut().zip(ready) {
            let tail = Arc::clone(&child.tail);
            let got = tokio::task::spawn_blocking(move || rx.recv_timeout(READY_TIMEOUT))
                .await
                .context("waiting for a worker process")?;
            if got.is_err() {
                anyhow::bail!(
                    "worker process {} did not start within {READY_TIMEOUT:?}; its log:\n{}",
                    child.pid,
                    tail_text(&tail)
                );
            }
            child.cpu_at_ready = sys::cpu_seconds(Pid::Child(child.pid));
        }
        Ok(Workers::Children(children))
    }

    /// CPU and peak memory of the children so far (`None`s for an in-process worker).
    pub fn child_usage(&self) -> ChildUsage {
        let Workers::Children(children) = self else {
            return ChildUsage::default();
        };
        let mut usage = ChildUsage {
            peak_rss_mb: Some(0.0),
            cpu_s: Some(0.0),
        };
        for c in children {
            let pid = Pid::Child(c.pid);
            usage.peak_rss_mb = match (usage.peak_rss_mb, sys::peak_rss_mb(pid)) {
                (Some(a), Some(b)) => Some(a.max(b)),
                _ => None,
            };
            usage.cpu_s = match (usage.cpu_s, sys::cpu_seconds(pid), c.cpu_at_ready) {
                (Some(sum), Some(now), Some(start)) => Some(sum + (now - start)),
                _ => None,
            };
        }
        usage
    }

    /// Stops the workers gracefully (SIGTERM for children) and waits for them.
    pub async fn stop(self) -> anyhow::Result<()> {
        match self {
            Workers::InProcess(handle) => {
                handle.quit().await.context("stopping the worker")?;
                Ok(())
            }
            Workers::Children(children) => {
                for c in &children {
                    c.terminate();
                }
                for c in children {
                    tokio::task::spawn_blocking(move || c.wait_stopped())
                        .await
                        .context("waiting for a worker process")??;
                }
                Ok(())
            }
        }
    }
}

/// One `machinist worker` process; killed on drop if still running.
pub struct ChildWorker {
    child: Option<Child>,
    pid: u32,
    tail: Arc<Mutex<VecDeque<String>>>,
    cpu_at_ready: Option<f64>,
}

impl ChildWorker {
    fn spawn(
        exe: &PathBuf,
        spec: &ChildSpec,
        index: usize,
    ) -> anyhow::Result<(Self, mpsc::Receiver<()>)> {
        let mut cmd = Command::new(exe);
        cmd.arg("worker")
            .args(["--broker", &spec.broker])
            .args(["--result-backend", &spec.backend])
            // The lock is not used by the bench; an in-process one keeps the children from
            // creating the default `machinist.db` in the working directory (and works whatever
            // the broker: AMQP cannot be a lock).
            .args(["--lock", "memory"])
            .args(["--queue", &spec.queue])
            .args(["--concurrency", &spec.concurrency.to_string()])
            .args(["--tag", &format!("machinist_bench_{index}")])
            .args(["--threads", &spec.threads.to_string()])
            .env_remove("MACHINIST_THREADS")
            .env("RUST_LOG", CHILD_LOG)
            .env_remove("MACHINIST_CONCURRENCY")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().context("starting a worker process")?;
        let pid = child.id();
        let stderr = child.stderr.take().context("the worker's stderr")?;
        let tail = Arc::new(Mutex::new(VecDeque::new()));
        let (tx, rx) = mpsc::channel();
        let lines = Arc::clone(&tail);
        // Reads the child's log to its end (so it never blocks on a full pipe), keeping the
        // last lines for error messages and saying when the worker started.
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if line.contains("worker started") {
                    let _ = tx.send(());
                }
                let mut tail = lines.lock().unwrap_or_else(|e| e.into_inner());
                if tail.len() == 30 {
                    tail.pop_front();
                }
                tail.push_back(line);
            }
        });
        Ok((
            ChildWorker {
                child: Some(child),
                pid,
                tail,
                cpu_at_ready: None,
            },
            rx,
        ))
    }

    /// SIGTERM (through `kill`: this crate has no `unsafe`, hence no `libc`).
    fn terminate(&self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.pid.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }

    /// Waits for the process to exit after [`ChildWorker::terminate`]; kills it if it lingers.
    fn wait_stopped(mut self) -> anyhow::Result<()> {
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        let deadline = Instant::now() + STOP_TIMEOUT;
        loop {
            if let Some(status) = child.try_wait().context("waiting for a worker process")? {
                anyhow::ensure!(
                    status.success(),
                    "worker process {} exited with {status}; its log:\n{}",
                    self.pid,
                    tail_text(&self.tail)
                );
                return Ok(());
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                anyhow::bail!(
                    "worker process {} did not stop within {STOP_TIMEOUT:?}",
                    self.pid
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for ChildWorker {
    fn drop(&mut self) {
        if let Some(child) = &mut self.child {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn tail_text(tail: &Mutex<VecDeque<String>>) -> String {
    let tail = tail.lock().unwrap_or_else(|e| e.into_inner());
    tail.iter().cloned().collect::<Vec<_>>().join("\n")
}
