//! A provider's API keys, used in turn, with the rate-limit state each last reported.
//!
//! Round-robin is an atomic counter; each key's snapshot sits behind its own small mutex,
//! touched once per response, so keys never contend with each other.

use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use serde::Serialize;

use crate::config::ApiKey;
use crate::error::Error;
use crate::provider::RateLimitSnapshot;

#[derive(Debug)]
struct KeySlot {
    key: ApiKey,
    last: Mutex<Option<RateLimitSnapshot>>,
}

#[derive(Debug)]
pub(crate) struct KeyRing {
    provider: String,
    slots: Vec<KeySlot>,
    next: AtomicUsize,
}

/// One key's state, for `/status`.
#[derive(Debug, Clone, Serialize)]
pub struct KeyStatus {
    pub provider: String,
    /// The key's label (`openai#0`), never the key.
    pub key_id: String,
    /// Whether the last snapshot says the key is out of capacity right now.
    pub limited_now: bool,
    pub rate_limit: Option<RateLimitSnapshot>,
}

impl KeyRing {
    pub(crate) fn new(provider: &str, keys: &[ApiKey]) -> Self {
        Self {
            provider: provider.to_owned(),
            slots: keys
                .iter()
                .map(|k| KeySlot {
                    key: k.clone(),
                    last: Mutex::new(None),
                })
                .collect(),
            next: AtomicUsize::new(0),
        }
    }

    /// The next key in turn, or `None` for a provider without keys.
    pub(crate) fn next(&self) -> Option<&ApiKey> {
        if self.slots.is_empty() {
            return None;
        }
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.slots.len();
        Some(&self.slots[i].key)
    }

    fn slot(&self, id: Option<&str>) -> Option<&KeySlot> {
        let id = id?;
        self.slots.iter().find(|s| s.key.id == id)
    }

    /// Remember the rate-limit headers of a response.
    pub(crate) fn observe(&self, key_id: Option<&str>, snapshot: Option<RateLimitSnapshot>) {
        if let (Some(slot), Some(snap)) = (self.slot(key_id), snapshot)
            && let Ok(mut last) = slot.last.lock()
        {
            *last = Some(snap);
        }
    }

    /// A 429 with Retry-After says as much about the key as headers do.
    pub(crate) fn observe_error(&self, key_id: Option<&str>, err: &Error) {
        if let (Some(slot), Error::RateLimited { retry_after, .. }) = (self.slot(key_id), err)
            && let Ok(mut last) = slot.last.lock()
        {
            let mut snap = last.clone().unwrap_or_default();
            snap.retry_after = *retry_after;
            snap.observed_at = Some(std::time::SystemTime::now());
            *last = Some(snap);
        }
    }

    pub(crate) fn status(&self) -> Vec<KeyStatus> {
        self.slots
            .iter()
            .map(|s| {
                let last = s.last.lock().ok().and_then(|l| l.clone());
                KeyStatus {
                    provider: self.provider.clone(),
                    key_id: s.key.id.clone(),
                    limited_now: last.as_ref().is_some_and(RateLimitSnapshot::is_limited_now),
                    rate_limit: last,
                }
            })
            .collect()
    }
}
