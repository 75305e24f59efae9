//! The admin API of a running gateway, for `weir keys`, `weir budgets` and `weir usage`.

use anyhow::{Context as _, anyhow};
use serde_json::Value;

use crate::UsageError;

/// The admin API of one gateway.
pub struct Admin {
    http: reqwest::Client,
    base: String,
    key: Option<String>,
}

impl Admin {
    pub fn new(url: &str, admin_key: Option<&str>) -> anyhow::Result<Self> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let base = url.trim_end_matches('/').to_owned();
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            return Err(
                UsageError(format!("--url `{url}` is not an http:// or https:// URL")).into(),
            );
        }
        let http = reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(30))
            .build()
            .context("cannot build the HTTP client")?;
        Ok(Self {
            http,
            base,
            key: admin_key.filter(|k| !k.is_empty()).map(str::to_owned),
        })
    }

    pub async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> anyhow::Result<Value> {
        let url = format!("{}{path}", self.base);
        let mut request = self.http.request(method, &url);
        if let Some(key) = &self.key {
            request = request.bearer_auth(key);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.map_err(|e| {
            anyhow!(
                "cannot reach the gateway at {}: {e}; is `weir serve` running there? (--url or WEIR_URL)",
                self.base
            )
        })?;
        let status = response.status();
        let text = response.text().await.unwrap_or_default();
        let value: Value = serde_json::from_str(&text).unwrap_or(Value::String(text));
        if !status.is_success() {
            let message = value["error"]["message"]
                .as_str()
                .map_or_else(|| value.to_string(), str::to_owned);
            let hint = match status.as_u16() {
                401 | 403 => {
                    " (set --admin-key or WEIR_ADMIN_KEY to the gateway's server.admin_key)"
                }
                _ => "",
            };
            return Err(anyhow!("the gateway answered {status}: {message}{hint}"));
        }
        Ok(value)
    }
}
