//! Where messages and stored states are encoded and decoded: the `serde` implementations of the
//! wire types, written by hand so that they follow Go's `encoding/json` exactly.
//!
//! * Encode: keys in Go's struct order, every key present, `null` for an empty list or an absent
//!   pointer, times in Go's RFC 3339 form, then any unknown keys kept from decoding.
//! * Decode: keys match case-insensitively, `null` leaves the zero value, unknown keys are kept
//!   (in order) in the type's `extra`, duplicate keys keep the last value (as Go).
//! * Bytes: [`to_go_json`] drives these impls through [`GoFormatter`], which writes strings and
//!   floats as Go does (`\u003c`, `\u2028`, `200`, `1e+21`, `-3.25e-7`); `to_vec` of
//!   `Signature`, `TaskState` and `GroupMeta` use it. A time whose year Go cannot encode
//!   (outside 0–9999) is an encode error, as in Go.

use std::fmt;
use std::io;

use serde::de::{self, IgnoredAny, MapAccess, Visitor};
use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Map, Value};

use crate::arg::{Arg, TaskResult};
use crate::signature::{Headers, Signature};
use crate::state::{GroupMeta, State, TaskState};
use crate::time;

// ---------------------------------------------------------------------------------------------
// The Go-exact encoder

/// Whether `U+0008` and `U+000C` are written as `\b` and `\f` (Go 1.22 and later) instead of
/// `\u0008` and `\u000c` (Go 1.21 and earlier). Decoders accept both.
const GO_SHORT_B_F_ESCAPES: bool = true;

/// Encodes `value` as JSON byte for byte as Go's `json.Marshal` would write the same data:
/// HTML-safe string escapes and Go's float forms (see [`GoFormatter`]).
///
/// Non-finite floats become `null` (serde_json's rule) where Go would fail; the wire types hold
/// floats only inside `serde_json::Value`, which cannot hold them.
pub(crate) fn to_go_json<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, serde_json::Error> {
    let mut out = Vec::with_capacity(256);
    let mut ser = serde_json::Serializer::with_formatter(&mut out, GoFormatter);
    value.serialize(&mut ser)?;
    Ok(out)
}

/// [`to_go_json`] as a `String`.
#[cfg_attr(not(test), allow(dead_code))]
pub(crate) fn to_go_json_string<T: Serialize + ?Sized>(
    value: &T,
) -> Result<String, serde_json::Error> {
    let bytes = to_go_json(value)?;
    // The serializer only writes UTF-8: Rust strings plus ASCII punctuation and escapes.
    Ok(String::from_utf8(bytes).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into()))
}

/// A compact `serde_json` formatter that writes what Go's `encoding/json` writes:
///
/// * strings: `\"`, `\\`, `\n`, `\r`, `\t`, `\b`, `\f` (see [`GO_SHORT_B_F_ESCAPES`]), other
///   control characters as `\u00XX` (lowercase hex); `<`, `>`, `&`, U+2028 and U+2029 as
///   `\u003c`, `\u003e`, `\u0026`, `\u2028`, `\u2029`; everything else raw UTF-8 (`/` is not
///   escaped);
/// * floats: shortest round-trip digits, no forced `.0`, exponent form only below `1e-6` or from
///   `1e21` up, written `1e+21` / `-3.25e-7` (see [`go_float`]).
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct GoFormatter;

impl serde_json::ser::Formatter for GoFormatter {
    fn write_f32<W: ?Sized + io::Write>(&mut self, w: &mut W, value: f32) -> io::Result<()> {
        w.write_all(go_float(GoFloat::F32(value)).as_bytes())
    }

    fn write_f64<W: ?Sized + io::Write>(&mut self, w: &mut W, value: f64) -> io::Result<()> {
        w.write_all(go_float(GoFloat::F64(value)).as_bytes())
    }

    fn write_string_fragment<W: ?Sized + io::Write>(
        &mut self,
        w: &mut W,
        fragment: &str,
    ) -> io::Result<()> {
        let mut start = 0;
        for (i, c) in fragment.char_indices() {
            let escape: &[u8] = match c {
                '<' => b"\\u003c",
                '>' => b"\\u003e",
                '&' => b"\\u0026",
                '\u{2028}' => b"\\u2028",
                '\u{2029}' => b"\\u2029",
                _ => continue,
            };
            w.write_all(&fragment.as_bytes()[start..i])?;
            w.write_all(escape)?;
            start = i + c.len_utf8();
        }
        w.write_all(&fragment.as_bytes()[start..])
    }

    fn write_char_escape<W: ?Sized + io::Write>(
        &mut self,
        w: &mut W,
        escape: serde_json::ser::CharEscape,
    ) -> io::Result<()> {
        use serde_json::ser::CharEscape;
        let control = |byte: u8| {
            const HEX: &[u8; 16] = b"0123456789abcdef";
            [
                b'\\',
                b'u',
                b'0',
                b'0',
                HEX[usize::from(byte >> 4)],
                HEX[usize::from(byte & 0xf)],
            ]
        };
        match escape {
            CharEscape::Quote => w.write_all(b"\\\""),
            CharEscape::ReverseSolidus => w.write_all(b"\\\\"),
            // serde_json never asks for it; Go writes `/` raw.
            CharEscape::Solidus => w.write_all(b"/"),
            CharEscape::LineFeed => w.write_all(b"\\n"),
            CharEscape::CarriageReturn => w.write_all(b"\\r"),
            CharEscape::Tab => w.write_all(b"\\t"),
            CharEscape::Backspace if GO_SHORT_B_F_ESCAPES => w.write_all(b"\\b"),
            CharEscape::FormFeed if GO_SHORT_B_F_ESCAPES => w.write_all(b"\\f"),
            CharEscape::Backspace => w.write_all(&control(0x08)),
            CharEscape::FormFeed => w.write_all(&control(0x0c)),
            CharEscape::AsciiControl(byte) => w.write_all(&control(byte)),
        }
    }
}

/// A float with the width Go would format it at (`float32` or `float64`).
#[derive(Debug, Clone, Copy)]
enum GoFloat {
    F32(f32),
    F64(f64),
}

/// Formats a finite float as Go's `encoding/json` `floatEncoder`: `strconv.AppendFloat(f, 'f', -1,
/// bits)`, or `'e'` when `|f| < 1e-6 || |f| >= 1e21` (compared at the float's own width), and
/// then `e-09` cleaned to `e-9`. So `200`, `0.1`, `-0`, `1e+21`, `-3.25e-7`, `1.5e-10`.
fn go_float(f: GoFloat) -> String {
    // Rust's `{}` and `{:e}` print the shortest digits that round-trip, as Go's `-1` precision.
    let (exponent_form, text) = match f {
        GoFloat::F64(v) => {
            let a = v.abs();
            let e = a != 0.0 && !(1e-6..1e21).contains(&a);
            (e, if e { format!("{v:e}") } else { format!("{v}") })
        }
        GoFloat::F32(v) => {
            let a = v.abs();
            let e = a != 0.0 && !(1e-6_f32..1e21_f32).contains(&a);
            (e, if e { format!("{v:e}") } else { format!("{v}") })
        }
    };
    if !exponent_form {
        return text;
    }
    // Rust writes `1e21` / `-3.25e-7`; Go's 'e' format writes a sign and at least two exponent
    // digits (`1e+21`, `-3.25e-07`), then encoding/json drops the leading zero of a two-digit
    // negative exponent (`-3.25e-7`).
    let Some((mantissa, exp)) = text.split_once('e') else {
        return text;
    };
    let (sign, digits) = match exp.strip_prefix('-') {
        Some(d) => ('-', d),
        None => ('+', exp),
    };
    let mut out = format!("{mantissa}e{sign}{digits:0>2}");
    let n = out.len();
    let b = out.as_bytes();
    if n >= 4 && b[n - 4] == b'e' && b[n - 3] == b'-' && b[n - 2] == b'0' {
        out.remove(n - 2);
    }
    out
}

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
        Some(s) => {
            time::parse(&s).map_err(|e| de::Error::custom(format_args!("invalid time {s:?}: {e}")))
        }
    }
}

/// Formats a time as Go's `time.Time.MarshalJSON`, failing like Go for a year outside 0–9999.
fn go_time<E: serde::ser::Error>(
    field: &str,
    t: &chrono::DateTime<chrono::Utc>,
) -> Result<String, E> {
    time::try_format(t).ok_or_else(|| {
        E::custom(format_args!(
            "{field} {}: year outside of range [0,9999]",
            time::display(t)
        ))
    })
}

/// [`go_time`] for `CreatedAt`, with `None` as Go's zero time.
fn go_time_or_zero<E: serde::ser::Error>(
    t: Option<&chrono::DateTime<chrono::Utc>>,
) -> Result<String, E> {
    match t {
        None => Ok(time::GO_ZERO_TIME.to_owned()),
        Some(t) => go_time("CreatedAt", t),
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
        let eta = match &self.eta {
            None => None,
            Some(t) => Some(go_time::<S::Error>("ETA", t)?),
        };
        m.serialize_entry("ETA", &eta)?;
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
        m.serialize_entry(
            "CreatedAt",
            &go_time_or_zero::<S::Error>(self.created_at.as_ref())?,
        )?;
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
        m.serialize_entry(
            "CreatedAt",
            &go_time_or_zero::<S::Error>(self.created_at.as_ref())?,
        )?;
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

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn f64s(v: f64) -> String {
        go_float(GoFloat::F64(v))
    }
    fn f32s(v: f32) -> String {
        go_float(GoFloat::F32(v))
    }

    #[test]
    fn float64_like_go() {
        // Expected texts are what Go's `json.Marshal(float64(x))` prints.
        for (v, want) in [
            (0.0, "0"),
            (-0.0, "-0"),
            (200.0, "200"),
            (-200.0, "-200"),
            (0.1, "0.1"),
            (1.5, "1.5"),
            (123_456_789.125, "123456789.125"),
            (0.1 + 0.2, "0.30000000000000004"),
            (1e20, "100000000000000000000"),
            (999_999_999_999_999_900_000.0, "999999999999999900000"),
            (1e21, "1e+21"),
            (-1e21, "-1e+21"),
            (1.5e300, "1.5e+300"),
            (f64::MAX, "1.7976931348623157e+308"),
            (1e-6, "0.000001"),
            (-1.5e-6, "-0.0000015"),
            (9.99e-7, "9.99e-7"),
            (-3.25e-7, "-3.25e-7"),
            (1e-7, "1e-7"),
            (1.5e-10, "1.5e-10"),
            (1e-100, "1e-100"),
            (5e-324, "5e-324"),
            (18_446_744_073_709_551_615.0, "18446744073709552000"),
        ] {
            assert_eq!(f64s(v), want, "{v:?}");
        }
    }

    #[test]
    fn float32_like_go() {
        // Go's `json.Marshal(float32(x))`: shortest float32 digits, float32 thresholds.
        for (v, want) in [
            (0.1_f32, "0.1"),
            (200.0, "200"),
            (16_777_216.0, "16777216"),
            (3.402_823_5e38, "3.4028235e+38"),
            (1e21, "1e+21"),
            (1e20, "100000000000000000000"),
            (1e-6, "0.000001"),
            (1e-7, "1e-7"),
            (-2.5e-12, "-2.5e-12"),
        ] {
            assert_eq!(f32s(v), want, "{v:?}");
        }
    }

    #[test]
    fn floats_through_the_serializer() {
        let v = serde_json::json!([200.0, 1e21, -3.25e-7, 0.1, u64::MAX, i64::MIN, 2.5_f32]);
        assert_eq!(
            to_go_json_string(&v).unwrap(),
            "[200,1e+21,-3.25e-7,0.1,18446744073709551615,-9223372036854775808,2.5]"
        );
        assert_eq!(to_go_json_string(&1e-7_f32).unwrap(), "1e-7");
        assert_eq!(to_go_json_string(&200.0_f64).unwrap(), "200");
    }

    #[test]
    fn strings_escaped_like_go() {
        let s = "\"\\/\n\r\t\u{8}\u{c}\u{0}\u{1f}\u{7f}<a&b>\u{2028}\u{2029}é日本😀";
        let want = if GO_SHORT_B_F_ESCAPES {
            r#""\"\\/\n\r\t\b\f\u0000\u001f<DEL>\u003ca\u0026b\u003e\u2028\u2029é日本😀""#
        } else {
            r#""\"\\/\n\r\t\u0008\u000c\u0000\u001f<DEL>\u003ca\u0026b\u003e\u2028\u2029é日本😀""#
        };
        let want = want.replace("<DEL>", "\u{7f}");
        let got = to_go_json_string(s).unwrap();
        assert_eq!(got, want);
        let back: String = serde_json::from_str(&got).unwrap();
        assert_eq!(back, s);
    }

    #[test]
    fn map_keys_escaped_too() {
        let mut m = Map::new();
        m.insert("<k>".into(), Value::from("&"));
        m.insert("a\u{2028}".into(), Value::Null);
        assert_eq!(
            to_go_json_string(&m).unwrap(),
            r#"{"\u003ck\u003e":"\u0026","a\u2028":null}"#
        );
    }

    #[test]
    fn escape_only_fragments() {
        assert_eq!(to_go_json_string("").unwrap(), r#""""#);
        assert_eq!(to_go_json_string("<").unwrap(), r#""\u003c""#);
        assert_eq!(to_go_json_string("&&").unwrap(), r#""\u0026\u0026""#);
        assert_eq!(to_go_json_string("x\u{2029}").unwrap(), r#""x\u2029""#);
    }
}
