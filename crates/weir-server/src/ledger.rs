//! The usage ledger in the gateway: every call's [`UsageEvent`] becomes one
//! [`LedgerRecord`], appended to a local spool on the request path (one write to a file, never
//! a wait for a database) and moved to the store (SQLite, or Postgres shared by replicas) by
//! one background writer in batches, exactly once, a crash included: the store records how
//! far into the spool it has read in the same transaction as the rows.
//!
//! Prompts and answers are never recorded. A full spool drops the record and counts it
//! (`/status`, `ledger.dropped`): the request path never waits.

use std::time::{SystemTime, UNIX_EPOCH};

use weir::pipeline::{UsageEvent, UsageSink};
use weir::pricing::PricingTable;
use weir_store::{LedgerRecord, Spool};

/// A [`UsageSink`] writing each call to the spool.
pub struct LedgerSink {
    spool: Spool,
    pricing: PricingTable,
}

impl std::fmt::Debug for LedgerSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LedgerSink")
            .field("spool", &self.spool.dir())
            .finish_non_exhaustive()
    }
}

impl LedgerSink {
    pub fn new(spool: Spool, pricing: PricingTable) -> Self {
        Self { spool, pricing }
    }
}

impl UsageSink for LedgerSink {
    fn record(&self, event: &UsageEvent) {
        // A refusal is counted by the spool itself and shown in /status.
        let _ = self.spool.append(&record_of(event, &self.pricing));
    }
}

/// Unix milliseconds now: the ledger's clock.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

fn micros(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

/// The ledger's record of one call.
pub fn record_of(event: &UsageEvent, pricing: &PricingTable) -> LedgerRecord {
    let at_ms = now_ms();
    let context = &event.context;
    let principal = &context.principal;
    let mut record = LedgerRecord::new(
        at_ms,
        context.request_id.clone(),
        event.operation.as_str(),
        context.model.clone(),
    );
    record.key_id = principal.key_id.as_deref().map(str::to_owned);
    record.user = principal.user.as_deref().map(str::to_owned);
    record.team = principal.team.as_deref().map(str::to_owned);
    record.project = principal.project.as_deref().map(str::to_owned);
    record.tags = context
        .tags
        .iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    if let Some(route) = &event.route {
        record.provider = Some(route.provider.clone());
        record.upstream_model = Some(route.upstream_model.clone());
    }
    record.status = event.status;
    record.outcome = event.outcome.as_str().to_owned();
    record.error_kind = event.error.map(|k| k.as_str().to_owned());
    record.attempts = event.attempts;
    record.cache = event.cache.as_str().to_owned();
    let t = &event.tokens;
    record.input_tokens = t.input;
    record.output_tokens = t.output;
    record.cached_input_tokens = t.cached_input;
    record.cache_write_tokens = t.cache_write;
    record.reasoning_tokens = t.reasoning;
    record.tokens_estimated = event.tokens_estimated;
    record.cost_usd = event.cost_usd;
    // A hit or a shared answer cost nothing; what the upstream call would have cost is the
    // saving.
    if event.cache.is_free()
        && let Some(route) = &event.route
    {
        let usage = weir::types::chat::Usage::new(t.input, t.output);
        record.saved_usd = pricing.cost(&route.provider, &route.upstream_model, &usage);
    }
    record.latency_us = micros(event.latency.total);
    record.upstream_us =
        (!event.latency.upstream.is_zero()).then(|| micros(event.latency.upstream));
    record.first_token_us = event.latency.first_token.map(micros);
    record.prompt_fingerprint = event.prompt_fingerprint.clone();
    record
}
