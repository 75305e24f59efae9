//! `POST /v1/chat/completions`, complete and streamed.

use axum::extract::State;
use axum::response::Response;
use bytes::Bytes;
use futures::StreamExt;
use weir_types::chat::{ChatChunk, ChatRequest};

use super::{answer, failed, json_bytes_response, json_response, stream_log, streamed};
use crate::error::{ApiError, Flavor};
use crate::extract::{Context, JsonBody};
use crate::sse::{self, Framer, SseBody};
use crate::state::AppState;

pub async fn completions(
    State(state): State<AppState>,
    mut context: Context,
    JsonBody(req): JsonBody<ChatRequest>,
) -> Response {
    context.name_user(req.user.as_deref());
    let Context { call, started, .. } = context;
    if state.log_bodies {
        tracing::debug!(request_id = %call.request_id, body = ?req, "chat request body");
    }
    let model = req.model.clone();
    if req.stream.unwrap_or(false) {
        let request_id = call.request_id.clone();
        // Boxed: the stream set-up future is the larger one, and the handler's own future
        // (which axum moves into a box per request) would otherwise be sized for it.
        let stream = match Box::pin(state.client.chat_stream_with(req, call)).await {
            Ok(s) => s,
            Err(e) => return failed(&e, Flavor::OpenAi, &model),
        };
        let meta = stream.meta().clone();
        let log = stream_log(
            request_id,
            "/v1/chat/completions",
            &meta,
            started,
            stream.summary_handle(),
        );
        let body =
            SseBody::new(stream, ChunkFramer::default(), log).counted(state.metrics.as_ref());
        return streamed(body.boxed(), &meta, started);
    }
    match state.client.chat_with(req, call).await {
        // The answer as received (upstream or cache) goes out as is: nothing in it changed.
        Ok(done) => {
            let res = match done.received_json() {
                Some(bytes) => json_bytes_response(bytes.clone()),
                None => json_response(&done.response),
            };
            answer(res, &done.meta, started)
        }
        Err(e) => failed(&e, Flavor::OpenAi, &model),
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
