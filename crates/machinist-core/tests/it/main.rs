//! Integration tests.

mod config;
mod hooks;
#[cfg(feature = "otel")]
mod otel;
mod outage;
mod signals;
mod wire;
