//! In-memory adapters: a [`Broker`](crate::Broker), a [`Backend`](crate::Backend) and a
//! [`Lock`](crate::Lock) that need no network service.
//!
//! They exist for unit tests, the quickstart and users' own tests (Go Machinery's "eager"
//! mode): the whole producer → worker path runs inside one process with the same contracts as
//! the real adapters — ETAs kept by the broker, acknowledgements and at-least-once redelivery,
//! expiring results, an exactly-once chord trigger. Nothing survives the process.

mod backend;
mod broker;
mod lock;

pub use {backend::MemoryBackend, broker::MemoryBroker, lock::MemoryLock};
