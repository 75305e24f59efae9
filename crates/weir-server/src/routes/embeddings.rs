//! `POST /v1/embeddings`.

use axum::extract::State;
use axum::response::Response;
use weir_types::embeddings::EmbeddingsRequest;

use super::{answer, failed, json_response};
use crate::error::Flavor;
use crate::extract::{Context, JsonBody};
use crate::state::AppState;

pub async fn create(
    State(state): State<AppState>,
    mut context: Context,
    JsonBody(req): JsonBody<EmbeddingsRequest>,
) -> Response {
    context.name_user(req.user.as_deref());
    let Context { call, started, .. } = context;
    let model = req.model.clone();
    match state.client.embed_with(req, call).await {
        Ok(done) => answer(json_response(&done.response), &done.meta, started),
        Err(e) => failed(&e, Flavor::OpenAi, &model),
    }
}
