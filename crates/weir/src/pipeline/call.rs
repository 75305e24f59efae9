//! [`Call`]: one call's lifecycle, from its context to its one [`UsageEvent`].
//!
//! Every operation opens a `Call` ([`Client::open`]) and ends it through [`Call::finish`]
//! (or [`Call::fail`]): that is the one place where the key reservation is settled, the
//! usage priced, the admissions settled and the event handed to the sinks (the `/status`
//! counters first). A `Call` dropped without an ending (its caller went away mid-call)
//! finishes itself as [`Outcome::Disconnected`], so no call goes uncounted.

use std::sync::Arc;
use std::time::Duration;

use rust_decimal::Decimal;
use tokio::time::Instant;
use tracing::field::Empty;
use weir_types::chat::Usage;

use super::event::{CacheOutcome, Latencies, Operation, Outcome, RouteTaken, Tokens, UsageEvent};
use super::seams::{Admission, AdmissionRequest, CallRequest, Reservation};
use super::{CallContext, Quota};
use crate::client::{CacheStatus, Client, ResponseMeta, Route};
use crate::error::{Error, Result};
use crate::pool::Lease;
use crate::provider::RateLimitSnapshot;
use crate::telemetry::attrs;

/// How a call ended, as its operation knows it.
#[derive(Debug, Default)]
pub(crate) struct Ending {
    pub(crate) error: Option<(crate::error::ErrorKind, u16)>,
    pub(crate) disconnected: bool,
    pub(crate) route: Option<Route>,
    pub(crate) key_label: Option<String>,
    pub(crate) attempts: u32,
    pub(crate) usage: Option<Usage>,
    pub(crate) usage_estimated: bool,
    /// From the first attempt to the upstream's answer (a stream's first event).
    pub(crate) upstream: Duration,
    pub(crate) first_token: Option<Duration>,
    /// The key reservation, settled here against `usage`.
    pub(crate) lease: Option<Lease>,
}

impl Ending {
    pub(crate) fn failed(err: &Error) -> Self {
        Self {
            error: Some((err.kind(), err.http_status())),
            ..Self::default()
        }
    }
}

/// What a call's admissions reported for its answer's metadata.
#[derive(Debug, Default, Clone)]
pub(crate) struct Verdict {
    /// The tightest quota.
    pub(crate) quota: Option<Quota>,
    /// Every warning, in admission order.
    pub(crate) warnings: Vec<String>,
}

/// One call in progress. See the module docs.
pub(crate) struct Call {
    pub(crate) client: Client,
    pub(crate) context: Arc<CallContext>,
    pub(crate) operation: Operation,
    pub(crate) started: Instant,
    pub(crate) deadline: Instant,
    pub(crate) cache: CacheOutcome,
    reservations: Vec<(Arc<dyn Admission>, Reservation)>,
    /// What the admissions reported, for the answer's metadata.
    pub(crate) verdict: Verdict,
    pub(crate) span: tracing::Span,
    /// The request's fingerprint, for the event (see [`UsageEvent::prompt_fingerprint`]).
    pub(crate) prompt_fingerprint: Option<String>,
    finished: bool,
}

impl std::fmt::Debug for Call {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Call")
            .field("operation", &self.operation)
            .field("context", &self.context)
            .finish_non_exhaustive()
    }
}

impl Client {
    /// Open a call: run the request hooks, settle the requested model and the deadline. A
    /// call a hook refuses ends at once (its event says so). The call is admitted separately
    /// ([`Call::admit`]), once the caller knows its demand.
    pub(crate) fn open(
        &self,
        operation: Operation,
        mut request: CallRequest<'_>,
        mut context: CallContext,
    ) -> Result<Call> {
        let started = Instant::now();
        let mut refused = None;
        for hook in &self.inner.seams.hooks {
            if let Err(e) = hook.on_request(request.reborrow(), &mut context) {
                refused = Some(e);
                break;
            }
        }
        if context.model.is_empty() {
            context.model = self.model_or_default(request.model()).to_owned();
        }
        if refused.is_none()
            && let Some(allowed) = &context.principal.allowed_models
            && !crate::access::may_use(&self.inner.config, allowed, &context.model)
        {
            refused = Some(crate::access::not_allowed(&context.model, allowed));
        }
        let timeout = context
            .timeout
            .unwrap_or(self.inner.config.defaults.request_timeout);
        // A timeout too large for the clock (`Duration::MAX` as "no limit") is a year: the
        // addition must not overflow on the request path.
        let deadline = started
            .checked_add(timeout)
            .unwrap_or_else(|| started + Duration::from_secs(365 * 24 * 3600));
        // Disabled (the default level is info), the span is a no-op: nothing is formatted.
        // Its fields are the attributes an exporter sends (see `telemetry::attrs`): declared
        // here, empty until known, since a span's fields are fixed when it opens.
        let span = tracing::debug_span!(
            "weir.call",
            otel.name = Empty,
            otel.kind = "internal",
            request_id = %context.request_id,
            weir.operation = operation.as_str(),
            gen_ai.operation.name = attrs::operation_name(operation),
            gen_ai.request.model = %context.model,
            gen_ai.provider.name = Empty,
            gen_ai.response.model = Empty,
            gen_ai.request.max_tokens = Empty,
            gen_ai.request.temperature = Empty,
            gen_ai.usage.input_tokens = Empty,
            gen_ai.usage.output_tokens = Empty,
            gen_ai.response.finish_reasons = Empty,
            gen_ai.input.messages = Empty,
            gen_ai.output.messages = Empty,
            error.type = Empty,
            weir.deployment = Empty,
            weir.key_label = Empty,
            weir.cache = Empty,
            weir.attempts = Empty,
            weir.cost_usd = Empty,
            weir.outcome = Empty,
        );
        if !span.is_disabled() {
            attrs::name(&span, operation, &context.model);
            if let (Some(backend), Some(parent)) =
                (crate::telemetry::installed(), &context.trace_parent)
            {
                backend.adopt_parent(&span, parent);
            }
        }
        let call = Call {
            client: self.clone(),
            context: Arc::new(context),
            operation,
            started,
            deadline,
            cache: CacheOutcome::Bypass,
            reservations: Vec::new(),
            verdict: Verdict::default(),
            span,
            prompt_fingerprint: None,
            finished: false,
        };
        match refused {
            Some(e) => Err(call.fail(e)),
            None => Ok(call),
        }
    }
}

impl Call {
    /// Ask every admission to reserve for this call, keeping the tightest quota they report;
    /// the first refusal ends it.
    pub(crate) async fn admit(&mut self, input_tokens: u64, max_output_tokens: u64) -> Result<()> {
        let admissions = &self.client.inner.seams.admissions;
        if admissions.is_empty() {
            return Ok(());
        }
        let request = AdmissionRequest {
            context: &self.context,
            operation: self.operation,
            input_tokens,
            max_output_tokens,
        };
        let mut held = Vec::with_capacity(admissions.len());
        let mut verdict = Verdict::default();
        for admission in admissions {
            match admission.reserve(&request).await {
                Ok(admitted) => {
                    verdict.quota = Quota::tightest(verdict.quota, admitted.quota);
                    if !admitted.warnings.is_empty() {
                        verdict.warnings.extend(admitted.warnings);
                    }
                    held.push((Arc::clone(admission), admitted.reservation));
                }
                Err(e) => {
                    for (a, r) in held {
                        a.release(r);
                    }
                    return Err(e);
                }
            }
        }
        self.reservations = held;
        self.verdict = verdict;
        Ok(())
    }

    /// The requested model (an alias stays an alias).
    pub(crate) fn model(&self) -> &str {
        &self.context.model
    }

    /// End the call with an error: its event, then the error back for the caller.
    pub(crate) fn fail(self, err: Error) -> Error {
        self.finish(Ending::failed(&err));
        err
    }

    /// End the call: settle, price, count, and emit its one event, which is returned.
    pub(crate) fn finish(mut self, ending: Ending) -> UsageEvent {
        self.finished = true;
        self.complete(ending)
    }

    fn complete(&mut self, ending: Ending) -> UsageEvent {
        let Ending {
            error,
            disconnected,
            route,
            key_label,
            attempts,
            usage,
            usage_estimated,
            upstream,
            first_token,
            lease,
        } = ending;
        if let (Some(lease), Some(u)) = (lease, usage.as_ref()) {
            lease.settle(u.prompt_tokens, u.completion_tokens);
        }
        let cost_usd = match (&route, &usage) {
            _ if self.cache.is_free() => Some(Decimal::ZERO),
            (Some(r), Some(u)) => self.client.price(r, u),
            // A failure that reported no usage spent no tokens: providers bill tokens, and
            // report those of every call they bill. Counting it as unpriced would list
            // priced models as unpriced each time they fail.
            (_, None) if error.is_some() => Some(Decimal::ZERO),
            // Usage unknown (an upstream that reports none): the cost is unknown, not zero.
            _ => None,
        };
        let outcome = if disconnected {
            Outcome::Disconnected
        } else if error.is_some() {
            Outcome::Failure
        } else {
            Outcome::Success
        };
        let event = UsageEvent {
            context: Arc::clone(&self.context),
            operation: self.operation,
            outcome,
            // 499: the client closed the request (a convention of proxies' logs).
            status: if disconnected {
                499
            } else {
                error.map_or(200, |(_, status)| status)
            },
            error: error.map(|(kind, _)| kind),
            route: route.map(|r| RouteTaken {
                provider: r.provider,
                upstream_model: r.upstream_model,
                key_label,
            }),
            attempts,
            tokens: usage.as_ref().map(Tokens::from_usage).unwrap_or_default(),
            tokens_estimated: usage_estimated,
            cost_usd,
            cache: self.cache,
            latency: Latencies {
                total: self.started.elapsed(),
                upstream,
                first_token,
            },
            prompt_fingerprint: self.prompt_fingerprint.take(),
        };
        attrs::end(&self.span, &event);
        for (admission, reservation) in self.reservations.drain(..) {
            admission.settle(reservation, &event);
        }
        let inner = &self.client.inner;
        inner.stats.record(&event, &inner.config);
        for sink in &inner.seams.sinks {
            sink.record(&event);
        }
        event
    }

    /// The metadata of a stream that starts now (its cost is known at its end, in its
    /// summary). Response hooks see it.
    pub(crate) fn stream_meta(&self, start: &StreamStart) -> ResponseMeta {
        let mut meta = ResponseMeta {
            requested_model: self.context.model.clone(),
            provider: start.route.provider.clone(),
            upstream_model: start.route.upstream_model.clone(),
            request_id: self.context.request_id.clone(),
            latency: start.upstream,
            attempts: start.attempts,
            usage: None,
            cost_usd: self.cache.is_free().then_some(Decimal::ZERO),
            key_id: start.key_label.clone(),
            rate_limit: start.rate_limit.clone(),
            quota: self.verdict.quota,
            cache: CacheStatus::from(self.cache),
            coalesced: self.cache == CacheOutcome::Coalesced,
            tags: self.context.tags.clone(),
            budget_warnings: self.verdict.warnings.clone(),
        };
        run_response_hooks(&self.client, &self.context, &mut meta);
        meta
    }
}

/// Let every response hook read or annotate `meta`, in registration order.
fn run_response_hooks(client: &Client, context: &CallContext, meta: &mut ResponseMeta) {
    for hook in &client.inner.seams.hooks {
        hook.on_response(context, meta);
    }
}

/// What is known of a stream when its first event has arrived.
#[derive(Debug, Default)]
pub(crate) struct StreamStart {
    pub(crate) route: Route,
    pub(crate) key_label: Option<String>,
    pub(crate) attempts: u32,
    pub(crate) upstream: Duration,
    pub(crate) rate_limit: Option<RateLimitSnapshot>,
    pub(crate) lease: Option<Lease>,
}

/// The metadata of a finished call's answer, from its event and what its admissions
/// reported (taken from the call before it finished). Response hooks see it.
pub(crate) fn meta_of(
    client: &Client,
    event: UsageEvent,
    usage: Option<Usage>,
    rate_limit: Option<RateLimitSnapshot>,
    verdict: Verdict,
) -> ResponseMeta {
    let (provider, upstream_model, key_id) = match event.route {
        Some(r) => (r.provider, r.upstream_model, r.key_label),
        None => Default::default(),
    };
    let mut meta = ResponseMeta {
        requested_model: event.context.model.clone(),
        provider,
        upstream_model,
        request_id: event.context.request_id.clone(),
        latency: if event.cache.is_free() {
            event.latency.total
        } else {
            event.latency.upstream
        },
        attempts: event.attempts,
        usage,
        cost_usd: event.cost_usd,
        key_id,
        rate_limit,
        quota: verdict.quota,
        cache: CacheStatus::from(event.cache),
        coalesced: event.cache == CacheOutcome::Coalesced,
        tags: event.context.tags.clone(),
        budget_warnings: verdict.warnings,
    };
    run_response_hooks(client, &event.context, &mut meta);
    meta
}

impl Drop for Call {
    fn drop(&mut self) {
        // Dropped mid-call: the caller went away. Count it all the same.
        if !self.finished {
            self.finished = true;
            self.complete(Ending {
                disconnected: true,
                ..Ending::default()
            });
        }
    }
}
