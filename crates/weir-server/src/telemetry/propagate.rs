//! W3C trace context in and out: the caller's `traceparent` becomes a call span's parent,
//! and an attempt span's context goes to the upstream as `traceparent`.

use http::HeaderMap;
use opentelemetry::propagation::TextMapPropagator;
use opentelemetry_http::{HeaderExtractor, HeaderInjector};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use weir::telemetry::{TraceContext, TraceParent};

/// The W3C propagator, as weir's [`TraceContext`].
pub(super) struct W3c;

pub(super) static W3C: W3c = W3c;

impl TraceContext for W3c {
    fn adopt_parent(&self, span: &tracing::Span, parent: &TraceParent) {
        let mut headers = HeaderMap::with_capacity(2);
        headers.insert("traceparent", parent.traceparent.clone());
        if let Some(state) = &parent.tracestate {
            headers.insert("tracestate", state.clone());
        }
        let cx = TraceContextPropagator::new().extract(&HeaderExtractor(&headers));
        // An unreadable traceparent extracts to an empty context: the call starts a trace.
        let _ = span.set_parent(cx);
    }

    fn inject(&self, headers: &mut HeaderMap) {
        let cx = tracing::Span::current().context();
        TraceContextPropagator::new().inject_context(&cx, &mut HeaderInjector(headers));
    }
}
