//! The HTTP transport every HTTP adapter sends through.
//!
//! This module owns: the one pooled client per provider ([`HttpClient`]: rustls with the
//! platform's certificate verifier, HTTP/2 when the server offers it through ALPN and HTTP/1.1
//! otherwise, `TCP_NODELAY`, TCP keep-alive, an idle pool), the outgoing request
//! ([`RequestBuilder`], built from an endpoint parsed once at start-up), and the transport's
//! failures as text without URLs ([`error_chain`]).
//!
//! It is hyper's pooled client with nothing on top. weir used reqwest here until callgrind
//! showed its per-request layers at about 15% of the proxy's instructions per request: the URL
//! re-parsed into a `Uri` and again by the redirect policy, the redirect and retry middleware,
//! none of which weir uses (it never follows redirects, and it retries by its own policy).

use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Method, Uri};
use http_body_util::Full;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use crate::config::{ConfigError, Problem, Timeouts};
use crate::error::{Error, Result};

/// The body of every outgoing request: weir always knows the whole body before sending.
pub type Body = Full<Bytes>;

/// An upstream's response; its body is read by the caller (bounded, or as a stream).
pub type Response = http::Response<hyper::body::Incoming>;

/// The error of a request that got no response.
pub type SendError = hyper_util::client::legacy::Error;

/// Install rustls's `ring` crypto provider as the process default. Idempotent.
///
/// ring builds much faster than aws-lc-rs; [`HttpClient::new`] calls this first, and binaries
/// may call it at start too.
pub fn install_crypto_provider() {
    // Err means a provider is already installed (by us or the embedding program): fine.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// One provider's pooled connections.
#[derive(Clone)]
pub struct HttpClient {
    inner: Client<HttpsConnector<HttpConnector>, Body>,
}

impl HttpClient {
    /// Only the connect timeout is set here; the first-byte and total timeouts are per call
    /// (`CallDeadlines`) because a stream may legitimately outlive any fixed timeout.
    pub fn new(timeouts: &Timeouts) -> Result<Self> {
        install_crypto_provider();
        let mut tcp = HttpConnector::new();
        // Let the TLS layer take https URLs; plain http is allowed for local servers.
        tcp.enforce_http(false);
        // Nagle + delayed ACK adds ~40 ms to small writes; LLM traffic is all small writes.
        tcp.set_nodelay(true);
        tcp.set_keepalive(Some(Duration::from_secs(60)));
        tcp.set_connect_timeout(Some(timeouts.connect));
        let tls = hyper_rustls::HttpsConnectorBuilder::new()
            .try_with_platform_verifier()
            .map_err(|e| client_error(&format!("could not load the TLS roots: {e}")))?
            .https_or_http()
            .enable_all_versions()
            .wrap_connector(tcp);
        let inner = Client::builder(TokioExecutor::new())
            .timer(TokioTimer::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(Duration::from_secs(90))
            .pool_max_idle_per_host(64)
            .http2_adaptive_window(true)
            // Finds dead pooled HTTP/2 connections before a request is lost on one.
            .http2_keep_alive_interval(Duration::from_secs(30))
            .http2_keep_alive_timeout(Duration::from_secs(10))
            .build(tls);
        Ok(Self { inner })
    }

    /// A request to `uri` with `headers` (auth and configured headers already in).
    pub fn request(&self, method: Method, uri: &Uri, mut headers: HeaderMap) -> RequestBuilder {
        headers
            .entry(http::header::USER_AGENT)
            .or_insert(HeaderValue::from_static(USER_AGENT));
        let mut req = http::Request::new(Body::default());
        *req.method_mut() = method;
        *req.uri_mut() = uri.clone();
        *req.headers_mut() = headers;
        RequestBuilder {
            client: self.inner.clone(),
            req,
        }
    }
}

const USER_AGENT: &str = concat!("weir/", env!("CARGO_PKG_VERSION"));

/// A request about to be sent.
pub struct RequestBuilder {
    client: Client<HttpsConnector<HttpConnector>, Body>,
    req: http::Request<Body>,
}

impl RequestBuilder {
    pub fn header(mut self, name: HeaderName, value: HeaderValue) -> Self {
        self.req.headers_mut().insert(name, value);
        self
    }

    /// The whole body; it goes out with a Content-Length.
    pub fn body(mut self, bytes: impl Into<Bytes>) -> Self {
        *self.req.body_mut() = Full::new(bytes.into());
        self
    }

    /// The response head (or why there is none). Redirects are not followed: an LLM API that
    /// redirects is a misconfigured base URL, and following a redirected POST would silently
    /// turn it into a GET.
    pub async fn send(self) -> std::result::Result<Response, SendError> {
        self.client.request(self.req).await
    }

    /// The request as it will go out (tests).
    #[cfg(test)]
    pub fn as_request(&self) -> &http::Request<Body> {
        &self.req
    }
}

/// Whether sending failed because the TCP connect timed out.
pub fn is_connect_timeout(e: &SendError) -> bool {
    e.is_connect()
        && sources(e).any(|s| {
            s.downcast_ref::<std::io::Error>()
                .is_some_and(|io| io.kind() == std::io::ErrorKind::TimedOut)
        })
}

fn sources<'a>(
    e: &'a (dyn std::error::Error + 'static),
) -> impl Iterator<Item = &'a (dyn std::error::Error + 'static)> {
    std::iter::successors(Some(e), |e| e.source())
}

/// An error and its causes as one line. hyper's errors carry no URL; the chain is deduplicated
/// because wrappers often repeat their cause's text.
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    for s in sources(e) {
        let text = s.to_string();
        if !text.is_empty() && !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
    }
    parts.join(": ")
}

fn client_error(reason: &str) -> Error {
    Error::Config(ConfigError {
        file: None,
        problems: vec![Problem {
            path: "(http client)".to_owned(),
            reason: reason.to_owned(),
        }],
    })
}

/// An upstream endpoint: the URL as configured (for messages and Debug) and the request
/// target parsed from it once, when the provider is built.
#[derive(Debug, Clone)]
pub struct Endpoint {
    url: url::Url,
    uri: Uri,
}

impl Endpoint {
    pub fn new(provider: &str, url: url::Url) -> Result<Self> {
        let uri = url.as_str().parse::<Uri>().map_err(|e| {
            Error::Config(ConfigError {
                file: None,
                problems: vec![Problem {
                    path: format!("providers.{provider}.base_url"),
                    reason: format!("not a usable URL: {e}"),
                }],
            })
        })?;
        Ok(Self { url, uri })
    }

    pub fn url(&self) -> &url::Url {
        &self.url
    }

    pub fn uri(&self) -> &Uri {
        &self.uri
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn client_builds_with_ring() {
        install_crypto_provider();
        HttpClient::new(&Timeouts::default()).unwrap();
    }

    #[test]
    fn requests_carry_the_user_agent_and_keep_a_configured_one() {
        let client = HttpClient::new(&Timeouts::default()).unwrap();
        let uri: Uri = "http://127.0.0.1:9/v1/chat/completions".parse().unwrap();
        let rb = client.request(Method::POST, &uri, HeaderMap::new());
        assert_eq!(
            rb.as_request().headers()["user-agent"],
            concat!("weir/", env!("CARGO_PKG_VERSION"))
        );
        let mut h = HeaderMap::new();
        h.insert("user-agent", HeaderValue::from_static("mine"));
        let rb = client.request(Method::POST, &uri, h).body(b"{}".to_vec());
        assert_eq!(rb.as_request().headers()["user-agent"], "mine");
        assert_eq!(rb.as_request().uri(), &uri);
    }

    #[test]
    fn chains_drop_repeats() {
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        assert_eq!(error_chain(&io), "refused");
    }
}
