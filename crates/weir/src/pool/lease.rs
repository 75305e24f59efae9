//! [`Lease`]: one admitted request's hold on a key, settled with the real usage.

use std::fmt;
use std::sync::Arc;

use super::Demand;
use super::state::Inner;
use secrecy::SecretString;

/// The right to send one request with one key of a [`KeyPool`](super::KeyPool).
///
/// It holds a reservation of the [`Demand`] it was acquired for. Call [`Lease::settle`] with
/// the usage the upstream reported; dropping it unsettled (an error before usage was known,
/// a cancelled stream) keeps the whole reservation as spent, because the upstream may have
/// counted it, and only frees the in-flight slot. `'static + Send`: it can move into a
/// spawned task or a response stream.
#[must_use = "a lease holds a reservation; settle it with the real usage"]
pub struct Lease {
    inner: Arc<Inner>,
    key: usize,
    reserved: Demand,
    /// Whether dropping still has to release the key (cleared by settle and friends).
    armed: bool,
}

impl Lease {
    pub(super) fn new(inner: Arc<Inner>, key: usize, reserved: Demand) -> Self {
        Self {
            inner,
            key,
            reserved,
            armed: true,
        }
    }

    /// The key's label (`openai#0`), for logs, status and `exclude`; never the secret.
    pub fn key_id(&self) -> &str {
        self.inner.keys.get(self.key).map_or("", |k| k.id.as_str())
    }

    /// The key to send; `None` for a provider without keys (a local server).
    pub fn secret(&self) -> Option<&SecretString> {
        self.inner
            .keys
            .get(self.key)
            .and_then(|k| k.secret.as_ref())
    }

    /// What was reserved when the lease was granted.
    pub fn reserved(&self) -> Demand {
        self.reserved
    }

    /// Replace the reservation with the real usage: an overestimate is refunded (and may let
    /// a waiter in at once), an underestimate is debited (the key's buckets may go negative,
    /// which delays later admissions rather than over-admitting).
    pub fn settle(mut self, input_tokens: u64, output_tokens: u64) {
        self.armed = false;
        let (mut st, now) = self.inner.lock_now();
        st.settle(
            self.key,
            self.reserved,
            Demand::new(input_tokens, output_tokens),
            now,
        );
        self.inner.dispatch(&mut st, now);
    }

    /// Give the whole reservation back: the lease never reached its caller, so nothing was
    /// sent with it.
    pub(super) fn cancel(mut self) {
        self.armed = false;
        let (mut st, now) = self.inner.lock_now();
        st.cancel(self.key, self.reserved, now);
        self.inner.dispatch(&mut st, now);
    }

    /// Forget the lease without touching the pool, for a caller that already holds the lock
    /// and accounts for it itself.
    pub(super) fn disarm(mut self) {
        self.armed = false;
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let (mut st, now) = self.inner.lock_now();
        st.release(self.key);
        self.inner.dispatch(&mut st, now);
    }
}

impl fmt::Debug for Lease {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Lease")
            .field("pool", &self.inner.name)
            .field("key_id", &self.key_id())
            .field("reserved", &self.reserved)
            .finish_non_exhaustive()
    }
}
