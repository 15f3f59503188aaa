//! The fast path of message decoding: every delivery is a [`Signature`] to decode, and going
//! through serde_json's generic machinery (a visitor per value, an `Option` per field, a
//! `Value` per argument) cost about as much as the rest of the worker's per-task work.
//!
//! [`signature`] reads the common shape of a message directly from the bytes: the keys
//! `codec.rs` knows (matched as it matches them, ignoring ASCII case), strings without escapes,
//! integers, booleans and `null`, argument and header values that are such scalars, and nested
//! signatures (`OnSuccess`, `OnError`, `ChordCallback`). [`task_state`] does the same for a
//! stored state whose `Results` is `null` (the worker reads the PENDING of every task it
//! runs when the fetch brought it; serde's generic path cost about 4% of a worker's CPU).
//! Anything else — an escape, a float, an
//! unknown key, a nested array or object as a value, an error of any kind — makes it return
//! `None`, and the caller decodes the message with the serde path (`codec.rs`), which stays the
//! definition: for every input this accepts, the result is the value the serde path returns
//! (the tests compare both on every message shape they know).

use std::cell::Cell;

use serde_json::{Map, Number, Value};

use crate::arg::Arg;
use crate::codec::{ARG_KEYS, ArgKey, KeySeed, SIGNATURE_KEYS, SigKey, StateKey, TASK_STATE_KEYS};
use crate::signature::{Headers, Signature};
use crate::state::{State, TaskState};
use crate::time;

/// How deeply signatures may nest (`OnSuccess` of `OnSuccess` …) before the serde path, with
/// its own limit, decides.
const MAX_DEPTH: usize = 32;

/// Decodes `text` as a [`Signature`], or `None` when it is not of the shape this path reads
/// (the serde path then decides, including every error).
pub(crate) fn signature(text: &str) -> Option<Signature> {
    whole(text, |r| r.signature(0))
}

/// What `read` reads from `text`, when that is all of `text` (JSON whitespace around it).
fn whole<'a, T>(text: &'a str, read: impl FnOnce(&mut Reader<'a>) -> Option<T>) -> Option<T> {
    let mut r = Reader {
        text,
        bytes: text.as_bytes(),
        pos: 0,
    };
    r.ws();
    let value = read(&mut r)?;
    r.ws();
    (r.pos == r.bytes.len()).then_some(value)
}

/// [`SIGNATURE_KEYS`] as they are written: `"UUID":` …
const QUOTED_SIGNATURE_KEYS: &[&[u8]] = &[
    b"\"UUID\":",
    b"\"Name\":",
    b"\"RoutingKey\":",
    b"\"ETA\":",
    b"\"GroupUUID\":",
    b"\"GroupTaskCount\":",
    b"\"Args\":",
    b"\"Headers\":",
    b"\"Priority\":",
    b"\"Immutable\":",
    b"\"RetryCount\":",
    b"\"RetryTimeout\":",
    b"\"OnSuccess\":",
    b"\"OnError\":",
    b"\"ChordCallback\":",
    b"\"BrokerMessageGroupId\":",
    b"\"SQSReceiptHandle\":",
    b"\"StopTaskDeletionOnError\":",
    b"\"IgnoreWhenTaskNotRegistered\":",
    b"\"CreatedAt\":",
];

/// Decodes `text` as a [`TaskState`] with `Results` `null`, or `None` when it is not of the
/// shape this path reads (the serde path then decides, including every error).
pub(crate) fn task_state(text: &str) -> Option<TaskState> {
    whole(text, Reader::task_state)
}

/// [`TASK_STATE_KEYS`] as they are written.
const QUOTED_TASK_STATE_KEYS: &[&[u8]] = &[
    b"\"TaskUUID\":",
    b"\"TaskName\":",
    b"\"State\":",
    b"\"Results\":",
    b"\"Error\":",
    b"\"CreatedAt\":",
    b"\"TTL\":",
];

/// [`ARG_KEYS`] as they are written.
const QUOTED_ARG_KEYS: &[&[u8]] = &[b"\"Name\":", b"\"Type\":", b"\"Value\":"];

/// True when one of the eight bytes of `word` is `"`, `\\` or below `0x20` (exact as a whole;
/// the classic "has a zero byte" test on `word ^ "…"`, `word ^ \\…` and `word - 0x20…`).
#[cfg(test)]
fn has_special_byte(word: u64) -> bool {
    special_bytes(word) != 0
}

/// The high bit of each byte of `word` (read little-endian) that is `"`, a backslash or below
/// `0x20`, exact up to the first one: bytes after it may be marked too (a borrow), bytes
/// before it never are, so `trailing_zeros() / 8` is the index of the first such byte.
fn special_bytes(word: u64) -> u64 {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGHS: u64 = 0x8080_8080_8080_8080;
    let zero_in = |v: u64| v.wrapping_sub(ONES) & !v & HIGHS;
    let quote = zero_in(word ^ (ONES * u64::from(b'"')));
    let backslash = zero_in(word ^ (ONES * u64::from(b'\\')));
    let control = word.wrapping_sub(ONES * 0x20) & !word & HIGHS;
    quote | backslash | control
}

struct Reader<'a> {
    text: &'a str,
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    /// Skips JSON whitespace.
    fn ws(&mut self) {
        while let Some(b' ' | b'\n' | b'\t' | b'\r') = self.bytes.get(self.pos) {
            self.pos += 1;
        }
    }

    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.pos).copied()
    }

    /// Consumes `byte` if it is next.
    fn eat(&mut self, byte: u8) -> bool {
        if self.peek() == Some(byte) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    /// Consumes the literal `word` (`null`, `true`, `false`).
    fn literal(&mut self, word: &[u8]) -> Option<()> {
        let end = self.pos + word.len();
        (self.bytes.get(self.pos..end)? == word).then(|| self.pos = end)
    }

    /// `null`, consumed, if it is next.
    fn null(&mut self) -> Option<bool> {
        if self.peek() == Some(b'n') {
            self.literal(b"null")?;
            Some(true)
        } else {
            Some(false)
        }
    }

    /// A string without escapes or control characters, borrowed.
    fn plain_str(&mut self) -> Option<&'a str> {
        if !self.eat(b'"') {
            return None;
        }
        let start = self.pos;
        // Eight bytes at a time until one of them is `"`, a backslash or a control character,
        // then straight to it.
        while let Some(chunk) = self.bytes.get(self.pos..self.pos + 8) {
            let special = special_bytes(u64::from_le_bytes(chunk.try_into().ok()?));
            if special != 0 {
                self.pos += (special.trailing_zeros() / 8) as usize;
                break;
            }
            self.pos += 8;
        }
        loop {
            match *self.bytes.get(self.pos)? {
                b'"' => break,
                b'\\' | 0..=0x1f => return None,
                _ => self.pos += 1,
            }
        }
        let s = self.text.get(start..self.pos)?;
        self.pos += 1;
        Some(s)
    }

    /// A Go time field: `null` and Go's zero time are `None`, else RFC 3339 text.
    fn time(&mut self) -> Option<Option<chrono::DateTime<chrono::Utc>>> {
        if self.null()? {
            return Some(None);
        }
        time::parse(self.plain_str()?).ok()
    }

    /// A string field (`null` is empty).
    fn string(&mut self) -> Option<String> {
        if self.null()? {
            return Some(String::new());
        }
        self.plain_str().map(str::to_owned)
    }

    fn boolean(&mut self) -> Option<bool> {
        match self.peek()? {
            b'n' => self.literal(b"null").map(|()| false),
            b't' => self.literal(b"true").map(|()| true),
            b'f' => self.literal(b"false").map(|()| false),
            _ => None,
        }
    }

    /// A JSON integer as serde_json reads it: `Ok(u64)` for a non-negative one, `Err(i64)` for
    /// a negative one; `None` for anything serde_json would read as a float (a fraction, an
    /// exponent, `-0`, a magnitude past 64 bits) or not as a number at all.
    fn integer(&mut self) -> Option<Result<u64, i64>> {
        let negative = self.eat(b'-');
        let first = self.peek()?;
        let mut n: u64 = match first {
            b'0' => {
                self.pos += 1;
                if self.peek().is_some_and(|b| b.is_ascii_digit()) {
                    return None;
                }
                0
            }
            b'1'..=b'9' => {
                let mut n = 0u64;
                while let Some(d @ b'0'..=b'9') = self.peek() {
                    n = n.checked_mul(10)?.checked_add(u64::from(d - b'0'))?;
                    self.pos += 1;
                }
                n
            }
            _ => return None,
        };
        if let Some(b'.' | b'e' | b'E') = self.peek() {
            return None;
        }
        if !negative {
            return Some(Ok(n));
        }
        // serde_json reads `-0` as a float.
        if n == 0 || n > 1 << 63 {
            return None;
        }
        n = n.wrapping_neg();
        Some(Err(n as i64))
    }

    /// An `int64` field (`null` is 0).
    fn int64(&mut self) -> Option<i64> {
        if self.null()? {
            return Some(0);
        }
        match self.integer()? {
            Ok(n) => i64::try_from(n).ok(),
            Err(n) => Some(n),
        }
    }

    /// A `uint8` field (`null` is 0).
    fn uint8(&mut self) -> Option<u8> {
        if self.null()? {
            return Some(0);
        }
        match self.integer()? {
            Ok(n) => u8::try_from(n).ok(),
            Err(_) => None,
        }
    }

    /// A JSON value that is a scalar this path reads: `null`, a boolean, an integer, a plain
    /// string.
    fn scalar(&mut self) -> Option<Value> {
        Some(match self.peek()? {
            b'n' => self.literal(b"null").map(|()| Value::Null)?,
            b't' | b'f' => Value::Bool(self.boolean()?),
            b'"' => Value::String(self.plain_str()?.to_owned()),
            b'-' | b'0'..=b'9' => Value::Number(match self.integer()? {
                Ok(n) => Number::from(n),
                Err(n) => Number::from(n),
            }),
            _ => return None,
        })
    }

    /// Reads the members of an object whose `{` was consumed, calling `member` with each key
    /// (the reader then at its value); `None` if the object is not well formed.
    fn object(&mut self, mut member: impl FnMut(&mut Self, &'a str) -> Option<()>) -> Option<()> {
        self.ws();
        if self.eat(b'}') {
            return Some(());
        }
        loop {
            self.ws();
            let key = self.plain_str()?;
            self.ws();
            if !self.eat(b':') {
                return None;
            }
            self.ws();
            member(self, key)?;
            if self.object_ends()? {
                return Some(());
            }
        }
    }

    /// After an object's member: consumes the `,` before the next one (`false`) or the closing
    /// `}` (`true`); anything else ends the fast path.
    fn object_ends(&mut self) -> Option<bool> {
        self.ws();
        match self.peek()? {
            b',' => {
                self.pos += 1;
                Some(false)
            }
            b'}' => {
                self.pos += 1;
                Some(true)
            }
            _ => None,
        }
    }

    /// An object of a wire type, at its `{`, whose keys are `table` (`keep`: as
    /// [`KeySeed::new`] takes it): calls `member` with each key's field. The key the table
    /// expects next (the seed's hint, see [`KeySeed::lookup`]) is first compared with the bytes
    /// ahead as `"Key":` (`quoted`), which is how Go and machinist write every key, so a
    /// message in their form is never scanned for keys. An unknown key ends the fast path.
    fn fields<F: Copy>(
        &mut self,
        table: &'static [(&'static str, F)],
        keep: bool,
        quoted: &[&[u8]],
        mut member: impl FnMut(&mut Self, F) -> Option<()>,
    ) -> Option<()> {
        if !self.eat(b'{') {
            return None;
        }
        let hint = Cell::new(0);
        let keys = KeySeed::new(table, keep, &hint);
        self.ws();
        if self.eat(b'}') {
            return Some(());
        }
        loop {
            self.ws();
            let field = match keys.expected(quoted, &self.bytes[self.pos..]) {
                Some((field, len)) => {
                    self.pos += len;
                    field
                }
                None => {
                    let key = self.plain_str()?;
                    self.ws();
                    if !self.eat(b':') {
                        return None;
                    }
                    keys.lookup(key)?
                }
            };
            self.ws();
            member(self, field)?;
            if self.object_ends()? {
                return Some(());
            }
        }
    }

    /// Reads the elements of an array whose `[` was consumed, calling `element` with the reader
    /// at each one.
    fn array(&mut self, mut element: impl FnMut(&mut Self) -> Option<()>) -> Option<()> {
        self.ws();
        if self.eat(b']') {
            return Some(());
        }
        loop {
            self.ws();
            element(self)?;
            self.ws();
            match self.peek()? {
                b',' => self.pos += 1,
                b']' => {
                    self.pos += 1;
                    return Some(());
                }
                _ => return None,
            }
        }
    }

    /// A list of signatures (`null` is empty).
    fn signatures(&mut self, depth: usize) -> Option<Vec<Signature>> {
        let mut list = Vec::new();
        if self.null()? {
            return Some(list);
        }
        if !self.eat(b'[') {
            return None;
        }
        self.array(|r| {
            list.push(r.signature(depth + 1)?);
            Some(())
        })?;
        Some(list)
    }

    fn args(&mut self) -> Option<Vec<Arg>> {
        if self.null()? {
            return Some(Vec::new());
        }
        if !self.eat(b'[') {
            return None;
        }
        // Room for the usual few arguments at once (growing from empty costs more).
        let mut args = Vec::with_capacity(4);
        self.array(|r| {
            let mut arg = Arg {
                name: String::new(),
                type_name: String::new(),
                value: Value::Null,
            };
            r.fields(ARG_KEYS, false, QUOTED_ARG_KEYS, |r, field| {
                match field {
                    ArgKey::Name => arg.name = r.string()?,
                    ArgKey::Type => arg.type_name = r.string()?,
                    ArgKey::Value => arg.value = r.scalar()?,
                }
                Some(())
            })?;
            args.push(arg);
            Some(())
        })?;
        Some(args)
    }

    fn headers(&mut self) -> Option<Option<Headers>> {
        if self.null()? {
            return Some(None);
        }
        if !self.eat(b'{') {
            return None;
        }
        let mut map = Map::new();
        self.object(|r, key| {
            let value = r.scalar()?;
            map.insert(key.to_owned(), value);
            Some(())
        })?;
        Some(Some(Headers(map)))
    }

    /// A signature object, at its `{`.
    fn signature(&mut self, depth: usize) -> Option<Signature> {
        if depth > MAX_DEPTH {
            return None;
        }
        let mut sig = Signature::default();
        self.fields(SIGNATURE_KEYS, true, QUOTED_SIGNATURE_KEYS, |r, field| {
            match field {
                SigKey::Uuid => sig.uuid = r.string()?,
                SigKey::Name => sig.name = r.string()?,
                SigKey::RoutingKey => sig.routing_key = r.string()?,
                SigKey::Eta => sig.eta = r.time()?,
                SigKey::GroupUuid => sig.group_uuid = r.string()?,
                SigKey::GroupTaskCount => sig.group_task_count = r.int64()?,
                SigKey::Args => sig.args = r.args()?,
                SigKey::Headers => sig.headers = r.headers()?,
                SigKey::Priority => sig.priority = r.uint8()?,
                SigKey::Immutable => sig.immutable = r.boolean()?,
                SigKey::RetryCount => sig.retry_count = r.int64()?,
                SigKey::RetryTimeout => sig.retry_timeout = r.int64()?,
                SigKey::OnSuccess => sig.on_success = r.signatures(depth)?,
                SigKey::OnError => sig.on_error = r.signatures(depth)?,
                SigKey::ChordCallback => {
                    sig.chord_callback = if r.null()? {
                        None
                    } else {
                        Some(Box::new(r.signature(depth + 1)?))
                    }
                }
                SigKey::BrokerMessageGroupId => sig.broker_message_group_id = r.string()?,
                SigKey::SqsReceiptHandle => sig.sqs_receipt_handle = r.string()?,
                SigKey::StopTaskDeletionOnError => sig.stop_task_deletion_on_error = r.boolean()?,
                SigKey::IgnoreWhenTaskNotRegistered => {
                    sig.ignore_when_task_not_registered = r.boolean()?
                }
                SigKey::CreatedAt => sig.created_at = r.time()?,
            }
            Some(())
        })?;
        Some(sig)
    }
}

impl Reader<'_> {
    /// A task state object, as the serde path reads it from the same defaults.
    fn task_state(&mut self) -> Option<TaskState> {
        let mut st = TaskState::received("");
        st.state = State::default();
        self.fields(TASK_STATE_KEYS, true, QUOTED_TASK_STATE_KEYS, |r, field| {
            match field {
                StateKey::TaskUuid => st.task_uuid = r.string()?,
                StateKey::TaskName => st.task_name = r.string()?,
                StateKey::State => {
                    st.state = if r.null()? {
                        State::default()
                    } else {
                        State::parse(r.plain_str()?)
                    }
                }
                StateKey::Results => {
                    if !r.null()? {
                        return None;
                    }
                    st.results = None;
                }
                StateKey::Error => st.error = r.string()?,
                StateKey::CreatedAt => st.created_at = r.time()?,
                StateKey::Ttl => st.ttl = r.int64()?,
            }
            Some(())
        })?;
        Some(st)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// The serde path's answer.
    fn slow(text: &str) -> Option<Signature> {
        serde_json::from_str(text).ok()
    }

    /// `text` takes the fast path, with the serde path's result.
    fn fast(text: &str) -> Signature {
        let sig = signature(text).unwrap_or_else(|| panic!("not on the fast path: {text}"));
        assert_eq!(Some(&sig), slow(text).as_ref(), "{text}");
        sig
    }

    const ADD: &str = r#"{"UUID":"task_1","Name":"add","RoutingKey":"machinery_tasks","ETA":null,"GroupUUID":"","GroupTaskCount":0,"Args":[{"Name":"","Type":"int64","Value":1},{"Name":"","Type":"int64","Value":-2}],"Headers":{},"Priority":0,"Immutable":false,"RetryCount":0,"RetryTimeout":0,"OnSuccess":null,"OnError":null,"ChordCallback":null,"BrokerMessageGroupId":"","SQSReceiptHandle":"","StopTaskDeletionOnError":false,"IgnoreWhenTaskNotRegistered":false}"#;

    /// Messages of every shape the fast path reads.
    fn corpus() -> Vec<String> {
        let built = Signature::new("add")
            .args((1i64, "two", true))
            .with_uuid("task_x")
            .routing_key("q")
            .eta(chrono::DateTime::from_timestamp(1_700_000_000, 123_456_789).unwrap())
            .retries(3)
            .retry_timeout(5)
            .priority(200)
            .immutable(true)
            .header(
                "traceparent",
                "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            )
            .header("machinist_attempt", 2)
            .header("n", serde_json::Value::Null)
            .on_success(Signature::new("next").arg(Arg::new(u64::MAX)))
            .on_error(Signature::new("oops").arg(Arg::new(i64::MIN)));
        let mut member = Signature::new("m").with_uuid("task_m");
        member.group_uuid = "group_1".into();
        member.group_task_count = 100;
        member.chord_callback = Some(Box::new(Signature::new("cb").with_uuid("chord_1")));
        member.broker_message_group_id = "g".into();
        member.sqs_receipt_handle = "AQEB+/x=".into();
        member.stop_task_deletion_on_error = true;
        member.ignore_when_task_not_registered = true;
        let mut sent = Signature::new("add").with_uuid("task_s").args((1i64, 2i64));
        sent.created_at = chrono::DateTime::from_timestamp(1_700_000_000, 5);
        vec![
            ADD.to_owned(),
            String::from_utf8(sent.to_vec().unwrap()).unwrap(),
            format!(
                r#"{},"CreatedAt":"2024-05-01T10:00:28.29704155+02:00"}}"#,
                &ADD[..ADD.len() - 1]
            ),
            String::from_utf8(built.to_vec().unwrap()).unwrap(),
            String::from_utf8(member.to_vec().unwrap()).unwrap(),
            "{}".to_owned(),
            " \n{ \"uuid\" : \"a\" ,\t\"NAME\":\"é ü\u{2028}\" , \"args\" : [ { \"value\" : \"x\" } , { } ] }\r\n"
                .to_owned(),
            r#"{"UUID":null,"Name":null,"RoutingKey":null,"ETA":null,"GroupUUID":null,"GroupTaskCount":null,"Args":null,"Headers":null,"Priority":null,"Immutable":null,"RetryCount":null,"RetryTimeout":null,"OnSuccess":null,"OnError":null,"ChordCallback":null,"BrokerMessageGroupId":null,"SQSReceiptHandle":null,"StopTaskDeletionOnError":null,"IgnoreWhenTaskNotRegistered":null}"#.to_owned(),
            r#"{"UUID":"a","UUID":"b","Args":[{"Value":1}],"Args":[],"Headers":{"k":1,"k":"2"},"RetryCount":-9223372036854775808,"GroupTaskCount":9223372036854775807,"ETA":"0001-01-01T00:00:00Z","OnSuccess":[],"Priority":255}"#.to_owned(),
            r#"{"ETA":"2024-05-01T10:00:28.29704155+02:00","Args":[{"Name":null,"Type":null,"Value":null},{"Value":18446744073709551615},{"Value":-1},{"Value":0},{"Value":false}]}"#.to_owned(),
        ]
    }

    #[test]
    fn quoted_keys_are_the_key_tables() {
        for (table, quoted) in [
            (
                SIGNATURE_KEYS.iter().map(|(k, _)| *k).collect::<Vec<_>>(),
                QUOTED_SIGNATURE_KEYS,
            ),
            (ARG_KEYS.iter().map(|(k, _)| *k).collect(), QUOTED_ARG_KEYS),
        ] {
            let written: Vec<String> = table.iter().map(|k| format!("\"{k}\":")).collect();
            let quoted: Vec<String> = quoted
                .iter()
                .map(|q| String::from_utf8(q.to_vec()).unwrap())
                .collect();
            assert_eq!(written, quoted);
        }
    }

    #[test]
    fn the_first_special_byte_is_located_exactly() {
        let specials = [b'"', b'\\', 0, 0x1f, b'\n'];
        for first in 0..8 {
            for &b in &specials {
                for &later in &specials {
                    let mut word = [b'a'; 8];
                    word[first] = b;
                    for w in word.iter_mut().skip(first + 1) {
                        *w = later;
                    }
                    let mask = special_bytes(u64::from_le_bytes(word));
                    assert_eq!(mask.trailing_zeros() / 8, first as u32, "{word:?}");
                }
            }
        }
    }

    #[test]
    fn special_bytes_are_found_in_any_lane() {
        for filler in [b'a', b' ', b'!', b'#', b'[', b']', 0x7f, 0x80, 0xe2, 0xff] {
            for lane in 0..8 {
                for b in 0u8..=255 {
                    let mut word = [filler; 8];
                    word[lane] = b;
                    let special = b == b'"' || b == b'\\' || b < 0x20;
                    assert_eq!(
                        has_special_byte(u64::from_le_bytes(word)),
                        special,
                        "{b:#x} at {lane} among {filler:#x}"
                    );
                }
            }
        }
    }

    #[test]
    fn common_shapes_decode_as_the_serde_path_does() {
        let sig = fast(ADD);
        assert_eq!(sig.args[1].value, serde_json::json!(-2));
        for text in corpus() {
            fast(&text);
        }
        // The public entry point takes it too.
        assert_eq!(
            Signature::from_slice(ADD.as_bytes()).unwrap(),
            slow(ADD).unwrap()
        );
    }

    #[test]
    fn other_shapes_are_left_to_the_serde_path() {
        let cases = [
            // Valid, but not read here.
            r#"{"Name":"a\"b"}"#,
            r#"{"Name":"\u0061"}"#,
            r#"{"N\u0061me":"a"}"#,
            r#"{"Args":[{"Value":1.5}]}"#,
            r#"{"Args":[{"Value":1e3}]}"#,
            r#"{"Args":[{"Value":-0}]}"#,
            r#"{"Args":[{"Value":18446744073709551616}]}"#,
            r#"{"Args":[{"Value":[1]}]}"#,
            r#"{"Args":[{"Value":{}}]}"#,
            r#"{"Args":[{"Other":1}]}"#,
            r#"{"Headers":{"z":{"k":[true,null]}}}"#,
            r#"{"Index":3}"#,
            // machinist's `CreatedAt` when it is no time: kept as an unknown key is.
            r#"{"CreatedAt":"yesterday"}"#,
            r#"{"CreatedAt":5}"#,
            // Errors.
            r#"{"Priority":256}"#,
            r#"{"Priority":-1}"#,
            r#"{"RetryCount":9223372036854775808}"#,
            r#"{"RetryCount":01}"#,
            r#"{"RetryCount":"3"}"#,
            r#"{"ETA":"yesterday"}"#,
            r#"{"ETA":5}"#,
            r#"{"Name":"a	b"}"#,
            r#"{"Name":"a",}"#,
            r#"{"Name":"a"} x"#,
            r#"{"Name":"a""#,
            r#"{"Args":[1]}"#,
            r#"{"Args":[{},]}"#,
            r#"{"OnSuccess":{}}"#,
            r#"{"ChordCallback":[]}"#,
            "[1,2]",
            "null",
            "",
        ];
        for text in cases {
            assert_eq!(signature(text), None, "{text}");
        }
        // Deeper than the fast path goes: left to the serde path.
        let mut deep = String::from("{}");
        for _ in 0..=MAX_DEPTH + 1 {
            deep = format!(r#"{{"ChordCallback":{deep}}}"#);
        }
        assert_eq!(signature(&deep), None);
        assert!(slow(&deep).is_some());
    }

    /// Stored states of every shape the state fast path reads.
    fn state_corpus() -> Vec<String> {
        let at = chrono::DateTime::from_timestamp(1_700_000_000, 297_041_550).unwrap();
        let mut pending = TaskState::pending("task_1", "add");
        pending.created_at = Some(at);
        let mut dynamo = TaskState::started("task_2");
        dynamo.ttl = 1_800_000_000;
        vec![
            String::from_utf8(pending.to_vec().unwrap()).unwrap(),
            String::from_utf8(TaskState::received("task_1").to_vec().unwrap()).unwrap(),
            String::from_utf8(TaskState::retry("task_1").to_vec().unwrap()).unwrap(),
            String::from_utf8(dynamo.to_vec().unwrap()).unwrap(),
            r#"{"TaskUUID":"task_3","TaskName":"","State":"FAILURE","Results":null,"Error":"boom","CreatedAt":"0001-01-01T00:00:00Z","TTL":0}"#.to_owned(),
            r#" { "taskuuid" : "a" , "STATE" : "SOMETHING" , "createdat" : "2024-05-01T10:00:28.29704155+02:00" , "ttl" : -5 } "#.to_owned(),
            r#"{"TaskUUID":null,"TaskName":null,"State":null,"Results":null,"Error":null,"CreatedAt":null,"TTL":null}"#.to_owned(),
            r#"{"TaskUUID":"a","TaskUUID":"b","State":"PENDING","State":"SUCCESS"}"#.to_owned(),
            "{}".to_owned(),
        ]
    }

    fn slow_state(text: &str) -> Option<TaskState> {
        serde_json::from_str(text).ok()
    }

    #[test]
    fn states_decode_as_the_serde_path_does() {
        for text in state_corpus() {
            let fast = task_state(&text).unwrap_or_else(|| panic!("not on the fast path: {text}"));
            assert_eq!(Some(&fast), slow_state(&text).as_ref(), "{text}");
        }
        let first = &state_corpus()[0];
        let st = task_state(first).unwrap();
        assert_eq!(
            (st.task_uuid.as_str(), st.task_name.as_str()),
            ("task_1", "add")
        );
        assert_eq!(st.state, State::Pending);
        assert!(st.created_at.is_some());
        // The public entry point takes it too.
        assert_eq!(TaskState::from_slice(first.as_bytes()).unwrap(), st);
        // Left to the serde path: results, escapes, unknown keys, errors.
        for text in [
            r#"{"TaskUUID":"a","State":"SUCCESS","Results":[{"Type":"int64","Value":3}]}"#,
            r#"{"TaskUUID":"a","Results":[]}"#,
            r#"{"Error":"a\"b"}"#,
            r#"{"TaskUUID":"a","Extra":1}"#,
            r#"{"CreatedAt":"yesterday"}"#,
            r#"{"CreatedAt":5}"#,
            r#"{"TTL":1.5}"#,
            r#"{"TTL":"3"}"#,
            r#"{"State":7}"#,
            r#"{"TaskUUID":"a",}"#,
            r#"{"TaskUUID":"a"} x"#,
            "[]",
            "",
        ] {
            assert_eq!(task_state(text), None, "{text}");
        }
        assert!(
            TaskState::from_slice(
                br#"{"TaskUUID":"a","State":"SUCCESS","Results":[{"Type":"int64","Value":3}]}"#
            )
            .unwrap()
            .results
            .is_some(),
            "the serde path decodes what the fast path leaves"
        );
    }

    /// Every one-byte change of every stored state: whatever the fast path accepts, the serde
    /// path decodes to the same state.
    #[test]
    fn state_mutations_never_decode_differently() {
        let accepted = agree_on_mutations(&state_corpus(), task_state, slow_state);
        assert!(accepted > 500, "{accepted}");
    }

    /// Decodes every mutation of every text of `corpus` with `fast`: each one it accepts,
    /// `slow` decodes to the same value. Returns how many it accepted.
    fn agree_on_mutations<T: PartialEq + std::fmt::Debug>(
        corpus: &[String],
        fast: fn(&str) -> Option<T>,
        slow: fn(&str) -> Option<T>,
    ) -> usize {
        let mut accepted = 0;
        for m in corpus.iter().flat_map(|t| mutated(t)) {
            if let Some(value) = fast(&m) {
                accepted += 1;
                assert_eq!(Some(value), slow(&m), "{m}");
            }
        }
        accepted
    }

    /// `text` with each byte replaced by, and preceded by, each of a few JSON-significant
    /// bytes (where the result is UTF-8), then each prefix of it.
    fn mutated(text: &str) -> Vec<String> {
        let bytes = text.as_bytes();
        let mut out = Vec::new();
        for i in 0..bytes.len() {
            for b in [
                b'"', b'\\', b',', b'}', b']', b'{', b'0', b'-', b'.', b'e', b' ', b'n', b'x',
            ] {
                for replace in [true, false] {
                    let mut m = bytes[..i].to_vec();
                    m.push(b);
                    m.extend_from_slice(&bytes[i + usize::from(replace)..]);
                    out.extend(String::from_utf8(m));
                }
            }
            if text.is_char_boundary(i) {
                out.push(text[..i].to_owned());
            }
        }
        out
    }

    /// Every one-byte change of every corpus message: whatever the fast path accepts, the serde
    /// path decodes to the same signature.
    #[test]
    fn mutations_never_decode_differently() {
        let accepted = agree_on_mutations(&corpus(), signature, slow);
        assert!(accepted > 1000, "{accepted}");
    }
}
