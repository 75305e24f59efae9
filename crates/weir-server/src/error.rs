//! The one place errors become HTTP responses.
//!
//! Every failure a client can see, whether weir's own (bad JSON, auth) or an upstream's, is an
//! [`ApiError`], rendered in the shape of the route that failed: OpenAI's
//! `{"error":{"message","type","param","code"}}` or Anthropic's
//! `{"type":"error","error":{"type","message"}}`. Statuses are the ones the official SDKs
//! react to correctly, and a Retry-After hint travels as `retry-after` and `retry-after-ms`.

use std::time::Duration;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use weir::Error;
use weir_types::error::{ErrorBody, ErrorDetail};

/// Which API's error shape a route speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavor {
    OpenAi,
    Anthropic,
}

impl Flavor {
    /// `/v1/messages...` speaks Anthropic; everything else OpenAI.
    pub fn for_path(path: &str) -> Self {
        if path.starts_with("/v1/messages") {
            Flavor::Anthropic
        } else {
            Flavor::OpenAi
        }
    }
}

/// An error on its way to a client.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
    /// OpenAI `error.type`.
    pub kind: &'static str,
    pub param: Option<String>,
    pub code: Option<&'static str>,
    pub retry_after: Option<Duration>,
    /// The inbound limit that refused the call: sent as the `X-RateLimit-*` headers. Boxed:
    /// few errors have one, and every error would otherwise carry its size.
    pub quota: Option<Box<weir::pipeline::Quota>>,
    pub flavor: Flavor,
    /// Close the connection after this answer: set when answering before the request body was
    /// read, since the unread body would otherwise be parsed as the next request.
    pub close: bool,
}

impl ApiError {
    pub fn new(status: StatusCode, kind: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
            kind,
            param: None,
            code: None,
            retry_after: None,
            quota: None,
            flavor: Flavor::OpenAi,
            close: false,
        }
    }

    pub fn closing(mut self) -> Self {
        self.close = true;
        self
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_request_error", message)
    }

    pub fn with_code(mut self, code: &'static str) -> Self {
        self.code = Some(code);
        self
    }

    pub fn with_param(mut self, param: impl Into<String>) -> Self {
        self.param = Some(param.into());
        self
    }

    pub fn flavor(mut self, flavor: Flavor) -> Self {
        self.flavor = flavor;
        self
    }

    /// Map a library error.
    pub fn from_weir(err: &Error, flavor: Flavor) -> Self {
        let status = StatusCode::from_u16(err.http_status()).unwrap_or(StatusCode::BAD_GATEWAY);
        // OpenAI's error types; the Anthropic body takes its type from the status instead
        // (`weir::messages::error_type_for_status`), as Anthropic's API does.
        let (kind, code) = match err {
            Error::InvalidRequest { .. } | Error::Unsupported { .. } => {
                ("invalid_request_error", None)
            }
            Error::Authentication { .. } => ("authentication_error", Some("invalid_api_key")),
            Error::Permission { .. } => ("permission_error", None),
            Error::ModelNotFound { .. } => ("not_found_error", Some("model_not_found")),
            Error::RateLimited { .. } => ("rate_limit_error", Some("rate_limit_exceeded")),
            Error::PoolExhausted { .. } => ("rate_limit_error", Some("pool_exhausted")),
            Error::BudgetExceeded { .. } => ("rate_limit_error", Some("budget_exceeded")),
            Error::Rejected { status, code, .. } => (
                match status {
                    401 => "authentication_error",
                    403 => "permission_error",
                    404 => "not_found_error",
                    413 => "invalid_request_error",
                    429 => "rate_limit_error",
                    500..=599 => "api_error",
                    _ => "invalid_request_error",
                },
                Some(*code),
            ),
            Error::Timeout { .. } => ("timeout_error", Some("upstream_timeout")),
            Error::CircuitOpen { .. } => ("api_error", Some("circuit_open")),
            Error::Upstream { status, .. } if *status == 529 => ("overloaded_error", None),
            _ => ("api_error", Some("upstream_error")),
        };
        let param = match err {
            Error::InvalidRequest { param, .. } => param.clone(),
            _ => None,
        };
        Self {
            status,
            message: err.to_string(),
            kind,
            param,
            code,
            retry_after: err.retry_after(),
            quota: match err {
                Error::Rejected { quota, .. } => quota.map(Box::new),
                _ => None,
            },
            flavor,
            close: false,
        }
    }

    /// The body in this error's flavor.
    pub fn body(&self) -> Bytes {
        let json = match self.flavor {
            Flavor::OpenAi => serde_json::to_vec(&ErrorBody {
                error: ErrorDetail {
                    message: self.message.clone(),
                    kind: self.kind.to_owned(),
                    param: self.param.clone(),
                    code: self.code.map(str::to_owned),
                },
            }),
            Flavor::Anthropic => serde_json::to_vec(&serde_json::json!({
                "type": "error",
                "error": {
                    "type": weir::messages::error_type_for_status(self.status.as_u16()),
                    "message": self.message,
                }
            })),
        };
        Bytes::from(json.unwrap_or_default())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut res = (self.status, self.body()).into_response();
        let headers = res.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        if self.close {
            headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        if let Some(quota) = &self.quota {
            crate::routes::quota_headers(headers, quota);
        }
        if let Some(wait) = self.retry_after {
            let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
            if let Ok(v) = HeaderValue::from_str(&secs.to_string()) {
                headers.insert(header::RETRY_AFTER, v);
            }
            if let Ok(v) = HeaderValue::from_str(&wait.as_millis().to_string()) {
                headers.insert("retry-after-ms", v);
            }
        }
        res
    }
}
