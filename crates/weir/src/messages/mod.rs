//! The Anthropic Messages API in front of providers that do not speak it: the ingress side of
//! the gateway's `POST /v1/messages` when the target is OpenAI, the mock, or any other
//! canonical (OpenAI-shaped) provider. Pure translation, no I/O.
//!
//! - [`request`]: a Messages request → a canonical chat request ([`to_chat_request`]);
//! - [`response`]: a canonical chat response → a Messages response ([`to_messages_response`]);
//! - [`stream`]: canonical chunks → Anthropic stream events in Anthropic's exact order
//!   ([`EventTranslator`]), and the `error` event for a mid-stream failure ([`error_event`]);
//! - here: the Anthropic error type for an HTTP status ([`error_type_for_status`]).
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

/// The Anthropic error `type` for an HTTP status, as Anthropic's own API pairs them, so that
/// the SDKs raise the matching exception.
pub fn error_type_for_status(status: u16) -> &'static str {
    match status {
        401 => "authentication_error",
        402 => "billing_error",
        403 => "permission_error",
        404 => "not_found_error",
        413 => "request_too_large",
        429 => "rate_limit_error",
        // 408 is a client-side timeout, 504 weir's or an upstream's.
        408 | 504 => "timeout_error",
        // 503 is weir's own "no capacity" (open circuit): the same meaning as Anthropic's 529.
        503 | 529 => "overloaded_error",
        // Anthropic uses invalid_request_error for every other 4xx.
        400..=499 => "invalid_request_error",
        _ => "api_error",
    }
}

#[cfg(test)]
mod stream_tests;
#[cfg(test)]
mod tests;
#[cfg(test)]
pub(crate) mod testutil;
