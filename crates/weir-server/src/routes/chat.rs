//! `POST /v1/chat/completions`, complete and streamed.

use std::time::Instant;

use axum::Extension;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures::StreamExt;
use weir_types::chat::{ChatChunk, ChatRequest};

use super::{json_bytes_response, json_response, meta_headers};
use crate::error::{ApiError, Flavor};
use crate::extract::JsonBody;
use crate::middleware::{RequestId, Served};
use crate::sse::{self, Framer, LogContext, SseBody};
use crate::state::AppState;

pub async fn completions(
    State(state): State<AppState>,
    Extension(RequestId(id)): Extension<RequestId>,
    headers: axum::http::HeaderMap,
    tenant: Option<Extension<crate::middleware::Tenant>>,
    JsonBody(req): JsonBody<ChatRequest>,
) -> Response {
    let started = Instant::now();
    let model = req.model.clone();
    if state.log_bodies {
        tracing::debug!(request_id = %id, body = ?req, "chat request body");
    }
    let opts = match super::call_options(&id, &headers, tenant.as_ref().map(|t| &t.0)) {
        Ok(opts) => opts,
        Err(e) => return e.flavor(Flavor::OpenAi).into_response(),
    };
    let served = |provider: &str| Served {
        model: model.clone(),
        provider: provider.to_owned(),
        ..Served::default()
    };
    if req.stream.unwrap_or(false) {
        // Boxed: the stream set-up future is the larger one, and the handler's own future
        // (which axum moves into a box per request) would otherwise be sized for it.
        let stream = match Box::pin(state.client.chat_stream_with(req, &opts)).await {
            Ok(s) => s,
            Err(e) => {
                let mut res = ApiError::from_weir(&e, Flavor::OpenAi).into_response();
                res.extensions_mut().insert(served(""));
                return res;
            }
        };
        let meta = stream.meta().clone();
        let log = LogContext {
            request_id: id,
            route: "/v1/chat/completions",
            model: model.clone(),
            provider: meta.provider.clone(),
            cache: meta.cache.as_str(),
            started,
            summary: Some(stream.summary_handle()),
        };
        let body = SseBody::new(stream, ChunkFramer::default(), log);
        let mut res = sse::response(body.boxed());
        meta_headers(res.headers_mut(), &meta, started);
        res.extensions_mut().insert(Served {
            logs_itself: true,
            ..served(&meta.provider)
        });
        return res;
    }
    match state.client.chat_with(req, &opts).await {
        Ok(done) => {
            let usage = done.meta.usage.clone().unwrap_or_default();
            // The answer as received (upstream or cache) goes out as is: nothing in it changed.
            let mut res = match done.received_json() {
                Some(bytes) => json_bytes_response(bytes.clone()),
                None => json_response(&done.response),
            };
            meta_headers(res.headers_mut(), &done.meta, started);
            res.extensions_mut().insert(Served {
                prompt_tokens: usage.prompt_tokens,
                completion_tokens: usage.completion_tokens,
                cache: done.meta.cache.as_str(),
                ..served(&done.meta.provider)
            });
            res
        }
        Err(e) => {
            let mut res = ApiError::from_weir(&e, Flavor::OpenAi).into_response();
            res.extensions_mut().insert(served(""));
            res
        }
    }
}

/// OpenAI framing: `data: <chunk>` per chunk, `data: [DONE]` at the end, and on a mid-stream
/// failure a `data: {"error": ...}` event (which the official SDKs raise as an APIError).
#[derive(Debug, Default)]
pub struct ChunkFramer {
    prompt_tokens: u64,
    completion_tokens: u64,
}

impl Framer for ChunkFramer {
    type Item = weir::Result<ChatChunk>;

    fn frame(&mut self, item: Self::Item) -> (Bytes, bool) {
        match item {
            Ok(chunk) => {
                if let Some(u) = &chunk.usage {
                    self.prompt_tokens = u.prompt_tokens;
                    self.completion_tokens = u.completion_tokens;
                }
                // Forwarded as the upstream sent it when nothing changed it; else serialised.
                let frame = match chunk.received.get() {
                    Some(json) => sse::data_frame(json.as_bytes()),
                    None => sse::json_data_frame(&chunk),
                };
                (frame, false)
            }
            Err(e) => {
                tracing::warn!(error = %e, "stream failed mid-way");
                let err = ApiError::from_weir(&e, Flavor::OpenAi);
                (sse::data_frame(&err.body()), true)
            }
        }
    }

    fn done(&mut self) -> Option<Bytes> {
        Some(Bytes::from_static(b"data: [DONE]\n\n"))
    }

    fn tokens(&self) -> (u64, u64) {
        (self.prompt_tokens, self.completion_tokens)
    }
}
