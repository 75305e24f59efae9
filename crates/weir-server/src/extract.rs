//! The JSON body extractor every route uses, so malformed input gets our error shape.
//!
//! axum's own `Json` answers with plain text; this one answers in the route's API shape with a
//! message naming the problem: an unsupported content type (415), a body over the configured
//! limit (413), bad UTF-8, malformed JSON, or a field of the wrong type, with its path (400).

use axum::extract::{FromRequest, Request};
use axum::http::header;
use serde::de::DeserializeOwned;

use crate::error::{ApiError, Flavor};
use crate::state::AppState;

/// A request body parsed as `T`.
#[derive(Debug)]
pub struct JsonBody<T>(pub T);

impl<T: DeserializeOwned> FromRequest<AppState> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        let flavor = Flavor::for_path(req.uri().path());
        let content_type = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        let mime = content_type
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        // An absent content type is accepted (curl -d sends form, some clients send none):
        // the body still has to be JSON.
        if !(mime.is_empty() || mime == "application/json" || mime.ends_with("+json")) {
            return Err(ApiError::new(
                axum::http::StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "invalid_request_error",
                format!(
                    "unsupported content type `{content_type}`: send the body as application/json"
                ),
            )
            .flavor(flavor)
            .closing());
        }
        let limit = state.body_limit;
        let bytes = axum::body::to_bytes(req.into_body(), limit)
            .await
            .map_err(|e| {
                let too_large = std::error::Error::source(&e)
                    .is_some_and(|s| s.is::<http_body_util_limit::LengthLimitError>())
                    || e.to_string().contains("length limit");
                if too_large {
                    ApiError::new(
                        axum::http::StatusCode::PAYLOAD_TOO_LARGE,
                        "invalid_request_error",
                        format!(
                            "request body is larger than the {limit}-byte limit (server.body_limit)"
                        ),
                    )
                    .with_code("request_too_large")
                    .flavor(flavor)
                    .closing()
                } else {
                    ApiError::bad_request(format!("could not read the request body: {e}"))
                        .flavor(flavor)
                }
            })?;
        parse(&bytes, flavor).map(JsonBody)
    }
}

/// Parse with a precise message: where the problem is and what was expected.
pub fn parse<T: DeserializeOwned>(bytes: &[u8], flavor: Flavor) -> Result<T, ApiError> {
    if bytes.is_empty() {
        return Err(
            ApiError::bad_request("the request body is empty: send a JSON object").flavor(flavor),
        );
    }
    let text = std::str::from_utf8(bytes).map_err(|e| {
        ApiError::bad_request(format!(
            "the request body is not valid UTF-8 (at byte {})",
            e.valid_up_to()
        ))
        .flavor(flavor)
    })?;
    // The plain parse is the fast path; only a body that fails it is parsed again, with
    // serde_path_to_error tracking where, for the message. Parsed as the text just checked:
    // `from_slice` would check each string's UTF-8 again.
    if let Ok(value) = serde_json::from_str(text) {
        return Ok(value);
    }
    let mut de = serde_json::Deserializer::from_str(text);
    let value = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        let message = if inner.is_syntax() || inner.is_eof() {
            format!("malformed JSON: {inner}")
        } else if path == "." {
            format!("invalid request: {inner}")
        } else {
            format!("invalid value at `{path}`: {inner}")
        };
        let mut err = ApiError::bad_request(message).flavor(flavor);
        if path != "." {
            err = err.with_param(path);
        }
        err
    })?;
    // One JSON value and nothing after it (whitespace aside): `{...} garbage` is malformed.
    de.end()
        .map_err(|e| ApiError::bad_request(format!("malformed JSON: {e}")).flavor(flavor))?;
    Ok(value)
}

/// axum re-exports no name for the length-limit error; match it through http-body-util's.
mod http_body_util_limit {
    pub use http_body_util::LengthLimitError;
}

/// The call context of a request, for handlers: its id, its authenticated principal (and the
/// end user the request names, when its key allows that), the client's address, and the
/// directives its headers carry (see [`crate::routes::call_context`]), plus when the request
/// arrived. A header weir cannot read (a malformed `x-weir-cache-ttl`) is a 400 in the
/// route's error shape.
#[derive(Debug)]
pub struct Context {
    pub call: weir::CallContext,
    pub started: std::time::Instant,
    /// Whether the body's own end-user field (OpenAI's `user`) may set the call's user; the
    /// `x-weir-user` header, applied here, wins over it.
    pub may_name_user: bool,
}

impl Context {
    /// Attribute the call to the end user the request body names, when the key allows it and
    /// no `x-weir-user` header named one already.
    pub fn name_user(&mut self, user: Option<&str>) {
        if let Some(user) = user.map(str::trim).filter(|u| !u.is_empty())
            && self.may_name_user
        {
            self.call.principal.user = Some(user.into());
            // Only the first naming counts: the header, when there was one.
            self.may_name_user = false;
        }
    }
}

static X_WEIR_USER: axum::http::HeaderName = axum::http::HeaderName::from_static("x-weir-user");

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for Context {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _state: &S,
    ) -> Result<Self, Self::Rejection> {
        let started = std::time::Instant::now();
        // Taken from the request: the context is their one reader.
        let request_id = parts
            .extensions
            .remove::<crate::layers::RequestId>()
            .map(|id| id.as_str().to_owned())
            .unwrap_or_default();
        let caller = parts
            .extensions
            .remove::<crate::layers::Caller>()
            .unwrap_or_default();
        let anthropic = parts.uri.path().starts_with("/v1/messages");
        let mut call =
            crate::routes::call_context(request_id, caller.principal, &parts.headers, anthropic)
                .map_err(|e| e.flavor(Flavor::for_path(parts.uri.path())))?;
        call.client_ip = parts
            .extensions
            .get::<crate::layers::PeerAddr>()
            .map(|peer| peer.0.ip());
        let mut context = Self {
            call,
            started,
            may_name_user: caller.may_name_user,
        };
        let header_user = parts
            .headers
            .get(&X_WEIR_USER)
            .and_then(|v| v.to_str().ok());
        context.name_user(header_user);
        Ok(context)
    }
}
