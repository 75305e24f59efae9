//! weir's HTTP gateway: the OpenAI API (and Anthropic's `/v1/messages`) in front of
//! [`weir::Client`].
//!
//! The crate is thin: handlers parse into `weir-types`, call the client, and render the answer
//! or the error ([`error::ApiError`], the one place errors become HTTP). [`router`] builds the
//! whole app without a socket, for tests; [`Server`] binds it and shuts down gracefully.
//!
//! Routes:
//! - `POST /v1/chat/completions` (SSE when `stream: true`), `POST /v1/embeddings`,
//!   `GET /v1/models`, `GET /v1/models/{id}`;
//! - `POST /v1/messages` (Anthropic Messages, native to Anthropic, translated otherwise) and
//!   `POST /v1/messages/count_tokens`;
//! - `GET /health`, `GET /ready`, `GET /status`, `GET /metrics` (Prometheus; admin-guarded);
//! - `POST /admin/circuits/reset`, `GET /cache/stats`, `DELETE /cache` (behind the gateway
//!   keys);
//! - `/admin/keys`, `/admin/usage`, `/admin/budgets`, `GET /admin/recommendations` (behind
//!   the admin guard);
//! - `GET /dashboard` (the live page) and `GET /admin/dashboard.json` (its figures); see
//!   [`dashboard`].
//!
//! Every request passes through the gateway's [`layers`], composed once around the finished
//! router: request id, access log, panic containment and authentication (an async
//! [`layers::Authenticator`]: the configured static keys by default).

pub mod budgets;
pub mod dashboard;
pub mod error;
pub mod extract;
pub mod keys;
pub mod layers;
pub mod ledger;
pub mod recommend;
pub mod routes;
pub mod sse;
pub mod state;
#[cfg(feature = "otel")]
pub mod telemetry;
pub mod upkeep;

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::serve::ListenerExt;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use error::{ApiError, Flavor};
pub use layers::Gateway;
pub use state::AppState;

/// Why the server could not run.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(transparent)]
    Weir(#[from] weir::Error),
    #[error("cannot listen on {addr}: {reason}; pick another address with --listen or WEIR_LISTEN")]
    Bind {
        addr: SocketAddr,
        // Not a `source`: the message already says it, and a printed chain would repeat it.
        reason: std::io::Error,
    },
    #[error("server failed: {0}")]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Store(#[from] weir_store::StoreError),
}

/// The spool's bound: past it, calls are still served but not recorded (and counted).
const SPOOL_MAX_BYTES: u64 = 1 << 30;
/// Records per ledger write, and the longest a record waits for one.
const LEDGER_BATCH: usize = 512;
const LEDGER_EVERY: Duration = Duration::from_millis(200);

/// The ledger spool's directory: `store.spool_dir`, else `spool` beside the SQLite file, else
/// one per process under the system's temp dir (set `store.spool_dir` with Postgres, so a
/// restart finds what a crash left).
fn spool_dir(store: &weir::config::StoreConfig) -> std::path::PathBuf {
    if let Some(dir) = &store.spool_dir {
        return dir.clone();
    }
    match (&store.postgres, &store.sqlite) {
        (None, Some(path)) => path
            .parent()
            .map_or_else(|| std::path::PathBuf::from("spool"), |p| p.join("spool")),
        _ => std::env::temp_dir().join(format!("weir-spool-{}", std::process::id())),
    }
}

/// Where the gateway's state lives: Postgres when configured (shared by replicas), else the
/// SQLite file, else nowhere (static keys only).
pub fn store_location(store: &weir::config::StoreConfig) -> Option<weir_store::StoreLocation> {
    use secrecy::ExposeSecret;
    match (&store.postgres, &store.sqlite) {
        (Some(url), _) => Some(weir_store::StoreLocation::Postgres(
            url.expose_secret().to_owned(),
        )),
        (None, Some(path)) => Some(weir_store::StoreLocation::Sqlite(path.clone())),
        (None, None) => None,
    }
}

/// The whole application, ready for `oneshot` in tests or for [`Server`]: the routes behind
/// the gateway's layers, with the stored gateway keys when the state has a key store, else
/// the configured static ones.
pub fn router(state: AppState) -> Gateway {
    let authenticator: std::sync::Arc<dyn layers::Authenticator> = match &state.keys {
        Some(keys) => std::sync::Arc::new(std::sync::Arc::clone(keys)),
        None => std::sync::Arc::new(layers::StaticKeys::new(
            &state.client.config().server.api_keys,
        )),
    };
    router_with(state, authenticator)
}

/// [`router`] with another [`layers::Authenticator`].
pub fn router_with(
    state: AppState,
    authenticator: std::sync::Arc<dyn layers::Authenticator>,
) -> Gateway {
    let admin = layers::AdminAccess::new(state.client.config().server.admin_key.clone());
    let routes = Router::new()
        .route("/v1/chat/completions", post(routes::chat::completions))
        .route("/chat/completions", post(routes::chat::completions))
        .route("/v1/embeddings", post(routes::embeddings::create))
        .route("/v1/models", get(routes::models::list))
        .route("/v1/models/{*id}", get(routes::models::get))
        .route("/v1/messages", post(routes::messages::create))
        .route(
            "/v1/messages/count_tokens",
            post(routes::messages::count_tokens),
        )
        .route("/health", get(routes::ops::health))
        .route("/ready", get(routes::ops::ready))
        .route("/status", get(routes::ops::status))
        .route("/metrics", get(routes::metrics::metrics))
        .route("/admin/circuits/reset", post(routes::admin::reset_circuits))
        .route(
            "/admin/keys",
            post(routes::keys::create).get(routes::keys::list),
        )
        .route(
            "/admin/keys/{id}",
            get(routes::keys::show)
                .patch(routes::keys::update)
                .delete(routes::keys::revoke),
        )
        .route("/admin/keys/{id}/revoke", post(routes::keys::revoke))
        .route("/admin/usage", get(routes::usage::usage))
        .route(
            "/admin/budgets",
            get(routes::budgets::list).post(routes::budgets::create),
        )
        .route(
            "/admin/budgets/{id}",
            get(routes::budgets::show)
                .put(routes::budgets::put)
                .delete(routes::budgets::remove),
        )
        .route("/admin/keys/{id}/rotate", post(routes::keys::rotate))
        .route("/admin/recommendations", get(routes::recommendations::list))
        .route("/dashboard", get(dashboard::page))
        .route("/dashboard/app.js", get(dashboard::script))
        .route("/dashboard/style.css", get(dashboard::style))
        .route("/admin/dashboard.json", get(dashboard::data))
        .route("/cache/stats", get(routes::admin::cache_stats))
        .route("/cache", axum::routing::delete(routes::admin::clear_cache))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        // Bodies are read by our own extractor, with the configured limit and our error
        // shape, so axum's default body limit never applies.
        .with_state(state);
    layers::gateway(routes, authenticator, admin)
}

async fn not_found(req: axum::extract::Request) -> axum::response::Response {
    let path = req.uri().path().to_owned();
    ApiError::new(
        StatusCode::NOT_FOUND,
        "not_found_error",
        format!("no route for {} {path}: weir serves /v1/chat/completions, /v1/embeddings, /v1/models, /v1/messages", req.method()),
    )
    .flavor(Flavor::for_path(&path))
    .into_response()
}

async fn method_not_allowed(req: axum::extract::Request) -> axum::response::Response {
    let path = req.uri().path().to_owned();
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "invalid_request_error",
        format!(
            "{} is not allowed on {path}; see the API reference for the right method",
            req.method()
        ),
    )
    .flavor(Flavor::for_path(&path))
    .closing()
    .into_response()
}

/// A bound gateway: the listener is open, requests are served once [`Server::run`] is polled.
pub struct Server {
    listener: TcpListener,
    state: AppState,
    grace: Duration,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("addr", &self.listener.local_addr().ok())
            .finish_non_exhaustive()
    }
}

impl Server {
    /// Build the client, open the key store (when the config names one) and bind the
    /// configured address. With no gateway keys (configured or stored), a non-loopback
    /// address is refused in favour of 127.0.0.1 on the same port: an open proxy to paid APIs
    /// must be a decision, made by configuring keys.
    pub async fn bind(config: weir::Config) -> Result<Self, ServeError> {
        let mut addr = config.server.listen;
        let grace = config.server.shutdown_grace;
        let statics = layers::StaticKeys::new(&config.server.api_keys);
        let (keys, ledger, ledger_store, budget_store) = match store_location(&config.store) {
            Some(location) => {
                let store = weir_store::open_store(&location).await?;
                let keys = keys::KeyAuthority::start(store.keys, statics).await?;
                let spool_dir = spool_dir(&config.store);
                let spool = weir_store::Spool::open(&spool_dir, SPOOL_MAX_BYTES)?;
                // What a crash left in the spool is written before the budgets are built,
                // so they start from it.
                let writer = weir_store::LedgerWriter::start(
                    spool.clone(),
                    std::sync::Arc::clone(&store.ledger),
                    LEDGER_BATCH,
                    LEDGER_EVERY,
                )?;
                if let Err(e) = writer.flush().await {
                    tracing::warn!(error = %e, "cannot write what the spool held at start; it is kept for later");
                }
                (
                    Some(keys),
                    Some((spool, std::sync::Arc::new(writer))),
                    Some(store.ledger),
                    Some(store.budgets),
                )
            }
            None => (None, None, None, None),
        };
        let keyed = keys
            .as_ref()
            .map_or(!config.server.api_keys.is_empty(), |k| k.keys_required());
        if !keyed && !addr.ip().is_loopback() {
            tracing::warn!(
                requested = %addr,
                "no gateway keys configured (server.api_keys / WEIR_API_KEYS, or weir keys create): listening on loopback only"
            );
            addr = SocketAddr::from(([127, 0, 0, 1], addr.port()));
        }
        // The tokenizer is built by the key pools, once a key's token window is half used
        // (requests reserve a cheap upper bound until then).
        // Always there, so the admin API can set budgets at run time.
        let budgets = std::sync::Arc::new(weir::budgets::Budgets::new(&config).await?);
        // Stored budgets (set through the admin API) over the configured ones, then every
        // budget started from the ledger.
        let budget_sync = match budget_store {
            Some(store) => Some(
                budgets::BudgetSync::start(
                    store,
                    std::sync::Arc::clone(&budgets),
                    config.budgets.specs.clone(),
                    ledger_store.clone(),
                )
                .await?,
            ),
            None => None,
        };
        if let Some(ledger) = &ledger_store {
            budgets::seed_all(&budgets, ledger.as_ref()).await;
        }
        // Retention and roll-up, swept in the background from now on.
        let upkeep = ledger_store.as_ref().and_then(|store| {
            upkeep::LedgerUpkeep::start(std::sync::Arc::clone(store), config.ledger)
        });
        let pricing = config.pricing.clone();
        let dashboard = std::sync::Arc::new(dashboard::Dashboard::new());
        // Every label value is fixed here, from the config: recording is atomic adds.
        let metrics = std::sync::Arc::new(weir::metrics::Metrics::new(&config));
        let mut builder = weir::Client::builder(config)
            .budgets(budgets)
            .usage_sink(std::sync::Arc::clone(&dashboard.live) as _)
            .usage_sink(std::sync::Arc::clone(&metrics) as _)
            .attempt_observer(std::sync::Arc::clone(&metrics) as _);
        if let Some((spool, _)) = &ledger {
            builder = builder.usage_sink(std::sync::Arc::new(ledger::LedgerSink::new(
                spool.clone(),
                pricing,
            )));
        }
        if keys.is_some() {
            // Stored keys carry their own limits, whatever the config sets.
            builder = builder.with_inbound_limits();
        }
        let client = builder.build_async().await?;
        let mut state = AppState::new(client);
        if let Some(keys) = keys {
            state = state.with_keys(keys);
        }
        if let Some((_, writer)) = ledger {
            state.ledger = Some(writer);
        }
        state.ledger_store = ledger_store;
        state.upkeep = upkeep.map(std::sync::Arc::new);
        state.budget_sync = budget_sync;
        state.dashboard = Some(dashboard);
        state.metrics = Some(metrics);
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|reason| ServeError::Bind { addr, reason })?;
        Ok(Self {
            listener,
            state,
            grace,
        })
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serve until `shutdown` resolves, then stop accepting and give in-flight requests and
    /// streams up to the grace period to finish.
    pub async fn run(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), ServeError> {
        let app = router(self.state.clone());
        let token = CancellationToken::new();
        let stop = token.clone();
        let grace = self.grace;
        tokio::spawn(async move {
            shutdown.await;
            stop.cancel();
        });
        // Nagle + delayed ACK adds ~40 ms to small responses; send each write at once.
        let listener = self.listener.tap_io(|tcp| {
            let _ = tcp.set_nodelay(true);
        });
        let graceful = token.clone();
        // One finished router, shared: `axum::serve` on a bare `Router` rebuilds its route
        // table for every connection (about 4.6 KB each, held for the connection's life).
        // Each connection's clone stamps its requests with the client's address.
        let server = axum::serve(listener, layers::PerConnection::new(app))
            .with_graceful_shutdown(async move { graceful.cancelled().await });
        let deadline = async {
            token.cancelled().await;
            tracing::info!(
                grace_secs = grace.as_secs_f64(),
                "shutting down: finishing in-flight requests"
            );
            tokio::time::sleep(grace).await;
        };
        tokio::select! {
            r = server => r?,
            () = deadline => tracing::warn!("grace period over; closing remaining connections"),
        }
        // Cache writes still on their way to the shared or persistent tier, and keys' last
        // use.
        self.state.client.flush_cache().await;
        if let Some(keys) = &self.state.keys {
            keys.flush().await;
        }
        if let Some(upkeep) = &self.state.upkeep {
            upkeep.stop().await;
        }
        if let Some(ledger) = &self.state.ledger
            && let Err(e) = ledger.flush().await
        {
            tracing::warn!(error = %e, "the usage ledger could not be written before exit; the spool keeps the rest for the next start");
        }
        Ok(())
    }
}

/// Run the gateway until SIGINT or SIGTERM.
pub async fn serve(config: weir::Config) -> Result<(), ServeError> {
    let server = Server::bind(config).await?;
    let auth = server.state.keys.as_ref().map_or(
        !server.state.client.config().server.api_keys.is_empty(),
        |k| k.keys_required(),
    );
    let addr = server.local_addr()?;
    let providers: Vec<String> = server
        .state
        .client
        .config()
        .providers
        .iter()
        .map(|p| p.name.clone())
        .collect();
    tracing::info!(
        %addr,
        providers = %providers.join(","),
        auth = if auth { "gateway keys required" } else { "none (loopback only)" },
        "weir listening: OpenAI API at http://{addr}/v1, Anthropic Messages at http://{addr}/v1/messages"
    );
    server.run(shutdown_signal()).await
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => futures::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = futures::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
}
