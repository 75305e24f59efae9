//! OpenTelemetry trace export: weir's call and attempt spans sent to an OTLP/HTTP collector,
//! the caller's `traceparent` adopted as the call's parent and passed on to the upstream,
//! and JSON log lines stamped with the trace and span they were written in.
//!
//! The program starts it once ([`start`], inside the tokio runtime) and adds [`Telemetry::layer`]
//! to its subscriber. Spans are queued by a [`batch::QueueProcessor`] and exported by one
//! background task: the request path only hands a finished span to a bounded queue. A dead
//! or slow collector costs dropped spans, counted in `/status`, never a slower request.

pub mod batch;
pub mod log;
mod propagate;

use std::sync::Arc;
use std::sync::OnceLock;
use std::sync::atomic::Ordering;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::{WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::{SdkTracerProvider, SpanExporter as _};
use serde::Serialize;
use tracing::Subscriber;
use tracing_subscriber::Layer;
use tracing_subscriber::registry::LookupSpan;
use weir::config::TelemetryConfig;

use batch::{Counters, QueueProcessor};

/// Why trace export could not start.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    #[error(
        "cannot build the OTLP exporter for {endpoint}: {reason}; check telemetry.otlp.endpoint"
    )]
    Exporter { endpoint: String, reason: String },
    #[error("trace export is already running in this process; start it once")]
    AlreadyStarted,
}

/// The running exporter: its tracer provider and its counts.
#[derive(Debug)]
pub struct Telemetry {
    provider: SdkTracerProvider,
    processor: QueueProcessor,
    counters: Arc<Counters>,
    endpoint: String,
}

/// What `/status` shows under `telemetry`.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct TelemetryStatus {
    /// The OTLP traces URL spans go to.
    pub endpoint: String,
    pub spans_exported: u64,
    /// Spans lost: the queue was full, or their export failed or timed out.
    pub spans_dropped: u64,
    /// Exports that failed (each dropped its whole batch).
    pub export_failures: u64,
}

static RUNNING: OnceLock<Arc<Counters>> = OnceLock::new();
static ENDPOINT: OnceLock<String> = OnceLock::new();

/// Start exporting traces as `config` says, or return `None` when it names no endpoint.
/// Must run inside a tokio runtime: the export task is spawned on it.
pub fn start(config: &TelemetryConfig) -> Result<Option<Telemetry>, TelemetryError> {
    let Some(otlp) = &config.otlp else {
        return Ok(None);
    };
    let endpoint = otlp.endpoint.to_string();
    // The workspace's reqwest has no TLS provider of its own (ring is weir's choice); the
    // library installs it when it builds its upstream client, which is later than this.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = reqwest::Client::builder()
        .timeout(otlp.timeout)
        .tcp_nodelay(true)
        .build()
        .map_err(|e| TelemetryError::Exporter {
            endpoint: endpoint.clone(),
            reason: e.to_string(),
        })?;
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_http_client(client)
        .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
        .with_endpoint(endpoint.clone())
        .with_timeout(otlp.timeout)
        .build()
        .map_err(|e| TelemetryError::Exporter {
            endpoint: endpoint.clone(),
            reason: e.to_string(),
        })?;
    let counters = Arc::new(Counters::default());
    if RUNNING.set(Arc::clone(&counters)).is_err() {
        return Err(TelemetryError::AlreadyStarted);
    }
    let _ = ENDPOINT.set(endpoint.clone());
    let resource = Resource::builder()
        .with_service_name(config.service_name.clone())
        .build();
    // The exporter sends the resource with every batch; the processor owns the exporter
    // from here on, so it gets it now rather than through `SpanProcessor::set_resource`.
    let mut exporter = exporter;
    exporter.set_resource(&resource);
    let processor = QueueProcessor::spawn(
        exporter,
        otlp.queue_size,
        otlp.timeout,
        Arc::clone(&counters),
    );
    let provider = SdkTracerProvider::builder()
        .with_span_processor(processor.clone())
        .with_resource(resource)
        .build();
    weir::telemetry::install(&propagate::W3C);
    Ok(Some(Telemetry {
        provider,
        processor,
        counters,
        endpoint,
    }))
}

impl Telemetry {
    /// The subscriber layer that turns weir's `weir.call` and `weir.attempt` spans (debug
    /// level) into exported spans. Its own filter passes those spans and nothing else, so the
    /// log filter (`WEIR_LOG`) neither hides them nor lets log events become span events.
    pub fn layer<S>(&self) -> impl Layer<S> + Send + Sync + 'static
    where
        S: Subscriber + for<'a> LookupSpan<'a> + Send + Sync,
    {
        let tracer = self.provider.tracer("weir");
        tracing_opentelemetry::layer()
            .with_tracer(tracer)
            .with_tracked_inactivity(false)
            // Source locations and thread names say nothing to a trace reader, and cost
            // attributes on every span.
            .with_location(false)
            .with_threads(false)
            .with_target(false)
            .with_filter(tracing_subscriber::filter::filter_fn(|meta| {
                meta.is_span()
                    && meta.target().starts_with("weir")
                    && matches!(meta.name(), "weir.call" | "weir.attempt")
            }))
    }

    /// Export what is queued (waiting at most the export timeout), then stop. Call before
    /// the runtime ends, so the last calls' spans are not lost.
    pub async fn shutdown(self) {
        self.processor.flush().await;
        let _ = self.provider.shutdown();
    }

    pub fn status(&self) -> TelemetryStatus {
        status_of(&self.endpoint, &self.counters)
    }
}

fn status_of(endpoint: &str, c: &Counters) -> TelemetryStatus {
    TelemetryStatus {
        endpoint: endpoint.to_owned(),
        spans_exported: c.exported.load(Ordering::Relaxed),
        spans_dropped: c.dropped.load(Ordering::Relaxed),
        export_failures: c.failures.load(Ordering::Relaxed),
    }
}

/// The process's exporter status, when one is running.
pub fn status() -> Option<TelemetryStatus> {
    let counters = RUNNING.get()?;
    Some(status_of(
        ENDPOINT.get().map_or("", String::as_str),
        counters,
    ))
}
