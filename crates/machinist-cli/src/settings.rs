//! Where a command's [`Config`] comes from: a YAML file (`--config`), then the environment
//! variables of the config (`BROKER`, `RESULT_BACKEND`, `LOCK`, `DEFAULT_QUEUE` …), then the
//! command-line flags, each layer overriding the one before.

use std::path::PathBuf;

use machinist::Config;

/// The options every command that reaches a broker or backend takes.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ConfigArgs {
    /// A YAML configuration file with Go Machinery's keys (`broker`, `result_backend`,
    /// `default_queue` …); environment variables and flags override it.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// The broker URL: `sqlite://FILE`, `memory` … (default: `sqlite://machinist.db`).
    #[arg(long, value_name = "URL", env = "BROKER", hide_env_values = true)]
    pub broker: Option<String>,
    /// The result backend URL (default: `sqlite://machinist.db`).
    #[arg(
        long,
        value_name = "URL",
        env = "RESULT_BACKEND",
        hide_env_values = true
    )]
    pub result_backend: Option<String>,
    /// The lock URL (default: `sqlite://machinist.db`).
    #[arg(long, value_name = "URL", env = "LOCK", hide_env_values = true)]
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
        Ok(config)
    }
}
