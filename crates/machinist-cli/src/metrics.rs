//! `worker --metrics-addr ADDR`: Prometheus metrics over HTTP (any path, e.g. `/metrics`).
//!
//! The worker records task counts by state, run times and the number of running tasks
//! (`machinist::metrics` lists the names); this module installs the Prometheus exporter and
//! polls the depth of each consumed queue every [`QUEUE_DEPTH_PERIOD`].

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use machinist::Broker;
use machinist::metrics::{TASK_DURATION_SECONDS, queue_depth};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};
use tracing::{debug, info, warn};

/// How often the queues are counted.
pub const QUEUE_DEPTH_PERIOD: Duration = Duration::from_secs(5);

/// The most messages counted per queue: `Broker::pending` lists messages, so a deeper queue
/// shows as this many.
pub const QUEUE_DEPTH_LIMIT: usize = 10_000;

/// Buckets of the run-time histogram, in seconds: 1 ms to 5 min.
const RUN_TIME_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
];

/// Serves the metrics on `addr` and starts counting `queues`. Needs a tokio runtime.
///
/// # Errors
///
/// The address cannot be bound, or a metrics recorder is already installed.
pub fn serve(addr: SocketAddr, broker: Arc<dyn Broker>, queues: Vec<String>) -> anyhow::Result<()> {
    PrometheusBuilder::new()
        .with_http_listener(addr)
        .set_buckets_for_metric(
            Matcher::Full(TASK_DURATION_SECONDS.to_owned()),
            RUN_TIME_BUCKETS,
        )
        .and_then(PrometheusBuilder::install)
        .with_context(|| format!("serving metrics on {addr}"))?;
    machinist::metrics::describe();
    info!("serving Prometheus metrics on http://{addr}/metrics");
    tokio::spawn(poll_queue_depth(broker, queues));
    Ok(())
}

/// Counts each queue now, then every [`QUEUE_DEPTH_PERIOD`]. A broker error is logged once
/// (until the next success) and the gauge keeps its last value.
async fn poll_queue_depth(broker: Arc<dyn Broker>, queues: Vec<String>) {
    let mut ticks = tokio::time::interval(QUEUE_DEPTH_PERIOD);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut failing = false;
    loop {
        ticks.tick().await;
        for queue in &queues {
            match broker.pending(queue, QUEUE_DEPTH_LIMIT).await {
                Ok(messages) => {
                    failing = false;
                    debug!(queue = %queue, depth = messages.len(), "queue counted");
                    queue_depth(queue, messages.len());
                }
                Err(e) if !failing => {
                    failing = true;
                    warn!(queue = %queue, "cannot count the queue for metrics: {e}");
                }
                Err(_) => {}
            }
        }
    }
}
