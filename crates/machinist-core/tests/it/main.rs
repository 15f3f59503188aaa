//! Integration tests.

mod chords;
mod codec_edges;
mod config;
mod hooks;
#[cfg(feature = "otel")]
mod otel;
mod outage;
mod periodic;
mod signals;
mod wire;
