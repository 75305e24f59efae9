//! What every handler shares: the client, the key authority, the stores and the server
//! settings.

use std::sync::Arc;

use crate::keys::KeyAuthority;

/// Shared state; cheap to clone.
#[derive(Debug, Clone)]
pub struct AppState {
    pub client: weir::Client,
    pub body_limit: usize,
    pub log_bodies: bool,
    /// Stored gateway keys, when the gateway has a store.
    pub keys: Option<Arc<KeyAuthority>>,
    /// The usage ledger's writer, when the gateway has a store.
    pub ledger: Option<Arc<weir_store::LedgerWriter>>,
    /// The ledger's store, for reports.
    pub ledger_store: Option<Arc<dyn weir_store::LedgerStore>>,
    /// The ledger's retention and roll-up sweeper, when `ledger:` asks for one.
    pub upkeep: Option<Arc<crate::upkeep::LedgerUpkeep>>,
    /// Budgets kept in the store, when the gateway has one: admin changes go through it.
    pub budget_sync: Option<Arc<crate::budgets::BudgetSync>>,
    /// The live dashboard's rings, when a usage sink feeds them (`weir serve` registers one).
    pub dashboard: Option<Arc<crate::dashboard::Dashboard>>,
    /// The Prometheus metrics registered on the client, for `/metrics`.
    pub metrics: Option<Arc<weir::metrics::Metrics>>,
}

impl AppState {
    pub fn new(client: weir::Client) -> Self {
        let server = &client.config().server;
        Self {
            body_limit: server.body_limit,
            log_bodies: server.log_bodies,
            keys: None,
            ledger: None,
            ledger_store: None,
            upkeep: None,
            budget_sync: None,
            dashboard: None,
            metrics: None,
            client,
        }
    }

    /// With stored keys (which also answer for the configured static keys).
    pub fn with_keys(mut self, keys: Arc<KeyAuthority>) -> Self {
        self.keys = Some(keys);
        self
    }
}
