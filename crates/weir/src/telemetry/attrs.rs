//! The attributes of weir's `weir.call` and `weir.attempt` spans, recorded only when the span
//! is enabled (a tracing backend is listening): a disabled span returns before any work.
//!
//! Names follow the OpenTelemetry GenAI semantic conventions (`gen_ai.*`, `error.type`);
//! weir's own are under `weir.*`. Span names are `{gen_ai.operation.name} {model}`, set
//! through `otel.name`. Prompts and answers are recorded only with
//! `telemetry.capture_content: true`; keys never are (only their labels).

use tracing::Span;
use weir_types::chat::{ChatRequest, ChatResponse};

use crate::error::Error;
use crate::pipeline::{Operation, UsageEvent};

/// `gen_ai.operation.name` of an operation: streamed or not, chat and Messages calls are
/// chat inferences.
pub(crate) fn operation_name(operation: Operation) -> &'static str {
    match operation {
        Operation::Embeddings => "embeddings",
        _ => "chat",
    }
}

/// The span's name: `{operation} {model}`.
pub(crate) fn name(span: &Span, operation: Operation, model: &str) {
    if span.is_disabled() {
        return;
    }
    span.record(
        "otel.name",
        format!("{} {model}", operation_name(operation)).as_str(),
    );
}

/// What the caller asked for: the output cap, the temperature and (with content capture)
/// the messages.
pub(crate) fn request(span: &Span, req: &ChatRequest, capture_content: bool) {
    if span.is_disabled() {
        return;
    }
    if let Some(max) = req.max_output_tokens() {
        span.record("gen_ai.request.max_tokens", i64::from(max));
    }
    if let Some(t) = req.temperature {
        span.record("gen_ai.request.temperature", t);
    }
    if capture_content && let Ok(json) = serde_json::to_string(&req.messages) {
        span.record("gen_ai.input.messages", json.as_str());
    }
}

/// What the upstream answered: the model that answered, why each choice ended, and (with
/// content capture) the choices' messages.
pub(crate) fn response(span: &Span, res: &ChatResponse, capture_content: bool) {
    if span.is_disabled() {
        return;
    }
    if !res.model.is_empty() {
        span.record("gen_ai.response.model", res.model.as_str());
    }
    // A string array in the convention; tracing fields are scalars, so a JSON array.
    let reasons: Vec<&str> = res
        .choices
        .iter()
        .filter_map(|c| c.finish_reason.as_ref().map(|r| r.as_str()))
        .collect();
    if let Ok(json) = serde_json::to_string(&reasons) {
        span.record("gen_ai.response.finish_reasons", json.as_str());
    }
    if capture_content {
        let messages: Vec<_> = res.choices.iter().map(|c| &c.message).collect();
        if let Ok(json) = serde_json::to_string(&messages) {
            span.record("gen_ai.output.messages", json.as_str());
        }
    }
}

/// How the call ended, from its one event.
pub(crate) fn end(span: &Span, event: &UsageEvent) {
    if span.is_disabled() {
        return;
    }
    if let Some(r) = &event.route {
        span.record("gen_ai.provider.name", r.provider.as_str());
        span.record("weir.deployment", r.deployment().as_str());
        if let Some(label) = &r.key_label {
            span.record("weir.key_label", label.as_str());
        }
    }
    if event.route.is_some() || event.cache.is_free() {
        span.record("gen_ai.usage.input_tokens", int(event.tokens.input));
        span.record("gen_ai.usage.output_tokens", int(event.tokens.output));
    }
    span.record("weir.cache", event.cache.as_str());
    span.record("weir.attempts", i64::from(event.attempts));
    span.record("weir.outcome", event.outcome.as_str());
    if let Some(cost) = event.cost_usd {
        span.record("weir.cost_usd", tracing::field::display(cost));
    }
    if let Some(kind) = event.error {
        span.record("error.type", kind.as_str());
    }
}

/// How one attempt ended: the error's kind when it failed.
pub(crate) fn attempt_end<T>(span: &Span, result: &Result<T, Error>) {
    if span.is_disabled() {
        return;
    }
    if let Err(e) = result {
        span.record("error.type", e.kind().as_str());
        if let Error::Upstream { status, .. } = e {
            span.record("http.response.status_code", i64::from(*status));
        }
    }
}

/// A count as a signed integer: exporters send unsigned 64-bit values as strings (they do
/// not all fit OTLP's int64), and no token count comes near the limit.
fn int(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}
