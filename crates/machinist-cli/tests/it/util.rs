//! Running the real `machinist` binary: one-shot commands, background workers, and a private
//! SQLite file per test.

use std::io::Write;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// How long the shared round trip waits for a state.
const WITHIN: Duration = Duration::from_secs(30);

/// Environment variables of the configuration that must not leak from the developer's shell
/// into a test.
const CONFIG_ENV: &[&str] = &[
    "RUST_LOG",
    "BROKER",
    "RESULT_BACKEND",
    "LOCK",
    "DEFAULT_QUEUE",
    "RESULTS_EXPIRE_IN",
    "NO_UNIX_SIGNALS",
    "MACHINIST_LOG_LEVEL",
    "MACHINIST_CONCURRENCY",
    "MACHINIST_LEASE",
    "MACHINIST_SHUTDOWN_TIMEOUT",
    "MACHINIST_TASK_TIME_LIMIT",
    "MACHINIST_CONFIG_RELOAD_PERIOD",
    "MACHINIST_PERIODIC_TASKS",
];

/// A `machinist` command with a clean configuration environment.
pub fn command(args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_machinist"));
    cmd.args(args);
    for name in CONFIG_ENV {
        cmd.env_remove(name);
    }
    cmd
}

/// Runs `machinist args…` with `stdin` as its standard input and no broker configured.
pub fn machinist(args: &[&str], stdin: &[u8]) -> Output {
    run(command(args), stdin)
}

/// Runs a prepared command to completion.
pub fn run(mut cmd: Command, stdin: &[u8]) -> Output {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start machinist");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(stdin)
        .expect("write stdin");
    child.wait_with_output().expect("run machinist")
}

/// Bytes as text, for messages.
pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A unique path in the temp directory for this test process.
pub fn temp_path(tag: &str, ext: &str) -> PathBuf {
    static SEQ: AtomicU32 = AtomicU32::new(0);
    let n = SEQ.fetch_add(1, Ordering::Relaxed);
    std::env::temp_dir().join(format!(
        "machinist-cli-it-{tag}-{}-{n}.{ext}",
        std::process::id()
    ))
}

/// Where one test's tasks live: broker, backend and lock on one URL. A private SQLite file
/// (removed on drop, with its WAL files) or a Redis the test started; or each role on its own
/// URL, with a config file ([`Db::with_roles`]).
pub struct Db {
    path: Option<PathBuf>,
    url: String,
    via_flags: bool,
    /// Result backend and lock when they are not `url`.
    roles: Option<(String, String)>,
    /// `--config FILE`.
    config: Option<PathBuf>,
}

impl Db {
    /// A fresh SQLite file, named through `BROKER`, `RESULT_BACKEND`, `LOCK`.
    pub fn new(tag: &str) -> Self {
        let path = temp_path(tag, "db");
        Db {
            url: format!("sqlite://{}", path.display()),
            path: Some(path),
            via_flags: false,
            roles: None,
            config: None,
        }
    }

    /// Another URL (a Redis), named by `--broker`, `--result-backend` and `--lock` flags.
    pub fn with_flags(url: String) -> Self {
        Db {
            path: None,
            url,
            via_flags: true,
            roles: None,
            config: None,
        }
    }

    /// Broker, result backend and lock on their own URLs (flags), plus `--config FILE`; the
    /// SQLite file `sqlite_file` (if any) is removed on drop.
    pub fn with_roles(
        broker: String,
        backend: String,
        lock: String,
        config: PathBuf,
        sqlite_file: Option<PathBuf>,
    ) -> Self {
        Db {
            path: sqlite_file,
            url: broker,
            via_flags: true,
            roles: Some((backend, lock)),
            config: Some(config),
        }
    }

    pub fn url(&self) -> String {
        self.url.clone()
    }

    /// `machinist args…` on this database (through `BROKER`, `RESULT_BACKEND`, `LOCK`, or the
    /// flags).
    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = command(args);
        let url = self.url();
        if let Some(config) = &self.config {
            cmd.arg("--config").arg(config);
        }
        if self.via_flags {
            let (backend, lock) = self
                .roles
                .clone()
                .unwrap_or_else(|| (url.clone(), url.clone()));
            cmd.args([
                "--broker",
                &url,
                "--result-backend",
                &backend,
                "--lock",
                &lock,
            ]);
        } else {
            cmd.env("BROKER", &url)
                .env("RESULT_BACKEND", &url)
                .env("LOCK", &url);
        }
        cmd
    }

    /// Runs `machinist args…` on this database.
    pub fn run(&self, args: &[&str]) -> Output {
        run(self.command(args), b"")
    }

    /// Runs `machinist args…` and expects exit 0; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "machinist {args:?}: {:?}\nstdout: {}\nstderr: {}",
            out.status,
            text(&out.stdout),
            text(&out.stderr)
        );
        text(&out.stdout)
    }

    /// `send …` without --wait: the UUIDs printed.
    pub fn send(&self, args: &[&str]) -> Vec<String> {
        let mut all = vec!["send"];
        all.extend_from_slice(args);
        let stdout = self.ok(&all);
        let uuids: Vec<String> = stdout.lines().map(str::to_owned).collect();
        for uuid in &uuids {
            assert!(uuid.starts_with("task_"), "{uuid:?} in {stdout}");
        }
        uuids
    }

    /// The stored state as JSON (`status --json`), or `None` (exit 1).
    pub fn status(&self, uuid: &str) -> Option<Value> {
        let out = self.run(&["status", uuid, "--json"]);
        match out.status.code() {
            Some(0) => Some(serde_json::from_slice(&out.stdout).expect("status JSON")),
            Some(1) => None,
            other => panic!("status exited {other:?}: {}", text(&out.stderr)),
        }
    }

    /// Waits until the state of `uuid` is `state`; returns it.
    pub fn wait_for_state(&self, uuid: &str, state: &str, within: Duration) -> Value {
        let deadline = Instant::now() + within;
        loop {
            let current = self.status(uuid);
            if let Some(s) = &current
                && s["State"] == state
            {
                return current.expect("state");
            }
            assert!(
                Instant::now() < deadline,
                "{uuid} not {state} after {within:?}: {current:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Starts `machinist worker args…` in the background (it may create the database file at
    /// the same moment as the test's first command: machinist-sqlite must cope).
    pub fn worker(&self, args: &[&str]) -> Worker {
        self.worker_with_env(args, &[])
    }

    /// [`Db::worker`] with more environment variables.
    pub fn worker_with_env(&self, args: &[&str], env: &[(&str, &str)]) -> Worker {
        let log = temp_path("worker", "log");
        let file = std::fs::File::create(&log).expect("worker log");
        let mut all = vec!["worker"];
        all.extend_from_slice(args);
        let mut cmd = self.command(&all);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(file))
            .spawn()
            .expect("start the worker");
        Worker {
            child: Some(child),
            log,
        }
    }

    /// The round trip every broker's CLI test shares, once `uuid` (`add(1, 2)`) is queued:
    /// starts a worker, waits for SUCCESS and its results, reads `status`, runs `--wait` to
    /// a success (`multiply(6, 7)`) and to a failure (`panic_task`), then a task delayed by
    /// 500 ms. Returns the running worker.
    pub fn worker_runs_the_basics(&self, uuid: &str) -> Worker {
        let worker = self.worker(&[]);
        let state = self.wait_for_state(uuid, "SUCCESS", WITHIN);
        assert_eq!(state["Results"], json!([{"Type": "int64", "Value": 3}]));
        let human = self.ok(&["status", uuid]);
        assert!(human.contains("State      SUCCESS"), "{human}");

        let out = self.run(&["send", "multiply", "int64:6", "int64:7", "--wait", "--json"]);
        assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
        let state: Value = serde_json::from_slice(&out.stdout).expect("state JSON");
        assert_eq!(state["Results"], json!([{"Type": "int64", "Value": 42}]));

        let out = self.run(&["send", "panic_task", "--wait", "--json"]);
        assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
        let state: Value = serde_json::from_slice(&out.stdout).expect("state JSON");
        assert_eq!(state["State"], "FAILURE");
        assert_eq!(state["Error"], "oops");

        let out = self.run(&["send", "delay_test", "--delay", "500ms", "--wait", "--json"]);
        assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
        worker
    }
}

impl Drop for Db {
    fn drop(&mut self) {
        let Some(path) = &self.path else { return };
        for suffix in ["", "-wal", "-shm"] {
            let mut p = path.clone().into_os_string();
            p.push(suffix);
            let _ = std::fs::remove_file(p);
        }
    }
}

/// A `machinist worker` running in the background; killed on drop if still running.
pub struct Worker {
    child: Option<Child>,
    log: PathBuf,
}

impl Worker {
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// Sends a signal with `kill -SIG pid`.
    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([&format!("-{signal}"), &self.pid().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{signal}");
    }

    /// Waits for the worker to exit, at most `within`.
    pub fn wait(&mut self, within: Duration) -> ExitStatus {
        let deadline = Instant::now() + within;
        let child = self.child.as_mut().expect("running");
        loop {
            if let Some(status) = child.try_wait().expect("try_wait") {
                self.child = None;
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "the worker did not exit within {within:?}; its log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits until the worker's log holds `needle`; returns the log.
    pub fn wait_for_log(&self, needle: &str, within: Duration) -> String {
        let deadline = Instant::now() + within;
        loop {
            let log = self.log();
            if log.contains(needle) {
                return log;
            }
            assert!(
                Instant::now() < deadline,
                "no {needle:?} in the worker's log after {within:?}:\n{log}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// What the worker logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGTERM, then the exit status (a graceful stop).
    pub fn stop(&mut self) -> ExitStatus {
        self.signal("TERM");
        self.wait(Duration::from_secs(30))
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        if let Some(child) = &mut self.child {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_file(&self.log);
    }
}

/// Writes `contents` to a fresh temp file, removed on drop.
pub struct TempFile(pub PathBuf);

impl TempFile {
    pub fn new(tag: &str, ext: &str, contents: &str) -> Self {
        let path = temp_path(tag, ext);
        std::fs::write(&path, contents).expect("write temp file");
        TempFile(path)
    }

    pub fn arg(&self) -> &str {
        self.0.to_str().expect("utf-8 temp path")
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// A loopback port nothing listens on right now.
pub fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("addr").port()
}

/// `GET path` over HTTP/1.0 on loopback; the body, or `None` when nothing answers.
pub fn http_get(port: u16, path: &str) -> Option<String> {
    use std::io::Read;
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let (head, body) = response.split_once("\r\n\r\n")?;
    head.starts_with("HTTP/1.").then(|| body.to_owned())
}
