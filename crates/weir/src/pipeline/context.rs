//! [`CallContext`]: who is calling, for what, and under which directives; built once at the
//! edge (the gateway's layers, or the library caller) and carried by the call to its end.

use std::sync::Arc;
use std::time::Duration;

use crate::client::CacheDirectives;

/// Who made a call, as the gateway's authentication established it. Every field is optional:
/// a library caller or an open gateway has no principal at all.
///
/// Never holds a secret: `key_id` is the gateway key's public id, not the key.
///
/// The names are shared strings: the gateway builds one principal per key and hands every
/// request a copy, which then costs a reference count per name instead of an allocation.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Principal {
    /// The gateway key's id (not the key).
    pub key_id: Option<Arc<str>>,
    pub user: Option<Arc<str>>,
    pub team: Option<Arc<str>>,
    pub project: Option<Arc<str>>,
    /// The cache namespace the caller may read and write (a hash of its key, never the key),
    /// so tenants never read each other's cache entries; `None` shares the default one.
    pub tenant: Option<Arc<str>>,
    /// The model patterns this caller may use (see [`crate::access`]); `None` allows every
    /// model. Shared: the gateway hands every request of a key the same list.
    pub allowed_models: Option<Arc<[String]>>,
    /// This key's own inbound rate limits (from the stored key), which win over the
    /// configured `limits.per_key` default field by field (a key that sets only `rpm` keeps
    /// the default `tpm`); `None` takes the default.
    pub limits: Option<crate::limits::RateLimit>,
}

/// Free-form `key = value` labels on a call (a template's name, a feature flag, a team's
/// label), carried into the usage event and the response metadata. A short list kept in
/// insertion order: a call has a handful at most, and an empty list costs no allocation.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
#[serde(transparent)]
pub struct Tags(Vec<(String, String)>);

impl Tags {
    /// Set `key` to `value`, replacing an earlier value.
    pub fn insert(&mut self, key: impl Into<String>, value: impl Into<String>) {
        let (key, value) = (key.into(), value.into());
        match self.0.iter_mut().find(|(k, _)| *k == key) {
            Some(slot) => slot.1 = value,
            None => self.0.push((key, value)),
        }
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }
}

/// Everything about one call that is not the request body.
///
/// The gateway builds it from the request's id, its authenticated principal and its headers
/// (`x-weir-priority`, `Cache-Control`, `x-weir-cache-ttl`); a library caller builds it by hand
/// or uses the default. Request hooks may change it before the call is admitted.
#[derive(Debug, Clone, Default)]
pub struct CallContext {
    /// Correlation id, forwarded upstream; empty when the caller has none.
    pub request_id: String,
    pub principal: Principal,
    /// The model the caller asked for (an alias stays an alias). Filled from the request when
    /// empty, and from `defaults.model` when the request names none.
    pub model: String,
    /// Queue priority when keys are out of capacity: higher goes first (FIFO within one).
    pub priority: u8,
    /// Overrides `defaults.request_timeout` for this call.
    pub timeout: Option<Duration>,
    pub cache: CacheDirectives,
    pub tags: Tags,
    /// The client's headers that choose API behaviour at the upstream (Anthropic's
    /// `anthropic-version` and `anthropic-beta`), forwarded to providers that speak that API.
    /// They win over the provider's configured defaults. A plain list: most calls have none,
    /// and an empty list costs nothing to carry or copy.
    pub upstream_headers: Vec<(http::HeaderName, http::HeaderValue)>,
    /// The client's IP address, as the gateway saw it: what `limits.per_ip` counts for calls
    /// without a gateway key. `None` for a library caller.
    pub client_ip: Option<std::net::IpAddr>,
    /// The caller's W3C trace context: the parent of the call's span when traces are
    /// exported (see [`crate::telemetry`]). The gateway fills it only then.
    pub trace_parent: Option<crate::telemetry::TraceParent>,
}

impl CallContext {
    /// A context with this request id and nothing else.
    pub fn with_request_id(request_id: impl Into<String>) -> Self {
        Self {
            request_id: request_id.into(),
            ..Self::default()
        }
    }

    /// Add a tag (builder style).
    pub fn tag(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.tags.insert(key, value);
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_replace_and_keep_their_order() {
        let mut tags = Tags::default();
        tags.insert("team", "search");
        tags.insert("template", "summarizer");
        tags.insert("team", "ads");
        assert_eq!(tags.get("team"), Some("ads"));
        let all: Vec<_> = tags.iter().collect();
        assert_eq!(all, [("team", "ads"), ("template", "summarizer")]);
        assert_eq!(tags.get("nope"), None);
    }
}
