//! The Anthropic Messages API in front of providers that do not speak it: the ingress side of
//! the gateway's `POST /v1/messages` when the target is OpenAI, the mock, or any other
//! canonical (OpenAI-shaped) provider. Pure translation, no I/O.
//!
//! - [`request`]: a Messages request → a canonical chat request ([`to_chat_request`]);
//! - [`response`]: a canonical chat response → a Messages response ([`to_messages_response`]);
//! - [`stream`]: canonical chunks → Anthropic stream events in Anthropic's exact order
//!   ([`EventTranslator`]), and the `error` event for a mid-stream failure ([`error_event`]);
//! - here: Anthropic's error types and their HTTP statuses ([`error_type_for_status`],
//!   [`status_for_error_type`]), which the Anthropic provider and the gateway read too.
//!
//! The opposite direction (canonical requests sent to Anthropic) belongs to the Anthropic
//! provider, in [`crate::provider::anthropic::convert`] and
//! [`crate::provider::anthropic::stream`].

pub mod request;
pub mod response;
pub mod stream;

pub use request::to_chat_request;
pub use response::{stop_reason, to_messages_response, usage_from_canonical};
pub use stream::{EventTranslator, error_event};

/// Anthropic's error types, each with the HTTP status Anthropic's API answers it with. Both
/// directions read this one table: [`error_type_for_status`] (the type weir answers with) and
/// [`status_for_error_type`] (the status a streamed `error` event stands for).
const ERROR_TYPES: [(&str, u16); 10] = [
    ("invalid_request_error", 400),
    ("authentication_error", 401),
    ("billing_error", 402),
    ("permission_error", 403),
    ("not_found_error", 404),
    ("request_too_large", 413),
    ("rate_limit_error", 429),
    ("api_error", 500),
    ("timeout_error", 504),
    ("overloaded_error", 529),
];

/// The Anthropic error `type` for an HTTP status, as Anthropic's own API pairs them, so that
/// the SDKs raise the matching exception.
pub fn error_type_for_status(status: u16) -> &'static str {
    if let Some((kind, _)) = ERROR_TYPES.iter().find(|(_, s)| *s == status) {
        return kind;
    }
    match status {
        // A client-side timeout.
        408 => "timeout_error",
        // weir's own "no capacity" (open circuit): the same meaning as Anthropic's 529.
        503 => "overloaded_error",
        // Anthropic uses invalid_request_error for every other 4xx.
        400..=499 => "invalid_request_error",
        _ => "api_error",
    }
}

/// The HTTP status Anthropic pairs with an error `type`; `None` for a type not in its table.
pub fn status_for_error_type(kind: &str) -> Option<u16> {
    ERROR_TYPES
        .iter()
        .find(|(k, _)| *k == kind)
        .map(|(_, status)| *status)
}

#[cfg(test)]
mod stream_tests;
#[cfg(test)]
mod tests;
#[cfg(test)]
pub(crate) mod testutil;
