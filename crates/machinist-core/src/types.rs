//! The mapping between Rust types and Go Machinery's type names (`wire-format.md` §2.2).
//!
//! Per value: [`IntoArg`] (Rust → `(type name, JSON)`) and [`FromArg`] (JSON + type name → Rust,
//! with Go's rules: integers only from integer literals, floats accept integers, `[]uint8` as
//! base64, out-of-range is an error). Per call: [`IntoArgs`] (what `Signature::args` takes),
//! [`IntoResults`] (what a task returns) and [`FromResults`] (what `AsyncResult` gives back).
//! [`GoValue`] is the dynamic form, for tools that do not know the types in advance.

use std::fmt;

use base64::Engine as _;
use base64::alphabet;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig, STANDARD};
use serde_json::Value;

use crate::arg::{Arg, TaskResult};

/// Every type name a Go Machinery peer understands: 14 scalars and 15 slices.
pub const TYPE_NAMES: [&str; 29] = [
    "bool",
    "int",
    "int8",
    "int16",
    "int32",
    "int64",
    "uint",
    "uint8",
    "uint16",
    "uint32",
    "uint64",
    "float32",
    "float64",
    "string",
    "[]bool",
    "[]int",
    "[]int8",
    "[]int16",
    "[]int32",
    "[]int64",
    "[]uint",
    "[]uint8",
    "[]uint16",
    "[]uint32",
    "[]uint64",
    "[]float32",
    "[]float64",
    "[]byte",
    "[]string",
];

/// A value does not fit the type it claims or the type asked for.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum TypeError {
    /// The type name is not one Go Machinery supports.
    #[error("{0} is not one of supported types")]
    Unsupported(String),
    /// The JSON value is not of the declared type (`"1.5" is not int64`).
    #[error("{value} is not {type_name}")]
    Invalid {
        /// The Go type name.
        type_name: String,
        /// The offending value, as JSON text (shortened).
        value: String,
    },
    /// An integer that does not fit the declared type.
    #[error("{value} overflows {type_name}")]
    OutOfRange {
        /// The Go type name.
        type_name: String,
        /// The offending value, as JSON text.
        value: String,
    },
    /// The declared type cannot be converted to the Rust type asked for.
    #[error("cannot use {type_name} as {rust_type}")]
    Mismatch {
        /// The Go type name in the message.
        type_name: String,
        /// The Rust type asked for.
        rust_type: &'static str,
    },
    /// Fewer or more values than asked for.
    #[error("expected {expected} value(s), got {got}")]
    Count {
        /// How many the caller asked for.
        expected: usize,
        /// How many there were.
        got: usize,
    },
    /// A floating-point value Go cannot encode (NaN or ±Inf).
    #[error("{0} cannot be encoded as JSON (Go rejects NaN and Inf)")]
    NonFinite(f64),
}

/// A Rust value that can be sent as an argument or returned as a result.
///
/// `into_arg` cannot fail: a NaN or ±Inf float (which Go cannot encode) becomes JSON `null`.
/// [`IntoArg::try_into_arg`] (used by every [`IntoResults`] impl) reports it as
/// [`TypeError::NonFinite`] instead.
pub trait IntoArg {
    /// The Go type name and the JSON value, as Go would encode them.
    fn into_arg(self) -> (&'static str, Value);

    /// Like [`IntoArg::into_arg`], but rejects values Go cannot read back: NaN and ±Inf floats
    /// ([`TypeError::NonFinite`]) and, for a hand-built [`GoValue`], a value that does not fit
    /// its type name.
    fn try_into_arg(self) -> Result<(&'static str, Value), TypeError>
    where
        Self: Sized,
    {
        Ok(self.into_arg())
    }
}

/// A Rust value that can be read from an argument or a result.
pub trait FromArg: Sized {
    /// The Go type name this Rust type is written as (for messages that name the argument).
    const GO_TYPE: &'static str;
    /// Decodes `value` declared as `type_name`, following Go's rules.
    fn from_arg(type_name: &str, value: &Value) -> Result<Self, TypeError>;
}

/// What `Signature::args` takes: one value, a tuple of values, or a `Vec<Arg>`.
pub trait IntoArgs {
    /// Appends the arguments to `out`.
    fn into_args(self, out: &mut Vec<Arg>);
}

/// What a task returns on success: `()`, one value, or a tuple of values.
pub trait IntoResults {
    /// The typed results, in order.
    fn into_results(self) -> Result<Vec<TaskResult>, TypeError>;
}

/// What `AsyncResult::results` returns: one value, a tuple, or `Vec<GoValue>`.
pub trait FromResults: Sized {
    /// Decodes `results`; the count must match.
    fn from_results(results: &[TaskResult]) -> Result<Self, TypeError>;
}

/// A value of any supported Go type, decoded by its type name.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum GoValue {
    /// `bool`
    Bool(bool),
    /// `int`, `int8` … `int64`: the name and the value.
    Int(&'static str, i64),
    /// `uint`, `uint8` … `uint64`.
    Uint(&'static str, u64),
    /// `float32`, `float64`.
    Float(&'static str, f64),
    /// `string`
    String(String),
    /// `[]bool`
    BoolSlice(Vec<bool>),
    /// `[]int` … `[]int64`.
    IntSlice(&'static str, Vec<i64>),
    /// `[]uint`, `[]uint16` … `[]uint64`.
    UintSlice(&'static str, Vec<u64>),
    /// `[]uint8` and `[]byte` (base64 on the wire).
    Bytes(&'static str, Vec<u8>),
    /// `[]float32`, `[]float64`.
    FloatSlice(&'static str, Vec<f64>),
    /// `[]string`
    StringSlice(Vec<String>),
}

// ---------------------------------------------------------------------------------------------
// Type names: what each of the 29 names means.
// ---------------------------------------------------------------------------------------------

/// The element kind of a type name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scalar {
    Bool,
    /// Signed integer of the given width in bits.
    Int(u32),
    /// Unsigned integer of the given width in bits.
    Uint(u32),
    /// Float of the given width in bits.
    Float(u32),
    Str,
}

/// A type name: one value or a slice of values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Shape {
    One(Scalar),
    Many(Scalar),
}

fn scalar_of(name: &str) -> Option<Scalar> {
    Some(match name {
        "bool" => Scalar::Bool,
        "int" | "int64" => Scalar::Int(64),
        "int8" => Scalar::Int(8),
        "int16" => Scalar::Int(16),
        "int32" => Scalar::Int(32),
        "uint" | "uint64" => Scalar::Uint(64),
        "uint8" | "byte" => Scalar::Uint(8),
        "uint16" => Scalar::Uint(16),
        "uint32" => Scalar::Uint(32),
        "float32" => Scalar::Float(32),
        "float64" => Scalar::Float(64),
        "string" => Scalar::Str,
        _ => return None,
    })
}

/// The canonical (static) spelling of a supported type name and its shape.
fn lookup(type_name: &str) -> Result<(&'static str, Shape), TypeError> {
    // The types of nearly every argument and result, without the table search.
    match type_name {
        "int64" => return Ok(("int64", Shape::One(Scalar::Int(64)))),
        "string" => return Ok(("string", Shape::One(Scalar::Str))),
        "float64" => return Ok(("float64", Shape::One(Scalar::Float(64)))),
        _ => {}
    }
    let unsupported = || TypeError::Unsupported(type_name.to_owned());
    let name = TYPE_NAMES
        .iter()
        .copied()
        .find(|n| *n == type_name)
        .ok_or_else(unsupported)?;
    let shape = match name.strip_prefix("[]") {
        Some(elem) => Shape::Many(scalar_of(elem).ok_or_else(unsupported)?),
        None => Shape::One(scalar_of(name).ok_or_else(unsupported)?),
    };
    Ok((name, shape))
}

/// `"[]int8"` → `"int8"` (for messages about one element).
fn elem_name(name: &'static str) -> &'static str {
    name.strip_prefix("[]").unwrap_or(name)
}

// ---------------------------------------------------------------------------------------------
// Errors.
// ---------------------------------------------------------------------------------------------

/// A JSON value as text for an error message, cut to a readable length.
fn show(value: &Value) -> String {
    const MAX: usize = 64;
    let text = value.to_string();
    if text.chars().count() <= MAX {
        return text;
    }
    let mut short: String = text.chars().take(MAX - 1).collect();
    short.push('…');
    short
}

fn invalid(type_name: &str, value: &Value) -> TypeError {
    TypeError::Invalid {
        type_name: type_name.to_owned(),
        value: show(value),
    }
}

fn out_of_range(type_name: &str, value: impl fmt::Display) -> TypeError {
    TypeError::OutOfRange {
        type_name: type_name.to_owned(),
        value: value.to_string(),
    }
}

fn mismatch(type_name: &str, rust_type: &'static str) -> TypeError {
    TypeError::Mismatch {
        type_name: type_name.to_owned(),
        rust_type,
    }
}

// ---------------------------------------------------------------------------------------------
// Decoding one JSON value by Go's rules (`v2/tasks/reflect.go`).
// ---------------------------------------------------------------------------------------------

fn decode_bool(name: &str, value: &Value) -> Result<bool, TypeError> {
    value.as_bool().ok_or_else(|| invalid(name, value))
}

fn decode_string(name: &str, value: &Value) -> Result<String, TypeError> {
    match value {
        Value::String(s) => Ok(s.clone()),
        _ => Err(invalid(name, value)),
    }
}

/// Signed: integer literals only, range-checked against `bits`.
fn decode_int(name: &str, bits: u32, value: &Value) -> Result<i64, TypeError> {
    let Value::Number(n) = value else {
        return Err(invalid(name, value));
    };
    if let Some(i) = n.as_i64() {
        let fits = bits >= 64 || {
            let half = 1i64 << (bits - 1);
            (-half..half).contains(&i)
        };
        if fits {
            Ok(i)
        } else {
            Err(out_of_range(name, i))
        }
    } else if n.is_u64() {
        Err(out_of_range(name, n))
    } else {
        Err(invalid(name, value))
    }
}

/// Unsigned: non-negative integer literals only (Go's `ParseUint`), range-checked.
fn decode_uint(name: &str, bits: u32, value: &Value) -> Result<u64, TypeError> {
    let Value::Number(n) = value else {
        return Err(invalid(name, value));
    };
    match n.as_u64() {
        Some(u) if bits >= 64 || u < (1u64 << bits) => Ok(u),
        Some(u) => Err(out_of_range(name, u)),
        // A negative integer or a float: Go's `ParseUint` rejects the text.
        None => Err(invalid(name, value)),
    }
}

/// Floats: any JSON number; `float32` must fit (finite values beyond `f32::MAX` are rejected)
/// and is returned as the `f64` of its shortest decimal form, so it prints as Go prints it.
fn decode_float(name: &str, bits: u32, value: &Value) -> Result<f64, TypeError> {
    let Value::Number(n) = value else {
        return Err(invalid(name, value));
    };
    let f = n.as_f64().ok_or_else(|| invalid(name, value))?;
    if !f.is_finite() {
        return Err(out_of_range(name, n));
    }
    if bits == 32 {
        narrow_f32(name, f).map(widen_f32)
    } else {
        Ok(f)
    }
}

/// `f64` → `f32`, rejecting finite values that become infinite.
fn narrow_f32(name: &str, f: f64) -> Result<f32, TypeError> {
    let g = f as f32;
    if g.is_infinite() && f.is_finite() {
        Err(out_of_range(name, f))
    } else {
        Ok(g)
    }
}

/// The `f64` nearest to the shortest decimal that round-trips `g` (`0.1f32` → `0.1f64`), which
/// is what Go's encoder writes for a `float32`.
fn widen_f32(g: f32) -> f64 {
    if !g.is_finite() {
        return f64::from(g);
    }
    g.to_string().parse().unwrap_or(f64::from(g))
}

/// A JSON array (or `null` → empty), each element by `elem`.
fn decode_slice<T>(
    name: &str,
    value: &Value,
    elem: impl Fn(&Value) -> Result<T, TypeError>,
) -> Result<Vec<T>, TypeError> {
    match value {
        Value::Null => Ok(Vec::new()),
        Value::Array(items) => items.iter().map(elem).collect(),
        _ => Err(invalid(name, value)),
    }
}

/// Go's `encoding/base64.StdEncoding`: standard alphabet, padding required, non-zero trailing
/// bits tolerated, `\r` and `\n` ignored.
const GO_STD_BASE64: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_allow_trailing_bits(true),
);

fn decode_base64(name: &str, text: &str) -> Result<Vec<u8>, TypeError> {
    let result = if text.contains(['\r', '\n']) {
        let cleaned: String = text.chars().filter(|c| !matches!(c, '\r' | '\n')).collect();
        GO_STD_BASE64.decode(cleaned)
    } else {
        GO_STD_BASE64.decode(text)
    };
    result.map_err(|_| invalid(name, &Value::String(text.to_owned())))
}

/// `[]uint8` / `[]byte`: a base64 string, or an array of integers 0–255.
fn decode_bytes(name: &'static str, value: &Value) -> Result<Vec<u8>, TypeError> {
    if let Value::String(text) = value {
        return decode_base64(name, text);
    }
    let elem = elem_name(name);
    decode_slice(name, value, |e| {
        let u = decode_uint(elem, 8, e)?;
        u8::try_from(u).map_err(|_| out_of_range(elem, u))
    })
}

/// `[]uint*`: an array, or (Go quirk) a base64 string decoded into one element per byte.
fn decode_uint_slice(name: &'static str, bits: u32, value: &Value) -> Result<Vec<u64>, TypeError> {
    if let Value::String(text) = value {
        return Ok(decode_base64(name, text)?
            .into_iter()
            .map(u64::from)
            .collect());
    }
    let elem = elem_name(name);
    decode_slice(name, value, |e| decode_uint(elem, bits, e))
}

// ---------------------------------------------------------------------------------------------
// Encoding, as Go's `encoding/json` writes values.
// ---------------------------------------------------------------------------------------------

/// 2^53: below it every integral `f64` is an exact `i64`.
const F64_EXACT_INT: f64 = 9_007_199_254_740_992.0;

/// A float as Go prints it: integral values as integer literals (`200`, not `200.0`), others in
/// shortest form; NaN and ±Inf (which Go refuses to encode) become `null`.
fn float_json(f: f64) -> Value {
    if !f.is_finite() {
        return Value::Null;
    }
    // `-0.0` keeps its sign (written `-0.0`), like Go's `-0`.
    let negative_zero = f == 0.0 && f.is_sign_negative();
    if f.fract() == 0.0 && f.abs() < F64_EXACT_INT && !negative_zero {
        return Value::from(f as i64);
    }
    serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)
}

fn float32_json(f: f32) -> Value {
    float_json(widen_f32(f))
}

fn non_finite(values: impl IntoIterator<Item = f64>) -> Result<(), TypeError> {
    match values.into_iter().find(|f| !f.is_finite()) {
        Some(f) => Err(TypeError::NonFinite(f)),
        None => Ok(()),
    }
}

fn bytes_json(bytes: &[u8]) -> Value {
    Value::String(STANDARD.encode(bytes))
}

// ---------------------------------------------------------------------------------------------
// GoValue.
// ---------------------------------------------------------------------------------------------

impl GoValue {
    /// Decodes `value` declared as `type_name` with Go's rules: integers only from integer
    /// literals and within the width of the type, floats from any number, `[]uint8`/`[]byte`
    /// from base64 (or an array of bytes), `null` slices as empty.
    ///
    /// `float32` values are held as the `f64` of their shortest decimal form (`0.1`, not
    /// `0.10000000149011612`).
    pub fn decode(type_name: &str, value: &Value) -> Result<GoValue, TypeError> {
        let (name, shape) = lookup(type_name)?;
        let elem = elem_name(name);
        Ok(match shape {
            Shape::One(Scalar::Bool) => GoValue::Bool(decode_bool(name, value)?),
            Shape::One(Scalar::Int(bits)) => GoValue::Int(name, decode_int(name, bits, value)?),
            Shape::One(Scalar::Uint(bits)) => GoValue::Uint(name, decode_uint(name, bits, value)?),
            Shape::One(Scalar::Float(bits)) => {
                GoValue::Float(name, decode_float(name, bits, value)?)
            }
            Shape::One(Scalar::Str) => GoValue::String(decode_string(name, value)?),
            Shape::Many(Scalar::Bool) => {
                GoValue::BoolSlice(decode_slice(name, value, |e| decode_bool(elem, e))?)
            }
            Shape::Many(Scalar::Int(bits)) => GoValue::IntSlice(
                name,
                decode_slice(name, value, |e| decode_int(elem, bits, e))?,
            ),
            Shape::Many(Scalar::Uint(8)) => GoValue::Bytes(name, decode_bytes(name, value)?),
            Shape::Many(Scalar::Uint(bits)) => {
                GoValue::UintSlice(name, decode_uint_slice(name, bits, value)?)
            }
            Shape::Many(Scalar::Float(bits)) => GoValue::FloatSlice(
                name,
                decode_slice(name, value, |e| decode_float(elem, bits, e))?,
            ),
            Shape::Many(Scalar::Str) => {
                GoValue::StringSlice(decode_slice(name, value, |e| decode_string(elem, e))?)
            }
        })
    }

    /// The Go type name (`"int64"`, `"[]uint8"` …).
    pub fn type_name(&self) -> &'static str {
        match self {
            GoValue::Bool(_) => "bool",
            GoValue::String(_) => "string",
            GoValue::BoolSlice(_) => "[]bool",
            GoValue::StringSlice(_) => "[]string",
            GoValue::Int(name, _)
            | GoValue::Uint(name, _)
            | GoValue::Float(name, _)
            | GoValue::IntSlice(name, _)
            | GoValue::UintSlice(name, _)
            | GoValue::Bytes(name, _)
            | GoValue::FloatSlice(name, _) => name,
        }
    }

    /// The JSON value as Go encodes it: `[]uint8`/`[]byte` as base64, integral floats as integer
    /// literals, NaN/±Inf as `null` (Go cannot encode them; see [`IntoArg::try_into_arg`]).
    pub fn to_json(&self) -> Value {
        match self {
            GoValue::Bool(b) => Value::Bool(*b),
            GoValue::Int(_, i) => Value::from(*i),
            GoValue::Uint(_, u) => Value::from(*u),
            GoValue::Float(name, f) => float_value_json(name, *f),
            GoValue::String(s) => Value::String(s.clone()),
            GoValue::BoolSlice(v) => Value::Array(v.iter().map(|b| Value::Bool(*b)).collect()),
            GoValue::IntSlice(_, v) => Value::Array(v.iter().map(|i| Value::from(*i)).collect()),
            GoValue::UintSlice(_, v) => Value::Array(v.iter().map(|u| Value::from(*u)).collect()),
            GoValue::Bytes(_, v) => bytes_json(v),
            GoValue::FloatSlice(name, v) => {
                let elem = elem_name(name);
                Value::Array(v.iter().map(|f| float_value_json(elem, *f)).collect())
            }
            GoValue::StringSlice(v) => {
                Value::Array(v.iter().map(|s| Value::String(s.clone())).collect())
            }
        }
    }
}

fn float_value_json(name: &str, f: f64) -> Value {
    if name == "float32" {
        float32_json(f as f32)
    } else {
        float_json(f)
    }
}

impl IntoArg for GoValue {
    fn into_arg(self) -> (&'static str, Value) {
        (self.type_name(), self.to_json())
    }

    /// Rejects NaN/±Inf, and checks a hand-built value against its type name (an
    /// `Int("int8", 300)` or `Int("string", 1)` fails as Go would fail to read it).
    fn try_into_arg(self) -> Result<(&'static str, Value), TypeError> {
        match &self {
            GoValue::Float(_, f) => non_finite([*f])?,
            GoValue::FloatSlice(_, v) => non_finite(v.iter().copied())?,
            _ => {}
        }
        let (name, value) = self.into_arg();
        GoValue::decode(name, &value)?;
        Ok((name, value))
    }
}

/// Go-like float text: shortest form, integral values without a fraction, `NaN`, `+Inf`, `-Inf`.
fn fmt_float(f: &mut fmt::Formatter<'_>, name: &str, x: f64) -> fmt::Result {
    if x.is_nan() {
        f.write_str("NaN")
    } else if x.is_infinite() {
        f.write_str(if x > 0.0 { "+Inf" } else { "-Inf" })
    } else {
        write!(f, "{}", float_value_json(name, x))
    }
}

fn fmt_list<T>(
    f: &mut fmt::Formatter<'_>,
    items: &[T],
    mut each: impl FnMut(&mut fmt::Formatter<'_>, &T) -> fmt::Result,
) -> fmt::Result {
    f.write_str("[")?;
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            f.write_str(", ")?;
        }
        each(f, item)?;
    }
    f.write_str("]")
}

/// Human-readable text: scalars bare (`42`, `true`, `0.5`, a string as is), slices as
/// `[1, 2, 3]` with strings quoted, bytes as a list of numbers.
impl fmt::Display for GoValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GoValue::Bool(b) => write!(f, "{b}"),
            GoValue::Int(_, i) => write!(f, "{i}"),
            GoValue::Uint(_, u) => write!(f, "{u}"),
            GoValue::Float(name, x) => fmt_float(f, name, *x),
            GoValue::String(s) => f.write_str(s),
            GoValue::BoolSlice(v) => fmt_list(f, v, |f, b| write!(f, "{b}")),
            GoValue::IntSlice(_, v) => fmt_list(f, v, |f, i| write!(f, "{i}")),
            GoValue::UintSlice(_, v) => fmt_list(f, v, |f, u| write!(f, "{u}")),
            GoValue::Bytes(_, v) => fmt_list(f, v, |f, b| write!(f, "{b}")),
            GoValue::FloatSlice(name, v) => {
                let elem = elem_name(name);
                fmt_list(f, v, |f, x| fmt_float(f, elem, *x))
            }
            GoValue::StringSlice(v) => fmt_list(f, v, |f, s| write!(f, "{s:?}")),
        }
    }
}

impl FromArg for GoValue {
    /// Any supported type; `interface {}` is how Go spells "any type".
    const GO_TYPE: &'static str = "interface {}";

    fn from_arg(type_name: &str, value: &Value) -> Result<Self, TypeError> {
        GoValue::decode(type_name, value)
    }
}

// ---------------------------------------------------------------------------------------------
// Reading compatible type names into Rust types.
// ---------------------------------------------------------------------------------------------

/// A decoded Go integer of either signedness, before conversion to the Rust type asked for.
#[derive(Debug, Clone, Copy)]
enum Integer {
    Signed(i64),
    Unsigned(u64),
}

impl Integer {
    /// Converts to `T`, range-checked (`go` names `T` in the error).
    fn convert<T: TryFrom<i64> + TryFrom<u64>>(self, go: &str) -> Result<T, TypeError> {
        match self {
            Integer::Signed(i) => T::try_from(i).map_err(|_| out_of_range(go, i)),
            Integer::Unsigned(u) => T::try_from(u).map_err(|_| out_of_range(go, u)),
        }
    }

    fn to_f64(self) -> f64 {
        match self {
            Integer::Signed(i) => i as f64,
            Integer::Unsigned(u) => u as f64,
        }
    }
}

/// Any integer type name (signed or unsigned).
fn read_integer(type_name: &str, value: &Value, rust: &'static str) -> Result<Integer, TypeError> {
    match lookup(type_name)? {
        (name, Shape::One(Scalar::Int(bits))) => decode_int(name, bits, value).map(Integer::Signed),
        (name, Shape::One(Scalar::Uint(bits))) => {
            decode_uint(name, bits, value).map(Integer::Unsigned)
        }
        (name, _) => Err(mismatch(name, rust)),
    }
}

/// Any integer slice type name (including `[]uint8`/`[]byte`).
fn read_integers(
    type_name: &str,
    value: &Value,
    rust: &'static str,
) -> Result<Vec<Integer>, TypeError> {
    match lookup(type_name)? {
        (name, Shape::Many(Scalar::Int(bits))) => {
            let elem = elem_name(name);
            decode_slice(name, value, |e| {
                decode_int(elem, bits, e).map(Integer::Signed)
            })
        }
        (name, Shape::Many(Scalar::Uint(8))) => Ok(decode_bytes(name, value)?
            .into_iter()
            .map(|b| Integer::Unsigned(u64::from(b)))
            .collect()),
        (name, Shape::Many(Scalar::Uint(bits))) => Ok(decode_uint_slice(name, bits, value)?
            .into_iter()
            .map(Integer::Unsigned)
            .collect()),
        (name, _) => Err(mismatch(name, rust)),
    }
}

/// A float or integer type name, as `f64`.
fn read_float(type_name: &str, value: &Value, rust: &'static str) -> Result<f64, TypeError> {
    match lookup(type_name)? {
        (name, Shape::One(Scalar::Float(bits))) => decode_float(name, bits, value),
        (_, Shape::One(Scalar::Int(_) | Scalar::Uint(_))) => {
            read_integer(type_name, value, rust).map(Integer::to_f64)
        }
        (name, _) => Err(mismatch(name, rust)),
    }
}

/// A float or integer slice type name, as `f64`s.
fn read_floats(type_name: &str, value: &Value, rust: &'static str) -> Result<Vec<f64>, TypeError> {
    match lookup(type_name)? {
        (name, Shape::Many(Scalar::Float(bits))) => {
            let elem = elem_name(name);
            decode_slice(name, value, |e| decode_float(elem, bits, e))
        }
        (_, Shape::Many(Scalar::Int(_) | Scalar::Uint(_))) => {
            Ok(read_integers(type_name, value, rust)?
                .into_iter()
                .map(Integer::to_f64)
                .collect())
        }
        (name, _) => Err(mismatch(name, rust)),
    }
}

/// Exactly the scalar or slice kind `want` (bool and string types).
fn read_exact(type_name: &str, rust: &'static str, want: Shape) -> Result<&'static str, TypeError> {
    match lookup(type_name)? {
        (name, shape) if shape == want => Ok(name),
        (name, _) => Err(mismatch(name, rust)),
    }
}

// ---------------------------------------------------------------------------------------------
// IntoArg / FromArg for the Rust types.
// ---------------------------------------------------------------------------------------------

impl IntoArg for bool {
    fn into_arg(self) -> (&'static str, Value) {
        ("bool", Value::Bool(self))
    }
}

impl FromArg for bool {
    const GO_TYPE: &'static str = "bool";
    fn from_arg(type_name: &str, value: &Value) -> Result<Self, TypeError> {
        let name = read_exact(type_name, "bool", Shape::One(Scalar::Bool))?;
        decode_bool(name, value)
    }
}

impl IntoArg for String {
    fn into_arg(self) -> (&'static str, Value) {
        ("string", Value::String(self))
    }
}

impl IntoArg for &str {
    fn into_arg(self) -> (&'static str, Value) {
        ("string", Value::String(self.to_owned()))
    }
}

impl FromArg for String {
    const GO_TYPE: &'static str = "string";
    fn from_arg(type_name: &str, value: &Value) -> Result<Self, TypeError> {
        let name = read_exact(type_name, "String", Shape::One(Scalar::Str))?;
        decode_string(name, value)
    }
}

impl IntoArg for Vec<bool> {
    fn into_arg(self) -> (&'static str, Value) {
        (
            "[]bool",
            Value::Array(self.into_iter().map(Value::Bool).collect()),
        )
    }
}

impl FromArg for Vec<bool> {
    const GO_TYPE: &'static str = "[]bool";
    fn from_arg(type_name: &str, value: &Value) -> Result<Self, TypeError> {
        let name = read_exact(type_name, "Vec<bool>", Shape::Many(Scalar::Bool))?;
        decode_slice(name, value, |e| decode_bool("bool", e))
    }
}

impl IntoArg for Vec<String> {
    fn into_arg(self) -> (&'static str, Value) {
        (
            "[]string",
            Value::Array(self.into_iter().map(Value::String).collect()),
        )
    }
}

impl IntoArg for Vec<&str> {
    fn into_arg(self) -> (&'static str, Value) {
        let items = self.into_iter().map(|s| Value::String(s.to_owned()));
        ("[]string", Value::Array(items.collect()))
    }
}

impl FromArg for Vec<String> {
    const GO_TYPE: &'static str = "[]string";
    fn from_arg(type_name: &str, value: &Value) -> Result<Self, TypeError> {
        let name = read_exact(type_name, "Vec<String>", Shape::Many(Scalar::Str))?;
        decode_slice(name, value, |e| decode_string("string", e))
    }
}

/// Integers: `IntoArg` as `$go`, `FromArg` from any integer type name if the value fits.
macro_rules! integer {
    ($($t:ty => $go:literal as $wide:ty;)*) => {$(
        impl IntoArg for $t {
            fn into_arg(self) -> (&'static str, Value) {
                ($go, Value::from(self as $wide))
            }
        }

        impl FromArg for $t {
            const GO_TYPE: &'static str = $go;
            fn from_arg(type_name: &str, value: &Value) -> Result<Self, TypeError> {
                read_integer(type_name, value, stringify!($t))?.convert($go)
            }
        }
    )*};
}

integer! {
    i8 => "int8" as i64;
    i16 => "int16" as i64;
    i32 => "int32" as i64;
    i64 => "int64" as i64;
    isize => "int" as i64;
    u8 => "uint8" as u64;
    u16 => "uint16" as u64;
    u32 => "uint32" as u64;
    u64 => "uint64" as u64;
    usize => "uint" as u64;
}

/// Integer vectors: `FromArg` from any integer slice type name if every element fits.
macro_rules! integer_vec_from {
    ($($t:ty => $go:literal, $rust:literal;)*) => {$(
        impl FromArg for Vec<$t> {
            const GO_TYPE: &'static str = $go;
            fn from_arg(type_name: &str, value: &Value) -> Result<Self, TypeError> {
                read_integers(type_name, value, $rust)?
                    .into_iter()
                    .map(|i| i.convert(elem_name($go)))
                    .collect()
            }
        }
    )*};
}

integer_vec_from! {
    i8 => "[]int8", "Vec<i8>";
    i16 => "[]int16", "Vec<i16>";
    i32 => "[]int32", "Vec<i32>";
    i64 => "[]int64", "Vec<i64>";
    isize => "[]int", "Vec<isize>";
    u8 => "[]uint8", "Vec<u8>";
    u16 => "[]uint16", "Vec<u16>";
    u32 => "[]uint32", "Vec<u32>";
    u64 => "[]uint64", "Vec<u64>";
    usize => "[]uint", "Vec<usize>";
}

/// Integer vectors other than `Vec<u8>`: `IntoArg` as a JSON array.
macro_rules! integer_vec_into {
    ($($t:ty => $go:literal as $wide:ty;)*) => {$(
        impl IntoArg for Vec<$t> {
            fn into_arg(self) -> (&'static str, Value) {
                let items = self.into_iter().map(|i| Value::from(i as $wide));
                ($go, Value::Array(items.collect()))
            }
        }
    )*};
}

integer_vec_into! {
    i8 => "[]int8" as i64;
    i16 => "[]int16" as i64;
    i32 => "[]int32" as i64;
    i64 => "[]int64" as i64;
    isize => "[]int" as i64;
    u16 => "[]uint16" as u64;
    u32 => "[]uint32" as u64;
    u64 => "[]uint64" as u64;
    usize => "[]uint" as u64;
}

/// `Vec<u8>` is `[]uint8`, base64 on the wire (what Go writes for a `[]byte` result).
impl IntoArg for Vec<u8> {
    fn into_arg(self) -> (&'static str, Value) {
        ("[]uint8", bytes_json(&self))
    }
}

impl IntoArg for f64 {
    fn into_arg(self) -> (&'static str, Value) {
        ("float64", float_json(self))
    }

    fn try_into_arg(self) -> Result<(&'static str, Value), TypeError> {
        non_finite([self])?;
        Ok(self.into_arg())
    }
}

impl FromArg for f64 {
    const GO_TYPE: &'static str = "float64";
    fn from_arg(type_name: &str, value: &Value) -> Result<Self, TypeError> {
        read_float(type_name, value, "f64")
    }
}

impl IntoArg for f32 {
    fn into_arg(self) -> (&'static str, Value) {
        ("float32", float32_json(self))
    }

    fn try_into_arg(self) -> Result<(&'static str, Value), TypeError> {
        non_finite([f64::from(self)])?;
        Ok(self.into_arg())
    }
}

impl FromArg for f32 {
    const GO_TYPE: &'static str = "float32";
    fn from_arg(type_name: &str, value: &Value) -> Result<Self, TypeError> {
        narrow_f32("float32", read_float(type_name, value, "f32")?)
    }
}

impl IntoArg for Vec<f64> {
    fn into_arg(self) -> (&'static str, Value) {
        (
            "[]float64",
            Value::Array(self.into_iter().map(float_json).collect()),
        )
    }

    fn try_into_arg(self) -> Result<(&'static str, Value), TypeError> {
        non_finite(self.iter().copied())?;
        Ok(self.into_arg())
    }
}

impl FromArg for Vec<f64> {
    const GO_TYPE: &'static str = "[]float64";
    fn from_arg(type_name: &str, value: &Value) -> Result<Self, TypeError> {
        read_floats(type_name, value, "Vec<f64>")
    }
}

impl IntoArg for Vec<f32> {
    fn into_arg(self) -> (&'static str, Value) {
        (
            "[]float32",
            Value::Array(self.into_iter().map(float32_json).collect()),
        )
    }

    fn try_into_arg(self) -> Result<(&'static str, Value), TypeError> {
        non_finite(self.iter().map(|f| f64::from(*f)))?;
        Ok(self.into_arg())
    }
}

impl FromArg for Vec<f32> {
    const GO_TYPE: &'static str = "[]float32";
    fn from_arg(type_name: &str, value: &Value) -> Result<Self, TypeError> {
        read_floats(type_name, value, "Vec<f32>")?
            .into_iter()
            .map(|f| narrow_f32("float32", f))
            .collect()
    }
}

// ---------------------------------------------------------------------------------------------
// IntoArgs / IntoResults / FromResults.
// ---------------------------------------------------------------------------------------------

/// One argument.
impl<T: IntoArg> IntoArgs for T {
    fn into_args(self, out: &mut Vec<Arg>) {
        out.push(Arg::new(self));
    }
}

/// No arguments.
impl IntoArgs for () {
    fn into_args(self, _out: &mut Vec<Arg>) {}
}

/// Ready-made arguments, as they are.
impl IntoArgs for Arg {
    fn into_args(self, out: &mut Vec<Arg>) {
        out.push(self);
    }
}

/// Ready-made arguments, as they are.
impl IntoArgs for Vec<Arg> {
    fn into_args(self, out: &mut Vec<Arg>) {
        out.extend(self);
    }
}

/// No results.
impl IntoResults for () {
    fn into_results(self) -> Result<Vec<TaskResult>, TypeError> {
        Ok(Vec::new())
    }
}

fn task_result(value: impl IntoArg) -> Result<TaskResult, TypeError> {
    let (type_name, value) = value.try_into_arg()?;
    Ok(TaskResult {
        type_name: type_name.to_owned(),
        value,
    })
}

/// One result; fails on NaN/±Inf ([`TypeError::NonFinite`]).
impl<T: IntoArg> IntoResults for T {
    fn into_results(self) -> Result<Vec<TaskResult>, TypeError> {
        Ok(vec![task_result(self)?])
    }
}

/// Ready-made results, as they are (any type name; Go stores what it cannot read back too).
impl IntoResults for Vec<TaskResult> {
    fn into_results(self) -> Result<Vec<TaskResult>, TypeError> {
        Ok(self)
    }
}

/// No results expected.
impl FromResults for () {
    fn from_results(results: &[TaskResult]) -> Result<Self, TypeError> {
        expect_count(results, 0)
    }
}

fn expect_count(results: &[TaskResult], expected: usize) -> Result<(), TypeError> {
    if results.len() == expected {
        Ok(())
    } else {
        Err(TypeError::Count {
            expected,
            got: results.len(),
        })
    }
}

/// Exactly one result.
impl<T: FromArg> FromResults for T {
    fn from_results(results: &[TaskResult]) -> Result<Self, TypeError> {
        expect_count(results, 1)?;
        match results {
            [r] => T::from_arg(&r.type_name, &r.value),
            _ => Err(TypeError::Count {
                expected: 1,
                got: results.len(),
            }),
        }
    }
}

/// Any number of results, each decoded by its own type name.
impl FromResults for Vec<GoValue> {
    fn from_results(results: &[TaskResult]) -> Result<Self, TypeError> {
        results.iter().map(TaskResult::decode).collect()
    }
}

/// The raw results (no decoding, any type names).
impl FromResults for Vec<TaskResult> {
    fn from_results(results: &[TaskResult]) -> Result<Self, TypeError> {
        Ok(results.to_vec())
    }
}

macro_rules! tuples {
    ($( ($n:literal; $($t:ident $v:ident),+) )*) => {$(
        /// Several arguments, in order.
        impl<$($t: IntoArg),+> IntoArgs for ($($t,)+) {
            fn into_args(self, out: &mut Vec<Arg>) {
                let ($($v,)+) = self;
                $(out.push(Arg::new($v));)+
            }
        }

        /// Several results, in order; fails on NaN/±Inf ([`TypeError::NonFinite`]).
        impl<$($t: IntoArg),+> IntoResults for ($($t,)+) {
            fn into_results(self) -> Result<Vec<TaskResult>, TypeError> {
                let ($($v,)+) = self;
                Ok(vec![$(task_result($v)?),+])
            }
        }

        /// Exactly as many results as the tuple has elements.
        impl<$($t: FromArg),+> FromResults for ($($t,)+) {
            fn from_results(results: &[TaskResult]) -> Result<Self, TypeError> {
                match results {
                    [$($v),+] => Ok(($($t::from_arg(&$v.type_name, &$v.value)?,)+)),
                    _ => Err(TypeError::Count { expected: $n, got: results.len() }),
                }
            }
        }
    )*};
}

tuples! {
    (1; A a)
    (2; A a, B b)
    (3; A a, B b, C c)
    (4; A a, B b, C c, D d)
    (5; A a, B b, C c, D d, E e)
    (6; A a, B b, C c, D d, E e, F f)
    (7; A a, B b, C c, D d, E e, F f, G g)
    (8; A a, B b, C c, D d, E e, F f, G g, H h)
    (9; A a, B b, C c, D d, E e, F f, G g, H h, I i)
    (10; A a, B b, C c, D d, E e, F f, G g, H h, I i, J j)
    (11; A a, B b, C c, D d, E e, F f, G g, H h, I i, J j, K k)
    (12; A a, B b, C c, D d, E e, F f, G g, H h, I i, J j, K k, L l)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn lookup_shortcuts_agree_with_the_table() {
        for name in TYPE_NAMES {
            let (canonical, shape) = lookup(name).unwrap();
            assert_eq!(canonical, name);
            let want = match name.strip_prefix("[]") {
                Some(elem) => Shape::Many(scalar_of(elem).unwrap()),
                None => Shape::One(scalar_of(name).unwrap()),
            };
            assert_eq!(shape, want, "{name}");
        }
        assert!(lookup("int65").is_err());
    }

    fn result(type_name: &str, value: Value) -> TaskResult {
        TaskResult {
            type_name: type_name.to_owned(),
            value,
        }
    }

    fn args_as_results(args: impl IntoArgs) -> Vec<TaskResult> {
        let mut out = Vec::new();
        args.into_args(&mut out);
        out.iter()
            .map(|a| result(&a.type_name, a.value.clone()))
            .collect()
    }

    #[test]
    fn every_type_name_decodes_a_valid_value() {
        let samples: [(&str, Value, GoValue); 29] = [
            ("bool", json!(true), GoValue::Bool(true)),
            ("int", json!(-1), GoValue::Int("int", -1)),
            ("int8", json!(-128), GoValue::Int("int8", -128)),
            ("int16", json!(32767), GoValue::Int("int16", 32767)),
            ("int32", json!(-5), GoValue::Int("int32", -5)),
            ("int64", json!(i64::MIN), GoValue::Int("int64", i64::MIN)),
            ("uint", json!(7), GoValue::Uint("uint", 7)),
            ("uint8", json!(255), GoValue::Uint("uint8", 255)),
            ("uint16", json!(65535), GoValue::Uint("uint16", 65535)),
            ("uint32", json!(1), GoValue::Uint("uint32", 1)),
            ("uint64", json!(u64::MAX), GoValue::Uint("uint64", u64::MAX)),
            ("float32", json!(0.5), GoValue::Float("float32", 0.5)),
            ("float64", json!(1.25), GoValue::Float("float64", 1.25)),
            ("string", json!("hi"), GoValue::String("hi".into())),
            (
                "[]bool",
                json!([true, false]),
                GoValue::BoolSlice(vec![true, false]),
            ),
            (
                "[]int",
                json!([1, -2]),
                GoValue::IntSlice("[]int", vec![1, -2]),
            ),
            ("[]int8", json!([-1]), GoValue::IntSlice("[]int8", vec![-1])),
            ("[]int16", json!([2]), GoValue::IntSlice("[]int16", vec![2])),
            ("[]int32", json!(null), GoValue::IntSlice("[]int32", vec![])),
            ("[]int64", json!([3]), GoValue::IntSlice("[]int64", vec![3])),
            ("[]uint", json!([4]), GoValue::UintSlice("[]uint", vec![4])),
            (
                "[]uint8",
                json!("aGk="),
                GoValue::Bytes("[]uint8", b"hi".to_vec()),
            ),
            (
                "[]uint16",
                json!([5]),
                GoValue::UintSlice("[]uint16", vec![5]),
            ),
            (
                "[]uint32",
                json!([6]),
                GoValue::UintSlice("[]uint32", vec![6]),
            ),
            (
                "[]uint64",
                json!([u64::MAX]),
                GoValue::UintSlice("[]uint64", vec![u64::MAX]),
            ),
            (
                "[]float32",
                json!([1, 0.5]),
                GoValue::FloatSlice("[]float32", vec![1.0, 0.5]),
            ),
            (
                "[]float64",
                json!([-3.25e-7]),
                GoValue::FloatSlice("[]float64", vec![-3.25e-7]),
            ),
            (
                "[]byte",
                json!([104, 105]),
                GoValue::Bytes("[]byte", b"hi".to_vec()),
            ),
            (
                "[]string",
                json!(["a", "b"]),
                GoValue::StringSlice(vec!["a".into(), "b".into()]),
            ),
        ];
        for (i, (name, value, want)) in samples.into_iter().enumerate() {
            assert_eq!(name, TYPE_NAMES[i]);
            let got = GoValue::decode(name, &value);
            assert_eq!(got, Ok(want.clone()), "{name}");
            assert_eq!(want.type_name(), name);
            // Re-encoding and decoding gives the same value back.
            let again = GoValue::decode(want.type_name(), &want.to_json());
            assert_eq!(again, Ok(want.clone()), "{name} round trip");
            assert_eq!(want.clone().try_into_arg().map(|(n, _)| n), Ok(name));
        }
    }

    #[test]
    fn integers_only_from_integer_literals() {
        for name in ["int", "int8", "int64", "uint", "uint8", "uint64", "[]int32"] {
            for bad in [json!(1.0), json!(1e3), json!("1"), json!(true)] {
                let value = if name.starts_with("[]") {
                    json!([bad])
                } else {
                    bad
                };
                let err = GoValue::decode(name, &value);
                assert!(
                    matches!(err, Err(TypeError::Invalid { .. })),
                    "{name} {value}: {err:?}"
                );
            }
        }
        let one_point_oh: Value = serde_json::from_str("1.0").expect("json");
        assert!(matches!(
            i64::from_arg("int64", &one_point_oh),
            Err(TypeError::Invalid { .. })
        ));
    }

    #[test]
    fn out_of_range_integers_fail() {
        assert_eq!(
            GoValue::decode("int8", &json!(300)),
            Err(TypeError::OutOfRange {
                type_name: "int8".into(),
                value: "300".into()
            })
        );
        assert!(matches!(
            GoValue::decode("int8", &json!(-129)),
            Err(TypeError::OutOfRange { .. })
        ));
        assert!(matches!(
            GoValue::decode("int64", &json!(u64::MAX)),
            Err(TypeError::OutOfRange { .. })
        ));
        assert!(matches!(
            GoValue::decode("uint16", &json!(65536)),
            Err(TypeError::OutOfRange { .. })
        ));
        assert!(matches!(
            GoValue::decode("[]uint8", &json!([1, 256])),
            Err(TypeError::OutOfRange { .. })
        ));
        // The Rust target is range-checked too.
        assert!(matches!(
            i8::from_arg("int64", &json!(300)),
            Err(TypeError::OutOfRange { .. })
        ));
        assert!(matches!(
            u8::from_arg("int64", &json!(-1)),
            Err(TypeError::OutOfRange { .. })
        ));
    }

    #[test]
    fn uint64_max_round_trips() {
        let text = "18446744073709551615";
        let value: Value = serde_json::from_str(text).expect("json");
        assert_eq!(u64::from_arg("uint64", &value), Ok(u64::MAX));
        let (name, json) = u64::MAX.into_arg();
        assert_eq!(name, "uint64");
        assert_eq!(serde_json::to_string(&json).expect("json"), text);
        assert_eq!(
            GoValue::decode("uint64", &value).map(|v| v.to_json()),
            Ok(value)
        );
    }

    #[test]
    fn negative_into_unsigned_fails() {
        for name in ["uint", "uint8", "uint64"] {
            assert!(GoValue::decode(name, &json!(-1)).is_err(), "{name}");
        }
        assert!(GoValue::decode("[]uint32", &json!([-1])).is_err());
        assert!(u64::from_arg("uint64", &json!(-1)).is_err());
    }

    #[test]
    fn floats() {
        assert_eq!(f64::from_arg("float64", &json!(100)), Ok(100.0));
        assert_eq!(
            GoValue::decode("float64", &json!(100)),
            Ok(GoValue::Float("float64", 100.0))
        );
        // Integer type names are numbers too.
        assert_eq!(f64::from_arg("int32", &json!(-7)), Ok(-7.0));
        assert_eq!(f32::from_arg("float64", &json!(0.1)), Ok(0.1f32));
        assert_eq!(
            Vec::<f64>::from_arg("[]int", &json!([1, 2])),
            Ok(vec![1.0, 2.0])
        );
    }

    #[test]
    fn float32_overflow() {
        assert!(matches!(
            GoValue::decode("float32", &json!(3.5e38)),
            Err(TypeError::OutOfRange { .. })
        ));
        assert!(matches!(
            f32::from_arg("float64", &json!(1e39)),
            Err(TypeError::OutOfRange { .. })
        ));
        // f32::MAX as Go prints it still fits.
        let (_, max) = f32::MAX.into_arg();
        assert_eq!(f32::from_arg("float32", &max), Ok(f32::MAX));
        assert!(GoValue::decode("float64", &json!(3.5e38)).is_ok());
    }

    #[test]
    fn float32_prints_like_go() {
        let (name, value) = 0.1f32.into_arg();
        assert_eq!(name, "float32");
        assert_eq!(value.to_string(), "0.1");
        assert_eq!(
            GoValue::decode("float32", &value),
            Ok(GoValue::Float("float32", 0.1))
        );
    }

    #[test]
    fn bytes() {
        assert_eq!(
            GoValue::decode("[]byte", &json!("aGVsbG8=")),
            Ok(GoValue::Bytes("[]byte", b"hello".to_vec()))
        );
        assert_eq!(
            Vec::<u8>::from_arg("[]byte", &json!("aGVsbG8=")),
            Ok(b"hello".to_vec())
        );
        assert_eq!(
            Vec::<u8>::from_arg("[]uint8", &json!([104, 105])),
            Ok(b"hi".to_vec())
        );
        let (name, value) = b"hello".to_vec().into_arg();
        assert_eq!((name, value), ("[]uint8", json!("aGVsbG8=")));
        // Go quirk: any []uint* from base64.
        assert_eq!(
            GoValue::decode("[]uint16", &json!("aGk=")),
            Ok(GoValue::UintSlice("[]uint16", vec![104, 105]))
        );
        // Go's decoder ignores line breaks.
        assert_eq!(
            Vec::<u8>::from_arg("[]uint8", &json!("aGVs\r\nbG8=")),
            Ok(b"hello".to_vec())
        );
    }

    #[test]
    fn bad_base64_fails() {
        for bad in ["aGVsbG8", "!!!!", "aGVsbG8=="] {
            assert!(
                matches!(
                    GoValue::decode("[]byte", &json!(bad)),
                    Err(TypeError::Invalid { .. })
                ),
                "{bad}"
            );
        }
        assert!(GoValue::decode("[]int64", &json!("aGk=")).is_err());
    }

    #[test]
    fn unknown_type_is_unsupported() {
        let name = "map[string]interface {}";
        let err = GoValue::decode(name, &json!({}));
        assert_eq!(err, Err(TypeError::Unsupported(name.into())));
        let message = err.err().map(|e| e.to_string()).unwrap_or_default();
        assert_eq!(
            message,
            "map[string]interface {} is not one of supported types"
        );
        assert_eq!(
            i64::from_arg("time.Duration", &json!(1)),
            Err(TypeError::Unsupported("time.Duration".into()))
        );
    }

    #[test]
    fn integral_float_is_written_as_integer() {
        let (name, value) = 200.0f64.into_arg();
        assert_eq!(name, "float64");
        assert_eq!(serde_json::to_string(&value).expect("json"), "200");
        assert_eq!(json_text(1.5f64), "1.5");
        assert_eq!(json_text(-0.0f64), "-0.0");
        let big: Value = serde_json::from_str(&json_text(1e300f64)).expect("json");
        assert_eq!(f64::from_arg("float64", &big), Ok(1e300));
    }

    fn json_text(f: f64) -> String {
        f.into_arg().1.to_string()
    }

    #[test]
    fn small_float_round_trips() {
        let value: Value = serde_json::from_str("-3.25e-7").expect("json");
        assert_eq!(f64::from_arg("float64", &value), Ok(-3.25e-7));
        let (_, back) = (-3.25e-7f64).into_arg();
        assert_eq!(back, value);
        assert_eq!(back.to_string(), "-3.25e-7");
    }

    #[test]
    fn compatible_type_names() {
        assert_eq!(i64::from_arg("int32", &json!(-5)), Ok(-5));
        assert_eq!(i64::from_arg("uint8", &json!(5)), Ok(5));
        assert_eq!(isize::from_arg("int", &json!(5)), Ok(5));
        assert_eq!(usize::from_arg("uint64", &json!(5)), Ok(5));
        assert_eq!(
            Vec::<i64>::from_arg("[]uint8", &json!("aGk=")),
            Ok(vec![104, 105])
        );
        assert_eq!(
            String::from_arg("int64", &json!(1)),
            Err(TypeError::Mismatch {
                type_name: "int64".into(),
                rust_type: "String"
            })
        );
        assert!(matches!(
            i64::from_arg("float64", &json!(1)),
            Err(TypeError::Mismatch { .. })
        ));
        assert!(matches!(
            bool::from_arg("string", &json!("true")),
            Err(TypeError::Mismatch { .. })
        ));
        assert!(matches!(
            Vec::<String>::from_arg("string", &json!("a")),
            Err(TypeError::Mismatch { .. })
        ));
        assert_eq!(
            GoValue::from_arg("[]string", &json!(null)),
            Ok(GoValue::StringSlice(vec![]))
        );
    }

    #[test]
    fn non_finite_results_are_rejected() {
        assert_eq!(f64::NAN.into_arg(), ("float64", Value::Null));
        assert_eq!(
            f64::INFINITY.into_results(),
            Err(TypeError::NonFinite(f64::INFINITY))
        );
        assert!(matches!(
            (1i64, vec![1.0f32, f32::NAN]).into_results(),
            Err(TypeError::NonFinite(_))
        ));
        assert!(matches!(
            GoValue::Float("float64", f64::NEG_INFINITY).into_results(),
            Err(TypeError::NonFinite(_))
        ));
        // A hand-built GoValue must fit its type name.
        assert!(matches!(
            GoValue::Int("int8", 300).into_results(),
            Err(TypeError::OutOfRange { .. })
        ));
        // Null is not a float.
        assert!(f64::from_arg("float64", &Value::Null).is_err());
    }

    #[test]
    fn results_and_counts() {
        assert_eq!(().into_results(), Ok(vec![]));
        assert_eq!(42i64.into_results(), Ok(vec![result("int64", json!(42))]));
        let results = (1i64, "a", true).into_results().expect("results");
        assert_eq!(results.len(), 3);
        assert_eq!(
            <(i64, String, bool)>::from_results(&results),
            Ok((1, "a".into(), true))
        );
        assert_eq!(
            i64::from_results(&results),
            Err(TypeError::Count {
                expected: 1,
                got: 3
            })
        );
        assert_eq!(
            <(i64, String)>::from_results(&results),
            Err(TypeError::Count {
                expected: 2,
                got: 3
            })
        );
        assert_eq!(
            <()>::from_results(&results),
            Err(TypeError::Count {
                expected: 0,
                got: 3
            })
        );
        assert_eq!(<()>::from_results(&[]), Ok(()));
        assert_eq!(
            Vec::<GoValue>::from_results(&results),
            Ok(vec![
                GoValue::Int("int64", 1),
                GoValue::String("a".into()),
                GoValue::Bool(true)
            ])
        );
        assert_eq!(
            Vec::<TaskResult>::from_results(&results),
            Ok(results.clone())
        );
        assert_eq!(results.clone().into_results(), Ok(results));
    }

    #[test]
    fn tuple_round_trips_through_args() {
        let args = args_as_results((
            1i8,
            -2i16,
            3i32,
            -4i64,
            5isize,
            6u8,
            7u16,
            8u32,
            u64::MAX,
            10usize,
            0.5f32,
            200.0f64,
        ));
        let names: Vec<&str> = args.iter().map(|r| r.type_name.as_str()).collect();
        assert_eq!(
            names,
            [
                "int8", "int16", "int32", "int64", "int", "uint8", "uint16", "uint32", "uint64",
                "uint", "float32", "float64"
            ]
        );
        type Twelve = (i8, i16, i32, i64, isize, u8, u16, u32, u64, usize, f32, f64);
        assert_eq!(
            Twelve::from_results(&args),
            Ok((1, -2, 3, -4, 5, 6, 7, 8, u64::MAX, 10, 0.5, 200.0))
        );

        let vecs = args_as_results((
            vec![true],
            vec![-1i8],
            vec![1i16],
            vec![1i32],
            vec![1i64],
            vec![1isize],
            vec![1u16],
            vec![1u32],
            vec![1u64],
            vec![1usize],
            vec![0.25f32],
            vec![0.5f64],
        ));
        type Vecs = (
            Vec<bool>,
            Vec<i8>,
            Vec<i16>,
            Vec<i32>,
            Vec<i64>,
            Vec<isize>,
            Vec<u16>,
            Vec<u32>,
            Vec<u64>,
            Vec<usize>,
            Vec<f32>,
            Vec<f64>,
        );
        assert_eq!(
            Vecs::from_results(&vecs),
            Ok((
                vec![true],
                vec![-1],
                vec![1],
                vec![1],
                vec![1],
                vec![1],
                vec![1],
                vec![1],
                vec![1],
                vec![1],
                vec![0.25],
                vec![0.5]
            ))
        );

        let misc = args_as_results((
            b"hi".to_vec(),
            vec!["a", "b"],
            vec![String::from("c")],
            String::from("d"),
        ));
        assert_eq!(
            <(Vec<u8>, Vec<String>, Vec<String>, String)>::from_results(&misc),
            Ok((
                b"hi".to_vec(),
                vec!["a".into(), "b".into()],
                vec!["c".into()],
                "d".into()
            ))
        );
        for r in misc.iter().chain(&args).chain(&vecs) {
            assert!(r.decode().is_ok(), "{r:?}");
        }
    }

    #[test]
    fn into_args_forms() {
        let mut out = Vec::new();
        ().into_args(&mut out);
        assert!(out.is_empty());
        7i64.into_args(&mut out);
        Arg::new("x").into_args(&mut out);
        vec![Arg::new(true), Arg::new(1.5f64)].into_args(&mut out);
        GoValue::Uint("uint32", 3).into_args(&mut out);
        let names: Vec<&str> = out.iter().map(|a| a.type_name.as_str()).collect();
        assert_eq!(names, ["int64", "string", "bool", "float64", "uint32"]);
    }

    #[test]
    fn display() {
        let show = |name: &str, value: Value| {
            GoValue::decode(name, &value)
                .map(|v| v.to_string())
                .unwrap_or_default()
        };
        assert_eq!(show("int8", json!(-3)), "-3");
        assert_eq!(show("float64", json!(200)), "200");
        assert_eq!(show("float32", json!(0.1)), "0.1");
        assert_eq!(show("string", json!("a b")), "a b");
        assert_eq!(show("[]string", json!(["a", "b"])), r#"["a", "b"]"#);
        assert_eq!(show("[]byte", json!("aGk=")), "[104, 105]");
        assert_eq!(GoValue::Float("float64", f64::NAN).to_string(), "NaN");
        assert_eq!(
            GoValue::FloatSlice("[]float64", vec![f64::NEG_INFINITY, 1.5]).to_string(),
            "[-Inf, 1.5]"
        );
    }

    #[test]
    fn error_values_are_shortened() {
        let long = "x".repeat(500);
        match GoValue::decode("int64", &json!(long)) {
            Err(TypeError::Invalid { value, .. }) => assert!(value.chars().count() <= 64),
            other => panic!("unexpected {other:?}"),
        }
    }
}
