//! # machinist-testkit
//!
//! The **conformance suite** every broker, backend and lock adapter of machinist runs (memory
//! now; SQLite, Redis, AMQP … as they land), so that "works on Redis" and "works in memory" mean
//! the same thing.
//!
//! An adapter crate provides a [`Factory`]: given a namespace unique to the test and the
//! [`Config`] the scenario wants, it returns fresh [`Adapters`] (broker, backend, lock) isolated
//! by that namespace (key prefix, queue names, database file …). Then one line in its
//! integration tests:
//!
//! ```ignore
//! machinist_testkit::conformance_tests!(RedisFactory::from_env());
//! ```
//!
//! expands to one `#[tokio::test]` per scenario of [`conformance`], named after it, so a failure
//! names the behaviour that broke. Each scenario builds its own `Server`(s) and worker(s) on the
//! adapters, runs Go Machinery's integration scenarios with their exact expected values
//! (`wire-format.md` §11) plus machinist's own guarantees (bounded retries, exactly-once chords
//! under concurrent finishers, dead letters, time limits, graceful shutdown, inspection), and
//! stops its workers. Every wait is bounded (10 s, and 60 s per scenario) so a broken adapter
//! fails instead of hanging.
//!
//! ## Layout
//!
//! | module | what it holds |
//! |---|---|
//! | [`conformance`] | the scenarios, one `pub async fn` each |
//! | [`tasks`] | Go Machinery's test tasks (`add`, `multiply` …) and probe tasks that report what happened to them |
//! | [`recording`] | a backend wrapper logging every state written |
//!
//! ## What a factory must provide
//!
//! * The scenario sets `config.default_queue = "{namespace}_tasks"` before calling the factory;
//!   adapters honour `config.results_expire_in` (one scenario sets it to 1 s).
//! * Two calls with different namespaces must not see each other's messages, states or locks.
//!   Inspection calls that are not per queue ([`machinist_core::Broker::delayed`]) may list
//!   other namespaces' messages: the scenarios filter by UUID.
//! * A broker with visibility leases must give an undecided (dropped) delivery back within
//!   10 s, so its factory should configure a short lease.
//! * The scenarios assume FIFO order within a queue where they use a task as a barrier.

use std::sync::Arc;

use async_trait::async_trait;
use machinist_core::{Backend, Broker, Config, Lock};

pub mod conformance;
pub mod rabbitmq;
pub mod recording;
pub mod redis_server;
pub mod tasks;

/// One set of adapters, as a factory builds them for a scenario. Clones share the adapters
/// (several servers on one set of adapters act as several machines on one deployment).
#[derive(Clone)]
pub struct Adapters {
    /// The broker.
    pub broker: Arc<dyn Broker>,
    /// The result backend.
    pub backend: Arc<dyn Backend>,
    /// The lock.
    pub lock: Arc<dyn Lock>,
}

impl std::fmt::Debug for Adapters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Adapters")
            .field("broker", &self.broker.describe())
            .field("backend", &self.backend.describe())
            .field("lock", &self.lock.describe())
            .finish()
    }
}

/// Builds the adapters under test. Implemented once per adapter crate (or combination).
#[async_trait]
pub trait Factory: Send + Sync + 'static {
    /// Fresh adapters isolated by `namespace` (unique per test run and scenario, made of
    /// `[a-z0-9_]`), configured from `config`. Panics when they cannot be built: a test that
    /// cannot reach its server should fail loudly.
    async fn adapters(&self, namespace: &str, config: &Config) -> Adapters;

    /// Called when a scenario passed, to remove what it left behind (keys, queues, files).
    /// The default does nothing.
    async fn teardown(&self, namespace: &str, adapters: &Adapters) {
        let _ = (namespace, adapters);
    }
}

/// Expands to one `#[tokio::test]` per conformance scenario, each running it against the
/// factory `$factory` (an expression evaluated anew in every test).
///
/// ```ignore
/// mod memory {
///     machinist_testkit::conformance_tests!(crate::MemoryFactory);
/// }
/// ```
///
/// The caller needs no direct tokio dependency: the attribute goes through this crate's
/// re-export (which is why the crate must be a dependency named `machinist_testkit`).
#[macro_export]
macro_rules! conformance_tests {
    ($factory:expr) => {
        $crate::__conformance_tests! {
            $factory;
            send_task_add,
            send_task_sum,
            group_send_concurrency_0,
            group_send_concurrency_2,
            chord_multiply,
            chain_add_add_multiply,
            return_just_error,
            return_multiple_values,
            panic_fails_task_and_worker_survives,
            eta_delays_task,
            retry_with_fibonacci_backoff,
            retry_later_is_bounded,
            fatal_error_is_not_retried,
            on_success_gets_results_appended,
            immutable_parent_does_not_append,
            on_error_gets_error_text,
            chord_exactly_once_under_concurrent_finishers,
            chord_with_failed_member_fails_callback,
            unregistered_task_is_dead_lettered,
            unregistered_task_is_dropped_when_ignored,
            undecodable_message_is_dead_lettered,
            wrong_argument_type_fails,
            too_many_arguments_fails,
            oversized_message_is_rejected,
            time_limit_drops_uncooperative_task,
            time_limit_cancels_cooperative_task,
            graceful_shutdown_waits_for_running_task,
            shutdown_timeout_returns_message,
            workers_consume_only_registered_tasks,
            pending_tasks_and_purge,
            backend_state_sequence,
            backend_results_expire,
            backend_trigger_chord_exactly_once,
            backend_group_states_in_order,
            lock_contract,
            broker_redelivers_undecided_and_requeued,
            broker_dead_letter_keeps_reason,
            broker_eta_is_kept_by_broker,
            broker_prefetch_bounds_deliveries,
        }
    };
}

/// The expansion of [`conformance_tests!`]; not part of the API.
#[doc(hidden)]
#[macro_export]
macro_rules! __conformance_tests {
    ($factory:expr; $($scenario:ident),* $(,)?) => {
        $(
            #[$crate::__private::tokio::test(
                flavor = "multi_thread",
                worker_threads = 4,
                crate = "machinist_testkit::__private::tokio"
            )]
            async fn $scenario() {
                let factory = $factory;
                $crate::__private::run(
                    stringify!($scenario),
                    $crate::conformance::$scenario(&factory),
                )
                .await;
            }
        )*
    };
}

/// What the macros need at the call site; not part of the API.
#[doc(hidden)]
pub mod __private {
    pub use tokio;

    /// The bound on a whole scenario.
    const SCENARIO_LIMIT: std::time::Duration = std::time::Duration::from_secs(60);

    /// Runs a scenario, failing it if it takes longer than a minute.
    pub async fn run(name: &str, scenario: impl std::future::Future<Output = ()>) {
        if tokio::time::timeout(SCENARIO_LIMIT, scenario)
            .await
            .is_err()
        {
            panic!("scenario {name} did not finish within {SCENARIO_LIMIT:?}");
        }
    }
}
