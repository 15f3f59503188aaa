//! Integration tests.

#[cfg(feature = "otel")]
mod otel;
mod wire;
