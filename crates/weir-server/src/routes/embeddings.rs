//! `POST /v1/embeddings`.

use std::time::Instant;

use axum::Extension;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use weir_types::embeddings::EmbeddingsRequest;

use super::{json_response, meta_headers};
use crate::error::{ApiError, Flavor};
use crate::extract::JsonBody;
use crate::middleware::{RequestId, Served};
use crate::state::AppState;

pub async fn create(
    State(state): State<AppState>,
    Extension(RequestId(id)): Extension<RequestId>,
    headers: axum::http::HeaderMap,
    tenant: Option<Extension<crate::middleware::Tenant>>,
    JsonBody(req): JsonBody<EmbeddingsRequest>,
) -> Response {
    let started = Instant::now();
    let model = req.model.clone();
    let opts = match super::call_options(&id, &headers, tenant.as_ref().map(|t| &t.0)) {
        Ok(opts) => opts,
        Err(e) => return e.flavor(Flavor::OpenAi).into_response(),
    };
    match state.client.embed_with(req, &opts).await {
        Ok(done) => {
            let mut res = json_response(&done.response);
            meta_headers(res.headers_mut(), &done.meta, started);
            res.extensions_mut().insert(Served {
                model,
                provider: done.meta.provider.clone(),
                prompt_tokens: done.response.usage.prompt_tokens,
                ..Served::default()
            });
            res
        }
        Err(e) => ApiError::from_weir(&e, Flavor::OpenAi).into_response(),
    }
}
