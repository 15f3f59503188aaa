//! Where messages and stored states are encoded and decoded: the `serde` implementations of the
//! wire types, written by hand so that they follow Go's `encoding/json` exactly.
//!
//! * Encode: keys in Go's struct order, every key present, `null` for an empty list or an absent
//!   pointer, times in Go's RFC 3339 form, then any unknown keys kept from decoding.
//! * Decode: keys match case-insensitively, `null` leaves the zero value, unknown keys are kept
//!   (in order) in the type's `extra`, duplicate keys keep the last value (as Go).
//! * Bytes: [`to_go_json`] drives these impls through [`GoFormatter`], which writes strings and
//!   floats as Go does (`\u003c`, `\u2028`, `200`, `1e+21`, `-3.25e-7`); `to_vec` of
//!   `TaskState` and `GroupMeta` use it. `Signature::to_vec` (every message) uses
//!   [`signature_to_vec`], which writes the same bytes directly (see "Direct writers" below;
//!   [`task_state_to_vec`] is its twin for states). A time whose year Go cannot encode
//!   (outside 0–9999) is an encode error, as in Go.
//! * Decode cost: keys are matched without allocating ([`KeySeed`]), and
//!   [`from_json_bytes`] checks UTF-8 once per document instead of once per string.

use std::cell::Cell;
use std::fmt;
use std::io;

use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, Visitor};
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

/// Decodes JSON bytes as `serde_json::from_slice` does, checking UTF-8 once for the whole
/// input (then parsing it as text) instead of once per string; input that is not UTF-8 goes
/// through `from_slice` so that its error is the one it always was.
pub(crate) fn from_json_bytes<T: de::DeserializeOwned>(bytes: &[u8]) -> crate::Result<T> {
    Ok(match std::str::from_utf8(bytes) {
        Ok(text) => serde_json::from_str(text)?,
        Err(_) => serde_json::from_slice(bytes)?,
    })
}

/// Decodes a message: through the fast path of `decode.rs` when the message has the shape it
/// reads, else as [`from_json_bytes`] does (the same result either way).
pub(crate) fn signature_from_slice(bytes: &[u8]) -> crate::Result<Signature> {
    fast_or_serde(bytes, crate::decode::signature)
}

/// `fast`'s value when it reads `bytes`, else [`from_json_bytes`]'s.
fn fast_or_serde<T: de::DeserializeOwned>(
    bytes: &[u8],
    fast: fn(&str) -> Option<T>,
) -> crate::Result<T> {
    Ok(match std::str::from_utf8(bytes) {
        Ok(text) => match fast(text) {
            Some(value) => value,
            None => serde_json::from_str(text)?,
        },
        Err(_) => serde_json::from_slice(bytes)?,
    })
}

/// Decodes a stored task state: through the fast path of `decode.rs` when it has the shape
/// it reads (every state but a SUCCESS with results), else as [`from_json_bytes`] does (the
/// same result either way).
pub(crate) fn task_state_from_slice(bytes: &[u8]) -> crate::Result<TaskState> {
    fast_or_serde(bytes, crate::decode::task_state)
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
        write_go_fragment(w, fragment)
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

/// Writes `fragment` (text serde_json already cleared of `"`, `\\` and control characters) with
/// Go's HTML-safe escapes: `<`, `>`, `&` as `\u003c`, `\u003e`, `\u0026`, and U+2028 / U+2029
/// (UTF-8 `E2 80 A8` / `E2 80 A9`) as `\u2028` / `\u2029`. Runs of bytes that need none are
/// copied whole: only those four byte values are looked at, no `char` is decoded.
fn write_go_fragment<W: ?Sized + io::Write>(w: &mut W, fragment: &str) -> io::Result<()> {
    let bytes = fragment.as_bytes();
    let mut start = 0;
    let mut i = 0;
    while i < bytes.len() {
        let (escape, len): (&[u8], usize) = match bytes[i] {
            b'<' => (b"\\u003c", 1),
            b'>' => (b"\\u003e", 1),
            b'&' => (b"\\u0026", 1),
            // `fragment` is UTF-8, so an `E2` lead byte has its two continuation bytes.
            0xE2 if bytes.get(i + 1) == Some(&0x80) && bytes.get(i + 2) == Some(&0xA8) => {
                (b"\\u2028", 3)
            }
            0xE2 if bytes.get(i + 1) == Some(&0x80) && bytes.get(i + 2) == Some(&0xA9) => {
                (b"\\u2029", 3)
            }
            _ => {
                i += 1;
                continue;
            }
        };
        if start < i {
            w.write_all(&bytes[start..i])?;
        }
        w.write_all(escape)?;
        i += len;
        start = i;
    }
    if start < bytes.len() {
        w.write_all(&bytes[start..])?;
    }
    Ok(())
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

/// A map key of one of the wire types: a known field, or a key this version does not know.
pub(crate) enum Key<F> {
    /// One of the type's Go field names, matched ignoring ASCII case.
    Known(F),
    /// Any other key, with its exact text (empty when the type drops unknown keys).
    Other(String),
}

/// Reads one map key and looks it up in a table of Go field names, comparing bytes while
/// ignoring ASCII case (Go's decoder matches names case-insensitively). A known key allocates
/// nothing; an unknown key is copied only when `keep` is set (the type keeps it in `extra`).
///
/// Keys usually come in the table's order (Go writes them so), so the entry after the last
/// match is tried first, exactly, then ignoring case, before the whole table is searched.
#[derive(Clone, Copy)]
pub(crate) struct KeySeed<'h, F: 'static> {
    fields: &'static [(&'static str, F)],
    keep: bool,
    /// Index of the entry expected next.
    hint: &'h Cell<usize>,
}

impl<'h, F: Copy> KeySeed<'h, F> {
    pub(crate) fn new(
        fields: &'static [(&'static str, F)],
        keep: bool,
        hint: &'h Cell<usize>,
    ) -> Self {
        KeySeed { fields, keep, hint }
    }

    /// The field the table expects next, with the length of its key as written
    /// (`quoted[i]` is `"Name":` for `fields[i]`), if `ahead` starts with exactly that; the hint
    /// moves on as [`KeySeed::lookup`] moves it. For `decode.rs`.
    pub(crate) fn expected(self, quoted: &[&[u8]], ahead: &[u8]) -> Option<(F, usize)> {
        let expected = self.hint.get();
        let (&(_, field), key) = self.fields.get(expected).zip(quoted.get(expected))?;
        if !starts_with(ahead, key) {
            return None;
        }
        self.hint.set(expected + 1);
        Some((field, key.len()))
    }

    /// The field `key` names, if any (also what `decode.rs` matches keys with).
    pub(crate) fn lookup(self, key: &str) -> Option<F> {
        let expected = self.hint.get();
        if let Some(&(name, field)) = self.fields.get(expected)
            && (name == key || name.eq_ignore_ascii_case(key))
        {
            self.hint.set(expected + 1);
            return Some(field);
        }
        let (i, &(_, field)) = self
            .fields
            .iter()
            .enumerate()
            .find(|(_, (name, _))| name.len() == key.len() && name.eq_ignore_ascii_case(key))?;
        self.hint.set(i + 1);
        Some(field)
    }
}

/// `ahead.starts_with(key)` for short keys, compared as whole words instead of through a
/// `memcmp` call (which cost more than the comparison for the 6–30 bytes of a quoted key).
fn starts_with(ahead: &[u8], key: &[u8]) -> bool {
    let Some(ahead) = ahead.get(..key.len()) else {
        return false;
    };
    let word = |s: &[u8], at: usize| {
        s.get(at..at + 8)
            .and_then(|w| <[u8; 8]>::try_from(w).ok())
            .map(u64::from_le_bytes)
    };
    let n = key.len();
    if n < 8 {
        let half = |s: &[u8], at: usize| {
            s.get(at..at + 4)
                .and_then(|w| <[u8; 4]>::try_from(w).ok())
                .map(u32::from_le_bytes)
        };
        // Four to seven bytes: the first four and the last four (overlapping).
        return if n >= 4 {
            half(ahead, 0) == half(key, 0) && half(ahead, n - 4) == half(key, n - 4)
        } else {
            ahead == key
        };
    }
    // Whole words, then the last eight bytes (overlapping the previous word).
    let mut at = 0;
    while at + 8 <= n {
        if word(ahead, at) != word(key, at) {
            return false;
        }
        at += 8;
    }
    word(ahead, n - 8) == word(key, n - 8)
}

impl<'de, F: Copy> DeserializeSeed<'de> for KeySeed<'_, F> {
    type Value = Key<F>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Key<F>, D::Error> {
        d.deserialize_str(self)
    }
}

impl<F: Copy> Visitor<'_> for KeySeed<'_, F> {
    type Value = Key<F>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string")
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Key<F>, E> {
        Ok(match self.lookup(v) {
            Some(field) => Key::Known(field),
            None if self.keep => Key::Other(v.to_owned()),
            None => Key::Other(String::new()),
        })
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<Key<F>, E> {
        Ok(match self.lookup(&v) {
            Some(field) => Key::Known(field),
            None if self.keep => Key::Other(v),
            None => Key::Other(String::new()),
        })
    }
    fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<Key<F>, E> {
        match std::str::from_utf8(v) {
            Ok(s) => self.visit_str(s),
            Err(_) => Err(E::invalid_value(de::Unexpected::Bytes(v), &self)),
        }
    }
}

/// Stores an unknown key's value in `extra`: a repeated key replaces the earlier one (Go's
/// last-wins), at the position of the last occurrence.
fn keep_extra(extra: &mut Vec<(String, Value)>, key: String, value: Value) {
    extra.retain(|(k, _)| *k != key);
    extra.push((key, value));
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
    map.next_value_seed(GoTime)
}

/// A Go time (`null`, zero time or RFC 3339 text), parsed from the borrowed text without
/// copying it.
#[derive(Clone, Copy)]
struct GoTime;

impl<'de> DeserializeSeed<'de> for GoTime {
    type Value = Option<chrono::DateTime<chrono::Utc>>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_option(self)
    }
}

impl<'de> Visitor<'de> for GoTime {
    type Value = Option<chrono::DateTime<chrono::Utc>>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string")
    }
    fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_str(self)
    }
    fn visit_str<E: de::Error>(self, s: &str) -> Result<Self::Value, E> {
        time::parse(s).map_err(|e| E::custom(format_args!("invalid time {s:?}: {e}")))
    }
    fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<Self::Value, E> {
        match std::str::from_utf8(v) {
            Ok(s) => self.visit_str(s),
            Err(_) => Err(E::invalid_value(de::Unexpected::Bytes(v), &self)),
        }
    }
}

/// A time as Go's `time.Time.MarshalJSON` writes it, or Go's zero time.
enum TimeField {
    Zero,
    Text(time::TimeText),
}

impl Serialize for TimeField {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            TimeField::Zero => s.serialize_str(time::GO_ZERO_TIME),
            TimeField::Text(t) => s.serialize_str(t.as_str()),
        }
    }
}

/// Formats a time as Go's `time.Time.MarshalJSON`, failing like Go for a year outside 0–9999.
fn go_time<E: serde::ser::Error>(
    field: &str,
    t: &chrono::DateTime<chrono::Utc>,
) -> Result<TimeField, E> {
    time::TimeText::try_new(t)
        .map(TimeField::Text)
        .ok_or_else(|| {
            E::custom(format_args!(
                "{field} {}: year outside of range [0,9999]",
                time::display(t)
            ))
        })
}

/// [`go_time`] for `CreatedAt`, with `None` as Go's zero time.
fn go_time_or_zero<E: serde::ser::Error>(
    t: Option<&chrono::DateTime<chrono::Utc>>,
) -> Result<TimeField, E> {
    match t {
        None => Ok(TimeField::Zero),
        Some(t) => go_time("CreatedAt", t),
    }
}

/// A signature's `CreatedAt` value as [`GoTime`] reads it (`null` and Go's zero time are
/// `Some(None)`), or `None` when it is no time at all.
fn created_at_of(value: &Value) -> Option<Option<chrono::DateTime<chrono::Utc>>> {
    match value {
        Value::Null => Some(None),
        Value::String(s) => time::parse(s).ok(),
        _ => None,
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

/// `Arg`'s keys.
#[derive(Clone, Copy)]
pub(crate) enum ArgKey {
    Name,
    Type,
    Value,
}

pub(crate) const ARG_KEYS: &[(&str, ArgKey)] = &[
    ("Name", ArgKey::Name),
    ("Type", ArgKey::Type),
    ("Value", ArgKey::Value),
];

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
                let hint = Cell::new(0);
                let keys = KeySeed::new(ARG_KEYS, false, &hint);
                while let Some(key) = map.next_key_seed(keys)? {
                    match key {
                        Key::Known(ArgKey::Name) => arg.name = next_or_default(&mut map)?,
                        Key::Known(ArgKey::Type) => arg.type_name = next_or_default(&mut map)?,
                        Key::Known(ArgKey::Value) => arg.value = map.next_value()?,
                        Key::Other(_) => {
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
                let hint = Cell::new(0);
                let keys = KeySeed::new(&ARG_KEYS[1..], false, &hint);
                while let Some(key) = map.next_key_seed(keys)? {
                    match key {
                        Key::Known(ArgKey::Type) => r.type_name = next_or_default(&mut map)?,
                        Key::Known(ArgKey::Value) => r.value = map.next_value()?,
                        // `Name` is not a TaskResult key: not in the table, never matched.
                        Key::Known(ArgKey::Name) | Key::Other(_) => {
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
        let entries = 19 + usize::from(self.created_at.is_some()) + self.extra.len();
        let mut m = s.serialize_map(Some(entries))?;
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
        if let Some(t) = &self.created_at {
            m.serialize_entry("CreatedAt", &go_time::<S::Error>("CreatedAt", t)?)?;
        }
        for (k, v) in &self.extra {
            m.serialize_entry(k, v)?;
        }
        m.end()
    }
}

/// `Signature`'s keys.
#[derive(Clone, Copy)]
pub(crate) enum SigKey {
    Uuid,
    Name,
    RoutingKey,
    Eta,
    GroupUuid,
    GroupTaskCount,
    Args,
    Headers,
    Priority,
    Immutable,
    RetryCount,
    RetryTimeout,
    OnSuccess,
    OnError,
    ChordCallback,
    BrokerMessageGroupId,
    SqsReceiptHandle,
    StopTaskDeletionOnError,
    IgnoreWhenTaskNotRegistered,
    CreatedAt,
}

pub(crate) const SIGNATURE_KEYS: &[(&str, SigKey)] = &[
    ("UUID", SigKey::Uuid),
    ("Name", SigKey::Name),
    ("RoutingKey", SigKey::RoutingKey),
    ("ETA", SigKey::Eta),
    ("GroupUUID", SigKey::GroupUuid),
    ("GroupTaskCount", SigKey::GroupTaskCount),
    ("Args", SigKey::Args),
    ("Headers", SigKey::Headers),
    ("Priority", SigKey::Priority),
    ("Immutable", SigKey::Immutable),
    ("RetryCount", SigKey::RetryCount),
    ("RetryTimeout", SigKey::RetryTimeout),
    ("OnSuccess", SigKey::OnSuccess),
    ("OnError", SigKey::OnError),
    ("ChordCallback", SigKey::ChordCallback),
    ("BrokerMessageGroupId", SigKey::BrokerMessageGroupId),
    ("SQSReceiptHandle", SigKey::SqsReceiptHandle),
    ("StopTaskDeletionOnError", SigKey::StopTaskDeletionOnError),
    (
        "IgnoreWhenTaskNotRegistered",
        SigKey::IgnoreWhenTaskNotRegistered,
    ),
    ("CreatedAt", SigKey::CreatedAt),
];

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
                let hint = Cell::new(0);
                let keys = KeySeed::new(SIGNATURE_KEYS, true, &hint);
                while let Some(key) = map.next_key_seed(keys)? {
                    let field = match key {
                        Key::Known(field) => field,
                        Key::Other(key) => {
                            keep_extra(&mut sig.extra, key, map.next_value()?);
                            continue;
                        }
                    };
                    match field {
                        SigKey::Uuid => sig.uuid = next_or_default(&mut map)?,
                        SigKey::Name => sig.name = next_or_default(&mut map)?,
                        SigKey::RoutingKey => sig.routing_key = next_or_default(&mut map)?,
                        SigKey::Eta => sig.eta = next_time(&mut map)?,
                        SigKey::GroupUuid => sig.group_uuid = next_or_default(&mut map)?,
                        SigKey::GroupTaskCount => sig.group_task_count = next_int(&mut map)?,
                        SigKey::Args => sig.args = next_or_default(&mut map)?,
                        SigKey::Headers => sig.headers = map.next_value()?,
                        SigKey::Priority => sig.priority = next_or_default(&mut map)?,
                        SigKey::Immutable => sig.immutable = next_or_default(&mut map)?,
                        SigKey::RetryCount => sig.retry_count = next_int(&mut map)?,
                        SigKey::RetryTimeout => sig.retry_timeout = next_int(&mut map)?,
                        SigKey::OnSuccess => sig.on_success = next_or_default(&mut map)?,
                        SigKey::OnError => sig.on_error = next_or_default(&mut map)?,
                        SigKey::ChordCallback => sig.chord_callback = map.next_value()?,
                        SigKey::BrokerMessageGroupId => {
                            sig.broker_message_group_id = next_or_default(&mut map)?
                        }
                        SigKey::SqsReceiptHandle => {
                            sig.sqs_receipt_handle = next_or_default(&mut map)?
                        }
                        SigKey::StopTaskDeletionOnError => {
                            sig.stop_task_deletion_on_error = next_or_default(&mut map)?
                        }
                        SigKey::IgnoreWhenTaskNotRegistered => {
                            sig.ignore_when_task_not_registered = next_or_default(&mut map)?
                        }
                        SigKey::CreatedAt => {
                            // Not Go's key: a value that is not a time is kept as it came
                            // (as an unknown key would be) rather than failing the message.
                            let value: Value = map.next_value()?;
                            match created_at_of(&value) {
                                Some(t) => sig.created_at = t,
                                None => keep_extra(&mut sig.extra, "CreatedAt".into(), value),
                            }
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

/// `TaskState`'s keys.
#[derive(Clone, Copy)]
pub(crate) enum StateKey {
    TaskUuid,
    TaskName,
    State,
    Results,
    Error,
    CreatedAt,
    Ttl,
}

pub(crate) const TASK_STATE_KEYS: &[(&str, StateKey)] = &[
    ("TaskUUID", StateKey::TaskUuid),
    ("TaskName", StateKey::TaskName),
    ("State", StateKey::State),
    ("Results", StateKey::Results),
    ("Error", StateKey::Error),
    ("CreatedAt", StateKey::CreatedAt),
    ("TTL", StateKey::Ttl),
];

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
                let hint = Cell::new(0);
                let keys = KeySeed::new(TASK_STATE_KEYS, true, &hint);
                while let Some(key) = map.next_key_seed(keys)? {
                    match key {
                        Key::Known(StateKey::TaskUuid) => st.task_uuid = next_or_default(&mut map)?,
                        Key::Known(StateKey::TaskName) => st.task_name = next_or_default(&mut map)?,
                        Key::Known(StateKey::State) => st.state = map.next_value()?,
                        Key::Known(StateKey::Results) => st.results = map.next_value()?,
                        Key::Known(StateKey::Error) => st.error = next_or_default(&mut map)?,
                        Key::Known(StateKey::CreatedAt) => st.created_at = next_time(&mut map)?,
                        Key::Known(StateKey::Ttl) => st.ttl = next_int(&mut map)?,
                        Key::Other(key) => keep_extra(&mut st.extra, key, map.next_value()?),
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

/// `GroupMeta`'s keys.
#[derive(Clone, Copy)]
enum GroupKey {
    GroupUuid,
    TaskUuids,
    ChordTriggered,
    Lock,
    CreatedAt,
    Ttl,
}

const GROUP_META_KEYS: &[(&str, GroupKey)] = &[
    ("GroupUUID", GroupKey::GroupUuid),
    ("TaskUUIDs", GroupKey::TaskUuids),
    ("ChordTriggered", GroupKey::ChordTriggered),
    ("Lock", GroupKey::Lock),
    ("CreatedAt", GroupKey::CreatedAt),
    ("TTL", GroupKey::Ttl),
];

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
                let hint = Cell::new(0);
                let keys = KeySeed::new(GROUP_META_KEYS, true, &hint);
                while let Some(key) = map.next_key_seed(keys)? {
                    match key {
                        Key::Known(GroupKey::GroupUuid) => {
                            g.group_uuid = next_or_default(&mut map)?
                        }
                        Key::Known(GroupKey::TaskUuids) => {
                            g.task_uuids = next_or_default(&mut map)?
                        }
                        Key::Known(GroupKey::ChordTriggered) => {
                            g.chord_triggered = next_or_default(&mut map)?
                        }
                        Key::Known(GroupKey::Lock) => g.lock = next_or_default(&mut map)?,
                        Key::Known(GroupKey::CreatedAt) => g.created_at = next_time(&mut map)?,
                        Key::Known(GroupKey::Ttl) => g.ttl = next_int(&mut map)?,
                        Key::Other(key) => keep_extra(&mut g.extra, key, map.next_value()?),
                    }
                }
                Ok(g)
            }
        }
        d.deserialize_map(V)
    }
}

// ---------------------------------------------------------------------------------------------
// Direct writers for the per-task documents
//
// `Signature` (every message) and `TaskState` (every stored state) are written straight into a
// `Vec<u8>`: their keys are constant bytes, strings go through one table-driven pass that copies
// runs needing no escape, integers are written by hand. Only nested JSON values (arrays,
// objects, floats inside `Value`s) go through serde_json with [`GoFormatter`]. The bytes are
// those of the `Serialize` impls above, which stay for any other use (tests compare both).

/// How [`write_str`] treats each byte: 0 copied as is, 1 escaped (control characters, `"`,
/// `\`, `<`, `>`, `&`), 2 looked at with the next two bytes (`E2`, the lead byte of U+2028 and
/// U+2029).
static ESCAPE_CLASS: [u8; 256] = {
    let mut table = [0u8; 256];
    let mut b = 0;
    while b < 0x20 {
        table[b] = 1;
        b += 1;
    }
    table[b'"' as usize] = 1;
    table[b'\\' as usize] = 1;
    table[b'<' as usize] = 1;
    table[b'>' as usize] = 1;
    table[b'&' as usize] = 1;
    table[0xE2] = 2;
    table
};

/// True when one of the eight bytes of `word` is one [`write_str`] looks at (class 1 or 2 of
/// [`ESCAPE_CLASS`]): exact as a whole, with the classic "has a zero byte" test.
fn needs_escape(word: u64) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGHS: u64 = 0x8080_8080_8080_8080;
    let zero_in = |v: u64| v.wrapping_sub(ONES) & !v & HIGHS;
    let is = |b: u8| zero_in(word ^ (ONES * u64::from(b)));
    let control = word.wrapping_sub(ONES * 0x20) & !word & HIGHS;
    control | is(b'"') | is(b'\\') | is(b'<') | is(b'>') | is(b'&') | is(0xE2) != 0
}

/// Writes `s` as a JSON string exactly as [`GoFormatter`] does through serde_json.
fn write_str(out: &mut Vec<u8>, s: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.push(b'"');
    let bytes = s.as_bytes();
    let mut start = 0;
    let mut i = 0;
    // Eight bytes at a time while none needs a look (most strings: UUIDs, names, queues).
    while let Some(chunk) = bytes.get(i..i + 8) {
        let Ok(word) = <[u8; 8]>::try_from(chunk) else {
            break;
        };
        if needs_escape(u64::from_le_bytes(word)) {
            break;
        }
        i += 8;
    }
    let mut control = [b'\\', b'u', b'0', b'0', 0, 0];
    while i < bytes.len() {
        let b = bytes[i];
        let escape: &[u8] = match ESCAPE_CLASS[usize::from(b)] {
            0 => {
                i += 1;
                continue;
            }
            2 => match (bytes.get(i + 1), bytes.get(i + 2)) {
                (Some(0x80), Some(0xA8)) => b"\\u2028",
                (Some(0x80), Some(0xA9)) => b"\\u2029",
                _ => {
                    i += 1;
                    continue;
                }
            },
            _ => match b {
                b'"' => b"\\\"",
                b'\\' => b"\\\\",
                b'\n' => b"\\n",
                b'\r' => b"\\r",
                b'\t' => b"\\t",
                0x08 if GO_SHORT_B_F_ESCAPES => b"\\b",
                0x0c if GO_SHORT_B_F_ESCAPES => b"\\f",
                b'<' => b"\\u003c",
                b'>' => b"\\u003e",
                b'&' => b"\\u0026",
                _ => {
                    control[4] = HEX[usize::from(b >> 4)];
                    control[5] = HEX[usize::from(b & 0xf)];
                    &control
                }
            },
        };
        out.extend_from_slice(&bytes[start..i]);
        out.extend_from_slice(escape);
        // Only `E2 80 A8` / `E2 80 A9` are three bytes long; every other escape is one byte.
        i += if b == 0xE2 { 3 } else { 1 };
        start = i;
    }
    out.extend_from_slice(&bytes[start..]);
    out.push(b'"');
}

/// Writes an unsigned integer in decimal.
fn write_u64(out: &mut Vec<u8>, mut v: u64) {
    if v < 10 {
        // Most integers of a message (counts, priorities, retries) are one digit.
        out.push(b'0' + v as u8);
        return;
    }
    let mut buf = [0u8; 20];
    let mut i = buf.len();
    loop {
        i -= 1;
        // `v % 10` is below 10.
        buf[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    out.extend_from_slice(&buf[i..]);
}

/// Writes a signed integer in decimal.
fn write_i64(out: &mut Vec<u8>, v: i64) {
    if v < 0 {
        out.push(b'-');
    }
    write_u64(out, v.unsigned_abs());
}

fn write_bool(out: &mut Vec<u8>, v: bool) {
    out.extend_from_slice(if v { b"true" } else { b"false" });
}

/// Writes a JSON value: scalars directly, arrays, objects and floats through serde_json.
fn write_value(out: &mut Vec<u8>, v: &Value) -> Result<(), serde_json::Error> {
    match v {
        Value::Null => out.extend_from_slice(b"null"),
        Value::Bool(b) => write_bool(out, *b),
        Value::String(s) => write_str(out, s),
        Value::Number(n) if n.is_i64() => write_i64(out, n.as_i64().unwrap_or_default()),
        Value::Number(n) if n.is_u64() => write_u64(out, n.as_u64().unwrap_or_default()),
        _ => {
            let mut ser = serde_json::Serializer::with_formatter(&mut *out, GoFormatter);
            v.serialize(&mut ser)?;
        }
    }
    Ok(())
}

/// Writes `,"Key":value` for each kept unknown key.
fn write_extra(out: &mut Vec<u8>, extra: &[(String, Value)]) -> Result<(), serde_json::Error> {
    for (k, v) in extra {
        out.push(b',');
        write_str(out, k);
        out.push(b':');
        write_value(out, v)?;
    }
    Ok(())
}

/// Writes a time field's text (or Go's zero time).
fn write_time(out: &mut Vec<u8>, t: &TimeField) {
    match t {
        TimeField::Zero => write_str(out, time::GO_ZERO_TIME),
        TimeField::Text(t) => write_str(out, t.as_str()),
    }
}

/// Writes a list of signatures, `null` when empty (Go's nil slice).
fn write_signatures(out: &mut Vec<u8>, list: &[Signature]) -> Result<(), serde_json::Error> {
    if list.is_empty() {
        out.extend_from_slice(b"null");
        return Ok(());
    }
    out.push(b'[');
    for (i, sig) in list.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        write_signature(out, sig)?;
    }
    out.push(b']');
    Ok(())
}

/// What [`write_signature`] writes after `Headers` when every later field is zero.
const ZERO_TAIL: &[u8] =
    b",\"Priority\":0,\"Immutable\":false,\"RetryCount\":0,\"RetryTimeout\":0,\
\"OnSuccess\":null,\"OnError\":null,\"ChordCallback\":null,\"BrokerMessageGroupId\":\"\",\
\"SQSReceiptHandle\":\"\",\"StopTaskDeletionOnError\":false,\"IgnoreWhenTaskNotRegistered\":false";

/// Writes a signature: the bytes of `Signature`'s `Serialize` impl through [`GoFormatter`].
fn write_signature(out: &mut Vec<u8>, sig: &Signature) -> Result<(), serde_json::Error> {
    out.extend_from_slice(b"{\"UUID\":");
    write_str(out, &sig.uuid);
    out.extend_from_slice(b",\"Name\":");
    write_str(out, &sig.name);
    out.extend_from_slice(b",\"RoutingKey\":");
    write_str(out, &sig.routing_key);
    out.extend_from_slice(b",\"ETA\":");
    match &sig.eta {
        None => out.extend_from_slice(b"null"),
        Some(t) => write_time(out, &go_time::<serde_json::Error>("ETA", t)?),
    }
    out.extend_from_slice(b",\"GroupUUID\":");
    write_str(out, &sig.group_uuid);
    out.extend_from_slice(b",\"GroupTaskCount\":");
    write_i64(out, sig.group_task_count);
    out.extend_from_slice(b",\"Args\":");
    if sig.args.is_empty() {
        out.extend_from_slice(b"null");
    } else {
        out.push(b'[');
        for (i, arg) in sig.args.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            out.extend_from_slice(b"{\"Name\":");
            write_str(out, &arg.name);
            out.extend_from_slice(b",\"Type\":");
            write_str(out, &arg.type_name);
            out.extend_from_slice(b",\"Value\":");
            write_value(out, &arg.value)?;
            out.push(b'}');
        }
        out.push(b']');
    }
    out.extend_from_slice(b",\"Headers\":");
    match &sig.headers {
        None => out.extend_from_slice(b"null"),
        Some(headers) => {
            // The map's own order: sorted by key, as Go writes a map.
            out.push(b'{');
            for (i, (k, v)) in headers.0.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_str(out, k);
                out.push(b':');
                write_value(out, v)?;
            }
            out.push(b'}');
        }
    }
    if sig.priority == 0
        && !sig.immutable
        && sig.retry_count == 0
        && sig.retry_timeout == 0
        && sig.on_success.is_empty()
        && sig.on_error.is_empty()
        && sig.chord_callback.is_none()
        && sig.broker_message_group_id.is_empty()
        && sig.sqs_receipt_handle.is_empty()
        && !sig.stop_task_deletion_on_error
        && !sig.ignore_when_task_not_registered
    {
        // Every key after `Headers` at its zero value (most messages): one copy.
        out.extend_from_slice(ZERO_TAIL);
        write_created_at(out, sig)?;
        write_extra(out, &sig.extra)?;
        out.push(b'}');
        return Ok(());
    }
    out.extend_from_slice(b",\"Priority\":");
    write_u64(out, u64::from(sig.priority));
    out.extend_from_slice(b",\"Immutable\":");
    write_bool(out, sig.immutable);
    out.extend_from_slice(b",\"RetryCount\":");
    write_i64(out, sig.retry_count);
    out.extend_from_slice(b",\"RetryTimeout\":");
    write_i64(out, sig.retry_timeout);
    out.extend_from_slice(b",\"OnSuccess\":");
    write_signatures(out, &sig.on_success)?;
    out.extend_from_slice(b",\"OnError\":");
    write_signatures(out, &sig.on_error)?;
    out.extend_from_slice(b",\"ChordCallback\":");
    match &sig.chord_callback {
        None => out.extend_from_slice(b"null"),
        Some(cb) => write_signature(out, cb)?,
    }
    out.extend_from_slice(b",\"BrokerMessageGroupId\":");
    write_str(out, &sig.broker_message_group_id);
    out.extend_from_slice(b",\"SQSReceiptHandle\":");
    write_str(out, &sig.sqs_receipt_handle);
    out.extend_from_slice(b",\"StopTaskDeletionOnError\":");
    write_bool(out, sig.stop_task_deletion_on_error);
    out.extend_from_slice(b",\"IgnoreWhenTaskNotRegistered\":");
    write_bool(out, sig.ignore_when_task_not_registered);
    write_created_at(out, sig)?;
    write_extra(out, &sig.extra)?;
    out.push(b'}');
    Ok(())
}

/// Writes `,"CreatedAt":…` when the signature has one (machinist's key, never `null`).
fn write_created_at(out: &mut Vec<u8>, sig: &Signature) -> Result<(), serde_json::Error> {
    if let Some(t) = &sig.created_at {
        out.extend_from_slice(b",\"CreatedAt\":");
        write_time(out, &go_time::<serde_json::Error>("CreatedAt", t)?);
    }
    Ok(())
}

/// A signature's Go JSON (what `Signature::to_vec` returns), written directly.
pub(crate) fn signature_to_vec(sig: &Signature) -> Result<Vec<u8>, serde_json::Error> {
    // About 470 bytes for a signature with two arguments and no callbacks.
    let mut out = Vec::with_capacity(
        448 + sig.uuid.len()
            + sig.name.len()
            + sig.routing_key.len()
            + sig.group_uuid.len()
            + 40 * sig.args.len(),
    );
    write_signature(&mut out, sig)?;
    Ok(out)
}

/// A task state's Go JSON, written directly: the bytes of `TaskState`'s `Serialize` impl
/// through [`GoFormatter`] (what `TaskState::to_vec` returns), in one pass.
pub(crate) fn task_state_to_vec(st: &TaskState) -> Result<Vec<u8>, serde_json::Error> {
    task_state_carrying_to_vec(st, "", None)
}

/// [`task_state_to_vec`], with `task_name` written where the state's is empty and `created_at`
/// where it has none: what a backend carries over from the task's PENDING, without copying the
/// state to fill them in.
pub(crate) fn task_state_carrying_to_vec(
    st: &TaskState,
    task_name: &str,
    created_at: Option<chrono::DateTime<chrono::Utc>>,
) -> Result<Vec<u8>, serde_json::Error> {
    let name = if st.task_name.is_empty() {
        task_name
    } else {
        st.task_name.as_str()
    };
    let created_at =
        go_time_or_zero::<serde_json::Error>(st.created_at.as_ref().or(created_at.as_ref()))?;
    let mut out = Vec::with_capacity(
        160 + st.task_uuid.len()
            + name.len()
            + st.error.len()
            + st.results.as_ref().map_or(0, |r| 40 * r.len()),
    );
    out.extend_from_slice(b"{\"TaskUUID\":");
    write_str(&mut out, &st.task_uuid);
    out.extend_from_slice(b",\"TaskName\":");
    write_str(&mut out, name);
    out.extend_from_slice(b",\"State\":");
    write_str(&mut out, st.state.as_str());
    out.extend_from_slice(b",\"Results\":");
    match &st.results {
        // `Some(vec![])` is `[]`: only an absent list is `null`.
        None => out.extend_from_slice(b"null"),
        Some(results) => {
            out.push(b'[');
            for (i, r) in results.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                out.extend_from_slice(b"{\"Type\":");
                write_str(&mut out, &r.type_name);
                out.extend_from_slice(b",\"Value\":");
                write_value(&mut out, &r.value)?;
                out.push(b'}');
            }
            out.push(b']');
        }
    }
    out.extend_from_slice(b",\"Error\":");
    write_str(&mut out, &st.error);
    out.extend_from_slice(b",\"CreatedAt\":");
    write_time(&mut out, &created_at);
    out.extend_from_slice(b",\"TTL\":");
    write_i64(&mut out, st.ttl);
    write_extra(&mut out, &st.extra)?;
    out.push(b'}');
    Ok(out)
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

    /// Signatures with every field, odd strings, nested callbacks, floats and extras.
    fn assorted_signatures() -> Vec<Signature> {
        let odd = [
            "",
            "plain",
            "<a&b>",
            "\u{2028}x\u{2029}",
            "†‰€\u{2027}\u{202a}",
            "\"\\/\n\r\t\u{8}\u{c}\u{0}\u{1f}\u{7f}",
            "é日本😀",
        ];
        let mut out = vec![Signature::default()];
        for (i, s) in odd.iter().enumerate() {
            let mut headers = Headers::default();
            headers.0.insert((*s).to_owned(), Value::from(*s));
            headers
                .0
                .insert("z".into(), serde_json::json!([1.5, {"k": "<"}, null]));
            let eta =
                chrono::DateTime::from_timestamp(1_700_000_000 + i as i64, 120_000_000 * i as u32);
            let mut sig = Signature {
                uuid: format!("task_{s}"),
                name: (*s).to_owned(),
                routing_key: s.repeat(2),
                eta,
                group_uuid: (*s).to_owned(),
                group_task_count: i64::MIN + i as i64,
                args: vec![
                    Arg::new(i64::MAX),
                    Arg::new(u64::MAX),
                    Arg::new(-3.25e-7_f64),
                    Arg::new(200.0_f64),
                    Arg::new((*s).to_owned()).named(*s),
                    Arg::new(vec![(*s).to_owned()]),
                    Arg::new(true),
                    Arg {
                        name: String::new(),
                        type_name: "interface {}".into(),
                        value: Value::Null,
                    },
                ],
                headers: Some(headers),
                priority: 255,
                immutable: i % 2 == 0,
                retry_count: -(i as i64),
                retry_timeout: i as i64,
                on_success: vec![Signature::new(*s), Signature::new("b").args(1i64)],
                on_error: if i % 2 == 0 {
                    vec![Signature::new("e")]
                } else {
                    vec![]
                },
                chord_callback: (i % 3 == 0).then(|| Box::new(Signature::new("c").args(2i64))),
                broker_message_group_id: (*s).to_owned(),
                sqs_receipt_handle: (*s).to_owned(),
                stop_task_deletion_on_error: i % 2 == 1,
                ignore_when_task_not_registered: i % 2 == 0,
                created_at: (i % 2 == 1).then_some(eta).flatten(),
                extra: vec![
                    ((*s).to_owned(), Value::from(*s)),
                    ("n".into(), serde_json::json!({"a": [1, -2, 0.1, 1e21]})),
                ],
            };
            if i == 1 {
                sig.headers = Some(Headers::default());
            }
            if i == 2 {
                sig.headers = None;
            }
            out.push(sig);
        }
        out
    }

    #[test]
    fn zero_tail_shortcut_matches_the_serde_path_field_by_field() {
        let base = || Signature::new("t").with_uuid("task_1").args(1i64);
        let mut each: Vec<Signature> = vec![base()];
        let mut with = |f: &dyn Fn(&mut Signature)| {
            let mut sig = base();
            f(&mut sig);
            each.push(sig);
        };
        with(&|s| s.priority = 1);
        with(&|s| s.immutable = true);
        with(&|s| s.retry_count = 1);
        with(&|s| s.retry_timeout = 1);
        with(&|s| s.on_success = vec![Signature::new("a")]);
        with(&|s| s.on_error = vec![Signature::new("e")]);
        with(&|s| s.chord_callback = Some(Box::new(Signature::new("c"))));
        with(&|s| s.broker_message_group_id = "g".into());
        with(&|s| s.sqs_receipt_handle = "h".into());
        with(&|s| s.stop_task_deletion_on_error = true);
        with(&|s| s.ignore_when_task_not_registered = true);
        with(&|s| s.extra = vec![("Index".into(), Value::from(3))]);
        with(&|s| s.created_at = chrono::DateTime::from_timestamp(1_700_000_000, 5));
        for sig in each {
            let direct = signature_to_vec(&sig).unwrap();
            assert_eq!(
                String::from_utf8_lossy(&direct),
                String::from_utf8_lossy(&to_go_json(&sig).unwrap())
            );
            assert_eq!(Signature::from_slice(&direct).unwrap(), sig);
        }
    }

    #[test]
    fn created_at_travels_after_gos_keys_and_a_bad_one_is_kept_as_it_came() {
        let mut sig = Signature::new("add").with_uuid("task_1");
        let bare = String::from_utf8(sig.to_vec().unwrap()).unwrap();
        assert!(!bare.contains("CreatedAt"), "{bare}");
        sig.created_at = chrono::DateTime::from_timestamp(1_700_000_000, 120_000_000);
        let text = String::from_utf8(sig.to_vec().unwrap()).unwrap();
        assert!(
            text.ends_with(
                r#""IgnoreWhenTaskNotRegistered":false,"CreatedAt":"2023-11-14T22:13:20.12Z"}"#
            ),
            "{text}"
        );
        assert_eq!(Signature::from_slice(text.as_bytes()).unwrap(), sig);
        // Go's zero time and null are no time; a value that is no time at all is not an error
        // (Go ignores the key) and goes back out as it came.
        for (value, created_at, extra) in [
            (r#""0001-01-01T00:00:00Z""#, None, vec![]),
            ("null", None, vec![]),
            (
                r#""yesterday""#,
                None,
                vec![("CreatedAt".to_owned(), Value::from("yesterday"))],
            ),
            ("5", None, vec![("CreatedAt".to_owned(), Value::from(5))]),
        ] {
            let text = bare.replace(
                r#""IgnoreWhenTaskNotRegistered":false"#,
                &format!(r#""IgnoreWhenTaskNotRegistered":false,"CreatedAt":{value}"#),
            );
            let back = Signature::from_slice(text.as_bytes()).unwrap();
            assert_eq!(back.created_at, created_at, "{text}");
            assert_eq!(back.extra, extra, "{text}");
        }
    }

    #[test]
    fn direct_signature_writer_matches_the_serde_path() {
        for sig in assorted_signatures() {
            let direct = signature_to_vec(&sig).unwrap();
            let serde = to_go_json(&sig).unwrap();
            assert_eq!(
                String::from_utf8_lossy(&direct),
                String::from_utf8_lossy(&serde)
            );
            let back = Signature::from_slice(&direct).unwrap();
            assert_eq!(back, sig);
        }
        // Years Go cannot encode fail on both paths, with the same text.
        let far = chrono::DateTime::from_timestamp(300_000_000_000, 0).unwrap();
        let sig = Signature::new("t").on_success(Signature::new("cb").eta(far));
        let direct = signature_to_vec(&sig).unwrap_err().to_string();
        let serde = to_go_json(&sig).unwrap_err().to_string();
        assert_eq!(direct, serde);
        assert!(
            direct.contains("year outside of range [0,9999]"),
            "{direct}"
        );
    }

    #[test]
    fn direct_task_state_writer_matches_the_serde_path() {
        let mut states = vec![
            TaskState::pending("task_1", "add"),
            TaskState::received("task_<2>"),
            TaskState::success("t", vec![]),
            TaskState::success(
                "t",
                vec![
                    TaskResult::new(3i64),
                    TaskResult::new("<&>\u{2028}".to_owned()),
                    TaskResult::new(0.1_f64),
                    TaskResult::new(vec![1u64, u64::MAX]),
                ],
            ),
            TaskState::from_slice(b"{}").unwrap(),
        ];
        let mut odd = TaskState::received("\u{0}\"\\");
        odd.state = State::Other("WEIRD<".into());
        odd.error = "boom\n\u{2029}".into();
        odd.ttl = -7;
        odd.created_at = chrono::DateTime::from_timestamp(1, 1);
        odd.extra = vec![("X&".into(), serde_json::json!([1.5, "&"]))];
        states.push(odd);
        for st in states {
            let direct = task_state_to_vec(&st).unwrap();
            let serde = to_go_json(&st).unwrap();
            assert_eq!(
                String::from_utf8_lossy(&direct),
                String::from_utf8_lossy(&serde)
            );
            assert_eq!(TaskState::from_slice(&direct).unwrap(), st);
        }
        let mut far = TaskState::received("t");
        far.created_at = chrono::DateTime::from_timestamp(-70_000_000_000, 0);
        assert_eq!(
            task_state_to_vec(&far).unwrap_err().to_string(),
            to_go_json(&far).unwrap_err().to_string()
        );
    }

    #[test]
    fn carrying_writer_fills_only_what_the_state_lacks() {
        let created = chrono::DateTime::from_timestamp(1_700_000_000, 5);
        let own = chrono::DateTime::from_timestamp(1_600_000_000, 7);
        let mut named = TaskState::success("t", vec![TaskResult::new(3i64)]);
        named.task_name = "mine".into();
        named.created_at = own;
        for st in [
            TaskState::received("t"),
            TaskState::success("t", vec![TaskResult::new(3i64)]),
            named,
        ] {
            let carried = task_state_carrying_to_vec(&st, "add", created).unwrap();
            let mut filled = st.clone();
            if filled.task_name.is_empty() {
                filled.task_name = "add".into();
            }
            filled.created_at = filled.created_at.or(created);
            assert_eq!(
                String::from_utf8_lossy(&carried),
                String::from_utf8_lossy(&task_state_to_vec(&filled).unwrap())
            );
            let back = TaskState::from_slice(&carried).unwrap();
            assert_eq!(back.task_name, filled.task_name);
            assert_eq!(back.created_at, filled.created_at);
        }
        // Nothing to carry: what `to_vec` writes.
        let st = TaskState::started("t");
        assert_eq!(
            task_state_carrying_to_vec(&st, "", None).unwrap(),
            task_state_to_vec(&st).unwrap()
        );
    }

    #[test]
    fn string_writer_matches_serde_for_every_char_class() {
        let mut all = String::new();
        for c in (0u32..0x3000).filter_map(char::from_u32) {
            all.push(c);
        }
        for s in [
            all.as_str(),
            "\u{2028}",
            "\u{E2}",
            "a\u{2029}",
            "\u{7f}\u{80}\u{ff}",
        ] {
            let mut direct = Vec::new();
            write_str(&mut direct, s);
            assert_eq!(
                String::from_utf8(direct).unwrap(),
                to_go_json_string(s).unwrap()
            );
        }
    }

    #[test]
    fn string_writer_finds_escapes_at_any_offset() {
        for c in [
            '\0', '\n', '\u{1f}', '"', '\\', '<', '>', '&', '\u{2028}', '\u{2029}', 'é', '€',
        ] {
            for at in 0..24 {
                for len in [at, at + 1, at + 9, 30] {
                    let mut s: String = "a".repeat(at);
                    s.push(c);
                    while s.chars().count() < len {
                        s.push('b');
                    }
                    let mut direct = Vec::new();
                    write_str(&mut direct, &s);
                    assert_eq!(
                        String::from_utf8(direct).unwrap(),
                        to_go_json_string(&s).unwrap(),
                        "{s:?}"
                    );
                }
            }
        }
    }

    #[test]
    fn starts_with_compares_every_byte() {
        for key in [
            "",
            "a",
            "abc",
            "abcd",
            "\"ETA\":",
            "\"Name\":",
            "\"Value\":",
            "\"GroupUUID\":",
            "\"IgnoreWhenTaskNotRegistered\":",
        ] {
            let key = key.as_bytes();
            let mut ahead = key.to_vec();
            ahead.extend_from_slice(b"rest");
            assert!(starts_with(&ahead, key));
            assert!(starts_with(key, key));
            assert_eq!(
                starts_with(&key[..key.len().saturating_sub(1)], key),
                key.is_empty()
            );
            for i in 0..key.len() {
                let mut wrong = ahead.clone();
                wrong[i] ^= 0x20;
                assert!(!starts_with(&wrong, key), "{i} of {key:?}");
            }
        }
    }

    #[test]
    fn needs_escape_is_exact_in_every_lane() {
        for filler in [
            b'a', b' ', b'!', b'#', b'=', b'?', b']', 0x7f, 0x80, 0xe1, 0xe3, 0xff,
        ] {
            for lane in 0..8 {
                for b in 0u8..=255 {
                    let mut word = [filler; 8];
                    word[lane] = b;
                    let wanted = ESCAPE_CLASS[usize::from(b)] != 0;
                    assert_eq!(
                        needs_escape(u64::from_le_bytes(word)),
                        wanted,
                        "{b:#x} at {lane} among {filler:#x}"
                    );
                }
            }
        }
    }

    #[test]
    fn whole_input_utf8_check_gives_from_slice_results_and_errors() {
        let inputs: &[&[u8]] = &[
            br#"{"UUID":"task_1","Name":"add","Args":[{"Type":"int64","Value":1}]}"#,
            "{\"Name\":\"é\\u2028日本\",\"X\":[\"😀\"]}".as_bytes(),
            br#"{"Name":"\ud800"}"#,
            b"{\"Name\":\"\xff\xfe\"}",
            b"{\"\xc3\":1}",
            b"\xef\xbb\xbf{}",
            b"{} \xff",
            b"{\"Name\":\"a\xc3\"}",
            b"{\"Name\":1}",
            b"",
        ];
        for input in inputs {
            let fast = from_json_bytes::<Signature>(input).map_err(|e| e.to_string());
            let slow = serde_json::from_slice::<Signature>(input)
                .map_err(|e| crate::Error::from(e).to_string());
            assert_eq!(fast, slow, "{}", String::from_utf8_lossy(input));
        }
    }

    #[test]
    #[ignore = "timing, not a check; run with --release --ignored --nocapture"]
    fn speed() {
        use std::hint::black_box;
        use std::time::Instant;
        fn per_call<T>(n: u32, mut f: impl FnMut() -> T) -> std::time::Duration {
            let t = Instant::now();
            for _ in 0..n {
                black_box(f());
            }
            t.elapsed() / n
        }
        let n = 200_000;
        let mut sig = Signature::new("add")
            .args((7i64, 1i64))
            .with_uuid("task_bench1_e2e_123456")
            .routing_key("machinist_bench_1_e2e");
        sig.headers = Some(Headers::default());
        let bytes = signature_to_vec(&sig).unwrap();
        let mut st = TaskState::success("task_bench1_e2e_123456", vec![TaskResult::new(8i64)]);
        st.task_name = "add".into();
        st.created_at = Some(chrono::Utc::now());
        println!(
            "Signature encode: serde {:?}, direct {:?}; decode: from_slice {:?}, from_json_bytes {:?}",
            per_call(n, || to_go_json(&sig).unwrap()),
            per_call(n, || signature_to_vec(&sig).unwrap()),
            per_call(n, || serde_json::from_slice::<Signature>(&bytes).unwrap()),
            per_call(n, || from_json_bytes::<Signature>(&bytes).unwrap()),
        );
        println!(
            "TaskState encode: serde {:?}, direct {:?}",
            per_call(n, || to_go_json(&st).unwrap()),
            per_call(n, || task_state_to_vec(&st).unwrap()),
        );
    }
}
