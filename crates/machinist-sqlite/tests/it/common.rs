//! Helpers shared by the tests.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// A fresh path for a database file under the system temp dir (nothing exists there yet).
pub fn temp_db(name: &str) -> PathBuf {
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let dir = std::env::temp_dir().join("machinist-sqlite-tests");
    std::fs::create_dir_all(&dir).expect("create the test directory");
    let seq = SEQ.fetch_add(1, Ordering::Relaxed);
    let path = dir.join(format!("{name}-{}-{seq}.db", std::process::id()));
    remove_db(&path);
    path
}

/// Removes a database file and its WAL and shared-memory files.
pub fn remove_db(path: &Path) {
    for suffix in ["", "-wal", "-shm", "-journal"] {
        let mut p = path.as_os_str().to_owned();
        p.push(suffix);
        let _ = std::fs::remove_file(PathBuf::from(p));
    }
}

/// The path as the location string `SqliteStore::open` takes.
pub fn location(path: &Path) -> String {
    path.to_str().expect("utf-8 temp path").to_owned()
}

/// A config with no signal handling and, if given, a default queue.
// `Config` is `#[non_exhaustive]`: it cannot be built with a struct literal here.
#[allow(clippy::field_reassign_with_default)]
pub fn config(default_queue: Option<&str>) -> machinist_core::Config {
    let mut config = machinist_core::Config::default();
    config.no_unix_signals = true;
    if let Some(queue) = default_queue {
        config.default_queue = queue.to_owned();
    }
    config
}
