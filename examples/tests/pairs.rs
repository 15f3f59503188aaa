//! The example binaries end to end, as two processes: a worker (`sqlite_worker`,
//! `redis_worker`, `amqp_worker`) in the background and the sender (`sqlite_send`,
//! `redis_send`, `amqp_send`) running Go Machinery's whole send flow against it, then SIGTERM
//! for the worker.
//!
//! The binaries are the ones `cargo test` builds next to this test (`target/<profile>/
//! examples/`). The Redis pair needs the crate's `redis` feature (on in workspace builds) and
//! a `redis-server` on `PATH`; the AMQP pair the `amqp` feature (on in workspace builds) and a
//! RabbitMQ at `AMQP_URL` (default `amqp://guest:guest@127.0.0.1:5672/`), with its own queue;
//! without either it is skipped with a message.

use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// An example binary built by this `cargo test` run.
fn example(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("the test's path");
    // target/<profile>/deps/pairs-<hash> → target/<profile>/examples/<name>
    let dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target/<profile>")
        .join("examples");
    let path = dir.join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    assert!(
        path.exists(),
        "{} is not built: run the tests with `cargo test -p machinist-examples` (it builds the \
         examples), or `cargo build --examples` first",
        path.display()
    );
    path
}

/// A background worker, killed on drop; its stderr goes to a file.
struct Worker {
    child: Child,
    log: PathBuf,
}

impl Worker {
    fn start(binary: &str, url: &str, tag: &str, env: &[(String, String)]) -> Worker {
        let log = std::env::temp_dir().join(format!(
            "machinist-examples-{tag}-{}.log",
            std::process::id()
        ));
        let file = std::fs::File::create(&log).expect("log file");
        let child = Command::new(example(binary))
            .arg(url)
            .env("RUST_LOG", "info")
            .env_remove("BROKER")
            .env_remove("RESULT_BACKEND")
            .env_remove("LOCK")
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .expect("start the worker");
        Worker { child, log }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGTERM, then the exit code.
    fn stop(&mut self) -> Option<i32> {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("kill");
        assert!(status.success());
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status.code();
            }
            assert!(Instant::now() < deadline, "the worker did not stop");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.log);
    }
}

fn send(binary: &str, url: &str, env: &[(String, String)]) -> Output {
    Command::new(example(binary))
        .arg(url)
        .env("RUST_LOG", "warn")
        .env_remove("BROKER")
        .env_remove("RESULT_BACKEND")
        .env_remove("LOCK")
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .output()
        .expect("run the sender")
}

/// Runs the pair on `url` (with more environment variables `env`) and checks the sender's
/// lines and the worker's log.
fn run_pair(worker_bin: &str, send_bin: &str, url: &str, tag: &str, env: &[(String, String)]) {
    let mut worker = Worker::start(worker_bin, url, tag, env);
    let out = send(send_bin, url, env);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "{send_bin}: {:?}\nstdout:\n{stdout}\nstderr:\n{stderr}\nworker:\n{}",
        out.status,
        worker.log()
    );
    for line in [
        "add(1, 1) = 2\n",
        "sum_ints([1, 2, 3]) = 6\n",
        "sum_floats([1.5, 2.7]) = 4.2\n",
        "concat([\"foo\", \"bar\"]) = \"foobar\"\n",
        "split(\"foo\") = [\"f\", \"o\", \"o\"]\n",
        "group(add(1, 1), add(2, 2), add(5, 6)) = [2, 4, 11]\n",
        "chord(add(1, 1), add(2, 2), add(5, 6) -> multiply) = 88\n",
        "chain(add(1, 1) -> add(2, 2) -> add(5, 6) -> multiply(4)) = 68\n",
        "panic_task() failed as expected: oops\n",
        "long_running_task() finished (a 10 s countdown)\n",
    ] {
        assert!(stdout.contains(line), "no {line:?} in:\n{stdout}");
    }
    assert!(stdout.contains("add(2, 3) with ETA +1s = 5"), "{stdout}");
    assert_eq!(worker.stop(), Some(0), "{}", worker.log());
    let log = worker.log();
    assert!(
        log.contains("I am a start of task handler for: long_running_task"),
        "{log}"
    );
    assert!(log.contains("I am an error handler: "), "{log}");
    assert!(!log.contains("panicked at"), "{log}");
}

#[test]
fn sqlite_worker_and_sender() {
    let path =
        std::env::temp_dir().join(format!("machinist-examples-pair-{}.db", std::process::id()));
    let url = format!("sqlite://{}", path.display());
    run_pair("sqlite_worker", "sqlite_send", &url, "sqlite", &[]);
    machinist_examples::pair::remove_sqlite_files(&path);
}

#[cfg(feature = "redis")]
#[test]
fn redis_worker_and_sender() {
    let Some(redis) = machinist_testkit::redis_server::RedisServer::start() else {
        return;
    };
    run_pair("redis_worker", "redis_send", &redis.url_db(1), "redis", &[]);
}

#[cfg(not(feature = "redis"))]
#[test]
fn redis_worker_and_sender() {
    eprintln!("skipped: the Redis examples need the `redis` feature of machinist-examples");
}

/// The RabbitMQ of `AMQP_URL` (default the local guest account) if something listens there.
#[cfg(feature = "amqp")]
fn rabbit() -> Option<String> {
    machinist_testkit::rabbitmq::reachable()
}

#[cfg(feature = "amqp")]
#[test]
fn amqp_worker_and_sender() {
    let Some(url) = rabbit() else {
        return;
    };
    // Its own queue on the default exchange (nothing declared outlives the test: the queue
    // and the result queues delete themselves a minute after their last use).
    let queue = format!(
        "machinist_examples_pair_{}_{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_micros())
    );
    let env: Vec<(String, String)> = [
        ("DEFAULT_QUEUE", queue.as_str()),
        ("AMQP_BINDING_KEY", queue.as_str()),
        ("AMQP_EXCHANGE", ""),
        ("AMQP_QUEUE_DECLARE_ARGS", "x-expires:60000"),
        ("RESULTS_EXPIRE_IN", "60"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    run_pair("amqp_worker", "amqp_send", &url, "amqp", &env);
}

#[cfg(not(feature = "amqp"))]
#[test]
fn amqp_worker_and_sender() {
    eprintln!("skipped: the AMQP examples need the `amqp` feature of machinist-examples");
}
