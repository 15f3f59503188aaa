//! Throwaway `redis-server` processes for tests: [`RedisServer`] (TCP on a free loopback port,
//! a unix socket, or TLS with [`TlsCerts`]), [`RedisCluster`] (three masters on loopback ports)
//! and [`RedisSentinel`] (a master, optional replicas and one or more sentinels).
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
//!
//! TLS material is made by the `openssl` command line ([`TlsCerts::generate`]); without it
//! the TLS constructors print `skipped: openssl not found` and return `None` the same way.

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
    /// TLS on a TCP port; plain commands from the fixture go through `admin`, a unix socket.
    Tls {
        port: u16,
        admin: PathBuf,
    },
}

/// What the process is.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Mode {
    Server,
    /// `redis-server <conf> --sentinel`, with the config written on first start.
    Sentinel {
        conf: String,
    },
}

/// A `redis-server` child process, killed on drop.
#[derive(Debug)]
pub struct RedisServer {
    child: Option<Child>,
    dir: PathBuf,
    listen: Listen,
    extra: Vec<String>,
    mode: Mode,
    /// Sent with `AUTH` before each [`RedisServer::command`].
    password: Option<String>,
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
    require_servers("redis-server");
    println!("skipped: redis-server not found");
}

impl RedisServer {
    fn new(dir: PathBuf, listen: Listen, extra: Vec<String>) -> Self {
        RedisServer {
            child: None,
            dir,
            listen,
            extra,
            mode: Mode::Server,
            password: None,
        }
    }

    /// Spawns on a free port chosen by `make` (a free port can be taken between probing and
    /// binding: tries a few).
    fn spawn_on_free_port(mut make: impl FnMut(u16) -> RedisServer) -> Self {
        let mut last_error = String::new();
        for _ in 0..5 {
            let Some(port) = free_port() else { continue };
            let mut server = make(port);
            match server.spawn() {
                Ok(()) => return server,
                Err(e) => last_error = e,
            }
        }
        panic!("could not start redis-server: {last_error}");
    }
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
        Self::start_tcp_auth(extra, None)
    }

    /// [`RedisServer::start_tcp`] with `requirepass` (and `masterauth`, for replicas) set to
    /// `password`; the fixture's own commands authenticate.
    pub fn start_tcp_auth(extra: &[&str], password: Option<&str>) -> Option<Self> {
        if redis_server_bin().is_none() {
            skipped();
            return None;
        }
        let mut extra: Vec<String> = extra.iter().map(|s| (*s).to_owned()).collect();
        if let Some(pw) = password {
            extra.extend(["--requirepass", pw, "--masterauth", pw].map(str::to_owned));
        }
        Some(Self::spawn_on_free_port(|port| {
            let mut server = RedisServer::new(temp_dir("redis"), Listen::Tcp(port), extra.clone());
            server.password = password.map(str::to_owned);
            server
        }))
    }

    /// A server speaking only TLS on a free loopback port (`--port 0 --tls-port P`), with
    /// `certs`' server certificate; clients must present a certificate signed by its CA when
    /// `client_certs` is true (`tls-auth-clients yes`). `None` when redis-server is missing.
    pub fn start_tls(certs: &TlsCerts, client_certs: bool) -> Option<Self> {
        if redis_server_bin().is_none() {
            skipped();
            return None;
        }
        let path = |p: &Path| p.display().to_string();
        let extra = vec![
            "--tls-cert-file".to_owned(),
            path(&certs.server_cert),
            "--tls-key-file".to_owned(),
            path(&certs.server_key),
            "--tls-ca-cert-file".to_owned(),
            path(&certs.ca_cert),
            "--tls-auth-clients".to_owned(),
            if client_certs { "yes" } else { "no" }.to_owned(),
        ];
        Some(Self::spawn_on_free_port(|port| {
            let dir = temp_dir("redis-tls");
            let admin = dir.join("admin.sock");
            RedisServer::new(dir, Listen::Tls { port, admin }, extra.clone())
        }))
    }

    /// A server listening only on a unix socket in its temp directory.
    pub fn start_unix() -> Option<Self> {
        if redis_server_bin().is_none() {
            skipped();
            return None;
        }
        let dir = temp_dir("redis-sock");
        let mut server = RedisServer::new(
            dir.clone(),
            Listen::Unix(dir.join("redis.sock")),
            Vec::new(),
        );
        if let Err(e) = server.spawn() {
            panic!("could not start redis-server on a unix socket: {e}");
        }
        Some(server)
    }

    fn spawn(&mut self) -> Result<(), String> {
        let bin = redis_server_bin().ok_or("redis-server not found")?;
        std::fs::create_dir_all(&self.dir).map_err(|e| format!("temp dir: {e}"))?;
        let mut cmd = Command::new(bin);
        if let Mode::Sentinel { conf } = &self.mode {
            // Sentinel rewrites its config file: write it only once, so a restart keeps state.
            let path = self.dir.join("sentinel.conf");
            if !path.exists() {
                let Listen::Tcp(port) = self.listen else {
                    return Err("a sentinel listens on TCP".into());
                };
                let text = format!(
                    "port {port}\nbind 127.0.0.1\ndir {}\nlogfile {}\n{conf}",
                    self.dir.display(),
                    self.dir.join("redis.log").display()
                );
                std::fs::write(&path, text).map_err(|e| format!("sentinel.conf: {e}"))?;
            }
            cmd.arg(&path).arg("--sentinel");
            return self.run(cmd);
        }
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
            Listen::Tls { port, admin } => {
                cmd.arg("--port")
                    .arg("0")
                    .arg("--tls-port")
                    .arg(port.to_string())
                    .arg("--bind")
                    .arg("127.0.0.1")
                    .arg("--unixsocket")
                    .arg(admin)
                    .arg("--unixsocketperm")
                    .arg("700");
            }
        }
        cmd.args(&self.extra);
        self.run(cmd)
    }

    /// Starts `cmd` and waits for the server to answer.
    fn run(&mut self, mut cmd: Command) -> Result<(), String> {
        cmd.stdin(Stdio::null())
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

    /// Sends one command and returns the raw reply (RESP, read until complete), or `None` if
    /// the server cannot be reached. Authenticates first when the server has a password.
    pub fn command(&self, args: &[&str]) -> Option<String> {
        let timeout = Some(Duration::from_secs(2));
        let mut stream: Box<dyn ReadWrite> = match &self.listen {
            Listen::Tcp(port) => {
                let s = TcpStream::connect((Ipv4Addr::LOCALHOST, *port)).ok()?;
                s.set_read_timeout(timeout).ok()?;
                Box::new(s)
            }
            Listen::Unix(path) | Listen::Tls { admin: path, .. } => {
                let s = UnixStream::connect(path).ok()?;
                s.set_read_timeout(timeout).ok()?;
                Box::new(s)
            }
        };
        if let Some(pw) = &self.password {
            let reply = roundtrip(&mut stream, &["AUTH", pw])?;
            if !reply.starts_with("+OK") {
                return Some(reply);
            }
        }
        roundtrip(&mut stream, args)
    }

    fn ping(&self) -> bool {
        self.command(&["PING"])
            .is_some_and(|r| r.starts_with("+PONG"))
    }

    /// The TCP port (the TLS port of a TLS server; `None` for a unix-socket server).
    pub fn port(&self) -> Option<u16> {
        match self.listen {
            Listen::Tcp(port) | Listen::Tls { port, .. } => Some(port),
            Listen::Unix(_) => None,
        }
    }

    /// The socket path (`None` for a TCP or TLS server).
    pub fn socket_path(&self) -> Option<&Path> {
        match &self.listen {
            Listen::Tcp(_) | Listen::Tls { .. } => None,
            Listen::Unix(path) => Some(path),
        }
    }

    /// A URL in Go Machinery's form: `redis://[password@]127.0.0.1:<port>/<db>`,
    /// `rediss://127.0.0.1:<port>/<db>` (TLS) or `redis+socket://<path>:/<db>`.
    pub fn url_db(&self, db: u32) -> String {
        let auth = self
            .password
            .as_ref()
            .map(|pw| format!("{pw}@"))
            .unwrap_or_default();
        match &self.listen {
            Listen::Tcp(port) => format!("redis://{auth}127.0.0.1:{port}/{db}"),
            Listen::Tls { port, .. } => format!("rediss://{auth}127.0.0.1:{port}/{db}"),
            Listen::Unix(path) => format!("redis+socket://{auth}{}:/{db}", path.display()),
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

    /// Kills the process at once (`SIGKILL`), as a crashed host would stop answering.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A stream the fixture's raw client can use.
trait ReadWrite: Read + Write {}
impl<T: Read + Write> ReadWrite for T {}

/// Sends `args` as a RESP array and reads one complete reply.
fn roundtrip(stream: &mut Box<dyn ReadWrite>, args: &[&str]) -> Option<String> {
    let mut req = format!("*{}\r\n", args.len());
    for a in args {
        req.push_str(&format!("${}\r\n{a}\r\n", a.len()));
    }
    stream.write_all(req.as_bytes()).ok()?;
    let mut reply = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = stream.read(&mut chunk).ok()?;
        if n == 0 {
            break;
        }
        reply.extend_from_slice(&chunk[..n]);
        if resp_len(&reply).is_some() {
            break;
        }
    }
    Some(String::from_utf8_lossy(&reply).into_owned())
}

/// The length of the first complete RESP value in `b`, if it is complete.
fn resp_len(b: &[u8]) -> Option<usize> {
    let line_end = b.windows(2).position(|w| w == b"\r\n")?;
    let line = std::str::from_utf8(&b[1..line_end]).ok()?;
    let after = line_end + 2;
    match b.first()? {
        b'+' | b'-' | b':' | b',' | b'#' | b'_' => Some(after),
        b'$' | b'=' | b'!' => {
            let n: i64 = line.parse().ok()?;
            if n < 0 {
                return Some(after);
            }
            let end = after + usize::try_from(n).ok()? + 2;
            (b.len() >= end).then_some(end)
        }
        b'*' | b'~' | b'>' | b'%' => {
            let n: i64 = line.parse().ok()?;
            let items = if b[0] == b'%' { n * 2 } else { n };
            let mut at = after;
            for _ in 0..items.max(0) {
                at += resp_len(&b[at..])?;
            }
            Some(at)
        }
        _ => Some(b.len()),
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
            require_servers("redis-cli");
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

/// A throwaway CA, a server certificate it signed for `127.0.0.1` / `localhost`, a client
/// certificate it signed, and an unrelated second CA (for "wrong CA" tests), made with the
/// `openssl` command line in a temp directory removed on drop.
#[derive(Debug)]
pub struct TlsCerts {
    dir: PathBuf,
    /// The CA certificate (PEM).
    pub ca_cert: PathBuf,
    /// The server certificate (PEM), for `127.0.0.1` and `localhost`.
    pub server_cert: PathBuf,
    /// The server's private key (PEM).
    pub server_key: PathBuf,
    /// A client certificate signed by the CA (PEM).
    pub client_cert: PathBuf,
    /// The client's private key (PEM).
    pub client_key: PathBuf,
    /// Another CA's certificate, which signed nothing here.
    pub other_ca_cert: PathBuf,
}

impl TlsCerts {
    /// Generates the material (P-256 keys, valid two days). `None`, with
    /// `skipped: openssl not found`, when `openssl` is not on `PATH`.
    pub fn generate() -> Option<Self> {
        let Some(openssl) = find_on_path("openssl") else {
            require_servers("openssl");
            println!("skipped: openssl not found");
            return None;
        };
        let dir = temp_dir("tls");
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("temp dir: {e}"));
        let run = |args: &[&str]| {
            let out = Command::new(&openssl)
                .args(args)
                .current_dir(&dir)
                .stdin(Stdio::null())
                .output()
                .unwrap_or_else(|e| panic!("openssl: {e}"));
            assert!(
                out.status.success(),
                "openssl {} failed: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr)
            );
        };
        let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"];
        for (name, cn) in [
            ("ca", "machinist test CA"),
            ("other-ca", "unrelated test CA"),
        ] {
            let (key, crt, subj) = (
                format!("{name}.key"),
                format!("{name}.crt"),
                format!("/CN={cn}"),
            );
            let mut args = vec!["req", "-x509", "-nodes", "-days", "2"];
            args.extend(ec);
            args.extend(["-keyout", &key, "-out", &crt, "-subj", &subj]);
            args.extend([
                "-addext",
                "basicConstraints=critical,CA:TRUE",
                "-addext",
                "keyUsage=critical,keyCertSign,cRLSign",
            ]);
            run(&args);
        }
        let leaf = [
            ("server", "127.0.0.1", "serverAuth", true),
            ("client", "machinist test client", "clientAuth", false),
        ];
        for (name, cn, usage, san) in leaf {
            let ext = format!("{name}.ext");
            let mut text = format!(
                "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage={usage}\n"
            );
            if san {
                text.push_str("subjectAltName=IP:127.0.0.1,DNS:localhost\n");
            }
            std::fs::write(dir.join(&ext), text).unwrap_or_else(|e| panic!("{ext}: {e}"));
            let (key, csr, crt, subj) = (
                format!("{name}.key"),
                format!("{name}.csr"),
                format!("{name}.crt"),
                format!("/CN={cn}"),
            );
            let mut args = vec!["req", "-new", "-nodes"];
            args.extend(ec);
            args.extend(["-keyout", &key, "-out", &csr, "-subj", &subj]);
            run(&args);
            run(&[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                "ca.crt",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-days",
                "2",
                "-out",
                &crt,
                "-extfile",
                &ext,
            ]);
        }
        Some(TlsCerts {
            ca_cert: dir.join("ca.crt"),
            server_cert: dir.join("server.crt"),
            server_key: dir.join("server.key"),
            client_cert: dir.join("client.crt"),
            client_key: dir.join("client.key"),
            other_ca_cert: dir.join("other-ca.crt"),
            dir,
        })
    }
}

impl Drop for TlsCerts {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// What [`RedisSentinel::start`] sets up.
#[derive(Debug, Clone)]
pub struct SentinelSetup {
    /// How many sentinels (1 or 3 are typical; the quorum is 1).
    pub sentinels: usize,
    /// How many replicas of the master.
    pub replicas: usize,
    /// `requirepass` of the master and replicas (and the sentinels' `auth-pass`).
    pub password: Option<String>,
    /// `requirepass` of the sentinels.
    pub sentinel_password: Option<String>,
}

impl Default for SentinelSetup {
    fn default() -> Self {
        SentinelSetup {
            sentinels: 1,
            replicas: 0,
            password: None,
            sentinel_password: None,
        }
    }
}

/// A Sentinel deployment on loopback ports: a master, replicas replicating it, and sentinels
/// monitoring it as `mymaster` (quorum 1, down after 1 s, so a killed master is replaced within
/// a few seconds when there is a replica). Everything is stopped on drop.
#[derive(Debug)]
pub struct RedisSentinel {
    /// Master first, then the replicas; after a failover the roles differ.
    data: Vec<RedisServer>,
    sentinels: Vec<RedisServer>,
    setup: SentinelSetup,
}

/// The master name the sentinels monitor.
pub const SENTINEL_MASTER_NAME: &str = "mymaster";

impl RedisSentinel {
    /// Starts the deployment and waits until every sentinel names the master and (with
    /// replicas) knows them. `None` (with the skip line) when `redis-server` is missing.
    pub fn start(setup: SentinelSetup) -> Option<Self> {
        let password = setup.password.as_deref();
        let master = RedisServer::start_tcp_auth(&[], password)?;
        let master_port = master.port().unwrap_or_default().to_string();
        let mut data = vec![master];
        for _ in 0..setup.replicas {
            let replica =
                RedisServer::start_tcp_auth(&["--replicaof", "127.0.0.1", &master_port], password)?;
            wait_until(READY_TIMEOUT, "the replica to sync", || {
                replica
                    .command(&["INFO", "replication"])
                    .is_some_and(|r| r.contains("master_link_status:up"))
            });
            data.push(replica);
        }
        let mut conf = format!(
            "sentinel monitor {SENTINEL_MASTER_NAME} 127.0.0.1 {master_port} 1\n\
             sentinel down-after-milliseconds {SENTINEL_MASTER_NAME} 1000\n\
             sentinel failover-timeout {SENTINEL_MASTER_NAME} 5000\n\
             sentinel parallel-syncs {SENTINEL_MASTER_NAME} 1\n"
        );
        if let Some(pw) = password {
            conf.push_str(&format!("sentinel auth-pass {SENTINEL_MASTER_NAME} {pw}\n"));
        }
        if let Some(pw) = &setup.sentinel_password {
            conf.push_str(&format!("requirepass {pw}\nsentinel sentinel-pass {pw}\n"));
        }
        let mut sentinels = Vec::new();
        for _ in 0..setup.sentinels {
            let sentinel = RedisServer::spawn_on_free_port(|port| {
                let mut s = RedisServer::new(temp_dir("sentinel"), Listen::Tcp(port), Vec::new());
                s.mode = Mode::Sentinel { conf: conf.clone() };
                s.password.clone_from(&setup.sentinel_password);
                s
            });
            sentinels.push(sentinel);
        }
        let deployment = RedisSentinel {
            data,
            sentinels,
            setup,
        };
        let master_port: u16 = master_port.parse().unwrap_or_default();
        wait_until(READY_TIMEOUT, "the sentinels to see the master", || {
            deployment.sentinels.iter().all(|s| {
                s.command(&["SENTINEL", "replicas", SENTINEL_MASTER_NAME])
                    .is_some_and(|r| {
                        r.matches("master-link-status").count() >= deployment.setup.replicas
                    })
                    && sentinel_master_port(s) == Some(master_port)
            })
        });
        Some(deployment)
    }

    /// The master name to configure (`redis.master_name`).
    pub fn master_name(&self) -> &'static str {
        SENTINEL_MASTER_NAME
    }

    /// Go Machinery's URL with the sentinels as hosts and the master's password:
    /// `redis://[password@]127.0.0.1:s1,127.0.0.1:s2/<db>`.
    pub fn url_db(&self, db: u32) -> String {
        let auth = self
            .setup
            .password
            .as_ref()
            .map(|pw| format!("{pw}@"))
            .unwrap_or_default();
        let hosts: Vec<String> = self
            .sentinels
            .iter()
            .map(|s| format!("127.0.0.1:{}", s.port().unwrap_or_default()))
            .collect();
        format!("redis://{auth}{}/{db}", hosts.join(","))
    }

    /// [`RedisSentinel::url_db`] with db 0.
    pub fn url(&self) -> String {
        self.url_db(0)
    }

    /// The sentinel processes.
    pub fn sentinels(&self) -> &[RedisServer] {
        &self.sentinels
    }

    /// The data servers (master and replicas, in start order).
    pub fn data_servers(&self) -> &[RedisServer] {
        &self.data
    }

    /// The port the first answering sentinel names as the master's.
    pub fn master_port(&self) -> Option<u16> {
        self.sentinels.iter().find_map(sentinel_master_port)
    }

    /// The data server the sentinels name as master.
    pub fn master(&self) -> Option<&RedisServer> {
        let port = self.master_port()?;
        self.data.iter().find(|s| s.port() == Some(port))
    }

    /// Kills the current master (`SIGKILL`); returns its port.
    pub fn kill_master(&mut self) -> Option<u16> {
        let port = self.master_port()?;
        let master = self.data.iter_mut().find(|s| s.port() == Some(port))?;
        master.kill();
        Some(port)
    }

    /// Waits until the sentinels name a master other than `old_port` that answers as master;
    /// returns its port. Panics after `timeout`.
    pub fn wait_for_failover(&self, old_port: u16, timeout: Duration) -> u16 {
        let mut new_port = None;
        wait_until(timeout, "the sentinels to promote a replica", || {
            new_port = self.master_port().filter(|p| *p != old_port).filter(|p| {
                self.data
                    .iter()
                    .find(|s| s.port() == Some(*p))
                    .and_then(|s| s.command(&["ROLE"]))
                    .is_some_and(|r| r.contains("master"))
            });
            new_port.is_some()
        });
        new_port.unwrap_or_default()
    }
}

/// The master port `sentinel` names.
fn sentinel_master_port(sentinel: &RedisServer) -> Option<u16> {
    let reply = sentinel.command(&["SENTINEL", "get-master-addr-by-name", SENTINEL_MASTER_NAME])?;
    // *2\r\n$9\r\n127.0.0.1\r\n$5\r\n<port>\r\n
    reply.split("\r\n").nth(4)?.parse().ok()
}

/// Polls `ready` every 20 ms; panics with `what` after `timeout`.
fn wait_until(timeout: Duration, what: &str, mut ready: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !ready() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Fails the calling test when `MACHINIST_REQUIRE_SERVERS` is set (the project's test script
/// sets it, having installed what the tests need): there a missing program is an error, not a
/// reason to skip.
pub fn require_servers(what: &str) {
    assert!(
        std::env::var_os("MACHINIST_REQUIRE_SERVERS").is_none(),
        "{what} not found and MACHINIST_REQUIRE_SERVERS is set"
    );
}
