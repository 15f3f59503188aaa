//! The task message: [`Signature`] is what travels through every broker, in Go Machinery's exact
//! JSON shape (`wire-format.md` §2.1). It also carries the builder methods a producer uses.
//!
//! Encoding is exact: PascalCase keys in Go's struct order, every key emitted, `null` for empty
//! lists and absent pointers. Decoding is lenient like Go's `encoding/json`: keys match without
//! regard to case, `null` means "zero value", and keys this version does not know are kept in
//! [`Signature::extra`] and written back when the signature is published again (a fork's `Index`,
//! `ChainUUID`, `ChainTaskCount` survive a trip through a machinist worker).

use chrono::{DateTime, Utc};
use serde_json::{Map, Value};

use crate::arg::Arg;
use crate::types::IntoArgs;

/// `Signature.Headers`: a JSON object of string keys (Go's `map[string]interface{}`), emitted with
/// sorted keys. Trace context (`traceparent`) travels here; foreign keys pass through untouched.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Headers(pub Map<String, Value>);

impl Headers {
    /// An empty header map.
    pub fn new() -> Self {
        Self::default()
    }
    /// The value under `key`.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.0.get(key)
    }
    /// The value under `key` if it is a string.
    pub fn get_str(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(Value::as_str)
    }
    /// Sets `key` to `value`.
    pub fn insert(&mut self, key: impl Into<String>, value: impl Into<Value>) {
        self.0.insert(key.into(), value.into());
    }
    /// Removes `key`.
    pub fn remove(&mut self, key: &str) -> Option<Value> {
        self.0.remove(key)
    }
    /// True when no header is set.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// A task invocation: name, typed arguments and delivery options (Go's `tasks.Signature`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Signature {
    /// `UUID`: `task_<uuid4>` (assigned by `send_task` when empty), `chord_<uuid4>` for a chord
    /// callback.
    pub uuid: String,
    /// `Name`: the registered task name.
    pub name: String,
    /// `RoutingKey`: the queue (Redis list, AMQP routing key …); empty means the default queue.
    pub routing_key: String,
    /// `ETA`: do not run before this instant. `None` (JSON `null`) runs at once.
    pub eta: Option<DateTime<Utc>>,
    /// `GroupUUID`: `group_<uuid4>` for members of a group, else empty.
    pub group_uuid: String,
    /// `GroupTaskCount`: number of tasks in the group.
    pub group_task_count: i64,
    /// `Args`: positional arguments, each with its Go type name.
    pub args: Vec<Arg>,
    /// `Headers`: `None` is JSON `null`; `send_task` replaces it with an empty map, as Go does.
    pub headers: Option<Headers>,
    /// `Priority`: 0–255, used by brokers with priorities (AMQP).
    pub priority: u8,
    /// `Immutable`: when false, this task's results are appended to its callbacks' arguments.
    pub immutable: bool,
    /// `RetryCount`: automatic retries left.
    pub retry_count: i64,
    /// `RetryTimeout`: seconds; the last Fibonacci back-off used (seed of the next one).
    pub retry_timeout: i64,
    /// `OnSuccess`: callbacks sent after success (a chain is nested `OnSuccess`).
    pub on_success: Vec<Signature>,
    /// `OnError`: callbacks sent after final failure, with the error text prepended.
    pub on_error: Vec<Signature>,
    /// `ChordCallback`: sent once every member of the group succeeded.
    pub chord_callback: Option<Box<Signature>>,
    /// `BrokerMessageGroupId`: SQS FIFO message group.
    pub broker_message_group_id: String,
    /// `SQSReceiptHandle`: set by the SQS broker after receive.
    pub sqs_receipt_handle: String,
    /// `StopTaskDeletionOnError`: SQS leaves a failed message in the queue.
    pub stop_task_deletion_on_error: bool,
    /// `IgnoreWhenTaskNotRegistered`: drop the message when no worker knows the name.
    pub ignore_when_task_not_registered: bool,
    /// `CreatedAt`: machinist's own key (Go's `Signature` has none; Go workers ignore it), the
    /// `CreatedAt` of the PENDING the producer stored with this message. `send_task` sets it
    /// (a retry's new PENDING gets a new one, as in Go), so a worker carries `CreatedAt` into
    /// RECEIVED, STARTED and the final state without reading the PENDING back, which is what
    /// Go's backend reads it for. `None` (a Go producer's message, a callback not sent yet) is
    /// not written, and the worker's backend reads the stored PENDING instead.
    pub created_at: Option<DateTime<Utc>>,
    /// Keys this version does not know, in the order they came, written back on encode.
    pub extra: Vec<(String, Value)>,
}

impl Signature {
    /// A signature for the task `name` with no arguments.
    pub fn new(name: impl Into<String>) -> Self {
        Signature {
            name: name.into(),
            ..Default::default()
        }
    }

    /// Appends positional arguments: a single value (`1i64`), a tuple (`(1i64, "x")`) or a
    /// `Vec<Arg>`; each takes the Go type name of its Rust type.
    pub fn args(mut self, args: impl IntoArgs) -> Self {
        args.into_args(&mut self.args);
        self
    }

    /// Appends one already-typed argument.
    pub fn arg(mut self, arg: Arg) -> Self {
        self.args.push(arg);
        self
    }

    /// Sets the UUID (normally assigned by `send_task`).
    pub fn with_uuid(mut self, uuid: impl Into<String>) -> Self {
        self.uuid = uuid.into();
        self
    }

    /// Sets the queue / routing key.
    pub fn routing_key(mut self, key: impl Into<String>) -> Self {
        self.routing_key = key.into();
        self
    }

    /// Runs the task no earlier than `eta`.
    pub fn eta(mut self, eta: DateTime<Utc>) -> Self {
        self.eta = Some(eta);
        self
    }

    /// Runs the task no earlier than `delay` from now.
    pub fn countdown(self, delay: std::time::Duration) -> Self {
        let eta = Utc::now() + chrono::Duration::from_std(delay).unwrap_or(chrono::Duration::MAX);
        self.eta(eta)
    }

    /// Automatic retries on failure, with Fibonacci back-off (1, 2, 3, 5, 8 … s).
    pub fn retries(mut self, count: i64) -> Self {
        self.retry_count = count;
        self
    }

    /// Seeds the back-off: the first retry waits for the next Fibonacci number above `seconds`.
    pub fn retry_timeout(mut self, seconds: i64) -> Self {
        self.retry_timeout = seconds;
        self
    }

    /// When `true`, callbacks do not receive this task's results.
    pub fn immutable(mut self, immutable: bool) -> Self {
        self.immutable = immutable;
        self
    }

    /// Sets the priority (0–255).
    pub fn priority(mut self, priority: u8) -> Self {
        self.priority = priority;
        self
    }

    /// Adds a callback sent after success.
    pub fn on_success(mut self, callback: Signature) -> Self {
        self.on_success.push(callback);
        self
    }

    /// Adds a callback sent after final failure.
    pub fn on_error(mut self, callback: Signature) -> Self {
        self.on_error.push(callback);
        self
    }

    /// Sets a header.
    pub fn header(mut self, key: impl Into<String>, value: impl Into<Value>) -> Self {
        self.headers
            .get_or_insert_with(Headers::new)
            .insert(key, value);
        self
    }

    /// Drops the message instead of requeueing it when no worker registered its name.
    pub fn ignore_when_not_registered(mut self, ignore: bool) -> Self {
        self.ignore_when_task_not_registered = ignore;
        self
    }

    /// Decodes a signature from JSON bytes (lenient, like Go).
    pub fn from_slice(bytes: &[u8]) -> crate::Result<Self> {
        crate::codec::signature_from_slice(bytes)
    }

    /// Encodes the signature as Go does.
    pub fn to_vec(&self) -> crate::Result<Vec<u8>> {
        Ok(crate::codec::signature_to_vec(self)?)
    }
}
