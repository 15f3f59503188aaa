//! The mapping between Rust types and Go Machinery's type names (`wire-format.md` §2.2).
//!
//! Per value: [`IntoArg`] (Rust → `(type name, JSON)`) and [`FromArg`] (JSON + type name → Rust,
//! with Go's rules: integers only from integer literals, floats accept integers, `[]uint8` as
//! base64, out-of-range is an error). Per call: [`IntoArgs`] (what `Signature::args` takes),
//! [`IntoResults`] (what a task returns) and [`FromResults`] (what `AsyncResult` gives back).
//! [`GoValue`] is the dynamic form, for tools that do not know the types in advance.

use serde_json::Value;

use crate::arg::{Arg, TaskResult};

/// Every type name a Go Machinery peer understands: 14 scalars and 15 slices.
pub const TYPE_NAMES: [&str; 29] = [
    "bool", "int", "int8", "int16", "int32", "int64", "uint", "uint8", "uint16", "uint32",
    "uint64", "float32", "float64", "string", "[]bool", "[]int", "[]int8", "[]int16", "[]int32",
    "[]int64", "[]uint", "[]uint8", "[]uint16", "[]uint32", "[]uint64", "[]float32", "[]float64",
    "[]byte", "[]string",
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
pub trait IntoArg {
    /// The Go type name and the JSON value, as Go would encode them.
    fn into_arg(self) -> (&'static str, Value);
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

// TEMPORARY until the full mapping lands.
impl GoValue {
    /// Decodes `value` declared as `type_name`.
    pub fn decode(type_name: &str, value: &Value) -> Result<GoValue, TypeError> {
        let _ = value;
        Err(TypeError::Unsupported(type_name.to_owned()))
    }
}
