//! The call paths every operation shares: open a call, admit it, run it through the engine,
//! and end it through [`Call::finish`] (complete answers) or a [`StreamMeter`] (streams).
//! Operations differ only in their request, their upstream call and how they read usage.

use std::future::Future;
use std::sync::Arc;

use futures::stream::BoxStream;
use tracing::Instrument;
use weir_types::chat::{ChatRequest, Usage};

use super::engine::{DemandEstimate, Dispatch, Routed, Unrouted};
use super::{
    ChatStream, Client, Completion, DEFAULT_OUTPUT_RESERVATION, ResponseMeta, bound_by_deadline,
    validate_chat, with_first_item,
};
use crate::error::{Error, Result};
use crate::pipeline::call::{Call, Ending, StreamStart, meta_of};
use crate::pipeline::meter::StreamMeter;
use crate::pool::Demand;
use crate::provider::{SharedProvider, Upstream, UpstreamContext, UpstreamStream};

impl<T> Routed<T> {
    /// The answer, and the ending of a call it completes (usage still to be filled in).
    fn into_ending(self) -> (T, Ending) {
        let ending = Ending {
            route: Some(self.route),
            key_label: self.key_label,
            attempts: self.attempts,
            upstream: self.upstream,
            lease: self.lease,
            ..Ending::default()
        };
        (self.value, ending)
    }
}

impl Call {
    /// End a call whose execution failed, keeping how far it got.
    pub(crate) fn fail_unrouted(self, failed: Unrouted) -> Error {
        let mut ending = Ending::failed(&failed.error);
        ending.route = failed.route;
        ending.attempts = failed.attempts;
        self.finish(ending);
        failed.error
    }
}

impl Client {
    /// Check a chat request and admit its call.
    pub(crate) async fn admit_chat(&self, mut call: Call, req: &ChatRequest) -> Result<Call> {
        if let Err(e) = validate_chat(req) {
            return Err(call.fail(e));
        }
        crate::telemetry::attrs::request(
            &call.span,
            req,
            self.inner.config.telemetry.capture_content,
        );
        if !self.inner.seams.sinks.is_empty() {
            // Only for sinks (the ledger reads it): one hash of the canonical request, in the
            // one namespace, so a prompt repeated by any caller shows as a repeat.
            call.prompt_fingerprint =
                crate::cache::key::cache_key(req, call.model(), "").map(|k| k.digest);
        }
        if !self.inner.seams.admissions.is_empty() {
            let demand = self.chat_demand(req).current();
            if let Err(e) = call.admit(demand.input_tokens, demand.output_tokens).await {
                return Err(call.fail(e));
            }
        }
        Ok(call)
    }

    /// What a chat request will take from a key. Output at its cap. Input: when a key limits
    /// tokens, an upper bound first, counted with the o200k tokenizer (exact for OpenAI, a
    /// close estimate elsewhere) only if no key has room for the bound (see
    /// [`DemandEstimate`]); else an estimate from its bytes, never binding. Reservations
    /// settle to the upstream's usage.
    pub(crate) fn chat_demand<'r>(&self, req: &'r ChatRequest) -> DemandEstimate<'r> {
        let counts = self
            .inner
            .providers
            .values()
            .any(|r| r.pool.counts_tokens());
        let output_tokens = req
            .max_output_tokens()
            .map_or(DEFAULT_OUTPUT_RESERVATION, u64::from);
        if counts {
            DemandEstimate::bounded(
                Demand {
                    input_tokens: crate::tokens::request_tokens_upper_bound(req),
                    output_tokens,
                },
                req,
            )
        } else {
            DemandEstimate::fixed(Demand {
                input_tokens: crate::tokens::estimate_prompt_tokens(req),
                output_tokens,
            })
        }
    }

    /// Run a call to a complete answer and end it: the one end-of-call path of every
    /// non-streamed operation. `usage_of` reads the answer's usage.
    pub(crate) async fn complete<T, F, Fut>(
        &self,
        mut call: Call,
        demand: DemandEstimate<'_>,
        upstream_call: F,
        usage_of: impl FnOnce(&T) -> Option<Usage>,
    ) -> Result<(Upstream<T>, ResponseMeta)>
    where
        F: Fn(SharedProvider, UpstreamContext) -> Fut,
        Fut: Future<Output = Result<Upstream<T>>>,
    {
        let context = Arc::clone(&call.context);
        let dispatch = Dispatch {
            context: &context,
            demand: &demand,
            deadline: call.deadline,
            operation: call.operation,
        };
        // Boxed: the engine's future is most of a call's state, and every future around it
        // (up to the handler's, which the server moves into a box of its own) would otherwise
        // carry it and be copied with it.
        let span = call.span.clone();
        match Box::pin(self.execute(&dispatch, upstream_call).instrument(span)).await {
            Ok(routed) => {
                let (mut up, mut ending) = routed.into_ending();
                let usage = usage_of(&up.body);
                let rate_limit = up.meta.rate_limit.take();
                ending.usage = usage.clone();
                let verdict = std::mem::take(&mut call.verdict);
                let event = call.finish(ending);
                Ok((up, meta_of(self, event, usage, rate_limit, verdict)))
            }
            Err(failed) => Err(call.fail_unrouted(failed)),
        }
    }

    /// Run a streamed call until its upstream stream has produced its first item (errors
    /// before it are retried and failed over like any other), and hand back the stream, its
    /// metadata and the meter that will end the call. `chat` is the request in its canonical
    /// form: what keys reserve, and what a stream cut before its usage is billed for.
    pub(crate) async fn open_stream<T, F, Fut>(
        &self,
        call: Call,
        chat: &ChatRequest,
        upstream_call: F,
    ) -> Result<(BoxStream<'static, Result<T>>, ResponseMeta, StreamMeter)>
    where
        T: Send + 'static,
        F: Fn(SharedProvider, UpstreamContext) -> Fut,
        Fut: Future<Output = Result<UpstreamStream<T>>>,
    {
        let demand = self.chat_demand(chat);
        let dispatch = Dispatch {
            context: &call.context,
            demand: &demand,
            deadline: call.deadline,
            operation: call.operation,
        };
        // Boxed, like a complete call's engine future.
        let span = call.span.clone();
        let routed = match Box::pin(self.execute(&dispatch, upstream_call).instrument(span)).await {
            Ok(routed) => routed,
            Err(failed) => return Err(call.fail_unrouted(failed)),
        };
        let (mut up, ending) = routed.into_ending();
        let route = ending.route.unwrap_or_default();
        let stream = bound_by_deadline(up.stream, &route, call.started, call.deadline);
        let start = StreamStart {
            rate_limit: up.meta.rate_limit.take(),
            route,
            key_label: ending.key_label,
            attempts: ending.attempts,
            upstream: ending.upstream,
            lease: ending.lease,
        };
        let meta = call.stream_meta(&start);
        // Billed only for a stream cut before its usage arrived: the exact count if
        // admission needed one, else the byte-based estimate.
        let prompt_estimate = demand
            .exact_input()
            .unwrap_or_else(|| crate::tokens::estimate_prompt_tokens(chat));
        Ok((stream, meta, StreamMeter::new(call, start, prompt_estimate)))
    }

    /// The engine's answer, without the cache; `call.cache` says what the cache did.
    pub(crate) async fn chat_uncached(
        &self,
        mut req: ChatRequest,
        call: Call,
    ) -> Result<Completion> {
        req.stream = None;
        req.stream_options = None;
        let req = &req;
        // Kept to record the answer on: a no-op clone when tracing is off.
        let span = call.span.clone();
        let (mut up, meta) = self
            .complete(
                call,
                self.chat_demand(req),
                |p, ctx| async move { p.chat(req, &ctx).await },
                |body| body.usage.clone(),
            )
            .await?;
        crate::telemetry::attrs::response(
            &span,
            &up.body,
            self.inner.config.telemetry.capture_content,
        );
        let received = up.meta.raw_body.take();
        Ok(Completion::new(up.body, meta, received))
    }

    /// The engine's stream, without the cache; `call.cache` says what the cache did.
    pub(crate) async fn chat_stream_uncached(
        &self,
        mut req: ChatRequest,
        call: Call,
    ) -> Result<ChatStream> {
        let client_wants_usage = req.wants_stream_usage();
        req.stream = Some(true);
        let req = &req;
        let (stream, meta, meter) = self
            .open_stream(call, req, |p, ctx| async move {
                let up = p.chat_stream(req, &ctx).await?;
                with_first_item(up, p.name()).await
            })
            .await?;
        Ok(ChatStream::new(stream, meta, client_wants_usage, meter))
    }
}
