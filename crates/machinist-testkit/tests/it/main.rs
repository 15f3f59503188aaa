//! The conformance suite against machinist-core's in-memory adapters.

use std::sync::Arc;

use async_trait::async_trait;
use machinist_core::Config;
use machinist_core::memory::{MemoryBackend, MemoryBroker, MemoryLock};
use machinist_testkit::{Adapters, Factory};

/// Fresh in-memory adapters per scenario: isolation needs no namespace.
struct MemoryFactory;

#[async_trait]
impl Factory for MemoryFactory {
    async fn adapters(&self, _namespace: &str, config: &Config) -> Adapters {
        Adapters {
            broker: Arc::new(MemoryBroker::new()),
            backend: Arc::new(MemoryBackend::new(config.results_ttl())),
            lock: Arc::new(MemoryLock::new()),
        }
    }
}

mod memory {
    machinist_testkit::conformance_tests!(crate::MemoryFactory);
}
