//! Integration tests of machinist-sqlite, in one binary: the conformance suite on files and on
//! `sqlite::memory:`, the crash test with worker processes, bad input, schema handling, and an
//! ignored throughput measurement.

// Test code: a failed unwrap is a failed test (clippy.toml's allowance covers `#[test]`
// functions but not the helpers beside them).
#![allow(clippy::unwrap_used)]

mod bad_input;
mod behaviour;
mod common;
mod conformance;
mod crash;
mod periodic;
mod schema;
mod throughput;
