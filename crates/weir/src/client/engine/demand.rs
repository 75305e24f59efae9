//! [`DemandEstimate`]: what a request will take from a key, counted exactly only when needed.

use std::sync::OnceLock;

use weir_types::chat::ChatRequest;

use crate::pool::Demand;

/// What a request will take from a key, as the engine sees it.
///
/// Counting input tokens exactly costs a tokenizer pass (tens of microseconds for a short
/// chat), and it only matters when a key is close to its limit. So a request may start with a
/// cheap upper bound (each o200k token is at least one byte, so the text's byte length bounds
/// its token count) and a way to count exactly: the bound is reserved when a key has room for
/// it (settled to the real usage afterwards, like any estimate), and the exact count is taken
/// only when no key has room for the bound.
pub(crate) struct DemandEstimate<'a> {
    initial: Demand,
    exact: OnceLock<Demand>,
    /// The request to count, when `initial` is a bound.
    request: Option<&'a ChatRequest>,
}

impl<'a> DemandEstimate<'a> {
    /// A demand that is already as exact as it will get.
    pub(crate) fn fixed(demand: Demand) -> Self {
        Self {
            initial: demand,
            exact: OnceLock::new(),
            request: None,
        }
    }

    /// An upper bound on the demand of `request`, whose input is counted if need be.
    pub(crate) fn bounded(bound: Demand, request: &'a ChatRequest) -> Self {
        Self {
            initial: bound,
            exact: OnceLock::new(),
            request: Some(request),
        }
    }

    /// The exact input count, if admission needed one.
    pub(crate) fn exact_input(&self) -> Option<u64> {
        self.exact.get().map(|d| d.input_tokens)
    }

    /// The demand to reserve now.
    pub(crate) fn current(&self) -> Demand {
        self.exact.get().copied().unwrap_or(self.initial)
    }

    /// Whether the demand is as exact as it will get: only then is it worth queueing for.
    pub(super) fn settled(&self) -> bool {
        self.request.is_none() || self.exact.get().is_some()
    }

    /// Count exactly, if that has not happened yet and can. True when it just did, so a key
    /// that had no room for the bound is worth asking again.
    pub(super) fn refine(&self) -> bool {
        let Some(request) = self.request else {
            return false;
        };
        if self.exact.get().is_some() {
            return false;
        }
        let _ = self.exact.set(Demand {
            input_tokens: crate::tokens::count_request_tokens(request),
            ..self.initial
        });
        true
    }
}
