//! The environment layer: Go's variable names (and the prefixed forms Go's envconfig tries
//! first), plus `MACHINIST_*` for machinist's own fields. See
//! [`Config::apply_env_with`](super::Config::apply_env_with).

use super::fields::{FIELDS, Input};
use super::{Config, ConfigError};

/// Reads a variable of the process environment (non-UTF-8 values are taken lossily and then
/// usually rejected by the field).
pub(crate) fn process_env(name: &str) -> Option<String> {
    std::env::var_os(name).map(|v| v.to_string_lossy().into_owned())
}

/// Applies every variable `lookup` knows to `config`; stops at the first bad value.
pub(crate) fn apply(
    config: &mut Config,
    mut lookup: impl FnMut(&str) -> Option<String>,
) -> Result<(), ConfigError> {
    for field in FIELDS {
        let Some((var, value)) = field
            .env
            .iter()
            .find_map(|var| lookup(var).map(|value| (*var, value)))
        else {
            continue;
        };
        (field.set)(config, &Input::Str(&value)).map_err(|message| ConfigError::Env {
            var: var.to_owned(),
            message,
        })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::time::Duration;

    use super::*;

    fn env(pairs: &[(&str, &str)]) -> impl FnMut(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        move |k| map.get(k).cloned()
    }

    #[test]
    fn go_test_env() {
        // Go's v2/config/test.env.
        let c = Config::from_env_with(env(&[
            ("BROKER", "broker"),
            ("DEFAULT_QUEUE", "default_queue"),
            ("RESULT_BACKEND", "result_backend"),
            ("RESULTS_EXPIRE_IN", "123456"),
            ("AMQP_BINDING_KEY", "binding_key"),
            ("AMQP_EXCHANGE", "exchange"),
            ("AMQP_EXCHANGE_TYPE", "exchange_type"),
            ("AMQP_PREFETCH_COUNT", "123"),
            ("AMQP_QUEUE_BINDING_ARGS", "image-type:png,x-match:any"),
        ]))
        .expect("env");
        assert_eq!(c.broker, "broker");
        assert_eq!(c.default_queue, "default_queue");
        assert_eq!(c.result_backend, "result_backend");
        assert_eq!(c.results_expire_in, 123_456);
        assert_eq!(c.amqp.exchange, "exchange");
        assert_eq!(c.amqp.exchange_type, "exchange_type");
        assert_eq!(c.amqp.binding_key, "binding_key");
        assert_eq!(c.amqp.prefetch_count, 123);
        assert_eq!(c.amqp.queue_binding_args["x-match"], "any");
        assert_eq!(c.amqp.queue_binding_args["image-type"], "png");
    }

    #[test]
    fn prefixed_names_win() {
        let c = Config::from_env_with(env(&[
            ("AMQP_EXCHANGE", "plain"),
            ("AMQP_AMQP_EXCHANGE", "prefixed"),
            ("TASK_STATES_TABLE", "t"),
            ("REDIS_REDIS_READ_TIMEOUT", "3"),
        ]))
        .expect("env");
        assert_eq!(c.amqp.exchange, "prefixed");
        assert_eq!(c.dynamodb.task_states_table, "t");
        assert_eq!(c.redis.read_timeout, Duration::from_secs(3));
    }

    #[test]
    fn bad_value_names_the_variable_and_leaves_config_alone() {
        let mut c = Config::default();
        let e = c
            .apply_env_with(env(&[("BROKER", "redis://h"), ("REDIS_MAX_IDLE", "lots")]))
            .expect_err("bad");
        assert_eq!(e.key(), Some("REDIS_MAX_IDLE"));
        assert!(e.to_string().contains("REDIS_MAX_IDLE"), "{e}");
        assert!(e.to_string().contains("`lots`"), "{e}");
        assert_eq!(c, Config::default());

        let e =
            Config::from_env_with(env(&[("AMQP_QUEUE_DECLARE_ARGS", "a:b:c")])).expect_err("bad");
        assert!(e.to_string().contains("key:value"), "{e}");
        let e = Config::from_env_with(env(&[("NO_UNIX_SIGNALS", "")])).expect_err("bad");
        assert_eq!(e.key(), Some("NO_UNIX_SIGNALS"));
    }
}
