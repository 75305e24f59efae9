//! What every handler shares: the client and the server settings.

/// Shared state; cheap to clone.
#[derive(Debug, Clone)]
pub struct AppState {
    pub client: weir::Client,
    pub body_limit: usize,
    pub log_bodies: bool,
}

impl AppState {
    pub fn new(client: weir::Client) -> Self {
        let server = &client.config().server;
        Self {
            body_limit: server.body_limit,
            log_bodies: server.log_bodies,
            client,
        }
    }
}
