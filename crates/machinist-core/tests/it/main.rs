//! Integration tests.

mod config;
mod hooks;
#[cfg(feature = "otel")]
mod otel;
mod outage;
mod periodic;
mod signals;
mod wire;
