//! The configuration file as written: serde structs, every field optional, unknown keys refused.
//!
//! Nothing here is validated beyond its type; [`super::load`] turns it into [`super::Config`].
//! Durations and sizes stay strings here so that a bad value is reported with its key path
//! by the validation phase instead of failing the whole parse.

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::pricing::ModelPrice;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawConfig {
    pub server: RawServer,
    pub defaults: RawDefaults,
    pub providers: BTreeMap<String, RawProvider>,
    /// Aliases: `fast: openai/gpt-4o-mini`.
    pub models: BTreeMap<String, String>,
    pub retry: RawRetry,
    pub pricing: BTreeMap<String, ModelPrice>,
    pub mock: RawMock,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawServer {
    pub listen: Option<String>,
    pub api_keys: Vec<String>,
    /// Bytes, or a size such as `4MiB`.
    pub body_limit: Option<RawSize>,
    pub shutdown_grace: Option<String>,
    pub log_bodies: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum RawSize {
    Bytes(u64),
    Text(String),
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawDefaults {
    pub model: Option<String>,
    pub provider: Option<String>,
    pub force_mock: Option<bool>,
    pub max_tokens: Option<u32>,
    pub request_timeout: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawProvider {
    /// `openai`, `anthropic` or `mock`; inferred from well-known provider names.
    pub kind: Option<String>,
    pub base_url: Option<String>,
    pub api_key: Option<String>,
    pub api_keys: Vec<String>,
    pub organization: Option<String>,
    pub project: Option<String>,
    pub headers: BTreeMap<String, String>,
    pub anthropic_version: Option<String>,
    pub timeouts: RawTimeouts,
    pub models: Vec<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawTimeouts {
    pub connect: Option<String>,
    pub first_byte: Option<String>,
    pub total: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawRetry {
    pub max_retries: Option<u32>,
    pub base_delay: Option<String>,
    pub factor: Option<f64>,
    pub max_delay: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawMock {
    pub latency: Option<String>,
    pub time_to_first_token: Option<String>,
    pub inter_token_delay: Option<String>,
    pub lorem_tokens: Option<u32>,
    pub faults: RawFaults,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawFaults {
    pub error_rate: Option<f64>,
    pub error_status: Option<u16>,
    pub retry_after: Option<String>,
    pub hang: Option<bool>,
    pub cut_stream_after: Option<u32>,
}
