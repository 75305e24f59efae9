//! [`StreamMeter`]: the accounting of a streamed call, shared by every kind of stream.
//!
//! A stream's type knows how to read its items (a chat chunk's text and usage, an Anthropic
//! event's usage) and reports them here; the meter ends the call exactly once: at the
//! stream's end, at its error, or when it is dropped early (the client went away). A stream
//! cut before the upstream reported usage is billed an estimate: the prompt's, and the
//! output seen so far at about four bytes a token, marked as estimated.

use std::sync::{Arc, OnceLock};

use rust_decimal::Decimal;
use weir_types::chat::Usage;

use super::call::{Call, Ending, StreamStart};
use crate::client::Route;
use crate::client::StreamSummary;
use crate::error::Error;
use crate::pool::Lease;

/// How a stream ended, for [`StreamMeter::end`].
#[derive(Debug)]
pub(crate) enum StreamEnd<'a> {
    Completed,
    Failed(&'a Error),
    Dropped,
}

pub(crate) struct StreamMeter {
    /// `None` for a stream whose call is accounted elsewhere (the leader's view of a stream
    /// shared with identical calls: the shared upstream stream meters that call).
    call: Option<Call>,
    /// The cost a stream without a call reports in its summary.
    fixed_cost: Option<Decimal>,
    route: Option<Route>,
    key_label: Option<String>,
    attempts: u32,
    upstream: std::time::Duration,
    lease: Option<Lease>,
    prompt_estimate: u64,
    usage: Option<Usage>,
    output_bytes: u64,
    first_token: Option<std::time::Duration>,
    summary: Arc<OnceLock<StreamSummary>>,
}

impl StreamMeter {
    /// Meter `call`'s stream, started as `start` says; `prompt_estimate` is billed if the
    /// stream is cut before its usage arrives.
    pub(crate) fn new(call: Call, start: StreamStart, prompt_estimate: u64) -> Self {
        Self {
            call: Some(call),
            fixed_cost: None,
            route: Some(start.route),
            key_label: start.key_label,
            attempts: start.attempts,
            upstream: start.upstream,
            lease: start.lease,
            prompt_estimate,
            usage: None,
            output_bytes: 0,
            first_token: None,
            summary: Arc::new(OnceLock::new()),
        }
    }

    /// A meter that only summarises: its call is accounted elsewhere.
    pub(crate) fn summary_only(cost: Option<Decimal>) -> Self {
        Self {
            call: None,
            fixed_cost: cost,
            route: None,
            key_label: None,
            attempts: 0,
            upstream: std::time::Duration::ZERO,
            lease: None,
            prompt_estimate: 0,
            usage: None,
            output_bytes: 0,
            first_token: None,
            summary: Arc::new(OnceLock::new()),
        }
    }

    /// A handle to the summary, filled in when the stream ends (or is dropped).
    pub(crate) fn summary_handle(&self) -> Arc<OnceLock<StreamSummary>> {
        Arc::clone(&self.summary)
    }

    /// `bytes` of output text went by.
    pub(crate) fn on_output(&mut self, bytes: usize) {
        if bytes == 0 {
            return;
        }
        if self.first_token.is_none()
            && let Some(call) = &self.call
        {
            self.first_token = Some(call.started.elapsed());
        }
        self.output_bytes += bytes as u64;
    }

    /// The usage so far (a cumulative report replaces the last one).
    pub(crate) fn usage_mut(&mut self) -> &mut Option<Usage> {
        &mut self.usage
    }

    /// End the call, once: later calls do nothing.
    pub(crate) fn end(&mut self, how: StreamEnd<'_>) {
        // The summary is set exactly when the stream ends.
        if self.summary.get().is_some() {
            return;
        }
        let completed = matches!(how, StreamEnd::Completed);
        let Some(call) = self.call.take() else {
            let _ = self.summary.set(StreamSummary {
                usage: self.usage.take(),
                usage_estimated: false,
                cost_usd: self.fixed_cost,
                completed,
            });
            return;
        };
        let (usage, estimated) = match self.usage.take() {
            Some(u) => (Some(u), false),
            None if completed || call.cache.is_free() => (None, false),
            None => (
                Some(Usage::new(
                    self.prompt_estimate,
                    self.output_bytes.div_ceil(4),
                )),
                true,
            ),
        };
        let mut ending = match how {
            StreamEnd::Failed(e) => Ending::failed(e),
            StreamEnd::Dropped => Ending {
                disconnected: true,
                ..Ending::default()
            },
            StreamEnd::Completed => Ending::default(),
        };
        ending.route = self.route.take();
        ending.key_label = self.key_label.take();
        ending.attempts = self.attempts;
        ending.usage = usage.clone();
        ending.usage_estimated = estimated;
        ending.upstream = self.upstream;
        ending.first_token = self.first_token;
        ending.lease = self.lease.take();
        let event = call.finish(ending);
        let _ = self.summary.set(StreamSummary {
            usage,
            usage_estimated: estimated,
            cost_usd: event.cost_usd,
            completed,
        });
    }
}

impl Drop for StreamMeter {
    fn drop(&mut self) {
        self.end(StreamEnd::Dropped);
    }
}
