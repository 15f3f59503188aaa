//! Trace context through task headers (`otel` feature): the producer's span context is written
//! as a W3C `traceparent`, foreign header keys pass through, and the task runs in a span whose
//! trace is the producer's.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use machinist_core::memory::{MemoryBackend, MemoryBroker, MemoryLock};
use machinist_core::{Broker, Config, Server, Signature, TaskContext};
use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::layer::SubscriberExt;

fn trace_id_of(span: &tracing::Span) -> String {
    span.context().span().span_context().trace_id().to_string()
}

#[tokio::test]
async fn traceparent_travels_in_headers() {
    let provider = SdkTracerProvider::builder().build();
    let subscriber = tracing_subscriber::registry()
        .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("test")));
    // Global, not thread-scoped: other tests of this binary run spans on other threads, and
    // tracing's per-callsite interest cache would otherwise disable ours at random.
    tracing::subscriber::set_global_default(subscriber).expect("only this test sets one");
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());

    let config = Config {
        no_unix_signals: true,
        default_queue: "otel_tasks".into(),
        ..Config::default()
    };
    let broker = MemoryBroker::new();
    let server = Server::new(
        config.clone(),
        Arc::new(broker.clone()),
        Arc::new(MemoryBackend::new(config.results_ttl())),
        Arc::new(MemoryLock::new()),
    );
    let seen = Arc::new(Mutex::new(None::<(String, Option<String>)>));
    let seen2 = seen.clone();
    server.register_task("trace_me", move |ctx: TaskContext| {
        let seen = seen2.clone();
        async move {
            let id = trace_id_of(&tracing::Span::current());
            let foreign = ctx
                .headers()
                .and_then(|h| h.get_str("uber-trace-id"))
                .map(str::to_owned);
            *seen.lock().expect("lock") = Some((id, foreign));
        }
    });

    let parent = tracing::info_span!("request");
    let producer_trace = trace_id_of(&parent);
    assert_ne!(producer_trace, "00000000000000000000000000000000");
    let sig = Signature::new("trace_me").header("uber-trace-id", "abc:def:0:1");
    let mut result = server
        .send_task_with_context(&parent, sig)
        .await
        .expect("send");

    let pending = broker.pending("otel_tasks", 10).await.expect("pending");
    let sent = Signature::from_slice(&pending[0]).expect("decode");
    let headers = sent.headers.expect("headers");
    let traceparent = headers.get_str("traceparent").expect("traceparent header");
    assert!(
        traceparent.starts_with(&format!("00-{producer_trace}-")),
        "{traceparent}"
    );
    assert_eq!(headers.get_str("uber-trace-id"), Some("abc:def:0:1"));

    let worker = server.new_worker("otel", 1).launch_async();
    result
        .get_with_timeout(Duration::from_secs(5), Duration::from_millis(10))
        .await
        .expect("task ran");
    worker.quit().await.expect("quit");
    let (task_trace, foreign) = seen.lock().expect("lock").clone().expect("task ran");
    assert_eq!(task_trace, producer_trace);
    assert_eq!(foreign.as_deref(), Some("abc:def:0:1"));
}
