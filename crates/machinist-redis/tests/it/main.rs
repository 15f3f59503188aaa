//! Integration tests of machinist-redis against real `redis-server` processes the tests start
//! themselves (never a server the machine already runs). Without `redis-server` on `PATH` each
//! test prints "skipped: redis-server not found" and passes.

mod bad_input;
mod cluster;
mod common;
mod conformance;
mod crash;
mod interop;
mod periodic;
mod restart;
mod sends;
mod sentinel;
mod state_writes;
mod throughput;
#[cfg(feature = "tls")]
mod tls;
mod waits;
