//! Integration tests.

#[cfg(feature = "otel")]
mod otel;
mod signals;
mod wire;
