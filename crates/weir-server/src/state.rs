//! What every handler shares: the client, the auth keys, the server settings.

use std::sync::Arc;

use secrecy::{ExposeSecret, SecretString};
use subtle::{ConditionallySelectable, ConstantTimeEq};

/// Shared state; cheap to clone.
#[derive(Clone)]
pub struct AppState {
    pub client: weir::Client,
    pub body_limit: usize,
    pub log_bodies: bool,
    keys: Arc<[GatewayKey]>,
}

/// A configured gateway key and its tenant's cache namespace, derived once at start.
struct GatewayKey {
    secret: SecretString,
    namespace: String,
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState")
            .field("body_limit", &self.body_limit)
            .field("keys", &format_args!("[{} redacted]", self.keys.len()))
            .finish_non_exhaustive()
    }
}

impl AppState {
    pub fn new(client: weir::Client) -> Self {
        let server = &client.config().server;
        Self {
            body_limit: server.body_limit,
            log_bodies: server.log_bodies,
            keys: server
                .api_keys
                .iter()
                .map(|secret| GatewayKey {
                    namespace: weir::cache::key::namespace_for_gateway_key(secret.expose_secret()),
                    secret: secret.clone(),
                })
                .collect(),
            client,
        }
    }

    pub fn auth_required(&self) -> bool {
        !self.keys.is_empty()
    }

    /// The cache namespace of the tenant whose gateway key `presented` is, if it is one.
    /// Every key is compared in constant time, and all of them are always compared, so timing
    /// reveals neither which key nor how much of it matched.
    pub fn tenant_of(&self, presented: &str) -> Option<&str> {
        let presented = presented.as_bytes();
        let mut found = subtle::Choice::from(0u8);
        let mut index = 0u64;
        for (i, key) in self.keys.iter().enumerate() {
            let matches = key.secret.expose_secret().as_bytes().ct_eq(presented);
            index.conditional_assign(&(i as u64), matches);
            found |= matches;
        }
        let index = usize::try_from(index).ok()?;
        let key = self.keys.get(index)?;
        bool::from(found).then_some(key.namespace.as_str())
    }
}
