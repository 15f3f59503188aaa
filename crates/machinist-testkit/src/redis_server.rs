//! Throwaway `redis-server` processes for tests: [`RedisServer`] (TCP on a free loopback port,
//! or a unix socket) and [`RedisCluster`] (three masters on loopback ports).
//!
//! Each server runs from `redis-server` on `PATH` (or `$REDIS_SERVER_BIN`) in its own temp
//! directory with `--save "" --appendonly no`, so tests never touch a Redis the machine
//! already runs, and is killed (and its directory removed) on drop. When `redis-server` is not
//! installed the constructors print `skipped: redis-server not found` and return `None`, so a
//! test can `return` early:
//!
//! ```ignore
//! let Some(server) = RedisServer::start() else { return };
//! ```

use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// How long a server gets to answer `PING` after it was spawned.
const READY_TIMEOUT: Duration = Duration::from_secs(10);

/// Where a server listens.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Listen {
    Tcp(u16),
    Unix(PathBuf),
}

/// A `redis-server` child process, killed on drop.
#[derive(Debug)]
pub struct RedisServer {
    child: Option<Child>,
    dir: PathBuf,
    listen: Listen,
    extra: Vec<String>,
}

/// The `redis-server` binary: `$REDIS_SERVER_BIN`, else the first on `PATH`.
pub fn redis_server_bin() -> Option<PathBuf> {
    if let Some(bin) = std::env::var_os("REDIS_SERVER_BIN") {
        return Some(PathBuf::from(bin));
    }
    find_on_path("redis-server")
}

fn find_on_path(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(name))
            .find(|p| p.is_file())
    })
}

fn skipped() {
    println!("skipped: redis-server not found");
}

fn temp_dir(tag: &str) -> PathBuf {
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    std::env::temp_dir().join(format!(
        "mt-{tag}-{}-{}-{nanos:x}",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    ))
}

fn free_port() -> Option<u16> {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .ok()
}

impl RedisServer {
    /// A server on a free loopback TCP port.
    pub fn start() -> Option<Self> {
        Self::start_tcp(&[])
    }

    /// A server on a free loopback TCP port with extra `redis-server` arguments.
    pub fn start_tcp(extra: &[&str]) -> Option<Self> {
        if redis_server_bin().is_none() {
            skipped();
            return None;
        }
        let extra: Vec<String> = extra.iter().map(|s| (*s).to_owned()).collect();
        // A free port can be taken between probing and binding: try a few.
        let mut last_error = String::new();
        for _ in 0..5 {
            let Some(port) = free_port() else { continue };
            let mut server = RedisServer {
                child: None,
                dir: temp_dir("redis"),
                listen: Listen::Tcp(port),
                extra: extra.clone(),
            };
            match server.spawn() {
                Ok(()) => return Some(server),
                Err(e) => last_error = e,
            }
        }
        panic!("could not start redis-server: {last_error}");
    }

    /// A server listening only on a unix socket in its temp directory.
    pub fn start_unix() -> Option<Self> {
        if redis_server_bin().is_none() {
            skipped();
            return None;
        }
        let dir = temp_dir("redis-sock");
        let mut server = RedisServer {
            listen: Listen::Unix(dir.join("redis.sock")),
            child: None,
            dir,
            extra: Vec::new(),
        };
        if let Err(e) = server.spawn() {
            panic!("could not start redis-server on a unix socket: {e}");
        }
        Some(server)
    }

    fn spawn(&mut self) -> Result<(), String> {
        let bin = redis_server_bin().ok_or("redis-server not found")?;
        std::fs::create_dir_all(&self.dir).map_err(|e| format!("temp dir: {e}"))?;
        let mut cmd = Command::new(bin);
        cmd.arg("--save")
            .arg("")
            .arg("--appendonly")
            .arg("no")
            .arg("--daemonize")
            .arg("no")
            .arg("--dir")
            .arg(&self.dir)
            .arg("--logfile")
            .arg(self.dir.join("redis.log"));
        match &self.listen {
            Listen::Tcp(port) => {
                cmd.arg("--port")
                    .arg(port.to_string())
                    .arg("--bind")
                    .arg("127.0.0.1");
            }
            Listen::Unix(path) => {
                cmd.arg("--port")
                    .arg("0")
                    .arg("--unixsocket")
                    .arg(path)
                    .arg("--unixsocketperm")
                    .arg("700");
            }
        }
        cmd.args(&self.extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let child = cmd.spawn().map_err(|e| format!("spawn: {e}"))?;
        self.child = Some(child);
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if self.ping() {
                return Ok(());
            }
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                self.child = None;
                return Err(format!("exited with {status}: {}", self.log_tail()));
            }
            if Instant::now() > deadline {
                self.kill();
                return Err(format!(
                    "no PONG within {READY_TIMEOUT:?}: {}",
                    self.log_tail()
                ));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// The last lines of the server's log.
    pub fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.dir.join("redis.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(10)..].join("\n")
    }

    /// Sends one command (inline arguments) and returns the raw reply, or `None` if the server
    /// cannot be reached.
    pub fn command(&self, args: &[&str]) -> Option<String> {
        let mut req = format!("*{}\r\n", args.len());
        for a in args {
            req.push_str(&format!("${}\r\n{a}\r\n", a.len()));
        }
        let timeout = Some(Duration::from_secs(2));
        let mut reply = vec![0u8; 4096];
        let n = match &self.listen {
            Listen::Tcp(port) => {
                let mut s = TcpStream::connect((Ipv4Addr::LOCALHOST, *port)).ok()?;
                s.set_read_timeout(timeout).ok()?;
                s.write_all(req.as_bytes()).ok()?;
                s.read(&mut reply).ok()?
            }
            Listen::Unix(path) => {
                let mut s = UnixStream::connect(path).ok()?;
                s.set_read_timeout(timeout).ok()?;
                s.write_all(req.as_bytes()).ok()?;
                s.read(&mut reply).ok()?
            }
        };
        Some(String::from_utf8_lossy(&reply[..n]).into_owned())
    }

    fn ping(&self) -> bool {
        self.command(&["PING"])
            .is_some_and(|r| r.starts_with("+PONG"))
    }

    /// The TCP port (`None` for a unix-socket server).
    pub fn port(&self) -> Option<u16> {
        match self.listen {
            Listen::Tcp(port) => Some(port),
            Listen::Unix(_) => None,
        }
    }

    /// The socket path (`None` for a TCP server).
    pub fn socket_path(&self) -> Option<&Path> {
        match &self.listen {
            Listen::Tcp(_) => None,
            Listen::Unix(path) => Some(path),
        }
    }

    /// A URL in Go Machinery's form: `redis://127.0.0.1:<port>/<db>` or
    /// `redis+socket://<path>:/<db>`.
    pub fn url_db(&self, db: u32) -> String {
        match &self.listen {
            Listen::Tcp(port) => format!("redis://127.0.0.1:{port}/{db}"),
            Listen::Unix(path) => format!("redis+socket://{}:/{db}", path.display()),
        }
    }

    /// [`RedisServer::url_db`] with db 0.
    pub fn url(&self) -> String {
        self.url_db(0)
    }

    /// True while the process runs.
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// Stops the server the way an outage does: `SHUTDOWN NOSAVE` (everything in it is lost),
    /// then waits for the process; kills it if it lingers.
    pub fn shutdown(&mut self) {
        let _ = self.command(&["SHUTDOWN", "NOSAVE"]);
        if let Some(mut child) = self.child.take() {
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port or socket (after [`RedisServer::shutdown`]).
    pub fn restart(&mut self) {
        if self.is_running() {
            self.shutdown();
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match self.spawn() {
                Ok(()) => return,
                Err(e) if Instant::now() > deadline => {
                    panic!("could not restart redis-server: {e}")
                }
                Err(_) => std::thread::sleep(Duration::from_millis(100)),
            }
        }
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A Redis Cluster of masters (no replicas) on free loopback ports, built with
/// `redis-cli --cluster create`; stopped on drop.
#[derive(Debug)]
pub struct RedisCluster {
    nodes: Vec<RedisServer>,
}

impl RedisCluster {
    /// Starts `masters` nodes (3 or more) and joins them. `None` (with the skip line) when
    /// `redis-server` or `redis-cli` is missing.
    pub fn start(masters: usize) -> Option<Self> {
        if redis_server_bin().is_none() {
            skipped();
            return None;
        }
        let Some(cli) = find_on_path("redis-cli") else {
            println!("skipped: redis-cli not found");
            return None;
        };
        let mut nodes = Vec::new();
        for _ in 0..masters {
            nodes.push(RedisServer::start_tcp(&[
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                "nodes.conf",
                "--cluster-node-timeout",
                "5000",
            ])?);
        }
        let mut cmd = Command::new(cli);
        cmd.arg("--cluster").arg("create");
        for n in &nodes {
            cmd.arg(format!("127.0.0.1:{}", n.port().unwrap_or_default()));
        }
        let out = cmd
            .arg("--cluster-replicas")
            .arg("0")
            .arg("--cluster-yes")
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("redis-cli --cluster create: {e}"));
        assert!(
            out.status.success(),
            "redis-cli --cluster create failed: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        let cluster = RedisCluster { nodes };
        let deadline = Instant::now() + READY_TIMEOUT;
        while !cluster.nodes.iter().all(|n| {
            n.command(&["CLUSTER", "INFO"])
                .is_some_and(|r| r.contains("cluster_state:ok"))
        }) {
            assert!(
                Instant::now() < deadline,
                "the cluster did not become ready"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Some(cluster)
    }

    /// The nodes.
    pub fn nodes(&self) -> &[RedisServer] {
        &self.nodes
    }

    /// Go Machinery's multi-host URL: `redis://127.0.0.1:p1,127.0.0.1:p2,…`.
    pub fn url(&self) -> String {
        let hosts: Vec<String> = self
            .nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port().unwrap_or_default()))
            .collect();
        format!("redis://{}", hosts.join(","))
    }
}
