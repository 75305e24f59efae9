//! The points where features plug into every call, each a small trait with its contract.
//!
//! ```text
//! CallHook::on_request -> Admission::reserve -> cache / engine (AttemptObserver per attempt)
//!   -> Admission::settle -> UsageSink::record (exactly one UsageEvent) -> CallHook::on_response
//! ```
//!
//! Register them on [`ClientBuilder`](crate::ClientBuilder). None is on the path unless
//! registered: a client with no seams pays for none.

use std::fmt::Debug;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use weir_types::anthropic::MessagesRequest;
use weir_types::chat::ChatRequest;
use weir_types::embeddings::EmbeddingsRequest;

use super::{CallContext, Operation, Quota, UsageEvent};
use crate::client::ResponseMeta;
use crate::error::{Error, ErrorKind, Result};

/// Receives every call's [`UsageEvent`], exactly once per call.
///
/// Contract: `record` runs on the request path (or in a stream's drop), so it must never
/// block or wait: count into atomics, or hand the event to a bounded queue and drop (and
/// count) what does not fit. [`ChannelSink`] does the latter.
pub trait UsageSink: Send + Sync + Debug {
    fn record(&self, event: &UsageEvent);
}

/// What an [`Admission`] is asked to admit.
#[derive(Debug)]
pub struct AdmissionRequest<'a> {
    pub context: &'a CallContext,
    pub operation: Operation,
    /// Input tokens: an upper bound or an estimate (never the exact count, which costs a
    /// tokenizer pass); reconcile with the event's real usage in `settle`.
    pub input_tokens: u64,
    /// The output cap the request sets, else the configured default reservation.
    pub max_output_tokens: u64,
}

/// What an [`Admission`] holds for an admitted call until it settles (an amount reserved,
/// an id): anything the admission needs, opaque to the pipeline.
pub type Reservation = Box<dyn std::any::Any + Send + Sync>;

/// What an [`Admission`] returns for an admitted call.
#[derive(Debug)]
pub struct Admitted {
    /// What to settle (or release) later.
    pub reservation: Reservation,
    /// Where the call stands against the admission's tightest limit, if it has limits: the
    /// call keeps the tightest of its admissions' quotas for its answer's metadata.
    pub quota: Option<Quota>,
    /// Warnings for the caller (a budget crossed a threshold): they reach the answer's
    /// [`ResponseMeta::budget_warnings`]. Usually empty.
    pub warnings: Vec<String>,
}

impl Admitted {
    /// Admitted with this reservation, reporting no quota and no warning.
    pub fn new(reservation: Reservation) -> Self {
        Self {
            reservation,
            quota: None,
            warnings: Vec::new(),
        }
    }
}

/// Decides whether a call may go ahead, before any routing, and settles what it reserved
/// once the call's real usage is known: budgets, token-rate limits, access rules.
///
/// Contract: `reserve` either admits (returning what to settle later, and optionally the
/// [`Quota`] the call leaves) or refuses with an error that says why and what to do
/// ([`Error::Rejected`] with a 4xx status, its `quota` the limit that refused). Every
/// admitted call is settled exactly once, with its [`UsageEvent`], however it ends (a failed
/// call settles with zero usage, a dropped stream with what it used). A call refused by a
/// later admission is `release`d by the earlier ones instead.
#[async_trait]
pub trait Admission: Send + Sync + Debug {
    async fn reserve(&self, request: &AdmissionRequest<'_>) -> Result<Admitted>;
    fn settle(&self, reservation: Reservation, event: &UsageEvent);
    /// The call never started (another admission refused it): undo the reservation.
    fn release(&self, reservation: Reservation);
}

/// One upstream attempt, as an [`AttemptObserver`] sees it.
#[derive(Debug, Clone, Copy)]
pub struct AttemptInfo<'a> {
    pub request_id: &'a str,
    /// `provider/upstream_model`.
    pub deployment: &'a str,
    pub provider: &'a str,
    /// The upstream key's label (never the key); empty for a provider without keys.
    pub key_label: &'a str,
    /// 1 for the call's first attempt.
    pub number: u32,
    /// `true` for a hedge: a second attempt raced against a slow first one.
    pub hedge: bool,
}

/// How an attempt ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttemptOutcome {
    Success,
    /// Failed with this error kind and HTTP status.
    Failed {
        kind: ErrorKind,
        status: u16,
    },
    /// Dropped before it ended: it lost a hedge race, or the caller went away.
    Cancelled,
}

/// Sees each upstream attempt start and end: retries, failovers and hedges included.
///
/// Contract: called on the request path; never block. Every `attempt_started` is followed by
/// exactly one `attempt_ended`.
pub trait AttemptObserver: Send + Sync + Debug {
    fn attempt_started(&self, attempt: &AttemptInfo<'_>);
    fn attempt_ended(&self, attempt: &AttemptInfo<'_>, outcome: AttemptOutcome, latency: Duration);
}

/// The request of a call, for [`CallHook::on_request`] to read or change.
#[derive(Debug)]
pub enum CallRequest<'a> {
    Chat(&'a mut ChatRequest),
    Embeddings(&'a mut EmbeddingsRequest),
    Messages(&'a mut MessagesRequest),
}

impl CallRequest<'_> {
    /// The same request, borrowed again (to hand to several hooks in turn).
    pub fn reborrow(&mut self) -> CallRequest<'_> {
        match self {
            Self::Chat(r) => CallRequest::Chat(r),
            Self::Embeddings(r) => CallRequest::Embeddings(r),
            Self::Messages(r) => CallRequest::Messages(r),
        }
    }

    /// The model the request names.
    pub fn model(&self) -> &str {
        match self {
            Self::Chat(r) => &r.model,
            Self::Embeddings(r) => &r.model,
            Self::Messages(r) => &r.model,
        }
    }
}

/// Middleware for library users: runs first and last on every call.
///
/// `on_request` may change the request, add to the context (tags, priority, cache
/// directives) or refuse the call with an error (which the caller gets as is: use a 4xx
/// kind such as [`Error::Rejected`]). `on_response` may read or annotate the answer's
/// metadata (for a stream: when it starts). Hooks run in registration order; never block.
pub trait CallHook: Send + Sync + Debug {
    fn on_request(&self, request: CallRequest<'_>, context: &mut CallContext) -> Result<()> {
        let _ = (request, context);
        Ok(())
    }
    fn on_response(&self, context: &CallContext, meta: &mut ResponseMeta) {
        let _ = (context, meta);
    }
}

/// Everything registered on a client's pipeline.
#[derive(Debug, Default, Clone)]
pub(crate) struct Seams {
    pub(crate) sinks: Vec<Arc<dyn UsageSink>>,
    pub(crate) admissions: Vec<Arc<dyn Admission>>,
    pub(crate) observers: Vec<Arc<dyn AttemptObserver>>,
    pub(crate) hooks: Vec<Arc<dyn CallHook>>,
}

/// A [`UsageSink`] that hands events to a bounded queue, for a consumer that does I/O (a
/// ledger writer, an exporter). A full queue drops the event and counts it: the request path
/// never waits for the consumer.
#[derive(Debug)]
pub struct ChannelSink {
    sender: tokio::sync::mpsc::Sender<UsageEvent>,
    dropped: AtomicU64,
}

impl ChannelSink {
    /// A sink holding up to `capacity` events, and the receiver to drain them from.
    pub fn new(capacity: usize) -> (Self, tokio::sync::mpsc::Receiver<UsageEvent>) {
        let (sender, receiver) = tokio::sync::mpsc::channel(capacity.max(1));
        (
            Self {
                sender,
                dropped: AtomicU64::new(0),
            },
            receiver,
        )
    }

    /// Events dropped because the queue was full (or its receiver gone).
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

impl UsageSink for ChannelSink {
    fn record(&self, event: &UsageEvent) {
        if self.sender.try_send(event.clone()).is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Refusal helper for admissions and hooks: a 4xx [`Error::Rejected`], with no retry hint
/// and no quota (set them on the error when there are some).
pub fn rejected(status: u16, code: &'static str, message: impl Into<String>) -> Error {
    Error::Rejected {
        status,
        code,
        message: message.into(),
        retry_after: None,
        quota: None,
    }
}
