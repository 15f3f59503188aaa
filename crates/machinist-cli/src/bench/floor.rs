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
//! AMQP: a minimal `lapin` client loop, with the same persistent JSON message machinist
//! publishes, to a durable queue of its own through the default exchange: per task one publish
//! on a confirm channel of a publisher connection (the confirms awaited [`BATCH`] at a time),
//! one delivery to a consumer on a connection of its own (prefetch [`BATCH`]) and one
//! `basic.ack` (sent without waiting for the previous one; awaited [`BATCH`] at a time),
//! publisher and consumer running at once — two connections, as machinist's adapter has; and
//! once more one task at a time (the publish and its confirm, and the delivery and its ack,
//! awaited together before the next task). The `enqueue` floor is publishing with confirms alone. There is no result write: the
//! AMQP floor is the broker's work only (the "publish with confirm, consume, ack").

use std::time::Instant;

use anyhow::Context as _;
use futures_util::StreamExt as _;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions, QueueDeclareOptions, QueueDeleteOptions, QueuePurgeOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Confirmation, Connection, ConnectionProperties, Consumer};
use redis::Commands as _;

use super::sys::Percentiles;

/// Tasks per pipeline in the pipelined loop.
pub const BATCH: usize = 100;

/// Passes of the Redis pipelined loop; the floor is their median.
const PASSES: usize = 3;

/// The server whose floor was measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FloorServer {
    /// Redis: [`redis_floor`].
    Redis,
    /// AMQP (RabbitMQ): [`amqp_floor`].
    Amqp,
}

/// The raw floor, measured once per run.
#[derive(Debug, Clone, Copy)]
pub struct Floor {
    /// Whose floor.
    pub server: FloorServer,
    /// Tasks per second, pipelined in batches of [`BATCH`] (Redis: the median of three
    /// passes).
    pub pipelined: f64,
    /// Tasks per second of the producer side alone. Redis: `SET … EX` of the PENDING state and
    /// `RPUSH` of the message per task, pipelined in batches of [`BATCH`] (what `send_task`
    /// does). AMQP: publishes with their confirms awaited [`BATCH`] at a time.
    pub enqueue: f64,
    /// Tasks per second, one command at a time.
    pub serial: f64,
    /// Redis: commands the server ran per second during the pipelined loop (its
    /// `total_commands_processed`, every client's): the rate machinist's own count is set
    /// against. `None` for AMQP.
    pub server_commands_per_sec: Option<f64>,
    /// Redis: microseconds of the server's CPU per task in that pass ([`ServerUse::cpu_s`]).
    /// `None` for AMQP.
    pub server_cpu_us_per_task: Option<f64>,
    /// Per-task time of the one-at-a-time loop (Redis: push, pop, result write; AMQP:
    /// publish and confirm, delivery, ack).
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
) -> anyhow::Result<Floor> {
    let client = redis::Client::open(url).context("the floor's redis client")?;
    let mut con = client
        .get_connection()
        .context("connecting the floor's redis client")?;
    let queue = format!("{key_prefix}queue");
    let result_key = |i: usize| format!("{key_prefix}task_{i}");

    // Warm the connection and the server's allocator a little, untimed.
    pipelined_loop(&mut con, &queue, 2 * BATCH, body, result, &result_key)?;

    // The pipelined loop takes a fraction of a second: the median of three passes, so that
    // one pass the VM interrupted does not set the ratio.
    let mut passes = Vec::with_capacity(PASSES);
    for _ in 0..PASSES {
        let before = ServerUse::read(&mut con);
        let started = Instant::now();
        pipelined_loop(&mut con, &queue, tasks, body, result, &result_key)?;
        let seconds = started.elapsed().as_secs_f64();
        let used = before
            .zip(ServerUse::read(&mut con))
            .map(|(before, after)| after.since(before));
        passes.push((tasks as f64 / seconds, seconds, used));
    }
    passes.sort_by(|a, b| a.0.total_cmp(&b.0));
    let (pipelined, seconds, used) = passes[PASSES / 2];
    let server_commands_per_sec = used.map(|u| u.commands as f64 / seconds);
    let server_cpu_us_per_task = used.and_then(|u| u.cpu_us_per_task(tasks));

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
    Ok(Floor {
        server: FloorServer::Redis,
        pipelined,
        enqueue,
        serial,
        serial_latency: Percentiles::of(&mut samples),
        server_commands_per_sec,
        server_cpu_us_per_task,
    })
}

/// What a Redis server has done so far, from its `INFO`: the commands it ran and the CPU
/// time it used. Two readings give what happened between them ([`ServerUse::since`]).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ServerUse {
    /// `total_commands_processed`: every command any client had it run, including those a
    /// script runs.
    pub commands: u64,
    /// CPU seconds, user and system: of its main thread (`used_cpu_*_main_thread`, Redis 7),
    /// else of the whole process (`used_cpu_*`). `None` when `INFO` has neither.
    pub cpu_s: Option<f64>,
}

impl ServerUse {
    /// Reads the server's counters; `None` when `INFO` cannot be read or has no command count.
    pub fn read(con: &mut redis::Connection) -> Option<Self> {
        let info: String = redis::cmd("INFO").query(con).ok()?;
        Self::parse(&info)
    }

    /// The counters in an `INFO` text.
    pub fn parse(info: &str) -> Option<Self> {
        let field = |name: &str| {
            info.lines()
                .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
                .map(str::trim)
        };
        let commands = field("total_commands_processed")?.parse().ok()?;
        let cpu = |user: &str, sys: &str| -> Option<f64> {
            Some(field(user)?.parse::<f64>().ok()? + field(sys)?.parse::<f64>().ok()?)
        };
        let cpu_s = cpu("used_cpu_user_main_thread", "used_cpu_sys_main_thread")
            .or_else(|| cpu("used_cpu_user", "used_cpu_sys"));
        Some(ServerUse { commands, cpu_s })
    }

    /// What the server did since `before` was read, less the one command that read this.
    pub fn since(self, before: ServerUse) -> ServerUse {
        ServerUse {
            commands: self
                .commands
                .saturating_sub(before.commands)
                .saturating_sub(1),
            cpu_s: self
                .cpu_s
                .zip(before.cpu_s)
                .map(|(now, then)| (now - then).max(0.0)),
        }
    }

    /// Microseconds of server CPU per task over `tasks` tasks.
    pub fn cpu_us_per_task(&self, tasks: usize) -> Option<f64> {
        self.cpu_s
            .filter(|_| tasks > 0)
            .map(|s| s * 1e6 / tasks as f64)
    }
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

/// Whether `url` is a URL the AMQP floor's plain `lapin` client takes: one `amqp://` URL (no
/// TLS, no list of brokers). Other forms get no floor.
pub fn amqp_floor_supported(url: &str, separator: &str) -> bool {
    let lower = url.trim().to_ascii_lowercase();
    lower.starts_with("amqp://") && (separator.is_empty() || !lower.contains(separator))
}

/// Measures the AMQP floor on `url` (see the module documentation) with `tasks` tasks
/// pipelined and `serial_tasks` one at a time, publishing `body`, through a durable queue named
/// `queue` that is deleted after.
pub async fn amqp_floor(
    url: &str,
    tasks: usize,
    serial_tasks: usize,
    body: &[u8],
    queue: &str,
) -> anyhow::Result<Floor> {
    let uri = amqp_uri(url)?;
    let connect = |role: &str| {
        Connection::connect_uri(
            uri.clone(),
            ConnectionProperties::default()
                .with_connection_name(format!("machinist bench floor {role}").into()),
        )
    };
    let producer = connect("publisher")
        .await
        .context("connecting the floor's lapin client")?;
    let consumer = connect("consumer")
        .await
        .context("connecting the floor's lapin client")?;
    let measured = amqp_loops(&producer, &consumer, tasks, serial_tasks, body, queue).await;
    // Clean up, untimed, whatever happened.
    if let Ok(ch) = producer.create_channel().await {
        let _ = ch
            .queue_delete(queue.into(), QueueDeleteOptions::default())
            .await;
        // Channels closed before their connection: lapin logs an error for a channel dropped
        // while its connection closes.
        let _ = ch.close(200, "bye".into()).await;
    }
    let _ = producer.close(200, "bye".into()).await;
    let _ = consumer.close(200, "bye".into()).await;
    measured
}

async fn amqp_loops(
    producer: &Connection,
    consumer: &Connection,
    tasks: usize,
    serial_tasks: usize,
    body: &[u8],
    queue: &str,
) -> anyhow::Result<Floor> {
    let publisher = producer.create_channel().await?;
    publisher
        .confirm_select(ConfirmSelectOptions::default())
        .await?;
    let consumer_ch = consumer.create_channel().await?;
    let measured = amqp_measure(&publisher, &consumer_ch, tasks, serial_tasks, body, queue).await;
    let _ = publisher.close(200, "bye".into()).await;
    let _ = consumer_ch.close(200, "bye".into()).await;
    measured
}

/// The floor's loops on a confirm-mode publisher channel and a consumer channel.
async fn amqp_measure(
    publisher: &Channel,
    consumer_ch: &Channel,
    tasks: usize,
    serial_tasks: usize,
    body: &[u8],
    queue: &str,
) -> anyhow::Result<Floor> {
    consumer_ch
        .queue_declare(
            queue.into(),
            QueueDeclareOptions {
                durable: true,
                ..QueueDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await
        .context("declaring the floor's queue")?;
    let properties = BasicProperties::default()
        .with_content_type("application/json".into())
        .with_delivery_mode(2);

    // The producer side alone (no consumer yet), then emptied, untimed.
    let started = Instant::now();
    publish_confirmed(publisher, queue, tasks, body, &properties).await?;
    let enqueue = tasks as f64 / started.elapsed().as_secs_f64();
    consumer_ch
        .queue_purge(queue.into(), QueuePurgeOptions::default())
        .await?;

    let prefetch = u16::try_from(BATCH).unwrap_or(u16::MAX);
    consumer_ch
        .basic_qos(prefetch, BasicQosOptions::default())
        .await?;
    let mut consumer = consumer_ch
        .basic_consume(
            queue.into(),
            "machinist-bench-floor".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .context("consuming the floor's queue")?;

    // Warm the connection and the queue a little, untimed.
    amqp_pipelined(
        publisher,
        &mut consumer,
        queue,
        2 * BATCH,
        body,
        &properties,
    )
    .await?;

    let started = Instant::now();
    amqp_pipelined(publisher, &mut consumer, queue, tasks, body, &properties).await?;
    let pipelined = tasks as f64 / started.elapsed().as_secs_f64();

    let mut samples = Vec::with_capacity(serial_tasks);
    let started = Instant::now();
    for _ in 0..serial_tasks {
        let t = Instant::now();
        // At once, as a worker and a producer are: RabbitMQ confirms a persistent message when
        // it is on disk or when a consumer acknowledged it, whichever comes first.
        tokio::try_join!(
            publish_confirmed(publisher, queue, 1, body, &properties),
            receive_and_ack(&mut consumer),
        )?;
        samples.push(t.elapsed());
    }
    let serial = serial_tasks as f64 / started.elapsed().as_secs_f64();
    Ok(Floor {
        server: FloorServer::Amqp,
        pipelined,
        enqueue,
        serial,
        serial_latency: Percentiles::of(&mut samples),
        server_commands_per_sec: None,
        server_cpu_us_per_task: None,
    })
}

/// Publishes `tasks` copies of `body` to `queue`, awaiting the confirms [`BATCH`] at a time.
async fn publish_confirmed(
    publisher: &Channel,
    queue: &str,
    tasks: usize,
    body: &[u8],
    properties: &BasicProperties,
) -> anyhow::Result<()> {
    let mut done = 0;
    while done < tasks {
        let n = BATCH.min(tasks - done);
        let mut confirms = Vec::with_capacity(n);
        for _ in 0..n {
            confirms.push(
                publisher
                    .basic_publish(
                        "".into(),
                        queue.into(),
                        BasicPublishOptions::default(),
                        body,
                        properties.clone(),
                    )
                    .await?,
            );
        }
        for confirm in confirms {
            match confirm.await? {
                Confirmation::Nack(_) => anyhow::bail!("RabbitMQ refused a floor message"),
                Confirmation::Ack(_) | Confirmation::NotRequested => {}
            }
        }
        done += n;
    }
    Ok(())
}

/// The next delivery, acknowledged.
async fn receive_and_ack(consumer: &mut Consumer) -> anyhow::Result<()> {
    let delivery = consumer
        .next()
        .await
        .context("the floor's consumer ended")??;
    delivery.acker.ack(BasicAckOptions::default()).await?;
    Ok(())
}

/// `tasks` tasks through publish (confirmed [`BATCH`] at a time), delivery and ack, the
/// publisher and the consumer at once.
async fn amqp_pipelined(
    publisher: &Channel,
    consumer: &mut Consumer,
    queue: &str,
    tasks: usize,
    body: &[u8],
    properties: &BasicProperties,
) -> anyhow::Result<()> {
    let produce = publish_confirmed(publisher, queue, tasks, body, properties);
    let consume = async {
        let mut acks = Vec::with_capacity(BATCH);
        for _ in 0..tasks {
            let delivery = consumer
                .next()
                .await
                .context("the floor's consumer ended")??;
            let acker = delivery.acker;
            acks.push(tokio::spawn(async move {
                acker.ack(BasicAckOptions::default()).await
            }));
            if acks.len() == BATCH {
                for ack in acks.drain(..) {
                    ack.await??;
                }
            }
        }
        for ack in acks {
            ack.await??;
        }
        anyhow::Ok(())
    };
    tokio::try_join!(produce, consume)?;
    Ok(())
}

/// `url` as lapin's URI, read as Go (and `machinist-amqp`) read it: the host from the URL's
/// authority (lapin reads none from an IP address), and `/` for an empty vhost.
fn amqp_uri(url: &str) -> anyhow::Result<lapin::uri::AMQPUri> {
    let url = url.trim();
    let mut uri: lapin::uri::AMQPUri = url
        .parse()
        .map_err(|e| anyhow::anyhow!("the floor cannot read the AMQP URL: {e}"))?;
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let host = match host_port.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or_default(),
        None => host_port.split(':').next().unwrap_or_default(),
    };
    if !host.is_empty() {
        host.clone_into(&mut uri.authority.host);
    }
    if uri.vhost.is_empty() {
        "/".clone_into(&mut uri.vhost);
    }
    Ok(uri)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amqp_urls_the_floor_takes() {
        assert!(amqp_floor_supported(
            "amqp://guest:guest@127.0.0.1:5672/",
            ""
        ));
        assert!(amqp_floor_supported("AMQP://h/", ","));
        assert!(!amqp_floor_supported("amqps://h/", ""));
        assert!(!amqp_floor_supported("amqp://a/,amqp://b/", ","));
        let uri = amqp_uri("amqp://u:p@127.0.0.1:5673/").expect("parses");
        assert_eq!(uri.authority.host, "127.0.0.1");
        assert_eq!(uri.authority.port, 5673);
        assert_eq!(uri.vhost, "/");
        assert_eq!(amqp_uri("amqp://h/jobs").expect("parses").vhost, "jobs");
    }

    #[test]
    fn server_use_reads_commands_and_main_thread_cpu() {
        let redis7 = "# Stats\r\ntotal_commands_processed:1500\r\n# CPU\r\nused_cpu_sys:9.5\r\n\
                      used_cpu_user:20.0\r\nused_cpu_sys_main_thread:1.25\r\n\
                      used_cpu_user_main_thread:2.5\r\n";
        let before = ServerUse::parse(redis7).expect("parses");
        assert_eq!(before.commands, 1500);
        assert_eq!(
            before.cpu_s,
            Some(3.75),
            "the main thread's, not the process's"
        );
        let older = "total_commands_processed:1800\r\nused_cpu_sys:1.5\r\nused_cpu_user:3.0\r\n";
        assert_eq!(
            ServerUse::parse(older).expect("parses").cpu_s,
            Some(4.5),
            "the process's without main-thread fields"
        );
        let after = ServerUse {
            commands: 1701,
            cpu_s: Some(4.75),
        };
        let used = after.since(before);
        assert_eq!(used.commands, 200, "the reading command is not counted");
        assert_eq!(used.cpu_us_per_task(100), Some(10_000.0));
        assert_eq!(used.cpu_us_per_task(0), None);
        assert_eq!(
            ServerUse::parse("used_cpu_sys:1.0\r\n"),
            None,
            "no command count"
        );
        let no_cpu = ServerUse::parse("total_commands_processed:7\r\n").expect("parses");
        assert_eq!(no_cpu.cpu_s, None);
    }
}
