//! The conformance suite on a 3-master Redis Cluster the test starts on loopback ports, reached
//! through Go's multi-host URL form (`redis://h1:p1,h2:p2,h3:p3`).

use async_trait::async_trait;
use machinist_core::Config;
use machinist_testkit::redis_server::RedisCluster;
use machinist_testkit::{Adapters, Factory};

use crate::common::{adapters, options};

/// Conformance adapters on a fresh cluster per test.
pub struct ClusterFactory {
    pub cluster: RedisCluster,
}

impl ClusterFactory {
    pub fn start() -> Option<Self> {
        Some(ClusterFactory {
            cluster: RedisCluster::start(3)?,
        })
    }
}

#[async_trait]
impl Factory for ClusterFactory {
    async fn adapters(&self, namespace: &str, config: &Config) -> Adapters {
        let opts = options(&self.cluster.url(), namespace, config);
        assert!(opts.is_cluster());
        adapters(opts).await
    }
}

mod conformance {
    machinist_testkit::conformance_tests!(match super::ClusterFactory::start() {
        Some(factory) => factory,
        None => return,
    });
}
