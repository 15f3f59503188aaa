//! The conformance suite: every scenario on its own database file, and again on
//! `sqlite::memory:`.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use machinist_core::Config;
use machinist_sqlite::{SqliteOptions, SqliteStore};
use machinist_testkit::{Adapters, Factory};

use crate::common::{location, remove_db};

/// The lease the suite runs with: a dropped delivery must come back within its 10 s waits.
const LEASE: Duration = Duration::from_secs(2);

fn options(config: &Config) -> SqliteOptions {
    SqliteOptions::from_config(config).with_lease(LEASE)
}

fn adapters(store: &SqliteStore) -> Adapters {
    Adapters {
        broker: Arc::new(store.broker()),
        backend: Arc::new(store.backend()),
        lock: Arc::new(store.lock()),
    }
}

/// One database file per scenario, removed when the scenario passed.
pub struct FileFactory;

fn file_for(namespace: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join("machinist-sqlite-tests");
    std::fs::create_dir_all(&dir).expect("create the test directory");
    dir.join(format!("{namespace}.db"))
}

#[async_trait]
impl Factory for FileFactory {
    async fn adapters(&self, namespace: &str, config: &Config) -> Adapters {
        let path = file_for(namespace);
        remove_db(&path);
        let store = SqliteStore::open(&location(&path), options(config)).expect("open store");
        adapters(&store)
    }

    async fn teardown(&self, namespace: &str, _adapters: &Adapters) {
        remove_db(&file_for(namespace));
    }
}

/// A private in-memory database per scenario.
pub struct MemoryFactory;

#[async_trait]
impl Factory for MemoryFactory {
    async fn adapters(&self, _namespace: &str, config: &Config) -> Adapters {
        let store = SqliteStore::open("sqlite::memory:", options(config)).expect("open store");
        adapters(&store)
    }
}

mod file {
    machinist_testkit::conformance_tests!(crate::conformance::FileFactory);
}

mod memory {
    machinist_testkit::conformance_tests!(crate::conformance::MemoryFactory);
}
