//! `GET /metrics`: the gateway's Prometheus metrics in the text exposition format, guarded
//! like the admin routes (the admin key, or loopback clients when none is set).
//!
//! The library renders the call and attempt metrics and the client's gauges; the server
//! adds what only it holds: the usage ledger's backlog.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use weir::metrics::{CONTENT_TYPE, Exposition, Metrics};

use crate::state::AppState;

pub async fn metrics(State(state): State<AppState>) -> Response {
    // A router built without `Server::bind` has no recorder: its scrape still shows the
    // client's gauges, with every counter at zero.
    let metrics = match &state.metrics {
        Some(m) => Arc::clone(m),
        None => Arc::new(Metrics::new(state.client.config())),
    };
    let mut e = metrics.render(&state.client).await;
    ledger(&mut e, &state);
    let mut res = e.finish().into_response();
    res.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE));
    res
}

fn ledger(e: &mut Exposition, state: &AppState) {
    let Some(writer) = &state.ledger else {
        return;
    };
    let h = writer.health();
    e.gauge(
        "weir_ledger_backlog_bytes",
        "Bytes spooled and not yet in the ledger's store.",
        h.backlog_bytes as f64,
    );
    e.gauge(
        "weir_ledger_backlog_records",
        "Records spooled and not yet stored (estimated from the average record size).",
        h.backlog_records_estimate as f64,
    );
    e.counter(
        "weir_ledger_dropped_total",
        "Records the spool refused (full, or a failed write): calls served but not recorded.",
        h.dropped as f64,
    );
    e.counter(
        "weir_ledger_written_total",
        "Records written to the ledger's store.",
        h.written as f64,
    );
    e.counter(
        "weir_ledger_rejected_total",
        "Spooled lines skipped: torn by a crash, or refused by the store.",
        h.rejected as f64,
    );
    e.gauge(
        "weir_ledger_healthy",
        "1 while the ledger writer stores without error.",
        f64::from(u8::from(h.last_error.is_none())),
    );
}
