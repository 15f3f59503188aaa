//! Trace context in `Signature.Headers`. With the `otel` feature the W3C `traceparent` (and
//! `tracestate`) of a span are written into the headers when a task is sent and read back when
//! it runs, through OpenTelemetry's global propagator; other header keys are never touched.
//! Without the feature these functions do nothing.

use crate::signature::Headers;

/// Writes `span`'s trace context into `headers`.
#[cfg(feature = "otel")]
pub fn inject(span: &tracing::Span, headers: &mut Headers) {
    use tracing_opentelemetry::OpenTelemetrySpanExt;
    let cx = span.context();
    opentelemetry::global::get_text_map_propagator(|p| {
        p.inject_context(&cx, &mut Carrier(headers))
    });
}

/// Makes the context carried by `headers` the parent of `span`.
#[cfg(feature = "otel")]
pub fn extract(headers: Option<&Headers>, span: &tracing::Span) {
    use tracing_opentelemetry::OpenTelemetrySpanExt;
    let Some(headers) = headers else { return };
    let cx = opentelemetry::global::get_text_map_propagator(|p| p.extract(&ReadCarrier(headers)));
    let _ = span.set_parent(cx);
}

#[cfg(feature = "otel")]
struct Carrier<'a>(&'a mut Headers);

#[cfg(feature = "otel")]
impl opentelemetry::propagation::Injector for Carrier<'_> {
    fn set(&mut self, key: &str, value: String) {
        self.0.insert(key, value);
    }
}

#[cfg(feature = "otel")]
struct ReadCarrier<'a>(&'a Headers);

#[cfg(feature = "otel")]
impl opentelemetry::propagation::Extractor for ReadCarrier<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get_str(key)
    }
    fn keys(&self) -> Vec<&str> {
        self.0.0.keys().map(String::as_str).collect()
    }
}

/// Writes `span`'s trace context into `headers` (no-op without the `otel` feature).
#[cfg(not(feature = "otel"))]
pub fn inject(span: &tracing::Span, headers: &mut Headers) {
    let _ = (span, headers);
}

/// Makes the context carried by `headers` the parent of `span` (no-op without `otel`).
#[cfg(not(feature = "otel"))]
pub fn extract(headers: Option<&Headers>, span: &tracing::Span) {
    let _ = (headers, span);
}
