//! What every handler shares: the client, the auth keys, the server settings.

use std::sync::Arc;

use secrecy::{ExposeSecret, SecretString};
use subtle::ConstantTimeEq;

/// Shared state; cheap to clone.
#[derive(Clone)]
pub struct AppState {
    pub client: weir::Client,
    pub body_limit: usize,
    pub log_bodies: bool,
    keys: Arc<[SecretString]>,
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
            keys: server.api_keys.clone().into(),
            client,
        }
    }

    pub fn auth_required(&self) -> bool {
        !self.keys.is_empty()
    }

    /// Whether `presented` is one of the gateway keys. Every key is compared in constant time,
    /// and all of them are always compared, so timing reveals neither which key nor how much
    /// of it matched.
    pub fn key_matches(&self, presented: &str) -> bool {
        let presented = presented.as_bytes();
        let mut found = subtle::Choice::from(0u8);
        for key in self.keys.iter() {
            found |= key.expose_secret().as_bytes().ct_eq(presented);
        }
        bool::from(found)
    }
}
