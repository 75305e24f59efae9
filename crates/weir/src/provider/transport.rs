//! The HTTP transport every HTTP adapter sends through.
//!
//! This module owns: the one pooled client per provider ([`HttpClient`]: rustls with the
//! platform's certificate verifier, HTTP/2 when the server offers it through ALPN and HTTP/1.1
//! otherwise, `TCP_NODELAY`, TCP keep-alive, an idle pool, and the proxy the environment names
//! in `HTTPS_PROXY` / `HTTP_PROXY` / `ALL_PROXY` minus `NO_PROXY`), the outgoing request
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
use hyper_util::client::legacy::connect::proxy::Tunnel;
use hyper_util::client::proxy::matcher::Matcher;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use std::future::Future;
use std::sync::Arc;

use crate::config::Timeouts;
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
    inner: Client<HttpsConnector<ProxyConnector>, Body>,
}

impl HttpClient {
    /// Only the connect timeout is set here; the first-byte and total timeouts are per call
    /// (`CallDeadlines`) because a stream may legitimately outlive any fixed timeout.
    pub fn new(timeouts: &Timeouts) -> Result<Self> {
        Self::with_proxies(timeouts, Matcher::from_env())
    }

    /// [`Self::new`] with the proxies `proxies` names instead of the environment's.
    pub fn with_proxies(timeouts: &Timeouts, proxies: Matcher) -> Result<Self> {
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
            .wrap_connector(ProxyConnector {
                direct: tcp,
                proxies: Arc::new(proxies),
            });
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

    /// A request to `endpoint` with `headers` (auth and configured headers already in). The
    /// endpoint's own credentials (`https://user:pass@host`) go out as Basic auth unless the
    /// headers carry an `Authorization` already.
    pub fn request(
        &self,
        method: Method,
        endpoint: &Endpoint,
        mut headers: HeaderMap,
    ) -> RequestBuilder<'_> {
        headers
            .entry(http::header::USER_AGENT)
            .or_insert(HeaderValue::from_static(USER_AGENT));
        if let Some(host) = &endpoint.host {
            headers
                .entry(http::header::HOST)
                .or_insert_with(|| host.clone());
        }
        if let Some(auth) = &endpoint.basic_auth {
            headers
                .entry(http::header::AUTHORIZATION)
                .or_insert_with(|| auth.clone());
        }
        let mut req = http::Request::new(Body::default());
        *req.method_mut() = method;
        *req.uri_mut() = endpoint.uri.clone();
        *req.headers_mut() = headers;
        RequestBuilder {
            client: &self.inner,
            req,
        }
    }
}

const USER_AGENT: &str = concat!("weir/", env!("CARGO_PKG_VERSION"));

/// A request about to be sent, borrowing its provider's client (no clone per request).
pub struct RequestBuilder<'c> {
    client: &'c Client<HttpsConnector<ProxyConnector>, Body>,
    req: http::Request<Body>,
}

impl RequestBuilder<'_> {
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

/// Connects straight to the upstream, or through an HTTP `CONNECT` tunnel when the proxy
/// settings intercept its address (TLS then runs inside the tunnel, end to end).
#[derive(Clone)]
struct ProxyConnector {
    direct: HttpConnector,
    proxies: Arc<Matcher>,
}

type Connecting =
    std::pin::Pin<Box<dyn Future<Output = std::result::Result<Tcp, BoxError>> + Send + 'static>>;
type Tcp = hyper_util::rt::TokioIo<tokio::net::TcpStream>;
type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl tower_service::Service<Uri> for ProxyConnector {
    type Response = Tcp;
    type Error = BoxError;
    type Future = Connecting;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::result::Result<(), BoxError>> {
        self.direct.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, dst: Uri) -> Connecting {
        match self.proxies.intercept(&dst) {
            None => {
                let connecting = self.direct.call(dst);
                Box::pin(async move { connecting.await.map_err(Into::into) })
            }
            Some(proxy) => {
                let mut tunnel = Tunnel::new(proxy.uri().clone(), self.direct.clone());
                if let Some(auth) = proxy.basic_auth() {
                    tunnel = tunnel.with_auth(auth.clone());
                }
                let connecting = tunnel.call(dst);
                Box::pin(async move { connecting.await.map_err(Into::into) })
            }
        }
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
    Error::config("(http client)", reason)
}

/// An upstream endpoint: the URL as configured (for messages and Debug) and the request
/// target parsed from it once, when the provider is built.
#[derive(Clone)]
pub struct Endpoint {
    url: url::Url,
    /// The target without userinfo, which goes out as `basic_auth` instead.
    uri: Uri,
    basic_auth: Option<HeaderValue>,
    /// The `Host` header, built once for plain-HTTP endpoints. hyper-util formats it per
    /// request otherwise. TLS endpoints leave it to hyper-util, because only it knows whether
    /// the connection negotiated HTTP/2, which uses `:authority` instead.
    host: Option<HeaderValue>,
}

impl Endpoint {
    pub fn new(provider: &str, url: url::Url) -> Result<Self> {
        let basic_auth = (!url.username().is_empty() || url.password().is_some())
            .then(|| basic_auth(url.username(), url.password()))
            .flatten();
        let mut target = url.clone();
        // Only fails for URLs that cannot carry userinfo, which then have none.
        let _ = target.set_username("");
        let _ = target.set_password(None);
        let uri = target.as_str().parse::<Uri>().map_err(|e| {
            Error::config(
                format!("providers.{provider}.base_url"),
                format!("not a usable URL: {e}"),
            )
        })?;
        let host = plain_http_host(&uri);
        Ok(Self {
            url,
            uri,
            basic_auth,
            host,
        })
    }

    pub fn url(&self) -> &url::Url {
        &self.url
    }

    pub fn uri(&self) -> &Uri {
        &self.uri
    }
}

/// `host[:port]` as hyper-util writes it (the port only when it is not 80), for `http://`.
fn plain_http_host(uri: &Uri) -> Option<HeaderValue> {
    if uri.scheme() != Some(&http::uri::Scheme::HTTP) {
        return None;
    }
    let host = uri.host()?;
    let value = match uri.port_u16() {
        Some(port) if port != 80 => HeaderValue::from_str(&format!("{host}:{port}")),
        _ => HeaderValue::from_str(host),
    };
    value.ok()
}

/// `Basic base64(user:password)` from a URL's percent-encoded userinfo, marked sensitive.
fn basic_auth(user: &str, password: Option<&str>) -> Option<HeaderValue> {
    use base64::Engine as _;
    let decode = |s: &str| {
        percent_encoding::percent_decode_str(s)
            .decode_utf8_lossy()
            .into_owned()
    };
    let credentials = format!(
        "{}:{}",
        decode(user),
        password.map(decode).unwrap_or_default()
    );
    let encoded = base64::engine::general_purpose::STANDARD.encode(credentials);
    let mut value = HeaderValue::from_str(&format!("Basic {encoded}")).ok()?;
    value.set_sensitive(true);
    Some(value)
}

impl std::fmt::Debug for Endpoint {
    /// Without query or userinfo: either may carry a credential.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&super::openai::redacted_url(&self.url))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
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
        let endpoint = endpoint("http://127.0.0.1:9/v1/chat/completions");
        let uri = endpoint.uri().clone();
        let rb = client.request(Method::POST, &endpoint, HeaderMap::new());
        assert_eq!(
            rb.as_request().headers()["user-agent"],
            concat!("weir/", env!("CARGO_PKG_VERSION"))
        );
        let mut h = HeaderMap::new();
        h.insert("user-agent", HeaderValue::from_static("mine"));
        let rb = client
            .request(Method::POST, &endpoint, h)
            .body(b"{}".to_vec());
        assert_eq!(rb.as_request().headers()["user-agent"], "mine");
        assert_eq!(rb.as_request().uri(), &uri);
    }

    /// With a proxy configured (as `HTTPS_PROXY` would), the call goes through an HTTP
    /// `CONNECT` tunnel: the proxy sees the tunnel, the upstream the request.
    #[tokio::test]
    async fn calls_go_through_the_proxy_the_settings_name() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        use weir_test_support::{FakeUpstream, Reply};

        let fake = FakeUpstream::start().await.unwrap();
        fake.set_default(Reply::json(serde_json::json!({"ok": true})));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let proxy_addr = listener.local_addr().unwrap();
        let tunnels = Arc::new(AtomicUsize::new(0));
        let counted = Arc::clone(&tunnels);
        tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                let counted = Arc::clone(&counted);
                tokio::spawn(async move {
                    let mut head = Vec::new();
                    let mut byte = [0u8; 1];
                    while !head.ends_with(b"\r\n\r\n") {
                        client.read_exact(&mut byte).await.unwrap();
                        head.push(byte[0]);
                    }
                    let head = String::from_utf8(head).unwrap();
                    let mut words = head.split_whitespace();
                    assert_eq!(words.next(), Some("CONNECT"));
                    let target = words.next().unwrap().to_owned();
                    counted.fetch_add(1, Ordering::SeqCst);
                    let mut upstream = tokio::net::TcpStream::connect(target).await.unwrap();
                    client
                        .write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
                        .await
                        .unwrap();
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
                });
            }
        });
        let proxies = Matcher::builder()
            .all(format!("http://{proxy_addr}"))
            .build();
        let target = endpoint(&format!("{}/chat/completions", fake.v1()));
        let post = |proxies| {
            let client = HttpClient::with_proxies(&Timeouts::default(), proxies).unwrap();
            let target = target.clone();
            async move {
                let request = client.request(Method::POST, &target, HeaderMap::new());
                request.body(b"{}".to_vec()).send().await.unwrap().status()
            }
        };
        assert_eq!(post(proxies).await, 200);
        assert_eq!(tunnels.load(Ordering::SeqCst), 1);
        assert_eq!(fake.request_count(), 1);

        // NO_PROXY's list is honoured: this host goes direct.
        let proxies = Matcher::builder()
            .all(format!("http://{proxy_addr}"))
            .no("127.0.0.1")
            .build();
        assert_eq!(post(proxies).await, 200);
        assert_eq!(tunnels.load(Ordering::SeqCst), 1, "not through the proxy");
        assert_eq!(fake.request_count(), 2);
    }

    fn endpoint(url: &str) -> Endpoint {
        Endpoint::new("p", url::Url::parse(url).unwrap()).unwrap()
    }

    /// Credentials in the base URL go out as Basic auth (as reqwest sent them), never in the
    /// request target, and an `Authorization` the provider set wins.
    #[test]
    fn url_credentials_become_basic_auth() {
        let client = HttpClient::new(&Timeouts::default()).unwrap();
        let e = endpoint("http://us%40er:p%3Ass@127.0.0.1:9/v1/models");
        assert_eq!(e.uri().to_string(), "http://127.0.0.1:9/v1/models");
        let rb = client.request(Method::GET, &e, HeaderMap::new());
        let auth = &rb.as_request().headers()["authorization"];
        // base64("us@er:p:ss")
        assert_eq!(auth, "Basic dXNAZXI6cDpzcw==");
        assert!(auth.is_sensitive());
        let mut h = HeaderMap::new();
        h.insert("authorization", HeaderValue::from_static("Bearer sk-x"));
        let rb = client.request(Method::GET, &e, h);
        assert_eq!(rb.as_request().headers()["authorization"], "Bearer sk-x");
        let plain = endpoint("http://127.0.0.1:9/v1/models");
        let rb = client.request(Method::GET, &plain, HeaderMap::new());
        assert!(rb.as_request().headers().get("authorization").is_none());
    }

    /// Plain-HTTP endpoints carry the `Host` hyper-util would have written; TLS ones leave
    /// it to hyper-util, which knows whether the connection is HTTP/2.
    #[test]
    fn host_header_matches_what_hyper_util_writes() {
        let host = |url: &str| endpoint(url).host.map(|h| h.to_str().unwrap().to_owned());
        assert_eq!(
            host("http://127.0.0.1:4200/v1").as_deref(),
            Some("127.0.0.1:4200")
        );
        assert_eq!(
            host("http://local.test:80/v1").as_deref(),
            Some("local.test")
        );
        assert_eq!(host("http://[::1]:8000/v1").as_deref(), Some("[::1]:8000"));
        assert_eq!(host("https://api.example.com/v1"), None);
        let client = HttpClient::new(&Timeouts::default()).unwrap();
        let mut h = HeaderMap::new();
        h.insert("host", HeaderValue::from_static("configured.example"));
        let rb = client.request(Method::GET, &endpoint("http://127.0.0.1:9/v1"), h);
        assert_eq!(rb.as_request().headers()["host"], "configured.example");
    }

    #[test]
    fn endpoints_debug_without_credentials() {
        let url = url::Url::parse("https://user:pw@h.example:8443/v1/x?key=secret").unwrap();
        let e = Endpoint::new("p", url).unwrap();
        assert_eq!(format!("{e:?}"), "https://h.example:8443/v1/x");
        assert_eq!(
            e.uri().query(),
            Some("key=secret"),
            "the request still carries it"
        );
    }

    #[test]
    fn chains_drop_repeats() {
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        assert_eq!(error_chain(&io), "refused");
    }
}
