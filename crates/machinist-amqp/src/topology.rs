//! Every declaration machinist makes, with Go Machinery's exact flags and arguments
//! (`wire-format.md` §5): RabbitMQ refuses a second declaration of a queue or exchange whose
//! flags or argument *types* differ (406 PRECONDITION_FAILED), so a Go process and a machinist
//! process sharing a RabbitMQ must declare byte-for-byte alike.
//!
//! | what | name | flags | arguments |
//! |---|---|---|---|
//! | task exchange | `exchange` | durable, not auto-delete, not internal | none |
//! | task queue | worker queue, or the routing key (publisher, direct) | durable, not auto-delete, not exclusive | `queue_declare_args` |
//! | its binding | `binding_key` (consumer); routing key (publisher, direct) | | `queue_binding_args` |
//! | delay queue | `delay.<ms>.<exchange>.<routing key>` | durable, auto-delete = `auto_delete` | `x-dead-letter-exchange`, `x-dead-letter-routing-key` (long strings), `x-message-ttl` = ms, `x-expires` = 2×ms (64-bit ints) |
//! | single delay queue | `delayed_queue` | durable, auto-delete = `auto_delete` | the two `x-dead-letter-*` only; per-message `expiration` |
//! | result queue | task UUID, group UUID | not durable, auto-delete | `x-message-ttl`, `x-expires` = `results_expire_in` ms (32-bit ints) |
//!
//! machinist adds (Go never touches them): `<queue>.dead_letters` (durable, no arguments),
//! `<group>_meta` and the chord lock/marker queues (see the backend).

use lapin::options::{ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable, LongString};
use lapin::{BasicProperties, ExchangeKind};
use tracing::debug;

use crate::conn::{OpChannel, confirmed, send_publish};
use crate::error::AmqpError;
use crate::options::{AmqpOptions, short, to_table};

/// `exchange_type` as lapin's kind.
fn exchange_kind(kind: &str) -> ExchangeKind {
    match kind {
        "direct" => ExchangeKind::Direct,
        "fanout" => ExchangeKind::Fanout,
        "topic" => ExchangeKind::Topic,
        "headers" => ExchangeKind::Headers,
        other => ExchangeKind::Custom(other.to_owned()),
    }
}

/// Declares the task exchange as Go does (skipped when the name is empty).
pub(crate) async fn declare_exchange(
    op: &mut OpChannel,
    options: &AmqpOptions,
) -> Result<(), AmqpError> {
    if options.exchange.is_empty() {
        return Ok(());
    }
    op.declared();
    op.channel
        .exchange_declare(
            short(&options.exchange)?,
            exchange_kind(&options.exchange_type),
            ExchangeDeclareOptions {
                durable: true,
                ..ExchangeDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await
        .map_err(|e| {
            AmqpError::amqp(
                format!(
                    "declaring exchange {:?} ({})",
                    options.exchange, options.exchange_type
                ),
                e,
            )
        })
}

/// Declares a task queue (durable, not auto-delete, `queue_declare_args`) and binds it to the
/// exchange with `binding_key` and `queue_binding_args`, as Go's `Connect` does.
pub(crate) async fn declare_task_queue(
    op: &mut OpChannel,
    options: &AmqpOptions,
    queue: &str,
    binding_key: &str,
) -> Result<(), AmqpError> {
    op.declared();
    op.channel
        .queue_declare(
            short(queue)?,
            QueueDeclareOptions {
                durable: true,
                ..QueueDeclareOptions::default()
            },
            to_table(&options.queue_declare_args)?,
        )
        .await
        .map_err(|e| AmqpError::amqp(format!("declaring queue {queue:?}"), e))?;
    bind(
        op,
        options,
        queue,
        binding_key,
        to_table(&options.queue_binding_args)?,
    )
    .await
}

/// Binds `queue` to the exchange (nothing to do on the default exchange).
async fn bind(
    op: &mut OpChannel,
    options: &AmqpOptions,
    queue: &str,
    key: &str,
    args: FieldTable,
) -> Result<(), AmqpError> {
    if options.exchange.is_empty() {
        return Ok(());
    }
    op.declared();
    op.channel
        .queue_bind(
            short(queue)?,
            short(&options.exchange)?,
            short(key)?,
            QueueBindOptions::default(),
            args,
        )
        .await
        .map_err(|e| {
            AmqpError::amqp(
                format!(
                    "binding queue {queue:?} to {:?} with {key:?}",
                    options.exchange
                ),
                e,
            )
        })
}

/// Where a delayed task waits: the queue's name, its arguments, and the per-message
/// expiration (only for the single `delayed_queue`).
pub(crate) struct DelayQueue {
    pub(crate) name: String,
    pub(crate) args: FieldTable,
    pub(crate) expiration: Option<String>,
}

/// Go's delay queue for `ms` milliseconds and `routing_key`.
pub(crate) fn delay_queue(options: &AmqpOptions, ms: i64, routing_key: &str) -> DelayQueue {
    let mut args = FieldTable::default();
    args.insert(
        "x-dead-letter-exchange".into(),
        AMQPValue::LongString(LongString::from(options.exchange.as_str())),
    );
    args.insert(
        "x-dead-letter-routing-key".into(),
        AMQPValue::LongString(LongString::from(routing_key)),
    );
    if options.delayed_queue.is_empty() {
        args.insert("x-message-ttl".into(), AMQPValue::LongLongInt(ms));
        args.insert(
            "x-expires".into(),
            AMQPValue::LongLongInt(ms.saturating_mul(2)),
        );
        DelayQueue {
            name: format!("delay.{ms}.{}.{routing_key}", options.exchange),
            args,
            expiration: None,
        }
    } else {
        DelayQueue {
            name: options.delayed_queue.clone(),
            args,
            expiration: Some(ms.to_string()),
        }
    }
}

/// Declares a delay queue (durable, auto-delete = `auto_delete`), binds it with its own name
/// (as Go's `delay` does) and publishes `body` to it, pipelined on one confirm-mode channel,
/// then — for a per-delay queue — declares it once more as soon as the publish is on the wire.
/// `Ok(true)` when the message came back unroutable (the queue lapsed before the publish and
/// took no copy: publish again). A 404 on the binding (the queue lapsed between its
/// declaration and the binding) closes the channel, and nothing was published either.
///
/// Why the second declaration: a per-delay queue expires `x-expires` = 2×delay after its last
/// declaration (a `queue.declare` that waits for its answer makes the queue process restart
/// its expiry timer; a publish does not) and takes its messages with it, while a message's
/// `x-message-ttl` runs from when the queue process *enqueues* it. A publish that reaches the
/// queue more than one delay after the declaration — RabbitMQ busy, or the publish waiting in
/// lapin, which writes every channel's pending method frames before any publish — would
/// outlive its queue and be lost, although confirmed (a queue that expires confirms what it
/// held). RabbitMQ runs a channel's frames in order, and both the publish (a cast) and the
/// declaration (a call) go from the channel process to the queue process, so a declaration
/// written after the publish reaches the queue process after the message (or, having
/// priority, just before it in the same turn): the lease then runs from the enqueue on, and
/// the queue outlives its message by about one delay.
///
/// What no client can prevent: a publish that reaches the queue 2×delay or more after the
/// last declaration finds it expiring (its timer already fired), and RabbitMQ routes it to
/// the dying queue — lost, confirmed. Hence [`crate::broker`]'s minimum delay of 50 ms. The
/// arguments stay Go's (a Go peer declaring the same queue must not get a 406); only the
/// number of declarations differs. The single `delayed_queue` has no `x-expires` and is
/// declared once.
pub(crate) async fn delay_and_publish(
    op: &mut OpChannel,
    options: &AmqpOptions,
    delay: &DelayQueue,
    body: &[u8],
    props: BasicProperties,
) -> Result<bool, AmqpError> {
    let renew = delay.expiration.is_none();
    op.declared();
    op.declared();
    if renew {
        op.declared();
    }
    let channel = &op.channel;
    let name = short(&delay.name)?;
    let declare_options = QueueDeclareOptions {
        durable: true,
        auto_delete: options.auto_delete,
        ..QueueDeclareOptions::default()
    };
    let declare = channel.queue_declare(name.clone(), declare_options, delay.args.clone());
    let bind = async {
        if options.exchange.is_empty() {
            return Ok(());
        }
        channel
            .queue_bind(
                name.clone(),
                short(&options.exchange)?,
                name.clone(),
                QueueBindOptions::default(),
                to_table(&options.queue_binding_args)?,
            )
            .await
            .map_err(|e| AmqpError::amqp(format!("binding delay queue {:?}", delay.name), e))
    };
    let publish = async {
        let confirm = send_publish(channel, &options.exchange, &delay.name, body, props).await?;
        let renewal = async {
            if renew {
                channel
                    .queue_declare(name.clone(), declare_options, delay.args.clone())
                    .await
                    .map(drop)
            } else {
                Ok(())
            }
        };
        let (returned, renewed) =
            tokio::join!(confirmed(confirm, &options.exchange, &delay.name), renewal);
        if let Err(e) = renewed {
            // Same arguments as the declaration that succeeded: only a channel that died
            // meanwhile fails here; if the publish was confirmed, publishing again would make
            // a duplicate.
            debug!(queue = %delay.name, "renewing the delay queue's lease after the publish: {e}");
        }
        returned
    };
    let (declared, bound, published) = tokio::join!(declare, bind, publish);
    declared.map_err(|e| {
        let e = AmqpError::amqp(format!("declaring delay queue {:?}", delay.name), e);
        if e.reply_code() == Some(406) && delay.expiration.is_some() {
            AmqpError::config(format!(
                "{e}: the delayed_queue {:?} was declared with another dead-letter routing key; \
                 it serves one routing key only (leave delayed_queue empty for per-delay queues)",
                delay.name
            ))
        } else {
            e
        }
    })?;
    bound?;
    published
}

/// Go's result queue arguments: `x-message-ttl` and `x-expires`, both `results_expire_in` in ms
/// as 32-bit ints.
pub(crate) fn result_queue_args(ttl_ms: i32) -> FieldTable {
    let mut args = FieldTable::default();
    args.insert("x-message-ttl".into(), AMQPValue::LongInt(ttl_ms));
    args.insert("x-expires".into(), AMQPValue::LongInt(ttl_ms));
    args
}

/// Declares a result queue the way Go's backend does: not durable, auto-delete, not exclusive.
pub(crate) async fn declare_result_queue(
    op: &mut OpChannel,
    queue: &str,
    ttl_ms: i32,
) -> Result<u32, AmqpError> {
    op.declared();
    op.channel
        .queue_declare(
            short(queue)?,
            QueueDeclareOptions {
                auto_delete: true,
                ..QueueDeclareOptions::default()
            },
            result_queue_args(ttl_ms),
        )
        .await
        .map(|q| q.message_count())
        .map_err(|e| AmqpError::amqp(format!("declaring result queue {queue:?}"), e))
}

/// The message count of `queue` by a passive declaration; `None` when it does not exist (the
/// channel is then closed by RabbitMQ and must not be reused).
pub(crate) async fn message_count(
    op: &mut OpChannel,
    queue: &str,
) -> Result<Option<u32>, AmqpError> {
    match op
        .channel
        .queue_declare(
            short(queue)?,
            QueueDeclareOptions {
                passive: true,
                ..QueueDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await
    {
        Ok(q) => Ok(Some(q.message_count())),
        Err(e) => {
            let e = AmqpError::amqp(format!("inspecting queue {queue:?}"), e);
            if e.is_not_found() { Ok(None) } else { Err(e) }
        }
    }
}
