//! Typed values on the wire: [`Arg`] (a task argument) and [`TaskResult`] (a returned value).
//! Both pair a Go type name (`"int64"`, `"[]string"` …) with a JSON value; [`crate::types`] says
//! which names exist and how values convert to and from Rust.

use serde_json::Value;

use crate::types::{GoValue, IntoArg, TypeError};

/// One positional argument: `{"Name": "", "Type": "int64", "Value": 1}`.
#[derive(Debug, Clone, PartialEq)]
pub struct Arg {
    /// `Name`: always emitted, never used by a worker.
    pub name: String,
    /// `Type`: a Go type name from [`crate::types::TYPE_NAMES`].
    pub type_name: String,
    /// `Value`: the JSON value, as Go encodes it (`[]uint8` as base64 text).
    pub value: Value,
}

impl Arg {
    /// An argument from a Rust value (`Arg::new(1i64)` → `{"Type":"int64","Value":1}`).
    pub fn new(value: impl IntoArg) -> Self {
        let (type_name, value) = value.into_arg();
        Arg {
            name: String::new(),
            type_name: type_name.to_owned(),
            value,
        }
    }

    /// An argument with an explicit Go type name and JSON value, checked against Go's rules.
    pub fn typed(type_name: &str, value: Value) -> Result<Self, TypeError> {
        GoValue::decode(type_name, &value)?;
        Ok(Arg {
            name: String::new(),
            type_name: type_name.to_owned(),
            value,
        })
    }

    /// Sets the (informational) `Name`.
    pub fn named(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// Decodes the value by its type name into a dynamic [`GoValue`].
    pub fn decode(&self) -> Result<GoValue, TypeError> {
        GoValue::decode(&self.type_name, &self.value)
    }
}

/// One returned value: `{"Type": "int64", "Value": 2}`.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskResult {
    /// `Type`: a Go type name from [`crate::types::TYPE_NAMES`].
    pub type_name: String,
    /// `Value`: the JSON value.
    pub value: Value,
}

impl TaskResult {
    /// A result from a Rust value.
    pub fn new(value: impl IntoArg) -> Self {
        let (type_name, value) = value.into_arg();
        TaskResult {
            type_name: type_name.to_owned(),
            value,
        }
    }

    /// Decodes the value by its type name into a dynamic [`GoValue`].
    pub fn decode(&self) -> Result<GoValue, TypeError> {
        GoValue::decode(&self.type_name, &self.value)
    }

    /// This result as an argument of the same type (how results are appended to callbacks).
    pub fn to_arg(&self) -> Arg {
        Arg {
            name: String::new(),
            type_name: self.type_name.clone(),
            value: self.value.clone(),
        }
    }
}
