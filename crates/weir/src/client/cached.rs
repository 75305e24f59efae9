//! The response cache and single-flight in front of the engine.
//!
//! Per chat call: decide whether the cache applies ([`Client::cache_plan`]) -> look the exact
//! key up in the tiers, then (opt-in) the semantic index -> on a miss, join or lead the flight
//! for that key, so identical requests in flight share one upstream call -> the leader stores a
//! complete, successful answer. Streams follow the same path: a hit is replayed as chunks, a
//! miss is one upstream stream fanned out to every identical request and stored once complete.
//!
//! Policy (documented in the README):
//! - Only requests that do not sample are cached by default (temperature 0); `cache_sampled`
//!   or a per-call TTL (`x-weir-cache-ttl`) opts sampled requests in. `n > 1` never is.
//! - `no_read` (`Cache-Control: no-cache`) skips the lookup and the flight: the caller wants a
//!   fresh answer. `no_store` keeps the answer out of the cache.
//! - A leader's error is every follower's error (they asked at the same instant); a leader
//!   cancelled before answering hands the call to a follower (see [`crate::cache::flight`]).
//! - Hits and followers cost nothing: their meta reports the answer's usage with a cost of 0,
//!   and the savings appear in the cache stats. Upstream spend is counted once, by the leader.

use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context as TaskContext, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use futures::future::BoxFuture;
use futures::stream::BoxStream;
use futures::{FutureExt, Stream, StreamExt};
use serde::{Deserialize, Serialize};
use weir_types::chat::{ChatChunk, ChatRequest, ChatResponse, StreamOptions};
use weir_types::embeddings::{EmbeddingVector, EmbeddingsRequest};

use super::route::Target;
use super::{ChatStream, Client, Completion};
use crate::cache::flight::{Flights, Role, StreamFlights};
use crate::cache::key;
use crate::cache::memory::MemoryStore;
use crate::cache::redis::RedisStore;
use crate::cache::replay::{chunks_from_response, replay, response_from_chunks};
use crate::cache::semantic::{SemanticIndex, partition_key, prompt_text};
#[cfg(feature = "sqlite")]
use crate::cache::sqlite::SqliteStore;
use crate::cache::store::{CacheKey, CacheStore};
use crate::cache::tiered::{CacheStats, TieredCache};
use crate::config::CacheConfig;
use crate::error::Result;
use crate::pipeline::CacheOutcome;
use crate::pipeline::call::{Call, Ending, StreamStart, meta_of};
use crate::pipeline::meter::StreamMeter;
use crate::provider::RawBody;

/// Per-call cache directives (the gateway maps `Cache-Control` and `x-weir-cache-ttl` here).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheDirectives {
    /// Skip the lookup (and any identical request in flight): fetch a fresh answer.
    pub no_read: bool,
    /// Keep this answer out of the cache.
    pub no_store: bool,
    /// Time to live of the entry this call writes; `cache.ttl` when unset.
    pub ttl: Option<Duration>,
    /// Cache the call even if it samples (temperature above 0 or unset).
    pub force: bool,
}

/// Where an answer came from, as `x-weir-cache` reports it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CacheStatus {
    /// Served from the cache; no upstream call.
    Hit,
    /// Looked up, not found: answered upstream (or by an identical in-flight request).
    Miss,
    /// The cache did not apply: disabled, a sampled request, or `no-cache`.
    #[default]
    Bypass,
}

impl From<CacheOutcome> for CacheStatus {
    fn from(c: CacheOutcome) -> Self {
        match c {
            CacheOutcome::Hit => Self::Hit,
            // A shared answer was still a miss of the cache (`x-weir-coalesced` says the rest).
            CacheOutcome::Miss | CacheOutcome::Coalesced => Self::Miss,
            CacheOutcome::Bypass => Self::Bypass,
        }
    }
}

impl CacheStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Hit => "hit",
            Self::Miss => "miss",
            Self::Bypass => "bypass",
        }
    }
}

/// One stored answer and the deployment that produced it.
#[derive(Debug)]
struct CachedResponse {
    provider: String,
    upstream_model: String,
    response: ChatResponse,
    /// `response` as stored: a slice of the entry, forwarded by the gateway as is.
    response_json: Bytes,
}

/// A stored entry: `{"provider": .., "upstream_model": .., "response": {..}}`, the response
/// left unparsed so its bytes can be sliced out of the entry.
#[derive(Deserialize)]
struct StoredEntry<'a> {
    provider: String,
    upstream_model: String,
    #[serde(borrow)]
    response: &'a serde_json::value::RawValue,
}

impl CachedResponse {
    fn read(entry: &Bytes) -> serde_json::Result<Self> {
        // Text once, then `from_str`: cheaper than `from_slice` checking string by string.
        let Ok(text) = std::str::from_utf8(entry) else {
            // Not UTF-8, so not an entry: let serde say where it breaks.
            return Err(serde_json::from_slice::<StoredEntry<'_>>(entry)
                .err()
                .unwrap_or_else(|| serde::de::Error::custom("a cache entry that is not UTF-8")));
        };
        let (provider, upstream_model, json) = match split_entry(text) {
            Some(parts) => parts,
            None => {
                let stored: StoredEntry<'_> = serde_json::from_str(text)?;
                (
                    stored.provider,
                    stored.upstream_model,
                    stored.response.get(),
                )
            }
        };
        Ok(Self {
            // Parsing the answer also checks it is whole: a cut entry is an error, so a miss.
            response: serde_json::from_str(json)?,
            response_json: entry.slice_ref(json.as_bytes()),
            provider,
            upstream_model,
        })
    }

    /// An entry for the answer `response_json` (valid JSON: it was parsed, or serialised by
    /// weir). Written around the answer's bytes, so a received answer is stored as received.
    fn write(provider: &str, upstream_model: &str, response_json: &[u8]) -> Bytes {
        let mut out = Vec::with_capacity(response_json.len() + provider.len() + 80);
        out.extend_from_slice(b"{\"provider\":");
        // Writing a string into a Vec cannot fail.
        let _ = serde_json::to_writer(&mut out, provider);
        out.extend_from_slice(b",\"upstream_model\":");
        let _ = serde_json::to_writer(&mut out, upstream_model);
        out.extend_from_slice(b",\"response\":");
        out.extend_from_slice(response_json);
        out.push(b'}');
        Bytes::from(out)
    }
}

/// The parts of an entry laid out as [`CachedResponse::write`] writes it, found without
/// reading the answer: a `RawValue` has to scan the answer to find its end, about 8% of a
/// cache hit. `None` for any other layout, which the general parse reads.
fn split_entry(text: &str) -> Option<(String, String, &str)> {
    fn string_after<'t>(text: &'t str, prefix: &str) -> Option<(String, &'t str)> {
        let rest = text.strip_prefix(prefix)?;
        let mut values = serde_json::Deserializer::from_str(rest).into_iter::<String>();
        let value = values.next()?.ok()?;
        Some((value, rest.get(values.byte_offset()..)?))
    }
    let (provider, rest) = string_after(text, "{\"provider\":")?;
    let (upstream_model, rest) = string_after(rest, ",\"upstream_model\":")?;
    let json = rest.strip_prefix(",\"response\":")?.strip_suffix('}')?;
    Some((provider, upstream_model, json))
}

/// The cache tiers, flights and semantic index of one client.
#[derive(Debug)]
pub(crate) struct CacheLayer {
    config: CacheConfig,
    tiered: TieredCache,
    flights: Flights<Completion>,
    streams: StreamFlights,
    semantic: Option<SemanticIndex>,
    cleanup: Option<tokio::task::JoinHandle<()>>,
}

impl Drop for CacheLayer {
    fn drop(&mut self) {
        if let Some(task) = self.cleanup.take() {
            task.abort();
        }
    }
}

impl CacheLayer {
    /// Open the configured tiers; `None` when the cache is switched off. `redis` is the
    /// already connected shared tier (connecting is async; see `ClientBuilder::build_async`).
    pub(crate) fn open(config: &CacheConfig, redis: Option<RedisStore>) -> Result<Option<Self>> {
        if !config.enabled {
            return Ok(None);
        }
        let l1 = config
            .memory_bytes
            .map(|bytes| Arc::new(MemoryStore::new(bytes)) as Arc<dyn CacheStore>);
        // Only an SQLite tier has a sweep to run.
        #[cfg_attr(not(feature = "sqlite"), allow(unused_mut))]
        let mut cleanup = None;
        let l2: Option<Arc<dyn CacheStore>> = match (redis, &config.sqlite) {
            #[cfg(feature = "redis")]
            (Some(redis), _) => Some(Arc::new(redis)),
            #[cfg(not(feature = "redis"))]
            (Some(none), _) => match none {},
            #[cfg(not(feature = "sqlite"))]
            (None, Some(_)) => {
                return Err(crate::Error::config(
                    "cache.sqlite",
                    crate::cache::feature_missing("sqlite"),
                ));
            }
            #[cfg(feature = "sqlite")]
            (None, Some((path, max_bytes))) => {
                let store = SqliteStore::open(path, *max_bytes).map_err(|e| {
                    crate::Error::config(
                        "cache.sqlite.path",
                        format!("{e}; check that {} is a writable file path", path.display()),
                    )
                })?;
                let store = Arc::new(store);
                // Expired rows are misses anyway; the sweep only reclaims their space, so a
                // client built outside a runtime simply goes without it.
                if tokio::runtime::Handle::try_current().is_ok() {
                    cleanup = Some(store.spawn_cleanup(config.cleanup_interval));
                }
                Some(store)
            }
            (None, None) => None,
        };
        let semantic = config
            .semantic
            .as_ref()
            .map(|s| SemanticIndex::new(s.max_entries, s.threshold));
        Ok(Some(Self {
            config: config.clone(),
            tiered: TieredCache::new(l1, l2, config.ttl),
            flights: Flights::new(),
            streams: StreamFlights::new(),
            semantic,
            cleanup,
        }))
    }

    /// Connect the shared Redis tier, if configured.
    pub(crate) async fn connect_redis(config: &CacheConfig) -> Result<Option<RedisStore>> {
        let Some((url, prefix)) = config.redis.as_ref().filter(|_| config.enabled) else {
            return Ok(None);
        };
        #[cfg(not(feature = "redis"))]
        let connected = {
            let _ = (url, prefix);
            Err(crate::Error::config(
                "cache.redis",
                crate::cache::feature_missing("redis"),
            ))
        };
        #[cfg(feature = "redis")]
        let connected = {
            use secrecy::ExposeSecret;
            RedisStore::connect(url.expose_secret(), prefix)
                .await
                .map(Some)
                .map_err(|e| {
                    crate::Error::config(
                        "cache.redis.url",
                        format!("{e}; check that Redis is running and the URL is right"),
                    )
                })
        };
        connected
    }
}

/// What the cache does for one call.
struct Plan {
    key: CacheKey,
    read: bool,
    store: bool,
    ttl: Duration,
    /// The semantic partition and prompt, when the semantic cache is on and there is a prompt.
    semantic: Option<(String, String)>,
    /// The prompt's embedding, once computed by the lookup (reused to index the answer).
    embedding: Option<Vec<f32>>,
}

impl Client {
    fn cache(&self) -> Option<&CacheLayer> {
        self.inner.cache.as_ref()
    }

    /// Whether and how the cache applies to `req`, called for `model`.
    fn cache_plan(&self, req: &ChatRequest, call: &Call) -> Option<Plan> {
        let (model, ctx) = (call.model(), &call.context);
        let layer = self.cache()?;
        let d = ctx.cache;
        if d.no_read && d.no_store {
            return None;
        }
        if key::is_sampled(req) && !(layer.config.cache_sampled || d.force) {
            return None;
        }
        let resolved = match super::route::resolve_target(&self.inner.config, model).ok()? {
            Target::Group(name) => name,
            Target::Direct(route) => route.qualified(),
        };
        let namespace = match &ctx.principal.tenant {
            Some(t) if layer.config.per_tenant => &**t,
            _ => "shared",
        };
        // The call's prompt fingerprint (taken for the ledger) is this digest when the model
        // resolved to its own name: hashing the request once is enough.
        let key = match &call.prompt_fingerprint {
            Some(digest) if resolved == model => CacheKey {
                namespace: namespace.to_owned(),
                model: resolved.clone(),
                digest: digest.clone(),
            },
            _ => key::cache_key(req, &resolved, namespace)?,
        };
        let semantic = layer.semantic.as_ref().and_then(|_| {
            let prompt = prompt_text(req)?;
            Some((partition_key(req, &resolved, namespace), prompt))
        });
        Some(Plan {
            key,
            read: !d.no_read,
            store: !d.no_store,
            ttl: d.ttl.unwrap_or(layer.config.ttl),
            semantic,
            embedding: None,
        })
    }

    /// The exact entry for the plan's key, else the semantic neighbour's (opt-in). Records
    /// the hit (with its savings) but not the miss: the caller knows whether it looked.
    async fn cache_lookup(&self, layer: &CacheLayer, plan: &mut Plan) -> Option<CachedResponse> {
        let (found, tier) = match layer.tiered.get(&plan.key).await {
            Some(hit) => (hit.value, hit.tier),
            None => (self.semantic_lookup(layer, plan).await?, "semantic"),
        };
        let cached = match CachedResponse::read(&found) {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(key = %plan.key, error = %e, "unreadable cache entry: treated as a miss");
                return None;
            }
        };
        let usage = cached.response.usage.as_ref();
        let saved = usage
            .and_then(|u| {
                let pricing = &self.inner.config.pricing;
                pricing.cost(&cached.provider, &cached.upstream_model, u)
            })
            .unwrap_or_default();
        layer.tiered.record_hit(
            tier,
            usage.map_or(0, |u| u.prompt_tokens),
            usage.map_or(0, |u| u.completion_tokens),
            saved,
        );
        Some(cached)
    }

    /// Embed the prompt and look for a stored prompt close enough in the same partition.
    async fn semantic_lookup(&self, layer: &CacheLayer, plan: &mut Plan) -> Option<Bytes> {
        let index = layer.semantic.as_ref()?;
        let config = layer.config.semantic.as_ref()?;
        let (partition, prompt) = plan.semantic.as_ref()?;
        let req = EmbeddingsRequest::new(config.model.clone(), vec![prompt.clone()]);
        let embedding = match self.embed(req).await {
            Ok(out) => match out.response.data.into_iter().next()?.embedding {
                EmbeddingVector::Float(v) => v,
                // weir never asks for base64, so an upstream sending it is ignored.
                EmbeddingVector::Base64(_) => return None,
            },
            Err(e) => {
                tracing::warn!(error = %e, "semantic cache: embedding failed, treated as a miss");
                return None;
            }
        };
        let found = index.lookup(partition, &embedding);
        plan.embedding = Some(embedding);
        let key = parse_flat_key(&found?.cache_key)?;
        layer.tiered.get(&key).await.map(|hit| hit.value)
    }

    /// Write a complete answer under the plan's key (and index its prompt).
    async fn cache_store(
        &self,
        layer: &CacheLayer,
        plan: &Plan,
        provider: &str,
        upstream_model: &str,
        response: &ChatResponse,
        received: Option<&Bytes>,
    ) {
        if !plan.store || response.choices.iter().any(|c| c.finish_reason.is_none()) {
            return;
        }
        let serialised;
        let response_json = match received {
            Some(bytes) => bytes.as_ref(),
            None => match crate::json::to_vec(response) {
                Ok(b) => {
                    serialised = b;
                    serialised.as_slice()
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cache entry could not be serialised");
                    return;
                }
            },
        };
        let bytes = CachedResponse::write(provider, upstream_model, response_json);
        layer
            .tiered
            .put_write_behind(&plan.key, bytes, plan.ttl)
            .await;
        if let (Some(index), Some((partition, _)), Some(embedding)) =
            (&layer.semantic, &plan.semantic, &plan.embedding)
        {
            index.insert(partition, embedding.clone(), plan.key.flat(), plan.ttl);
        }
    }

    /// End a call answered without an upstream call of its own: a hit, or a copy of an
    /// identical call's answer. Its usage is the answer's, at no cost.
    fn finish_free(
        mut call: Call,
        provider: &str,
        upstream_model: &str,
        usage: Option<weir_types::chat::Usage>,
    ) -> super::ResponseMeta {
        let client = call.client.clone();
        let verdict = std::mem::take(&mut call.verdict);
        let event = call.finish(Ending {
            route: Some(super::Route {
                provider: provider.to_owned(),
                upstream_model: upstream_model.to_owned(),
            }),
            usage: usage.clone(),
            ..Ending::default()
        });
        meta_of(&client, event, usage, None, verdict)
    }

    /// `chat_with` after admission: the cache, then single-flight, then the engine.
    pub(crate) async fn chat_cached(&self, req: ChatRequest, mut call: Call) -> Result<Completion> {
        let Some(layer) = self.cache() else {
            return self.chat_uncached(req, call).await;
        };
        let Some(mut plan) = self.cache_plan(&req, &call) else {
            return self.chat_uncached(req, call).await;
        };
        if plan.read {
            if let Some(cached) = self.cache_lookup(layer, &mut plan).await {
                call.cache = CacheOutcome::Hit;
                let usage = cached.response.usage.clone();
                let meta = Self::finish_free(call, &cached.provider, &cached.upstream_model, usage);
                return Ok(Completion::new(
                    cached.response,
                    meta,
                    Some(RawBody(cached.response_json)),
                ));
            }
            layer.tiered.record_miss();
            call.cache = CacheOutcome::Miss;
        }
        let (result, role) = if plan.read {
            // The leader takes the call into the upstream request; a follower keeps it.
            let mut mine = Some(call);
            let flight = plan.key.flat();
            let taken = &mut mine;
            let (result, role) = layer
                .flights
                .run(flight, || {
                    let call = taken.take();
                    async move {
                        match call {
                            Some(call) => self.chat_uncached(req, call).await,
                            None => Err(crate::Error::invalid_request("a call ran twice")),
                        }
                    }
                })
                .await;
            match (role, mine) {
                (Role::Follower, Some(mut call)) => {
                    layer.tiered.record_coalesced();
                    call.cache = CacheOutcome::Coalesced;
                    let done = match result {
                        Ok(done) => done,
                        Err(e) => return Err(call.fail(e)),
                    };
                    let usage = done.response.usage.clone();
                    let meta = Self::finish_free(
                        call,
                        &done.meta.provider,
                        &done.meta.upstream_model,
                        usage,
                    );
                    return Ok(Completion { meta, ..done });
                }
                _ => (result, Role::Leader),
            }
        } else {
            (self.chat_uncached(req, call).await, Role::Leader)
        };
        let done = result?;
        if role == Role::Leader {
            let meta = &done.meta;
            self.cache_store(
                layer,
                &plan,
                &meta.provider,
                &meta.upstream_model,
                &done.response,
                done.received_json(),
            )
            .await;
        }
        Ok(done)
    }

    /// `chat_stream_with` after admission: a hit is replayed; a miss is one upstream stream
    /// shared by every identical request in flight, stored once it completes.
    pub(crate) async fn chat_stream_cached(
        &self,
        mut req: ChatRequest,
        mut call: Call,
    ) -> Result<ChatStream> {
        let Some(layer) = self.cache() else {
            return self.chat_stream_uncached(req, call).await;
        };
        let Some(mut plan) = self.cache_plan(&req, &call) else {
            return self.chat_stream_uncached(req, call).await;
        };
        let wants_usage = req.wants_stream_usage();
        if plan.read {
            if let Some(cached) = self.cache_lookup(layer, &mut plan).await {
                call.cache = CacheOutcome::Hit;
                let start = StreamStart {
                    route: super::Route {
                        provider: cached.provider.clone(),
                        upstream_model: cached.upstream_model.clone(),
                    },
                    ..StreamStart::default()
                };
                let meta = call.stream_meta(&start);
                // Always with usage, so the call's event has its tokens; the stream passes it
                // on only if asked.
                let chunks = chunks_from_response(&cached.response, true);
                let stream = replay(chunks, layer.config.replay_pace);
                let meter = StreamMeter::new(call, start, 0);
                return Ok(ChatStream::new(stream, meta, wants_usage, meter));
            }
            layer.tiered.record_miss();
            call.cache = CacheOutcome::Miss;
        }
        let plan = Arc::new(plan);
        if !plan.read {
            let mut stream = self.chat_stream_uncached(req, call).await?;
            let tee = self.tee_into_cache(Arc::clone(&plan), stream.meta());
            stream.map_inner(tee);
            return Ok(stream);
        }

        // One upstream stream for every identical request: it carries usage whatever each
        // caller asked for (so the stored answer has it), and each caller's view drops it
        // unless that caller asked. The leader's call is metered by that upstream stream;
        // each follower's by its own view.
        req.stream_options = Some(StreamOptions {
            include_usage: Some(true),
            extra: Default::default(),
        });
        let leader_meta: OnceLock<super::ResponseMeta> = OnceLock::new();
        let mut mine = Some(call);
        let taken = &mut mine;
        let joined = layer
            .streams
            .join(plan.key.flat(), || {
                let call = taken.take();
                async {
                    let Some(call) = call else {
                        return Err(crate::Error::invalid_request("a call ran twice"));
                    };
                    let mut stream = self.chat_stream_uncached(req, call).await?;
                    stream.set_pass_usage(true);
                    let tee = self.tee_into_cache(Arc::clone(&plan), stream.meta());
                    stream.map_inner(tee);
                    let _ = leader_meta.set(stream.meta().clone());
                    Ok(stream.boxed())
                }
            })
            .await;
        match (mine, leader_meta.into_inner()) {
            (None, Some(meta)) => {
                let (chunks, _) = joined?;
                let meter = StreamMeter::summary_only(meta.cost_usd);
                Ok(ChatStream::new(chunks, meta, wants_usage, meter))
            }
            (None, None) => Err(joined.err().unwrap_or_else(|| {
                crate::Error::invalid_request("the shared stream did not start")
            })),
            (Some(mut call), _) => {
                layer.tiered.record_coalesced();
                call.cache = CacheOutcome::Coalesced;
                let (chunks, _) = match joined {
                    Ok(j) => j,
                    Err(e) => return Err(call.fail(e)),
                };
                let route = match self.resolve(call.model()) {
                    Ok(r) => r,
                    Err(e) => return Err(call.fail(e)),
                };
                let start = StreamStart {
                    route,
                    ..StreamStart::default()
                };
                let meta = call.stream_meta(&start);
                let meter = StreamMeter::new(call, start, 0);
                Ok(ChatStream::new(chunks, meta, wants_usage, meter))
            }
        }
    }

    /// A stream adapter that passes chunks through and, once the stream has ended normally,
    /// assembles them and stores the answer before reporting the end (so a request sent after
    /// the stream ended finds the entry). A stream that fails or is dropped stores nothing.
    fn tee_into_cache(
        &self,
        plan: Arc<Plan>,
        meta: &super::ResponseMeta,
    ) -> impl FnOnce(BoxStream<'static, Result<ChatChunk>>) -> BoxStream<'static, Result<ChatChunk>>
    + use<> {
        let client = self.clone();
        let provider = meta.provider.clone();
        let upstream = meta.upstream_model.clone();
        move |inner| {
            let store = move |chunks: Vec<ChatChunk>| -> BoxFuture<'static, ()> {
                async move {
                    if let (Some(layer), Some(response)) =
                        (client.cache(), response_from_chunks(&chunks))
                    {
                        client
                            .cache_store(layer, &plan, &provider, &upstream, &response, None)
                            .await;
                    }
                }
                .boxed()
            };
            Tee {
                inner,
                seen: Vec::new(),
                failed: false,
                store: Some(Box::new(store)),
                storing: None,
            }
            .boxed()
        }
    }
}

type StoreFn = Box<dyn FnOnce(Vec<ChatChunk>) -> BoxFuture<'static, ()> + Send>;

/// Passes a stream through while keeping a copy of its chunks; at a normal end, runs the
/// store future to completion before reporting the end.
struct Tee {
    inner: BoxStream<'static, Result<ChatChunk>>,
    seen: Vec<ChatChunk>,
    failed: bool,
    store: Option<StoreFn>,
    storing: Option<BoxFuture<'static, ()>>,
}

impl Stream for Tee {
    type Item = Result<ChatChunk>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        loop {
            if let Some(storing) = this.storing.as_mut() {
                ready!(storing.as_mut().poll(cx));
                this.storing = None;
                return Poll::Ready(None);
            }
            match ready!(this.inner.as_mut().poll_next(cx)) {
                Some(Ok(chunk)) => {
                    if !this.failed {
                        this.seen.push(chunk.clone());
                    }
                    return Poll::Ready(Some(Ok(chunk)));
                }
                Some(Err(e)) => {
                    this.failed = true;
                    this.seen = Vec::new();
                    return Poll::Ready(Some(Err(e)));
                }
                None => match this.store.take() {
                    Some(store) if !this.failed => {
                        this.storing = Some(store(std::mem::take(&mut this.seen)));
                    }
                    _ => return Poll::Ready(None),
                },
            }
        }
    }
}

/// `v1:{namespace}:{model}:{digest}` back into its parts. The model may itself contain `:`
/// (`ollama/llama3:8b`); the namespace and digest never do.
fn parse_flat_key(flat: &str) -> Option<CacheKey> {
    let rest = flat.strip_prefix("v1:")?;
    let (namespace, rest) = rest.split_once(':')?;
    let (model, digest) = rest.rsplit_once(':')?;
    Some(CacheKey {
        namespace: namespace.to_owned(),
        model: model.to_owned(),
        digest: digest.to_owned(),
    })
}

impl Client {
    /// Hits, misses, coalesced requests, savings and each tier's contents; `None` when the
    /// cache is off.
    pub async fn cache_stats(&self) -> Option<CacheStats> {
        Some(self.cache()?.tiered.stats().await)
    }

    /// Remove every cached entry, or one model's (a named model or `provider/model`).
    /// Returns how many entries were removed.
    pub async fn clear_cache(&self, model: Option<&str>) -> u64 {
        let Some(layer) = self.cache() else { return 0 };
        if model.is_none()
            && let Some(index) = &layer.semantic
        {
            index.clear();
        }
        layer.tiered.clear(model).await.unwrap_or_else(|e| {
            tracing::warn!(error = %e, "cache clear failed");
            0
        })
    }

    /// Wait until every cache write has reached every tier. Shared and persistent tiers are
    /// written behind the memory one; call this before a short-lived process exits.
    pub async fn flush_cache(&self) {
        if let Some(layer) = self.cache() {
            layer.tiered.flush().await;
        }
    }

    /// Whether every cache tier answers, for `/ready`; the error says which does not.
    pub async fn cache_ready(&self) -> std::result::Result<(), String> {
        match self.cache() {
            Some(layer) => layer.tiered.ping().await.map_err(|e| e.to_string()),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests;
