//! A batching span processor with a bounded queue and counted drops.
//!
//! Why not the SDK's `BatchSpanProcessor`: it keeps its drop count private (a dead collector
//! would drop spans with nothing to show for it in `/status`), and its default runs a
//! blocking HTTP client on a thread of its own. This one hands each finished span to a
//! bounded channel (`try_send`: never waits) and exports from one task on the gateway's
//! runtime with the async client, each export bounded by the configured timeout.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use opentelemetry::Context;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{Span, SpanData, SpanExporter, SpanProcessor};
use tokio::sync::{mpsc, oneshot};

/// The most spans sent in one export.
const MAX_BATCH: usize = 512;
/// How long a partial batch waits for more spans before it goes.
const DELAY: Duration = Duration::from_millis(500);

/// Spans exported and lost since start.
#[derive(Debug, Default)]
pub struct Counters {
    pub exported: AtomicU64,
    /// Spans lost: queue full, or export failed or timed out.
    pub dropped: AtomicU64,
    /// Failed (or timed-out) exports.
    pub failures: AtomicU64,
}

/// The processor the tracer provider calls when a span ends.
#[derive(Debug, Clone)]
pub struct QueueProcessor {
    spans: mpsc::Sender<SpanData>,
    flushes: mpsc::Sender<oneshot::Sender<()>>,
    counters: Arc<Counters>,
    timeout: Duration,
}

impl QueueProcessor {
    /// Start the export task on the current runtime.
    pub fn spawn<E>(
        exporter: E,
        queue_size: usize,
        timeout: Duration,
        counters: Arc<Counters>,
    ) -> Self
    where
        E: SpanExporter + 'static,
    {
        let (spans, rx) = mpsc::channel(queue_size.max(1));
        let (flushes, flush_rx) = mpsc::channel(4);
        tokio::spawn(export_loop(
            exporter,
            rx,
            flush_rx,
            timeout,
            Arc::clone(&counters),
        ));
        Self {
            spans,
            flushes,
            counters,
            timeout,
        }
    }

    /// Export everything queued now; waits at most twice the export timeout.
    pub async fn flush(&self) {
        let (tx, rx) = oneshot::channel();
        if self.flushes.send(tx).await.is_ok() {
            let _ = tokio::time::timeout(self.timeout * 2, rx).await;
        }
    }
}

impl SpanProcessor for QueueProcessor {
    fn on_start(&self, _span: &mut Span, _cx: &Context) {}

    fn on_end(&self, span: SpanData) {
        if self.spans.try_send(span).is_err() {
            self.counters.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Flushing is [`QueueProcessor::flush`], async: this is called from synchronous code
    /// that may be on the runtime, where waiting for the export task would block it.
    fn force_flush(&self) -> OTelSdkResult {
        Ok(())
    }

    fn shutdown_with_timeout(&self, _timeout: Duration) -> OTelSdkResult {
        Ok(())
    }
}

async fn export_loop<E: SpanExporter>(
    exporter: E,
    mut spans: mpsc::Receiver<SpanData>,
    mut flushes: mpsc::Receiver<oneshot::Sender<()>>,
    timeout: Duration,
    counters: Arc<Counters>,
) {
    let mut batch: Vec<SpanData> = Vec::with_capacity(MAX_BATCH);
    loop {
        let mut done = None;
        tokio::select! {
            first = spans.recv() => match first {
                Some(span) => {
                    batch.push(span);
                    // Gather more for up to DELAY, or until the batch is full.
                    let until = tokio::time::Instant::now() + DELAY;
                    while batch.len() < MAX_BATCH {
                        match tokio::time::timeout_at(until, spans.recv()).await {
                            Ok(Some(span)) => batch.push(span),
                            Ok(None) | Err(_) => break,
                        }
                    }
                }
                None => return,
            },
            Some(reply) = flushes.recv() => {
                while batch.len() < MAX_BATCH * 8 {
                    match spans.try_recv() {
                        Ok(span) => batch.push(span),
                        Err(_) => break,
                    }
                }
                done = Some(reply);
            }
        }
        while !batch.is_empty() {
            let take = batch.len().min(MAX_BATCH);
            let chunk: Vec<SpanData> = batch.drain(..take).collect();
            let n = chunk.len() as u64;
            match tokio::time::timeout(timeout, exporter.export(chunk)).await {
                Ok(Ok(())) => {
                    counters.exported.fetch_add(n, Ordering::Relaxed);
                }
                Ok(Err(_)) | Err(_) => {
                    counters.dropped.fetch_add(n, Ordering::Relaxed);
                    counters.failures.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        if let Some(reply) = done {
            let _ = reply.send(());
        }
    }
}
