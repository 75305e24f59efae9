//! [`GroupRun`]: the state of one request's walk through one group's deployments.
//!
//! The engine asks it for the next candidate, tells it how each try went, and follows its
//! verdict: try again (now or after a wait), or leave the group (for its fallbacks, or for
//! good). The walk's rules, in one place:
//! - deployments come in the group's strategy order, open breakers last;
//! - keys are first asked without waiting, so a request moves on to a deployment with
//!   capacity instead of queueing behind a busy key; only when a whole round found no
//!   capacity does it count its input exactly (the bound may be what did not fit) and then
//!   queue patiently for a key;
//! - a 429 parks the key and tries another key of the same deployment, if there is one;
//! - context-window and content-policy errors leave for their own fallbacks; permanent errors
//!   stop the request;
//! - a retryable error moves to the next deployment at once, or retries the only one after
//!   the backoff (or the upstream's `Retry-After` when it fits the deadline), while the
//!   retry schedule allows.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::DemandEstimate;
use crate::error::Error;
use crate::retry::{self, RetryPolicy, Schedule};
use crate::router::Deployment;

/// Why a group was left.
pub(super) enum Exit {
    /// Stop: the request itself failed.
    Stop,
    /// Try the group's general fallbacks.
    Fallback,
    ContextWindow,
    ContentPolicy,
}

/// What to try next.
pub(super) enum Next {
    Try {
        deployment: Arc<Deployment>,
        /// A re-send to the deployment that just failed: it costs retry budget.
        is_extra: bool,
        /// How long to wait for a key.
        key_deadline: Instant,
    },
    Leave(Error, Exit),
}

/// Why a deployment was passed over without an upstream call.
pub(super) enum Skip {
    /// Its breaker is open (or its provider is gone).
    Open(Error),
    /// No key could be reserved in time.
    NoKey(Error),
    /// The retry budget says stop.
    Budget(Error),
}

pub(super) struct GroupRun {
    pub(super) order: Vec<Arc<Deployment>>,
    schedule: Schedule,
    /// Keys that answered 429 during this request.
    pub(super) excluded_keys: Vec<String>,
    pos: usize,
    last_sent: Option<usize>,
    /// Deployments passed over in a row without an upstream call.
    skipped: usize,
    skipped_for_keys: usize,
    patient: bool,
    last_err: Option<Error>,
}

impl GroupRun {
    pub(super) fn new(order: Vec<Arc<Deployment>>, policy: &RetryPolicy) -> Self {
        Self {
            patient: order.len() == 1,
            order,
            schedule: Schedule::new(policy),
            excluded_keys: Vec::new(),
            pos: 0,
            last_sent: None,
            skipped: 0,
            skipped_for_keys: 0,
            last_err: None,
        }
    }

    /// Where the walk stands: the candidate's position in the order.
    pub(super) fn pos(&self) -> usize {
        self.pos
    }

    fn last_err_or(&mut self, fallback: impl FnOnce() -> Error) -> Error {
        self.last_err.take().unwrap_or_else(fallback)
    }

    /// The next deployment to try, or the verdict to leave.
    pub(super) fn next(
        &mut self,
        demand: &DemandEstimate<'_>,
        attempts: u32,
        deadline: Instant,
        timeout: impl Fn() -> Error,
    ) -> Next {
        if Instant::now() >= deadline {
            return Next::Leave(self.last_err_or(timeout), Exit::Stop);
        }
        if self.skipped >= self.order.len() {
            if self.skipped_for_keys > 0 && demand.refine() {
                // No key had room for the bound: ask again with the exact count.
                self.skipped = 0;
                self.skipped_for_keys = 0;
            } else if self.skipped_for_keys > 0 && !self.patient {
                self.patient = true;
                self.skipped = 0;
                self.skipped_for_keys = 0;
            } else {
                // Nothing in this group can take the request now.
                return Next::Leave(self.last_err_or(timeout), Exit::Fallback);
            }
        }
        let deployment = Arc::clone(&self.order[self.pos % self.order.len()]);
        // Budget is spent on re-sending to a deployment that just failed (or hedging), not
        // on failing over: another deployment's load is not amplified by this one's outage.
        let is_extra = self.last_sent == Some(deployment.index) && attempts > 0;
        // Queue for a key only with an exact demand: a bound that does not fit now is
        // counted first, and may fit at once.
        let key_deadline = if self.patient && demand.settled() {
            deadline
        } else {
            Instant::now()
        };
        Next::Try {
            deployment,
            is_extra,
            key_deadline,
        }
    }

    /// The candidate was passed over. `Some` when the request must stop.
    pub(super) fn on_skip(&mut self, skip: Skip, demand: &DemandEstimate<'_>) -> Option<Error> {
        match skip {
            Skip::Open(e) => {
                self.last_err = Some(e);
                self.skipped += 1;
                self.pos += 1;
            }
            Skip::NoKey(e) => {
                // A request too large for any key will never fit: say so now (once it is
                // counted exactly; the bound may be what did not fit).
                if matches!(e, Error::InvalidRequest { .. }) {
                    if demand.refine() {
                        return None;
                    }
                    return Some(e);
                }
                self.last_err = Some(e);
                self.skipped += 1;
                self.skipped_for_keys += 1;
                self.pos += 1;
            }
            Skip::Budget(e) => return Some(e),
        }
        None
    }

    /// An attempt was sent to `index`.
    pub(super) fn on_sent(&mut self, index: usize) {
        self.last_sent = Some(index);
        self.skipped = 0;
    }

    /// The attempt failed with `e`; `other_key` says whether the deployment has another key
    /// to try after a 429 (which has been parked). Returns the wait before the next try, or
    /// the verdict to leave.
    pub(super) fn on_failure(
        &mut self,
        e: Error,
        other_key: Option<String>,
        policy: &RetryPolicy,
        deadline: Instant,
    ) -> Result<Duration, (Error, Exit)> {
        let same_deployment = match other_key {
            Some(key) => {
                self.excluded_keys.push(key);
                true
            }
            None => false,
        };
        if retry::is_context_window_error(&e) {
            return Err((e, Exit::ContextWindow));
        }
        if retry::is_content_policy_error(&e) {
            return Err((e, Exit::ContentPolicy));
        }
        if !retry::is_retryable(policy, &e) {
            return Err((e, Exit::Stop));
        }
        if !self.schedule.retries_left() {
            return Err((e, Exit::Fallback));
        }
        let wait = if same_deployment || self.order.len() > 1 {
            // Another key or deployment: no reason to wait.
            self.schedule.next_delay();
            Duration::ZERO
        } else {
            match e.retry_after() {
                Some(hint) if Instant::now() + hint < deadline => {
                    self.schedule.next_delay();
                    hint
                }
                // The upstream's wait does not fit: fail over, or fail fast with it.
                Some(_) => return Err((e, Exit::Fallback)),
                None => self.schedule.next_delay(),
            }
        };
        if Instant::now() + wait >= deadline {
            return Err((e, Exit::Fallback));
        }
        if !same_deployment {
            self.pos += 1;
        }
        self.last_err = Some(e);
        Ok(wait)
    }
}
