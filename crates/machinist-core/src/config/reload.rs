//! Hot reload of a YAML config file (Go's `NewFromYaml(path, keepReloading = true)`).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use super::{Config, ConfigError, yaml};

/// Applied after each (re)load of the file, e.g. to layer the environment and flags.
type Overlay = Box<dyn FnMut(&mut Config) -> Result<(), ConfigError> + Send>;

/// A config file that is re-read periodically. The current config is behind a
/// [`watch`] channel: [`ConfigWatcher::current`] reads it, [`ConfigWatcher::subscribe`] hands
/// out receivers to components that follow changes.
///
/// Every period the file is read; when its bytes changed it is parsed (and the overlay
/// applied). Then:
///
/// * changes that apply live (poll periods, concurrency, log level, time limits, result
///   TTL …; see [`crate::config::ConfigChange::applies_live`]) are published and logged at
///   `info`;
/// * changes that need a restart (broker, backend and lock URLs, `default_queue`, AMQP
///   topology, pools …) are logged at `warn` and *not* published: the published config keeps
///   describing what is in effect (so they are logged again at each later change of the file
///   until the process restarts);
/// * a file that cannot be read or parsed is logged at `warn` once, and the current config
///   stays.
///
/// Timing uses `tokio::time`, so it follows a paused test clock. Reloading stops when the
/// watcher and every receiver from [`ConfigWatcher::subscribe`] are dropped.
#[derive(Debug)]
pub struct ConfigWatcher {
    rx: watch::Receiver<Arc<Config>>,
    path: PathBuf,
    period: Duration,
}

impl ConfigWatcher {
    /// Loads `path` and re-reads it every `period`.
    ///
    /// # Panics
    ///
    /// Outside a Tokio runtime (the reloader is a spawned task).
    pub fn start(path: impl AsRef<Path>, period: Duration) -> Result<ConfigWatcher, ConfigError> {
        ConfigWatcher::start_with(path, period, |_| Ok(()))
    }

    /// Loads `path`, applies `overlay` (for example
    /// `|c| c.apply_env()` and then command-line flags, so that each reload keeps the layers
    /// above the file), and re-reads the file every `period`. An overlay error on the first
    /// load is returned; on a reload it is logged and the current config stays.
    ///
    /// # Panics
    ///
    /// Outside a Tokio runtime (the reloader is a spawned task).
    pub fn start_with(
        path: impl AsRef<Path>,
        period: Duration,
        overlay: impl FnMut(&mut Config) -> Result<(), ConfigError> + Send + 'static,
    ) -> Result<ConfigWatcher, ConfigError> {
        let path = path.as_ref().to_path_buf();
        let mut overlay: Overlay = Box::new(overlay);
        let bytes = read_bytes(&path)?;
        let config = load(&path, bytes.clone(), &mut overlay)?;
        let (tx, rx) = watch::channel(Arc::new(config));
        let task = Reloader {
            path: path.clone(),
            period,
            overlay,
            last_bytes: bytes,
            last_error: None,
        };
        tokio::spawn(task.run(tx));
        Ok(ConfigWatcher { rx, path, period })
    }

    /// The config in effect.
    pub fn current(&self) -> Arc<Config> {
        self.rx.borrow().clone()
    }

    /// A receiver that sees each published config.
    pub fn subscribe(&self) -> watch::Receiver<Arc<Config>> {
        self.rx.clone()
    }

    /// Waits until a new config is published and returns it; `None` once reloading stopped.
    pub async fn changed(&mut self) -> Option<Arc<Config>> {
        self.rx.changed().await.ok()?;
        Some(self.rx.borrow_and_update().clone())
    }

    /// The file being watched.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// How often the file is re-read.
    pub fn period(&self) -> Duration {
        self.period
    }
}

fn read_bytes(path: &Path) -> Result<Vec<u8>, ConfigError> {
    std::fs::read(path).map_err(|source| ConfigError::Io {
        file: path.display().to_string(),
        source,
    })
}

fn load(path: &Path, bytes: Vec<u8>, overlay: &mut Overlay) -> Result<Config, ConfigError> {
    let file = path.display().to_string();
    let text = yaml::decode(bytes, &file)?;
    let mut config = yaml::parse(&text, &file)?;
    overlay(&mut config)?;
    Ok(config)
}

struct Reloader {
    path: PathBuf,
    period: Duration,
    overlay: Overlay,
    last_bytes: Vec<u8>,
    last_error: Option<String>,
}

impl Reloader {
    async fn run(mut self, tx: watch::Sender<Arc<Config>>) {
        let start = tokio::time::Instant::now() + self.period;
        let mut ticks = tokio::time::interval_at(start, self.period);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = ticks.tick() => {}
                () = tx.closed() => return,
            }
            self.reload(&tx);
        }
    }

    fn reload(&mut self, tx: &watch::Sender<Arc<Config>>) {
        let file = self.path.display().to_string();
        // A small file read synchronously: keeps the reload deterministic under a paused clock.
        let bytes = match read_bytes(&self.path) {
            Ok(bytes) => bytes,
            Err(e) => return self.failed(&e),
        };
        if bytes == self.last_bytes {
            return;
        }
        self.last_bytes = bytes.clone();
        let new = match load(&self.path, bytes, &mut self.overlay) {
            Ok(config) => config,
            Err(e) => return self.failed(&e),
        };
        self.last_error = None;
        let current = tx.borrow().clone();
        let changes = current.changes(&new);
        if changes.is_empty() {
            tracing::debug!(file = %file, "config file changed; no setting did");
            return;
        }
        for change in &changes {
            if change.applies_live {
                tracing::info!(
                    file = %file,
                    key = change.key,
                    old = %change.old,
                    new = %change.new,
                    "config reloaded: `{}` changed and applies live",
                    change.key
                );
            } else {
                tracing::warn!(
                    file = %file,
                    key = change.key,
                    old = %change.old,
                    new = %change.new,
                    "config reloaded: `{}` changed but needs a restart to take effect",
                    change.key
                );
            }
        }
        if changes.iter().any(|c| c.applies_live) {
            tx.send_replace(Arc::new(current.with_live_changes(&new)));
        }
    }

    fn failed(&mut self, e: &ConfigError) {
        let text = e.to_string();
        if self.last_error.as_deref() != Some(text.as_str()) {
            tracing::warn!(
                file = %self.path.display(),
                error = %text,
                "config reload failed; keeping the current config"
            );
            self.last_error = Some(text);
        }
    }
}
