//! `POST /v1/messages` (Anthropic Messages API ingress) and `POST /v1/messages/count_tokens`.
//!
//! Errors here use Anthropic's shape, and streams Anthropic's `event:`/`data:` framing, so the
//! Anthropic SDKs and Claude Code work unchanged against weir.

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures::StreamExt;
use serde_json::json;
use weir_types::anthropic::{MessagesRequest, StreamEvent};

use super::{answer, failed, json_response, stream_log, streamed};
use crate::error::{ApiError, Flavor};
use crate::extract::{Context, JsonBody};
use crate::sse::{self, Framer, SseBody};
use crate::state::AppState;

pub async fn create(
    State(state): State<AppState>,
    mut context: Context,
    JsonBody(req): JsonBody<MessagesRequest>,
) -> Response {
    context.name_user(req.metadata.as_ref().and_then(|m| m.user_id.as_deref()));
    let Context { call, started, .. } = context;
    if state.log_bodies {
        tracing::debug!(request_id = %call.request_id, body = ?req, "messages request body");
    }
    let model = req.model.clone();
    if req.stream.unwrap_or(false) {
        let request_id = call.request_id.clone();
        // Boxed, like the chat route's stream set-up: it is the larger future.
        let stream = match Box::pin(state.client.messages_stream_with(req, call)).await {
            Ok(s) => s,
            Err(e) => return failed(&e, Flavor::Anthropic, &model),
        };
        let meta = stream.meta().clone();
        let mut log = stream_log(
            request_id,
            "/v1/messages",
            &meta,
            started,
            stream.summary_handle(),
        );
        log.cache = "";
        let body =
            SseBody::new(stream, EventFramer::default(), log).counted(state.metrics.as_ref());
        return streamed(body.boxed(), &meta, started);
    }
    match state.client.messages_with(req, call).await {
        Ok(done) => answer(json_response(&done.response), &done.meta, started),
        Err(e) => failed(&e, Flavor::Anthropic, &model),
    }
}

/// Counts locally with the o200k tokenizer: exact for OpenAI models, a close estimate for
/// Claude (whose tokenizer is not public); documented as such.
pub async fn count_tokens(
    State(state): State<AppState>,
    JsonBody(req): JsonBody<MessagesRequest>,
) -> Response {
    if let Err(e) = state.client.resolve(&req.model) {
        return ApiError::from_weir(&e, Flavor::Anthropic).into_response();
    }
    if state.client.model(&req.model).is_none() {
        let e = weir::Error::ModelNotFound {
            model: req.model.clone(),
            hint: "GET /v1/models lists the available models".into(),
        };
        return ApiError::from_weir(&e, Flavor::Anthropic).into_response();
    }
    match weir::messages::to_chat_request(&req) {
        Ok(chat) => {
            json_response(&json!({ "input_tokens": weir::tokens::count_request_tokens(&chat) }))
        }
        Err(e) => ApiError::from_weir(&e, Flavor::Anthropic).into_response(),
    }
}

/// Anthropic framing: `event: <type>` + `data: <json>` per event; a failure becomes an
/// `error` event, as Anthropic sends mid-stream errors.
#[derive(Debug, Default)]
pub struct EventFramer {
    prompt_tokens: u64,
    completion_tokens: u64,
}

impl Framer for EventFramer {
    type Item = weir::Result<StreamEvent>;

    fn frame(&mut self, item: Self::Item) -> (Bytes, bool) {
        match item {
            Ok(ev) => {
                let json = weir::json::to_vec(&ev).unwrap_or_default();
                (sse::event_frame(ev.event_name(), &json), false)
            }
            Err(e) => {
                tracing::warn!(error = %e, "stream failed mid-way");
                let ev = weir::messages::error_event(&e);
                let json = serde_json::to_vec(&ev).unwrap_or_default();
                (sse::event_frame("error", &json), true)
            }
        }
    }

    fn done(&mut self) -> Option<Bytes> {
        None
    }

    fn tokens(&self) -> (u64, u64) {
        (self.prompt_tokens, self.completion_tokens)
    }
}
