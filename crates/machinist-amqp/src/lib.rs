//! # machinist-amqp
//!
//! RabbitMQ (AMQP 0-9-1) broker and result backend for machinist, declaring, routing and
//! encoding exactly as Go Machinery's AMQP adapters do: a Go producer, a Go worker, a machinist
//! producer and a machinist worker can share one RabbitMQ — same exchange, same queues with the
//! same flags and arguments (or RabbitMQ would answer 406 PRECONDITION_FAILED), same messages.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use std::sync::Arc;
//! use machinist_amqp::{AmqpBackend, AmqpBroker, AmqpOptions};
//! let mut config = machinist_core::Config::default();
//! config.broker = "amqp://guest:guest@rabbit-1:5672/,amqp://guest:guest@rabbit-2:5672/".into();
//! config.multiple_broker_separator = ",".into();
//! let broker = AmqpBroker::connect(AmqpOptions::broker_from_config(&config)?).await?;
//! // Results: prefer Redis or SQLite (see "Limits"); this is Go's AMQP result backend.
//! config.result_backend = "amqp://guest:guest@rabbit-1:5672/".into();
//! let backend = AmqpBackend::connect(AmqpOptions::backend_from_config(&config)?).await?;
//! let server = machinist_core::Server::new(
//!     config,
//!     Arc::new(broker),
//!     Arc::new(backend),
//!     Arc::new(machinist_core::memory::MemoryLock::new()),
//! );
//! # let _ = server; Ok(()) }
//! ```
//!
//! ## Layout
//!
//! | module | what it holds |
//! |---|---|
//! | `options` | [`AmqpOptions`]: Go's URL list and `amqp:` settings; JSON → AMQP field tables with Go's types |
//! | `conn` | connecting to the first reachable URL; the shared publisher-confirm channel and the pool of operation channels; reconnecting, outage logging, back-off |
//! | `topology` | every declaration, with Go's flags and arguments |
//! | `broker` | [`AmqpBroker`]: publishing, delayed tasks, consumers with manual acks, dead letters, inspection |
//! | `backend` | [`AmqpBackend`]: per-task result queues, reading the latest state, groups, the chord trigger |
//! | `registry` | which group a task belongs to, as far as this process knows (broker → backend) |
//! | `error` | [`AmqpError`] |
//!
//! ## Topology (as Go)
//!
//! | what | name | flags | arguments |
//! |---|---|---|---|
//! | task exchange | `exchange` (`machinery_exchange`) | `exchange_type`, durable, not auto-delete, not internal | none |
//! | worker queue | `default_queue` or the worker's custom queue | durable, not auto-delete, not exclusive | `queue_declare_args`; bound with `binding_key` and `queue_binding_args` |
//! | publisher's queue | direct exchange: the routing key (bound with itself); else `default_queue` (bound with `binding_key`) | as the worker queue | as the worker queue |
//! | delay queue | `delay.<ms>.<exchange>.<routing key>` | durable, auto-delete = `auto_delete` | `x-dead-letter-exchange`, `x-dead-letter-routing-key`, `x-message-ttl` = ms, `x-expires` = 2×ms (64-bit) |
//! | single delay queue | `delayed_queue`, when set | durable, auto-delete = `auto_delete` | the two `x-dead-letter-*`; per-message `expiration` |
//! | result queue | task UUID; group UUID | not durable, auto-delete | `x-message-ttl` = `x-expires` = `results_expire_in` ms (32-bit) |
//! | chord marker | `<group>_chord_triggered` (Go's name) | not durable | `x-expires` |
//! | machinist only | `<queue>.dead_letters` (durable), `<group>_meta`, `<group>_lock` (exclusive) | | |
//!
//! The routing key of a task without one is `binding_key` on a `direct` exchange and the
//! default queue otherwise (Go's `AdjustRoutingKey`). With Go's defaults (`machinery_task`
//! vs `machinery_tasks`) a message therefore lands in the worker queue *and* in a queue named
//! `machinery_task` nobody consumes — Go's behaviour, kept; set `binding_key` to the default
//! queue's name to avoid it.
//!
//! ## Messages (as Go)
//!
//! The body is the signature's JSON, byte-for-byte what Go writes. Properties:
//! `content_type: application/json`, `delivery_mode: 2`, `priority` (when not 0; effective
//! only on queues declared with `x-max-priority`) and `headers` = the signature's `Headers`
//! as an AMQP table (when not empty). Each state in the result backend is one persistent JSON
//! `TaskState` message. Consumers accept any content type (Go ignores it too).
//!
//! ## Acknowledgements: at-least-once
//!
//! Consumers use manual acks and `basic.qos(prefetch)` (the worker's concurrency). A message
//! is acknowledged when the worker settles it — after the task's state is stored — so nothing
//! is lost when a worker dies or RabbitMQ restarts: unacknowledged messages are redelivered
//! (`redelivered` → [`Delivery::redeliveries`](machinist_core::Delivery::redeliveries)), and
//! a task may run twice, storing the same outcome. `nack(requeue)` returns a message;
//! `dead_letter(reason)` publishes it to `<queue>.dead_letters` with the `x-machinist-reason`
//! header (and `x-machinist-queue`, `x-machinist-dead-lettered-at`), waits for the confirm, and
//! only then acknowledges the original. A delivery dropped undecided is requeued. Acks are
//! coalesced: one `basic.ack(multiple)` up to just below the oldest delivery still running
//! (an ack that cannot join waits at most 2 ms, then goes alone), about eight tasks per frame
//! under load; a stopping consumer sends its last acks, then closes its channel, then its
//! connection. Every publish (tasks, delayed tasks, dead letters, states) waits for its
//! publisher confirm.
//!
//! ## Connection loss
//!
//! Each adapter connects to the first reachable URL of its list (a dead first host does not
//! stop it). When RabbitMQ restarts, an operator closes a connection, or a channel is closed by
//! a refusal, consumers reconnect with back-off (100 ms doubling to 5 s, jittered), declare
//! again and resume; publishers and backend operations retry for up to
//! [`AmqpOptions::retry_for`] (30 s) and then fail; each attempt, and each ack, is bounded by
//! [`AmqpOptions::operation_timeout`] (30 s), so a connection that died without telling cannot
//! hang a worker (an ack lost that way is harmless: RabbitMQ redelivers). One warning when RabbitMQ goes away and one
//! info line when it is back, per adapter, however many tasks notice. A queue deleted under a
//! running worker is declared again (by the consumer, and by a publisher whose message came
//! back unroutable). A dead TCP peer without a reset is noticed by AMQP heartbeats (the
//! server's proposal, usually 60 s; set `?heartbeat=10` in the URL for faster detection).
//!
//! ## What differs from Go
//!
//! * **Ack after the state is stored**, not after `Process` returns whatever happened; a
//!   state that cannot be stored returns the message instead of losing it.
//! * **Bad messages**: an empty or undecodable body is dead-lettered with a reason (Go drops
//!   it with `nack(requeue=false)`); an unregistered task is republished with back-off and
//!   dead-lettered after a bound (Go's `nack(requeue=true)` is a hot loop). Go has no dead
//!   letter queue; `<queue>.dead_letters` is machinist's.
//! * **Publishes are `mandatory`**: a message no queue takes is an error (Go drops it
//!   silently), and the topology is declared again once before giving up.
//! * **Delays are rounded up** to whole milliseconds and are at least 50 ms, so a task never
//!   runs before its ETA; Go truncates. A per-delay queue expires 2×delay after its last
//!   declaration, with its messages, and Go's declare-then-publish loses messages with short
//!   delays on a busy RabbitMQ: machinist pipelines the declaration with the publish, declares
//!   the queue again right after the publish, and publishes again if the queue lapsed first.
//!   The destination queue is declared too. Delayed publishes wait for their confirm (Go's do
//!   not).
//! * **The result backend returns the latest state** (Go's `GetState` pops the oldest), merges
//!   `TaskName`/`CreatedAt` on read, and compacts a task's queue to at most two messages. See
//!   [`AmqpBackend`] for the cost.
//! * **Groups**: `init_group` stores the `GroupMeta` (Go stores none), completion counts
//!   distinct members (a task run twice does not complete a group early, where Go's `==` count
//!   never completes it), and the chord trigger is exactly-once across processes (see
//!   [`AmqpBackend`]); a winner also creates Go's `<group>_chord_triggered` marker, which Go's
//!   `TriggerChord` honours.
//! * **Inspection**: `delayed()` lists only the delay queues this process published to (AMQP
//!   cannot list queues; the management API is not used).
//! * An empty exchange name means the default exchange: nothing is declared or bound (Go
//!   fails binding to it).
//! * `prefetch_count` applies only when the worker gives no prefetch (it passes its
//!   concurrency).
//!
//! ## Limits
//!
//! * **The AMQP result backend does not scale**, as Go's README warns: one queue per task (and
//!   per group), each state a message, reads that take the messages and put them back. It
//!   suits small volumes where RabbitMQ is the only server; use the Redis or SQLite backend
//!   for anything else. Its queues are not durable (Go's shape): states do not survive a
//!   RabbitMQ restart.
//! * A concurrent read of the same task's state can see nothing for a few milliseconds (a
//!   poller just polls again); a Go process polling the same task pops states machinist would
//!   read.
//! * Group completion relies on knowing each member's group when its final state is stored:
//!   machinist learns it from the [`AmqpBroker`] delivery being processed (any producer) or from
//!   `init_group` in the same process. A worker on another broker with this backend does not
//!   complete groups sent from other processes.
//! * `results_expire_in` above 24.8 days is clamped (32-bit milliseconds).
//! * `amqps://` needs the `tls` feature; it trusts the system's roots plus `tls.ca_file`; no
//!   client certificates yet.
//!
//! ## Features
//!
//! | feature | default | what |
//! |---|---|---|
//! | `tls` | off | `amqps://` through rustls with the `ring` provider and the system's root certificates |
#![cfg_attr(docsrs, feature(doc_cfg))]

mod backend;
mod broker;
mod conn;
mod error;
mod options;
mod registry;
mod topology;

pub use backend::{AmqpBackend, chord_triggered_queue, group_lock_queue, group_meta_queue};
pub use broker::{AmqpBroker, DEAD_LETTERED_AT_HEADER, QUEUE_HEADER, REASON_HEADER};
pub use error::AmqpError;
pub use options::{AmqpOptions, DEFAULT_FRAME_MAX, RABBITMQ_MAX_MESSAGE_SIZE};
