//! The call pipeline: one lifecycle for every call, and the seams where features attach.
//!
//! ```text
//! CallContext (request id, principal, model, priority, deadline, cache directives, tags)
//!   -> CallHook::on_request           middleware: change the request, tag, or refuse
//!   -> Admission::reserve             budgets, rate limits (refusal: a typed 4xx); the call
//!                                     keeps the tightest Quota they report
//!   -> cache / single-flight          a hit or a shared answer ends here, at no cost
//!   -> engine                         routing, breakers, key pools, retries, hedges;
//!                                     AttemptObserver sees every attempt
//!   -> Call::finish                   settle the key lease, price, Admission::settle,
//!                                     exactly one UsageEvent to the /status counters and
//!                                     every UsageSink
//!   -> CallHook::on_response          read or annotate the answer's metadata
//! ```
//!
//! [`Call`](call::Call) owns the lifecycle; streams end it through [`meter::StreamMeter`]
//! when they end, fail or are dropped.

pub(crate) mod call;
mod context;
mod event;
pub(crate) mod meter;
mod quota;
mod seams;

pub use context::{CallContext, Principal, Tags};
pub use event::{CacheOutcome, Latencies, Operation, Outcome, RouteTaken, Tokens, UsageEvent};
pub use quota::{LimitKind, LimitScope, Quota};
pub(crate) use seams::Seams;
pub use seams::{
    Admission, AdmissionRequest, Admitted, AttemptInfo, AttemptObserver, AttemptOutcome, CallHook,
    CallRequest, ChannelSink, Reservation, UsageSink, rejected,
};
