//! Where a command's [`Config`] comes from: a YAML file (`--config`), then the environment
//! variables of the config (`BROKER`, `RESULT_BACKEND`, `LOCK`, `DEFAULT_QUEUE` …), then the
//! command-line flags, each layer overriding the one before.

use std::path::PathBuf;

use machinist::Config;
use machinist::config::ConfigError;

/// The options every command that reaches a broker or backend takes (also after a
/// subcommand: `inspect pending --broker URL`).
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ConfigArgs {
    /// A YAML configuration file with Go Machinery's keys (`broker`, `result_backend`,
    /// `default_queue` …); environment variables and flags override it.
    #[arg(long, value_name = "FILE", global = true)]
    pub config: Option<PathBuf>,
    /// The broker URL: `sqlite://FILE`, `redis://[:PASSWORD@]HOST:PORT/DB`, `memory` …
    /// (default: `sqlite://machinist.db`).
    #[arg(
        long,
        value_name = "URL",
        env = "BROKER",
        hide_env_values = true,
        global = true
    )]
    pub broker: Option<String>,
    /// The result backend URL (default: `sqlite://machinist.db`).
    #[arg(
        long,
        value_name = "URL",
        env = "RESULT_BACKEND",
        hide_env_values = true,
        global = true
    )]
    pub result_backend: Option<String>,
    /// The lock URL (default: `sqlite://machinist.db`).
    #[arg(
        long,
        value_name = "URL",
        env = "LOCK",
        hide_env_values = true,
        global = true
    )]
    pub lock: Option<String>,
}

impl ConfigArgs {
    /// The effective configuration: file < environment < flags.
    pub fn load(&self) -> anyhow::Result<Config> {
        let mut config = match &self.config {
            // The error names the file, the line and the key.
            Some(path) => Config::from_yaml(path)?,
            None => Config::default(),
        };
        // The error names the variable.
        self.overlay(&mut config)?;
        Ok(config)
    }

    /// Lays the environment, then the flags, over a configuration read from the file (also
    /// after each reload of a followed file).
    pub fn overlay(&self, config: &mut Config) -> Result<(), ConfigError> {
        config.apply_env()?;
        if let Some(url) = &self.broker {
            config.broker.clone_from(url);
        }
        if let Some(url) = &self.result_backend {
            config.result_backend.clone_from(url);
        }
        if let Some(url) = &self.lock {
            config.lock.clone_from(url);
        }
        Ok(())
    }
}
