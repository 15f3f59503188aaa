//! Integration tests.

mod hooks;
#[cfg(feature = "otel")]
mod otel;
mod signals;
mod wire;
