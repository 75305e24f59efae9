//! `POST /v1/messages` (Anthropic Messages API ingress) and `POST /v1/messages/count_tokens`.
//!
//! Errors here use Anthropic's shape, and streams Anthropic's `event:`/`data:` framing, so the
//! Anthropic SDKs and Claude Code work unchanged against weir.

use std::time::Instant;

use axum::Extension;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures::StreamExt;
use serde_json::json;
use weir_types::anthropic::{MessagesRequest, StreamEvent};

use super::{json_response, meta_headers};
use crate::error::{ApiError, Flavor};
use crate::extract::JsonBody;
use crate::middleware::{RequestId, Served};
use crate::sse::{self, Framer, LogContext, SseBody};
use crate::state::AppState;

pub async fn create(
    State(state): State<AppState>,
    Extension(RequestId(id)): Extension<RequestId>,
    headers: axum::http::HeaderMap,
    tenant: Option<Extension<crate::middleware::Tenant>>,
    JsonBody(req): JsonBody<MessagesRequest>,
) -> Response {
    let started = Instant::now();
    let model = req.model.clone();
    if state.log_bodies {
        tracing::debug!(request_id = %id, body = ?req, "messages request body");
    }
    let opts = match super::call_options(&id, &headers, tenant.as_ref().map(|t| &t.0)) {
        Ok(opts) => opts,
        Err(e) => return e.flavor(Flavor::Anthropic).into_response(),
    };
    let served = |provider: &str| Served {
        model: model.clone(),
        provider: provider.to_owned(),
        ..Served::default()
    };
    let fail = |e: weir::Error| {
        let mut res = ApiError::from_weir(&e, Flavor::Anthropic).into_response();
        res.extensions_mut().insert(served(""));
        res
    };
    if req.stream.unwrap_or(false) {
        // Boxed, like the chat route's stream set-up: it is the larger future.
        let stream = match Box::pin(state.client.messages_stream_with(req, &opts)).await {
            Ok(s) => s,
            Err(e) => return fail(e),
        };
        let meta = stream.meta().clone();
        let log = LogContext {
            request_id: id,
            route: "/v1/messages",
            model: model.clone(),
            provider: meta.provider.clone(),
            cache: "",
            started,
            summary: Some(stream.summary_handle()),
        };
        let body = SseBody::new(stream, EventFramer::default(), log);
        let mut res = sse::response(body.boxed());
        meta_headers(res.headers_mut(), &meta, started);
        res.extensions_mut().insert(Served {
            logs_itself: true,
            ..served(&meta.provider)
        });
        return res;
    }
    match state.client.messages_with(req, &opts).await {
        Ok(done) => {
            let usage = done.meta.usage.clone().unwrap_or_default();
            let mut res = json_response(&done.response);
            meta_headers(res.headers_mut(), &done.meta, started);
            res.extensions_mut().insert(Served {
                prompt_tokens: usage.prompt_tokens,
                completion_tokens: usage.completion_tokens,
                ..served(&done.meta.provider)
            });
            res
        }
        Err(e) => fail(e),
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
