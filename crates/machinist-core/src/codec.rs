//! Where messages and stored states are encoded and decoded: the `serde` implementations of the
//! wire types, written by hand so that they follow Go's `encoding/json` exactly.
//!
//! * Encode: keys in Go's struct order, every key present, `null` for an empty list or an absent
//!   pointer, times in Go's RFC 3339 form, then any unknown keys kept from decoding.
//! * Decode: keys match case-insensitively, `null` leaves the zero value, unknown keys are kept
//!   (in order) in the type's `extra`, duplicate keys keep the last value (as Go).

use std::fmt;

use serde::de::{self, IgnoredAny, MapAccess, Visitor};
use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Map, Value};

use crate::arg::{Arg, TaskResult};
use crate::signature::{Headers, Signature};
use crate::state::{GroupMeta, State, TaskState};
use crate::time;

/// A list that Go writes as `null` when empty (a nil slice).
struct NullIfEmpty<'a, T>(&'a [T]);

impl<T: Serialize> Serialize for NullIfEmpty<'_, T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if self.0.is_empty() {
            s.serialize_none()
        } else {
            self.0.serialize(s)
        }
    }
}

/// Reads the next value as `Option<T>` and turns `null` into `T::default()`.
fn next_or_default<'de, A, T>(map: &mut A) -> Result<T, A::Error>
where
    A: MapAccess<'de>,
    T: Deserialize<'de> + Default,
{
    Ok(map.next_value::<Option<T>>()?.unwrap_or_default())
}

/// Reads an optional Go time (`null`, zero time, or RFC 3339 text).
fn next_time<'de, A>(map: &mut A) -> Result<Option<chrono::DateTime<chrono::Utc>>, A::Error>
where
    A: MapAccess<'de>,
{
    match map.next_value::<Option<String>>()? {
        None => Ok(None),
        Some(s) => time::parse(&s)
            .map_err(|e| de::Error::custom(format_args!("invalid time {s:?}: {e}"))),
    }
}

/// Reads a Go integer field: a JSON integer, or `null` (zero).
fn next_int<'de, A: MapAccess<'de>>(map: &mut A) -> Result<i64, A::Error> {
    next_or_default::<A, i64>(map)
}

impl Serialize for Headers {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        // serde_json's `Map` is ordered by key, which is how Go writes a map.
        self.0.serialize(s)
    }
}

impl<'de> Deserialize<'de> for Headers {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(Headers(Map::deserialize(d)?))
    }
}

impl Serialize for State {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for State {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = Option::<String>::deserialize(d)?.unwrap_or_default();
        Ok(State::parse(&s))
    }
}

impl Default for State {
    fn default() -> Self {
        State::Other(String::new())
    }
}

// ---------------------------------------------------------------------------------------------
// Arg and TaskResult

impl Serialize for Arg {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(3))?;
        m.serialize_entry("Name", &self.name)?;
        m.serialize_entry("Type", &self.type_name)?;
        m.serialize_entry("Value", &self.value)?;
        m.end()
    }
}

impl<'de> Deserialize<'de> for Arg {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Arg;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an Arg object {Name, Type, Value}")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Arg, A::Error> {
                let mut arg = Arg {
                    name: String::new(),
                    type_name: String::new(),
                    value: Value::Null,
                };
                while let Some(key) = map.next_key::<String>()? {
                    match key.to_ascii_lowercase().as_str() {
                        "name" => arg.name = next_or_default(&mut map)?,
                        "type" => arg.type_name = next_or_default(&mut map)?,
                        "value" => arg.value = map.next_value()?,
                        _ => {
                            map.next_value::<IgnoredAny>()?;
                        }
                    }
                }
                Ok(arg)
            }
        }
        d.deserialize_map(V)
    }
}

impl Serialize for TaskResult {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(2))?;
        m.serialize_entry("Type", &self.type_name)?;
        m.serialize_entry("Value", &self.value)?;
        m.end()
    }
}

impl<'de> Deserialize<'de> for TaskResult {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = TaskResult;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a TaskResult object {Type, Value}")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<TaskResult, A::Error> {
                let mut r = TaskResult {
                    type_name: String::new(),
                    value: Value::Null,
                };
                while let Some(key) = map.next_key::<String>()? {
                    match key.to_ascii_lowercase().as_str() {
                        "type" => r.type_name = next_or_default(&mut map)?,
                        "value" => r.value = map.next_value()?,
                        _ => {
                            map.next_value::<IgnoredAny>()?;
                        }
                    }
                }
                Ok(r)
            }
        }
        d.deserialize_map(V)
    }
}

// ---------------------------------------------------------------------------------------------
// Signature

impl Serialize for Signature {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(19 + self.extra.len()))?;
        m.serialize_entry("UUID", &self.uuid)?;
        m.serialize_entry("Name", &self.name)?;
        m.serialize_entry("RoutingKey", &self.routing_key)?;
        m.serialize_entry("ETA", &self.eta.as_ref().map(time::format))?;
        m.serialize_entry("GroupUUID", &self.group_uuid)?;
        m.serialize_entry("GroupTaskCount", &self.group_task_count)?;
        m.serialize_entry("Args", &NullIfEmpty(&self.args))?;
        m.serialize_entry("Headers", &self.headers)?;
        m.serialize_entry("Priority", &self.priority)?;
        m.serialize_entry("Immutable", &self.immutable)?;
        m.serialize_entry("RetryCount", &self.retry_count)?;
        m.serialize_entry("RetryTimeout", &self.retry_timeout)?;
        m.serialize_entry("OnSuccess", &NullIfEmpty(&self.on_success))?;
        m.serialize_entry("OnError", &NullIfEmpty(&self.on_error))?;
        m.serialize_entry("ChordCallback", &self.chord_callback)?;
        m.serialize_entry("BrokerMessageGroupId", &self.broker_message_group_id)?;
        m.serialize_entry("SQSReceiptHandle", &self.sqs_receipt_handle)?;
        m.serialize_entry("StopTaskDeletionOnError", &self.stop_task_deletion_on_error)?;
        m.serialize_entry(
            "IgnoreWhenTaskNotRegistered",
            &self.ignore_when_task_not_registered,
        )?;
        for (k, v) in &self.extra {
            m.serialize_entry(k, v)?;
        }
        m.end()
    }
}

impl<'de> Deserialize<'de> for Signature {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Signature;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a task Signature object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Signature, A::Error> {
                let mut sig = Signature::default();
                while let Some(key) = map.next_key::<String>()? {
                    match key.to_ascii_lowercase().as_str() {
                        "uuid" => sig.uuid = next_or_default(&mut map)?,
                        "name" => sig.name = next_or_default(&mut map)?,
                        "routingkey" => sig.routing_key = next_or_default(&mut map)?,
                        "eta" => sig.eta = next_time(&mut map)?,
                        "groupuuid" => sig.group_uuid = next_or_default(&mut map)?,
                        "grouptaskcount" => sig.group_task_count = next_int(&mut map)?,
                        "args" => sig.args = next_or_default(&mut map)?,
                        "headers" => sig.headers = map.next_value()?,
                        "priority" => sig.priority = next_or_default(&mut map)?,
                        "immutable" => sig.immutable = next_or_default(&mut map)?,
                        "retrycount" => sig.retry_count = next_int(&mut map)?,
                        "retrytimeout" => sig.retry_timeout = next_int(&mut map)?,
                        "onsuccess" => sig.on_success = next_or_default(&mut map)?,
                        "onerror" => sig.on_error = next_or_default(&mut map)?,
                        "chordcallback" => sig.chord_callback = map.next_value()?,
                        "brokermessagegroupid" => {
                            sig.broker_message_group_id = next_or_default(&mut map)?
                        }
                        "sqsreceipthandle" => sig.sqs_receipt_handle = next_or_default(&mut map)?,
                        "stoptaskdeletiononerror" => {
                            sig.stop_task_deletion_on_error = next_or_default(&mut map)?
                        }
                        "ignorewhentasknotregistered" => {
                            sig.ignore_when_task_not_registered = next_or_default(&mut map)?
                        }
                        _ => {
                            let v: Value = map.next_value()?;
                            sig.extra.retain(|(k, _)| k != &key);
                            sig.extra.push((key, v));
                        }
                    }
                }
                Ok(sig)
            }
        }
        d.deserialize_map(V)
    }
}

// ---------------------------------------------------------------------------------------------
// TaskState and GroupMeta

impl Serialize for TaskState {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(7 + self.extra.len()))?;
        m.serialize_entry("TaskUUID", &self.task_uuid)?;
        m.serialize_entry("TaskName", &self.task_name)?;
        m.serialize_entry("State", &self.state)?;
        m.serialize_entry("Results", &self.results)?;
        m.serialize_entry("Error", &self.error)?;
        m.serialize_entry("CreatedAt", &time::format_or_zero(self.created_at.as_ref()))?;
        m.serialize_entry("TTL", &self.ttl)?;
        for (k, v) in &self.extra {
            m.serialize_entry(k, v)?;
        }
        m.end()
    }
}

impl<'de> Deserialize<'de> for TaskState {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = TaskState;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a TaskState object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<TaskState, A::Error> {
                let mut st = TaskState::received("");
                st.state = State::default();
                while let Some(key) = map.next_key::<String>()? {
                    match key.to_ascii_lowercase().as_str() {
                        "taskuuid" => st.task_uuid = next_or_default(&mut map)?,
                        "taskname" => st.task_name = next_or_default(&mut map)?,
                        "state" => st.state = map.next_value()?,
                        "results" => st.results = map.next_value()?,
                        "error" => st.error = next_or_default(&mut map)?,
                        "createdat" => st.created_at = next_time(&mut map)?,
                        "ttl" => st.ttl = next_int(&mut map)?,
                        _ => {
                            let v: Value = map.next_value()?;
                            st.extra.retain(|(k, _)| k != &key);
                            st.extra.push((key, v));
                        }
                    }
                }
                Ok(st)
            }
        }
        d.deserialize_map(V)
    }
}

impl Serialize for GroupMeta {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(6 + self.extra.len()))?;
        m.serialize_entry("GroupUUID", &self.group_uuid)?;
        m.serialize_entry("TaskUUIDs", &NullIfEmpty(&self.task_uuids))?;
        m.serialize_entry("ChordTriggered", &self.chord_triggered)?;
        m.serialize_entry("Lock", &self.lock)?;
        m.serialize_entry("CreatedAt", &time::format_or_zero(self.created_at.as_ref()))?;
        m.serialize_entry("TTL", &self.ttl)?;
        for (k, v) in &self.extra {
            m.serialize_entry(k, v)?;
        }
        m.end()
    }
}

impl<'de> Deserialize<'de> for GroupMeta {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = GroupMeta;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a GroupMeta object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<GroupMeta, A::Error> {
                let mut g = GroupMeta::default();
                while let Some(key) = map.next_key::<String>()? {
                    match key.to_ascii_lowercase().as_str() {
                        "groupuuid" => g.group_uuid = next_or_default(&mut map)?,
                        "taskuuids" => g.task_uuids = next_or_default(&mut map)?,
                        "chordtriggered" => g.chord_triggered = next_or_default(&mut map)?,
                        "lock" => g.lock = next_or_default(&mut map)?,
                        "createdat" => g.created_at = next_time(&mut map)?,
                        "ttl" => g.ttl = next_int(&mut map)?,
                        _ => {
                            let v: Value = map.next_value()?;
                            g.extra.retain(|(k, _)| k != &key);
                            g.extra.push((key, v));
                        }
                    }
                }
                Ok(g)
            }
        }
        d.deserialize_map(V)
    }
}
