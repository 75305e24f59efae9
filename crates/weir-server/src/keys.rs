//! Stored gateway keys: who a request's key belongs to, answered from an in-memory cache in
//! front of the key store (SQLite embedded, or Postgres shared by every replica).
//!
//! A presented key is hashed with the store's secret (a keyed hash: keys are long random
//! tokens, so a slow password hash would only cost time) and looked up by that hash. The
//! answer, found or not, is cached in a lock-free map read without bookkeeping, so a request
//! pays one store query only the first time its key is seen, and one probe after that. Every change to the keys bumps the store's revision; each replica polls it
//! (every [`POLL_EVERY`]) and drops its cache when it moves, so a revocation anywhere takes
//! effect everywhere within well under a second. When the gateway itself changes a key, it
//! drops its own cache at once.
//!
//! Once the store holds any key (revoked ones count), every request must present a valid key:
//! revoking the last key never opens the gateway. The configured static keys
//! (`server.api_keys`) keep working beside the stored ones.

use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::http::StatusCode;
use axum::http::request::Parts;
use weir::Principal;
use weir_store::{KeyHash, KeyHasher, KeyRecord, KeyStore};

use crate::layers::auth::{
    AuthDecision, Authenticator, Caller, Refusal, StaticKeys, presented_key,
};

/// How often each replica asks the store whether the keys changed.
pub const POLL_EVERY: Duration = Duration::from_millis(250);
/// How often keys' last-used times are written back (batched; never on the request path).
const TOUCH_EVERY: Duration = Duration::from_secs(5);
/// Keys remembered per replica (known and unknown ones alike); past it, the cache starts
/// again empty (only a flood of unknown keys gets there).
const CACHE_CAPACITY: usize = 100_000;
/// A safety net: the poller drops the cache on every change anyway.
const FORGET_EVERY: Duration = Duration::from_secs(60);

/// A stored key as the request path needs it: the record, the principal its requests carry,
/// and when it was last used here.
#[derive(Debug)]
struct CachedKey {
    record: KeyRecord,
    principal: Principal,
    last_used: AtomicI64,
    written: AtomicI64,
}

/// The [`Authenticator`] for stored keys (and the static ones). See the module docs.
pub struct KeyAuthority {
    store: Arc<dyn KeyStore>,
    hasher: KeyHasher,
    statics: StaticKeys,
    /// By key hash: `None` remembers a key the store does not know.
    cache: papaya::HashMap<KeyHash, Option<Arc<CachedKey>>, foldhash::fast::RandomState>,
    revision: AtomicI64,
    /// Whether the store holds any key at all: from then on, keys are required.
    any_stored: AtomicBool,
}

impl std::fmt::Debug for KeyAuthority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyAuthority")
            .field("store", &self.store.describe())
            .field("cached", &self.cache.len())
            .finish_non_exhaustive()
    }
}

/// Unix seconds now.
pub fn now_unix() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

impl KeyAuthority {
    /// Read the hashing secret and the current revision, and start the poller that keeps this
    /// replica in step with the store (it stops when the authority is dropped).
    pub async fn start(
        store: Arc<dyn KeyStore>,
        statics: StaticKeys,
    ) -> Result<Arc<Self>, weir_store::StoreError> {
        let secret = store.hashing_secret().await?;
        let revision = store.key_revision().await?;
        let any_stored = !store.list_keys().await?.is_empty();
        let authority = Arc::new(Self {
            hasher: KeyHasher::new(&secret),
            store,
            statics,
            cache: papaya::HashMap::builder()
                .hasher(foldhash::fast::RandomState::default())
                .build(),
            revision: AtomicI64::new(revision),
            any_stored: AtomicBool::new(any_stored),
        });
        tokio::spawn(poll(Arc::downgrade(&authority)));
        Ok(authority)
    }

    pub fn store(&self) -> &Arc<dyn KeyStore> {
        &self.store
    }

    pub fn hasher(&self) -> &KeyHasher {
        &self.hasher
    }

    /// For `/status`: where the keys live, whether keys are required, and how many answers
    /// this replica holds.
    pub fn status(&self) -> serde_json::Value {
        serde_json::json!({
            "store": self.store.describe(),
            "required": self.keys_required(),
            "cached": self.cache.len(),
            "revision": self.revision.load(Ordering::Acquire),
        })
    }

    /// Forget every cached answer: the keys just changed here. Other replicas notice through
    /// the store's revision.
    pub fn changed(&self) {
        self.any_stored.store(true, Ordering::Release);
        self.cache.pin().clear();
    }

    /// Whether requests must present a key.
    pub fn keys_required(&self) -> bool {
        !self.statics.is_empty() || self.any_stored.load(Ordering::Acquire)
    }

    /// One poll: drop the cache when the keys changed anywhere.
    async fn refresh(&self) {
        match self.store.key_revision().await {
            Ok(revision) => {
                if self.revision.swap(revision, Ordering::AcqRel) != revision {
                    self.cache.pin().clear();
                    if let Ok(keys) = self.store.list_keys().await {
                        self.any_stored.store(!keys.is_empty(), Ordering::Release);
                    }
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, store = %self.store.describe(), "cannot poll the key store for changes")
            }
        }
    }

    /// Write back the last-used times that moved since the last write (also at shutdown).
    pub async fn flush(&self) {
        let mut used = Vec::new();
        for (_, entry) in &self.cache.pin() {
            let Some(key) = entry else { continue };
            let last = key.last_used.load(Ordering::Relaxed);
            if last > key.written.swap(last, Ordering::Relaxed) {
                used.push((key.record.id.clone(), last));
            }
        }
        if !used.is_empty()
            && let Err(e) = self.store.touch_keys(&used).await
        {
            tracing::warn!(error = %e, "cannot record when gateway keys were last used");
        }
    }

    /// Cache an answer from the store; a full cache starts again empty first.
    fn remember(&self, hash: KeyHash, answer: Option<Arc<CachedKey>>) {
        let cache = self.cache.pin();
        if cache.len() >= CACHE_CAPACITY {
            cache.clear();
        }
        cache.insert(hash, answer);
    }

    fn cached(&self, record: KeyRecord) -> Arc<CachedKey> {
        let principal = Principal {
            key_id: Some(record.id.as_str().into()),
            user: record.user.as_deref().map(Into::into),
            team: record.team.as_deref().map(Into::into),
            project: record.project.as_deref().map(Into::into),
            // Keyed by id, not by secret: a rotated key keeps its cached answers.
            tenant: Some(
                weir::cache::key::namespace_for_gateway_key(&format!("key-id:{}", record.id))
                    .into(),
            ),
            allowed_models: (!record.models.is_empty())
                .then(|| record.models.iter().cloned().collect::<Arc<[String]>>()),
            limits: (record.limits != weir_store::KeyLimits::default()).then_some(
                weir::limits::RateLimit {
                    rpm: record.limits.rpm,
                    tpm: record.limits.tpm,
                },
            ),
        };
        let last = record.last_used_at.unwrap_or(0);
        Arc::new(CachedKey {
            record,
            principal,
            last_used: AtomicI64::new(last),
            written: AtomicI64::new(last),
        })
    }
}

/// Whether this key may make calls now, and as whom.
fn admit(key: &CachedKey, now: i64) -> Result<Caller, Refusal> {
    let record = &key.record;
    let usable = record.revoked_at.is_none()
        && record.enabled
        && record.expires_at.is_none_or(|expiry| expiry > now);
    if !usable {
        return Err(refusal(record));
    }
    key.last_used.fetch_max(now, Ordering::Relaxed);
    Ok(Caller {
        principal: key.principal.clone(),
        may_name_user: record.allow_user_override,
    })
}

/// Why a stored key may not make calls: revoked, disabled or expired. Built only for a
/// refusal: an accepted key pays for no message.
#[cold]
fn refusal(record: &KeyRecord) -> Refusal {
    let named = format!("gateway API key {} (`{}`)", record.id, record.name);
    Refusal::unauthorized(if record.revoked_at.is_some() {
        format!("{named} was revoked: ask the gateway's admin for a new key")
    } else if !record.enabled {
        format!("{named} is disabled: ask the gateway's admin to enable it")
    } else {
        format!(
            "{named} expired at {}: ask the gateway's admin to extend it or for a new key",
            rfc3339(record.expires_at.unwrap_or_default())
        )
    })
}

/// Unix seconds as an RFC 3339 time, for messages.
pub fn rfc3339(unix: i64) -> String {
    let at = UNIX_EPOCH + Duration::from_secs(u64::try_from(unix).unwrap_or(0));
    humantime::format_rfc3339_seconds(at).to_string()
}

fn unknown_key() -> Refusal {
    Refusal::unauthorized(
        "invalid gateway API key: no such key; check the key your client sends (Authorization: \
         Bearer ... or x-api-key)",
    )
}

impl Authenticator for Arc<KeyAuthority> {
    fn authenticate(&self, request: &Parts) -> AuthDecision {
        let required = self.keys_required();
        let Some(presented) = presented_key(request) else {
            return AuthDecision::Ready(if required {
                Err(Refusal::missing())
            } else {
                Ok(Caller::open())
            });
        };
        // An open gateway does not check the keys SDKs send whatever happens, but a stored
        // key is still honoured (with its limits and attribution): a replica that has not yet
        // seen the store's first key must not let that key's calls through unlimited.
        if !required && !presented.starts_with(weir_store::KEY_PREFIX) {
            return AuthDecision::Ready(Ok(Caller::open()));
        }
        if let Some(tenant) = self.statics.tenant_of(presented) {
            return AuthDecision::Ready(Ok(Caller::static_key(tenant)));
        }
        let hash = self.hasher.hash(presented);
        let unknown = move |authority: &KeyAuthority| {
            if authority.keys_required() {
                Err(unknown_key())
            } else {
                Ok(Caller::open())
            }
        };
        match self.cache.pin().get(&hash) {
            Some(Some(key)) => AuthDecision::Ready(admit(key, now_unix())),
            Some(None) => AuthDecision::Ready(unknown(self)),
            None => {
                let authority = Arc::clone(self);
                AuthDecision::Pending(Box::pin(async move {
                    let found = authority.store.key_by_hash(&hash).await.map_err(|e| {
                        tracing::error!(error = %e, store = %authority.store.describe(), "cannot look up a gateway key");
                        Refusal {
                            status: StatusCode::SERVICE_UNAVAILABLE,
                            message: "the gateway's key store is unavailable, so the key cannot \
                                      be checked: retry shortly"
                                .into(),
                        }
                    })?;
                    let cached = found.map(|record| authority.cached(record));
                    authority.remember(hash, cached.clone());
                    match cached {
                        Some(key) => admit(&key, now_unix()),
                        None => unknown(&authority),
                    }
                }))
            }
        }
    }
}

/// Keep the replica in step with the store until the authority is gone.
async fn poll(authority: Weak<KeyAuthority>) {
    let mut tick = tokio::time::interval(POLL_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let touch_every = u32::try_from(TOUCH_EVERY.as_millis() / POLL_EVERY.as_millis()).unwrap_or(20);
    let forget_every =
        u32::try_from(FORGET_EVERY.as_millis() / POLL_EVERY.as_millis()).unwrap_or(240);
    let mut ticks = 0u32;
    loop {
        tick.tick().await;
        let Some(authority) = authority.upgrade() else {
            return;
        };
        authority.refresh().await;
        ticks = ticks.wrapping_add(1);
        if ticks.is_multiple_of(touch_every) {
            authority.flush().await;
        }
        if ticks.is_multiple_of(forget_every) {
            // Last-used times were just written back: forgetting loses nothing.
            authority.cache.pin().clear();
        }
    }
}
