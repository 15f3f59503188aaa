//! The raw floor: what the same server does for the same tasks with no framework at all, in
//! the same run, so machinist's figures are read as a ratio to it.
//!
//! Redis: a minimal `redis-rs` client loop, on one plain (non-multiplexed) connection, doing per
//! task one `RPUSH` of the message machinist would send, one `LPOP`, and one `SET … EX` of the
//! SUCCESS state machinist would store: pipelined in batches of 100 (three round trips per
//! batch: the pushes, the pops, the result writes), and once more one command at a time (three
//! round trips per task; its per-task time is the floor of the latency scenario). The
//! `enqueue` scenario's floor is the producer half: `SET … EX` of the PENDING state and `RPUSH`
//! per task, pipelined by 100.
//!
//! AMQP's floor (publish with confirm, consume, ack) comes with the AMQP adapter: this build's
//! URL facade does not connect `amqp://` yet, so there is no machinist figure to compare it
//! with.

use std::time::Instant;

use anyhow::Context as _;
use redis::Commands as _;

use super::sys::Percentiles;

/// Tasks per pipeline in the pipelined loop.
pub const BATCH: usize = 100;

/// The Redis floor, measured once per run.
#[derive(Debug, Clone, Copy)]
pub struct RedisFloor {
    /// Tasks per second, pipelined in batches of [`BATCH`].
    pub pipelined: f64,
    /// Tasks per second of the producer side alone: `SET … EX` of the PENDING state and
    /// `RPUSH` of the message per task, pipelined in batches of [`BATCH`] (what `send_task`
    /// does).
    pub enqueue: f64,
    /// Tasks per second, one command at a time.
    pub serial: f64,
    /// Per-task time of the one-at-a-time loop (push, pop, result write).
    pub serial_latency: Option<Percentiles>,
}

/// Whether `url` is a URL the floor's plain `redis-rs` client takes: one standalone server over
/// TCP (`redis://`, no cluster host list). Other forms get no floor.
pub fn redis_floor_supported(url: &str) -> bool {
    let lower = url.trim().to_ascii_lowercase();
    lower.starts_with("redis://") && !lower.contains(',')
}

/// Measures the floor on `url` with `tasks` tasks pipelined and `serial_tasks` one at a time,
/// pushing `body` and storing `result`. Keys start with `key_prefix` and are deleted after.
/// Blocking: call it from a blocking thread.
pub fn redis_floor(
    url: &str,
    tasks: usize,
    serial_tasks: usize,
    body: &[u8],
    result: &[u8],
    key_prefix: &str,
) -> anyhow::Result<RedisFloor> {
    let client = redis::Client::open(url).context("the floor's redis client")?;
    let mut con = client
        .get_connection()
        .context("connecting the floor's redis client")?;
    let queue = format!("{key_prefix}queue");
    let result_key = |i: usize| format!("{key_prefix}task_{i}");

    // Warm the connection and the server's allocator a little, untimed.
    pipelined_loop(&mut con, &queue, 2 * BATCH, body, result, &result_key)?;

    let started = Instant::now();
    pipelined_loop(&mut con, &queue, tasks, body, result, &result_key)?;
    let pipelined = tasks as f64 / started.elapsed().as_secs_f64();

    let started = Instant::now();
    let mut done = 0;
    while done < tasks {
        let n = BATCH.min(tasks - done);
        let mut send = redis::pipe();
        for i in done..done + n {
            send.set_ex(result_key(i), result, 3600).ignore();
            send.rpush(&queue, body).ignore();
        }
        send.query::<()>(&mut con)?;
        done += n;
    }
    let enqueue = tasks as f64 / started.elapsed().as_secs_f64();
    con.del::<_, ()>(&queue)?;

    let mut samples = Vec::with_capacity(serial_tasks);
    let started = Instant::now();
    for i in 0..serial_tasks {
        let t = Instant::now();
        con.rpush::<_, _, ()>(&queue, body)?;
        let popped: Option<Vec<u8>> = con.lpop(&queue, None)?;
        anyhow::ensure!(popped.is_some(), "the floor's queue was empty after a push");
        con.set_ex::<_, _, ()>(result_key(i), result, 3600)?;
        samples.push(t.elapsed());
    }
    let serial = serial_tasks as f64 / started.elapsed().as_secs_f64();

    // Clean up, untimed.
    let keys: Vec<String> = (0..tasks.max(serial_tasks).max(2 * BATCH))
        .map(result_key)
        .collect();
    for chunk in keys.chunks(1000) {
        con.del::<_, ()>(chunk)?;
    }
    con.del::<_, ()>(&queue)?;
    Ok(RedisFloor {
        pipelined,
        enqueue,
        serial,
        serial_latency: Percentiles::of(&mut samples),
    })
}

/// `tasks` tasks through push, pop and result write, [`BATCH`] per pipeline.
fn pipelined_loop(
    con: &mut redis::Connection,
    queue: &str,
    tasks: usize,
    body: &[u8],
    result: &[u8],
    result_key: &dyn Fn(usize) -> String,
) -> anyhow::Result<()> {
    let mut done = 0;
    while done < tasks {
        let n = BATCH.min(tasks - done);
        let mut push = redis::pipe();
        for _ in 0..n {
            push.rpush(queue, body).ignore();
        }
        push.query::<()>(con)?;
        let mut pop = redis::pipe();
        for _ in 0..n {
            pop.lpop(queue, None);
        }
        let popped: Vec<Option<Vec<u8>>> = pop.query(con)?;
        anyhow::ensure!(
            popped.iter().all(Option::is_some),
            "the floor popped {} messages of {n}",
            popped.iter().flatten().count()
        );
        let mut store = redis::pipe();
        for i in done..done + n {
            store.set_ex(result_key(i), result, 3600).ignore();
        }
        store.query::<()>(con)?;
        done += n;
    }
    Ok(())
}
