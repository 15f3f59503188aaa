//! Redis restarts under a running worker (`SHUTDOWN NOSAVE`, then a new server on the same
//! port): the worker rides the outage out by itself and processes tasks sent afterwards.

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use machinist_core::{Signature, Stopped};
use machinist_testkit::redis_server::RedisServer;
use redis::AsyncCommands;

use crate::common::{LEASE, config, options, poll_until, raw, server, unique, within};

/// Log lines written while the test runs (every test of the binary writes here once this is
/// installed; the test filters by its server's port).
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("lock").extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    fn lines_with(&self, a: &str, b: &str) -> usize {
        let text = String::from_utf8_lossy(&self.0.lock().expect("lock")).into_owned();
        text.lines()
            .filter(|l| l.contains(a) && l.contains(b))
            .count()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn worker_recovers_after_redis_restart() {
    let Some(mut redis) = RedisServer::start() else {
        return;
    };
    let logs = Captured::default();
    let writer = logs.clone();
    let _ = tracing_subscriber::fmt()
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .try_init();
    let target = format!("127.0.0.1:{}", redis.port().unwrap());
    let queue = unique("restart");
    let cfg = config(&queue);
    let srv = server(options(&redis.url(), &queue, &cfg), &cfg).await;
    let worker = srv.new_worker("survivor", 2).launch_async();
    let mut r = srv
        .send_task(Signature::new("add").args((1i64, 2i64)))
        .await
        .unwrap();
    let v: i64 = r.results(Duration::from_secs(10)).await.unwrap();
    assert_eq!(v, 3);

    redis.shutdown();
    // Long enough for every loop (fetch, heartbeat, mover) to hit the outage.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    redis.restart();

    // The producer's connection reconnects too; its first command may still see the old socket.
    let mut r = poll_until(20, "a send after the restart", || {
        let srv = srv.clone();
        async move {
            srv.send_task(Signature::new("add").args((2i64, 3i64)))
                .await
                .ok()
        }
    })
    .await;
    let v: i64 = within(
        30,
        "the task sent after the restart",
        r.results(Duration::from_secs(30)),
    )
    .await
    .unwrap();
    assert_eq!(v, 5);
    // A delayed task too: the mover is back.
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
        "a delayed task after the restart",
        r.results(Duration::from_secs(10)),
    )
    .await
    .unwrap();
    assert_eq!(v, 8);
    // The consumer registered itself again in the new (empty) server.
    let mut c = raw(&redis.url()).await;
    poll_until(
        LEASE.as_secs() * 3,
        "the consumer lease to be renewed",
        || {
            let mut c = c.clone();
            async move {
                let ids: Vec<String> = c.hkeys("machinist:consumers").await.ok()?;
                (!ids.is_empty()).then_some(())
            }
        },
    )
    .await;
    let _ = &mut c;
    assert_eq!(
        logs.lines_with("Redis unreachable", &target),
        1,
        "one warning per outage"
    );
    assert_eq!(
        logs.lines_with("Redis reachable again", &target),
        1,
        "one line when it is back"
    );
    assert_eq!(
        within(10, "quit", worker.quit()).await.unwrap(),
        Stopped::Gracefully
    );
}
