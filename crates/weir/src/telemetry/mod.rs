//! Distributed tracing: the spans weir opens for every call and attempt, the attributes they
//! carry (the GenAI semantic conventions plus weir's own), and the hook through which a
//! tracing backend adopts an incoming trace context and propagates it upstream.
//!
//! The library has no OpenTelemetry dependency: a program that exports traces (the `weir`
//! binary does, with OTLP) installs a [`TraceContext`] once at start. Until then the hook is
//! an empty `OnceLock` read, and the spans stay at debug level, which the default filter
//! disables: a call then records nothing and formats nothing.

pub(crate) mod attrs;

use std::sync::OnceLock;

use http::{HeaderMap, HeaderValue};

/// The incoming W3C trace context of a call (`traceparent`, and `tracestate` when sent), as
/// the client sent it. The gateway fills it only when a [`TraceContext`] is installed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceParent {
    pub traceparent: HeaderValue,
    pub tracestate: Option<HeaderValue>,
}

impl TraceParent {
    /// The trace headers of a request, if it has a `traceparent`.
    pub fn from_headers(headers: &HeaderMap) -> Option<Self> {
        let traceparent = headers.get("traceparent")?.clone();
        Some(Self {
            traceparent,
            tracestate: headers.get("tracestate").cloned(),
        })
    }
}

/// What a tracing backend does for weir's spans.
///
/// Contract: both methods run on the request path, once per call or attempt, and only when
/// the span they are given is enabled; they must not block.
pub trait TraceContext: Send + Sync + 'static {
    /// Make the trace context in `parent` the parent of `span` (a call's span, not yet
    /// entered). An unreadable `traceparent` is ignored: the call starts its own trace.
    fn adopt_parent(&self, span: &tracing::Span, parent: &TraceParent);
    /// Write the current span's context (an attempt's span: providers call this while
    /// building the upstream request) into the upstream request's headers.
    fn inject(&self, headers: &mut HeaderMap);
}

static INSTALLED: OnceLock<&'static dyn TraceContext> = OnceLock::new();

/// Install the process's tracing backend. Only the first call wins (a process exports to
/// one place); returns whether this one did.
pub fn install(backend: &'static dyn TraceContext) -> bool {
    INSTALLED.set(backend).is_ok()
}

/// The installed backend, if any.
pub fn installed() -> Option<&'static dyn TraceContext> {
    INSTALLED.get().copied()
}

/// Propagate the current span's trace context into an upstream request's headers, when a
/// backend is installed and the current span is recorded.
pub(crate) fn inject(headers: &mut HeaderMap) {
    if let Some(backend) = installed()
        && !tracing::Span::current().is_disabled()
    {
        backend.inject(headers);
    }
}
