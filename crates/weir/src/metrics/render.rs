//! `/metrics`' text: the recorded counters and histograms, then gauges read from the client
//! at scrape time (breakers, upstream keys, cache tiers, budgets, the process).

use std::sync::atomic::Ordering;

use rust_decimal::prelude::ToPrimitive;

use super::histogram::{self, Bounds, Histogram};
use super::*;
use crate::Client;

fn dollars(d: Decimal) -> f64 {
    d.to_f64().unwrap_or(0.0)
}

impl Metrics {
    /// Everything, for one scrape. Append the server's own families to the result, then
    /// [`finish`](Exposition::finish) it.
    pub async fn render(&self, client: &Client) -> Exposition {
        let mut e = Exposition::new();
        self.render_calls(&mut e);
        self.render_latency(&mut e);
        self.render_attempts(&mut e, client);
        render_health(&mut e, client);
        render_cache(&mut e, client).await;
        render_budgets(&mut e, client).await;
        e.gauge(
            "weir_streams_open",
            "Streams being sent to clients now.",
            self.streams_open.load(Ordering::Relaxed) as f64,
        );
        render_process(&mut e, client);
        e
    }

    fn render_calls(&self, e: &mut Exposition) {
        let (m_len, p_len) = (self.models.len(), self.providers.len());
        e.family(
            "weir_requests_total",
            "counter",
            "Calls by operation, requested model, provider, status class and cache outcome.",
        );
        let mut i = 0;
        for op in OPERATIONS {
            for model in &self.models.names {
                for provider in &self.providers.names {
                    for status in STATUS_CLASSES {
                        for cache in CACHE {
                            let n = self.requests[i].load(Ordering::Relaxed);
                            i += 1;
                            if n > 0 {
                                e.sample(
                                    "weir_requests_total",
                                    &[
                                        ("operation", op.as_str()),
                                        ("model", model),
                                        ("provider", provider),
                                        ("status_class", status),
                                        ("cache", cache.as_str()),
                                    ],
                                    n as f64,
                                );
                            }
                        }
                    }
                }
            }
        }
        e.family(
            "weir_errors_total",
            "counter",
            "Failed calls by provider (none: refused before routing) and error kind.",
        );
        for (pi, provider) in self.providers.names.iter().enumerate() {
            for (ki, kind) in KINDS.iter().enumerate() {
                let n = self.errors[pi * KINDS.len() + ki].load(Ordering::Relaxed);
                if n > 0 {
                    let labels = [("provider", provider.as_str()), ("kind", kind.as_str())];
                    e.sample("weir_errors_total", &labels, n as f64);
                }
            }
        }
        e.family(
            "weir_tokens_total",
            "counter",
            "Tokens by requested model, provider and type (cached_input is part of input, reasoning part of output).",
        );
        for (mi, model) in self.models.names.iter().enumerate() {
            for (pi, provider) in self.providers.names.iter().enumerate() {
                let base = (mi * p_len + pi) * TOKEN_TYPES.len();
                for (j, ty) in TOKEN_TYPES.iter().enumerate() {
                    let n = self.tokens[base + j].load(Ordering::Relaxed);
                    if n > 0 {
                        let labels = [
                            ("model", model.as_str()),
                            ("provider", provider),
                            ("type", ty),
                        ];
                        e.sample("weir_tokens_total", &labels, n as f64);
                    }
                }
            }
        }
        for (name, help, cells, scale) in [
            (
                "weir_cost_dollars_total",
                "Dollars spent upstream by requested model and provider.",
                &self.cost_nanos,
                1e9,
            ),
            (
                "weir_unpriced_requests_total",
                "Calls whose cost is unknown (no price for the model), by requested model and provider.",
                &self.unpriced,
                1.0,
            ),
        ] {
            e.family(name, "counter", help);
            for (mi, model) in self.models.names.iter().enumerate() {
                for (pi, provider) in self.providers.names.iter().enumerate() {
                    let n = cells[mi * p_len + pi].load(Ordering::Relaxed);
                    if n > 0 {
                        let labels = [("model", model.as_str()), ("provider", provider)];
                        e.sample(name, &labels, n as f64 / scale);
                    }
                }
            }
        }
        let _ = m_len;
    }

    /// One `provider × model` histogram family, per GenAI operation when `ops` is set.
    fn render_genai(
        &self,
        e: &mut Exposition,
        name: &str,
        help: &str,
        cells: &[Histogram],
        bounds: &Bounds,
        ops: bool,
    ) {
        let (m_len, p_len) = (self.models.len(), self.providers.len());
        e.family(name, "histogram", help);
        let op_names: &[&str] = if ops { &GEN_AI_OPS } else { &["chat"] };
        for (g, op) in op_names.iter().enumerate() {
            for (pi, provider) in self.providers.names.iter().enumerate() {
                for (mi, model) in self.models.names.iter().enumerate() {
                    let h = &cells[(g * p_len + pi) * m_len + mi];
                    if h.count() > 0 {
                        let labels = [
                            ("gen_ai_operation_name", *op),
                            ("gen_ai_provider_name", provider.as_str()),
                            ("gen_ai_request_model", model.as_str()),
                        ];
                        e.histogram(name, &labels, bounds, &h.snapshot(bounds));
                    }
                }
            }
        }
    }

    fn render_latency(&self, e: &mut Exposition) {
        let (m_len, p_len) = (self.models.len(), self.providers.len());
        self.render_genai(
            e,
            "gen_ai_client_operation_duration_seconds",
            "Call duration, from weir's receipt to the answer's end (a stream's last event).",
            &self.duration,
            &histogram::DURATION,
            true,
        );
        let name = "gen_ai_client_token_usage";
        e.family(name, "histogram", "Input and output tokens per call.");
        for (g, op) in GEN_AI_OPS.iter().enumerate() {
            for (pi, provider) in self.providers.names.iter().enumerate() {
                for (mi, model) in self.models.names.iter().enumerate() {
                    for (j, ty) in ["input", "output"].iter().enumerate() {
                        let h = &self.token_usage[((g * p_len + pi) * m_len + mi) * 2 + j];
                        if h.count() > 0 {
                            let labels = [
                                ("gen_ai_operation_name", *op),
                                ("gen_ai_provider_name", provider.as_str()),
                                ("gen_ai_request_model", model.as_str()),
                                ("gen_ai_token_type", ty),
                            ];
                            let s = h.snapshot(&histogram::TOKENS);
                            e.histogram(name, &labels, &histogram::TOKENS, &s);
                        }
                    }
                }
            }
        }
        self.render_genai(
            e,
            "gen_ai_server_time_to_first_token_seconds",
            "Time from weir's receipt to a stream's first token.",
            &self.first_token,
            &histogram::FIRST_TOKEN,
            false,
        );
        self.render_genai(
            e,
            "gen_ai_server_time_per_output_token_seconds",
            "Time per output token after the first, for streams.",
            &self.per_token,
            &histogram::PER_TOKEN,
            false,
        );
        let name = "weir_upstream_duration_seconds";
        e.family(
            name,
            "histogram",
            "Time from the first attempt to the upstream's answer (a stream's first event), retries included.",
        );
        for (pi, provider) in self.providers.names.iter().enumerate() {
            let h = &self.upstream[pi];
            if h.count() > 0 {
                let s = h.snapshot(&histogram::DURATION);
                e.histogram(name, &[("provider", provider)], &histogram::DURATION, &s);
            }
        }
        let name = "weir_overhead_seconds";
        e.family(
            name,
            "histogram",
            "weir's own time per whole (not streamed) call: its total less the upstream's.",
        );
        for (oi, op) in OPERATIONS.iter().enumerate() {
            let h = &self.overhead[oi];
            if h.count() > 0 {
                let s = h.snapshot(&histogram::OVERHEAD);
                e.histogram(
                    name,
                    &[("operation", op.as_str())],
                    &histogram::OVERHEAD,
                    &s,
                );
            }
        }
    }

    fn render_attempts(&self, e: &mut Exposition, client: &Client) {
        let name = "weir_upstream_attempts_total";
        e.family(
            name,
            "counter",
            "Upstream attempts (retries, failovers and hedges included) by deployment and outcome: those a breaker let through.",
        );
        for (di, dep) in self.deployments.names.iter().enumerate() {
            for (o, outcome) in ATTEMPT_OUTCOMES.iter().enumerate() {
                let n = self.attempts[di * ATTEMPT_OUTCOMES.len() + o].load(Ordering::Relaxed);
                if n > 0 {
                    e.sample(name, &[("deployment", dep), ("outcome", outcome)], n as f64);
                }
            }
        }
        let name = "weir_upstream_attempt_errors_total";
        e.family(
            name,
            "counter",
            "Failed upstream attempts by deployment and error kind.",
        );
        for (di, dep) in self.deployments.names.iter().enumerate() {
            for (ki, kind) in KINDS.iter().enumerate() {
                let n = self.attempt_errors[di * KINDS.len() + ki].load(Ordering::Relaxed);
                if n > 0 {
                    e.sample(
                        name,
                        &[("deployment", dep), ("kind", kind.as_str())],
                        n as f64,
                    );
                }
            }
        }
        let p = client.policy_counters();
        e.counter(
            "weir_hedges_total",
            "Hedged attempts: a second deployment raced against a slow first one.",
            self.hedges.load(Ordering::Relaxed) as f64,
        );
        e.counter(
            "weir_retries_total",
            "Decisions to try the deployment that just failed again (after a backoff, or with another key).",
            p.retries as f64,
        );
        e.counter(
            "weir_failovers_total",
            "Attempts sent to another deployment of the group after a failure.",
            p.failovers as f64,
        );
        e.counter(
            "weir_fallbacks_total",
            "Moves to a fallback model group after a group failed.",
            p.fallbacks as f64,
        );
        e.counter(
            "weir_breaker_rejections_total",
            "Deployments passed over because their circuit breaker was open.",
            p.breaker_rejections as f64,
        );
        e.counter(
            "weir_retry_budget_exhausted_total",
            "Retries the retry budget refused.",
            p.budget_exhausted as f64,
        );
        e.gauge(
            "weir_retry_budget_available",
            "Retries the retry budget would allow now.",
            client.retry_budget_available() as f64,
        );
    }
}

fn render_health(e: &mut Exposition, client: &Client) {
    let status = client.status();
    e.family(
        "weir_breaker_state",
        "gauge",
        "Each deployment's circuit breaker: 1 for its current state, 0 for the others.",
    );
    for d in &status.deployments {
        for state in ["closed", "open", "half_open"] {
            let on = d.breaker.state.as_str() == state;
            let labels = [("deployment", d.deployment.id.as_str()), ("state", state)];
            e.sample("weir_breaker_state", &labels, f64::from(u8::from(on)));
        }
    }
    type DeploymentGauge = fn(&crate::client::DeploymentStatus) -> f64;
    let gauges: [(&str, &str, &str, DeploymentGauge); 3] = [
        (
            "weir_breaker_trips_total",
            "counter",
            "Times each deployment's breaker opened (closed by hand or not).",
            |d| d.breaker.trips as f64,
        ),
        (
            "weir_deployment_in_flight",
            "gauge",
            "Attempts in flight per deployment.",
            |d| f64::from(d.deployment.in_flight),
        ),
        (
            "weir_deployment_latency_estimate_seconds",
            "gauge",
            "The latency estimate routing uses per deployment.",
            |d| d.deployment.latency_ms / 1000.0,
        ),
    ];
    for (name, kind, help, value) in gauges {
        e.family(name, kind, help);
        for d in &status.deployments {
            e.sample(name, &[("deployment", d.deployment.id.as_str())], value(d));
        }
    }
    type KeyGauge = fn(&crate::pool::KeyStatus) -> Option<f64>;
    let keys: [(&str, &str, KeyGauge); 6] = [
        (
            "weir_upstream_key_in_flight",
            "Requests in flight per upstream key.",
            |k| Some(f64::from(k.in_flight)),
        ),
        (
            "weir_upstream_key_remaining_requests",
            "Requests left in the key's window (known limits only).",
            |k| k.remaining_requests.map(|n| n as f64),
        ),
        (
            "weir_upstream_key_remaining_tokens",
            "Tokens left in the key's window (known limits only).",
            |k| {
                k.remaining_tokens
                    .or(k.remaining_input_tokens)
                    .map(|n| n as f64)
            },
        ),
        (
            "weir_upstream_key_benched",
            "1 while the key is parked after an upstream 429.",
            |k| Some(f64::from(u8::from(k.limited_now))),
        ),
        (
            "weir_upstream_key_benched_seconds",
            "Seconds until a benched key is used again.",
            |k| Some(k.limited_for_secs.unwrap_or(0.0)),
        ),
        (
            "weir_upstream_key_queue_length",
            "Requests waiting for a key of the key's provider.",
            |k| Some(k.queue_len as f64),
        ),
    ];
    for (name, help, value) in keys {
        e.family(name, "gauge", help);
        for k in &status.keys {
            if let Some(v) = value(k) {
                e.sample(name, &[("key", k.key_id.as_str())], v);
            }
        }
    }
    if let Some(limits) = &status.limits {
        e.gauge(
            "weir_inbound_limits_healthy",
            "1 while the inbound limits' store answers.",
            f64::from(u8::from(limits.healthy)),
        );
        e.counter(
            "weir_inbound_limits_store_errors_total",
            "Failures of the inbound limits' store.",
            limits.store_errors as f64,
        );
    }
    e.gauge(
        "weir_uptime_seconds",
        "Seconds since the client started.",
        status.uptime_seconds,
    );
}

async fn render_cache(e: &mut Exposition, client: &Client) {
    let Some(stats) = client.cache_stats().await else {
        return;
    };
    e.family(
        "weir_cache_lookups_total",
        "counter",
        "Response cache lookups by result (coalesced: answered by an identical call in flight).",
    );
    for (result, n) in [
        ("hit", stats.hits),
        ("miss", stats.misses),
        ("coalesced", stats.coalesced),
    ] {
        e.sample("weir_cache_lookups_total", &[("result", result)], n as f64);
    }
    e.counter(
        "weir_cache_saved_tokens_total",
        "Tokens cache hits did not spend.",
        stats.tokens_saved as f64,
    );
    e.counter(
        "weir_cache_saved_dollars_total",
        "What cache hits would have cost.",
        dollars(stats.estimated_savings_usd),
    );
    type TierGauge = fn(&crate::cache::tiered::TierStats) -> u64;
    let tiers: [(&str, &str, &str, TierGauge); 3] = [
        (
            "weir_cache_entries",
            "gauge",
            "Entries per cache tier.",
            |t| t.entries,
        ),
        ("weir_cache_bytes", "gauge", "Bytes per cache tier.", |t| {
            t.bytes
        }),
        (
            "weir_cache_tier_hits_total",
            "counter",
            "Hits answered per cache tier.",
            |t| t.hits,
        ),
    ];
    for (name, kind, help, value) in tiers {
        e.family(name, kind, help);
        for t in &stats.tiers {
            let labels = [("tier", t.level), ("store", t.store)];
            e.sample(name, &labels, value(t) as f64);
        }
    }
}

async fn render_budgets(e: &mut Exposition, client: &Client) {
    let Some(budgets) = client.budgets() else {
        return;
    };
    let Ok(list) = budgets.status().await else {
        return;
    };
    type BudgetGauge = fn(&crate::budgets::BudgetStatus) -> f64;
    let families: [(&str, &str, BudgetGauge); 4] = [
        (
            "weir_budget_usage_ratio",
            "Settled spend over the limit this period (past 1 when over).",
            |b| {
                // From the amounts, not the rounded `percent`, so a small spend still shows.
                let limit = dollars(b.spec.limit_usd);
                if limit > 0.0 {
                    dollars(b.spent_usd) / limit
                } else {
                    0.0
                }
            },
        ),
        (
            "weir_budget_spent_dollars",
            "Settled spend this period.",
            |b| dollars(b.spent_usd),
        ),
        (
            "weir_budget_reserved_dollars",
            "Held by calls in flight.",
            |b| dollars(b.reserved_usd),
        ),
        (
            "weir_budget_limit_dollars",
            "The budget's limit per period.",
            |b| dollars(b.spec.limit_usd),
        ),
    ];
    for (name, help, value) in families {
        e.family(name, "gauge", help);
        for b in &list {
            e.sample(name, &[("budget", b.spec.id.as_str())], value(b));
        }
    }
}

fn render_process(e: &mut Exposition, _client: &Client) {
    // Linux only: elsewhere these families are left out rather than reported as zero.
    if let Ok(status) = std::fs::read_to_string("/proc/self/status")
        && let Some(kb) = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
    {
        e.gauge(
            "process_resident_memory_bytes",
            "Resident memory size in bytes.",
            (kb * 1024) as f64,
        );
    }
    if let Ok(dir) = std::fs::read_dir("/proc/self/fd") {
        e.gauge(
            "process_open_fds",
            "Open file descriptors (listening and client sockets, upstream connections, files).",
            dir.count() as f64,
        );
    }
}
