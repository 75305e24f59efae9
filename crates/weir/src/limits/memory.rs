//! The in-memory backend: exact for one gateway instance, lock-free on the request path.
//!
//! Each caller id has one entry per scope, holding two cells (requests and tokens), each an
//! `AtomicU64` TAT in nanoseconds since the backend's start on tokio's clock (so tests can
//! pause time). A call takes its cells one by one with compare-and-swap loops and, refused by
//! one, gives back what it took from the earlier ones: all or none, without a lock. (A
//! concurrent call may see the earlier cells briefly charged and be refused by them: a
//! refusal a moment early, never an admission past a limit.)
//!
//! Entries live in moka caches that forget ids idle for [`IDLE`] (by then every cell is back
//! to full, so forgetting it changes nothing) and hold at most [`MAX_IDS`] ids per scope, so
//! a flood of new ids (client addresses, say) cannot grow memory without bound.

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use moka::sync::Cache;
use tokio::time::Instant;

use super::gcra::{self, MINUTE_NANOS, Step};
use super::{CellId, Plan, Refusal};
use crate::pipeline::{LimitKind, LimitScope, Quota};

/// How long an id may stay unused before its cells are forgotten: two windows, so a cell
/// charged past its window by a call that used more than it reserved has recovered too.
const IDLE: Duration = Duration::from_secs(120);
/// Ids remembered per scope; past it, the least used are forgotten (they start again full).
const MAX_IDS: u64 = 100_000;
/// Cells one call can take: two kinds in each of four scopes.
const MAX_CELLS: usize = 8;

/// One id's cells in one scope.
#[derive(Debug, Default)]
struct Cells {
    requests: AtomicU64,
    tokens: AtomicU64,
}

impl Cells {
    fn of(&self, kind: LimitKind) -> &AtomicU64 {
        match kind {
            LimitKind::Requests => &self.requests,
            LimitKind::Tokens => &self.tokens,
        }
    }
}

/// Every scope's cells, in memory.
pub(crate) struct MemoryCells {
    base: Instant,
    keys: Cache<String, Arc<Cells>>,
    users: Cache<String, Arc<Cells>>,
    teams: Cache<String, Arc<Cells>>,
    ips: Cache<IpAddr, Arc<Cells>>,
}

impl std::fmt::Debug for MemoryCells {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryCells")
            .field("keys", &self.keys.entry_count())
            .field("users", &self.users.entry_count())
            .field("teams", &self.teams.entry_count())
            .field("ips", &self.ips.entry_count())
            .finish()
    }
}

/// One cell a call took, to settle or give back.
#[derive(Debug)]
struct Taken {
    cells: Arc<Cells>,
    kind: LimitKind,
    limit: u64,
    cost: u64,
    inc: u64,
}

/// What an admitted call took, in a fixed array: no allocation beyond the reservation's box.
#[derive(Debug, Default)]
pub(crate) struct MemoryHeld {
    taken: [Option<Taken>; MAX_CELLS],
}

impl MemoryHeld {
    fn push(&mut self, taken: Taken) {
        if let Some(slot) = self.taken.iter_mut().find(|s| s.is_none()) {
            *slot = Some(taken);
        }
    }

    fn iter(&self) -> impl Iterator<Item = &Taken> {
        self.taken.iter().map_while(Option::as_ref)
    }
}

fn cache<K>() -> Cache<K, Arc<Cells>>
where
    K: std::hash::Hash + Eq + Send + Sync + 'static,
{
    Cache::builder()
        .max_capacity(MAX_IDS)
        .time_to_idle(IDLE)
        .build()
}

impl MemoryCells {
    pub(crate) fn new() -> Self {
        Self {
            base: Instant::now(),
            keys: cache(),
            users: cache(),
            teams: cache(),
            ips: cache(),
        }
    }

    /// Nanoseconds since the backend started, on tokio's clock.
    fn now(&self) -> u64 {
        let elapsed = Instant::now().saturating_duration_since(self.base);
        u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX)
    }

    /// The cells of one scope's id: a lookup by reference, so a known id costs no allocation.
    fn cells(&self, id: CellId<'_>) -> Arc<Cells> {
        let named = |cache: &Cache<String, Arc<Cells>>, name: &str| {
            cache
                .get(name)
                .unwrap_or_else(|| cache.get_with(name.to_owned(), Arc::default))
        };
        match id {
            CellId::Key(name) => named(&self.keys, name),
            CellId::User(name) => named(&self.users, name),
            CellId::Team(name) => named(&self.teams, name),
            CellId::Ip(ip) => self.ips.get_with(ip, Arc::default),
        }
    }

    /// Take every cell of `plan`, or none: the first refusal gives back what was taken.
    pub(crate) fn reserve(&self, plan: &Plan<'_>) -> Result<(MemoryHeld, Option<Quota>), Refusal> {
        let now = self.now();
        let mut held = MemoryHeld::default();
        let mut quota = None;
        for (index, scoped) in plan.scopes() {
            let cells = self.cells(scoped.id);
            for (kind, limit, cost) in scoped.charges(plan.tokens) {
                let inc = gcra::increment(cost, limit, MINUTE_NANOS);
                match take(cells.of(kind), now, inc) {
                    Ok(tat) => {
                        let q = quota_of(scoped.id.scope(), kind, limit, tat - now);
                        quota = Quota::tightest(quota, Some(q));
                        held.push(Taken {
                            cells: Arc::clone(&cells),
                            kind,
                            limit,
                            cost,
                            inc,
                        });
                    }
                    Err((wait, backlog)) => {
                        self.release(&held);
                        return Err(Refusal {
                            index,
                            kind,
                            retry_after: Duration::from_nanos(wait),
                            quota: quota_of(scoped.id.scope(), kind, limit, backlog),
                        });
                    }
                }
            }
        }
        Ok((held, quota))
    }

    /// Correct the token cells to what the call used: give back what it reserved beyond
    /// that, or charge what it used beyond its reservation.
    pub(crate) fn settle(&self, held: &MemoryHeld, used_tokens: u64) {
        let now = self.now();
        for t in held.iter().filter(|t| t.kind == LimitKind::Tokens) {
            let cell = t.cells.of(t.kind);
            if used_tokens < t.cost {
                let back = gcra::increment(t.cost - used_tokens, t.limit, MINUTE_NANOS);
                update(cell, |tat| gcra::give_back(tat, now, back));
            } else if used_tokens > t.cost {
                let more = gcra::increment(used_tokens - t.cost, t.limit, MINUTE_NANOS);
                update(cell, |tat| gcra::charge(tat, now, more));
            }
        }
    }

    /// Give back everything a reservation took.
    pub(crate) fn release(&self, held: &MemoryHeld) {
        let now = self.now();
        for t in held.iter() {
            update(t.cells.of(t.kind), |tat| gcra::give_back(tat, now, t.inc));
        }
    }
}

/// Take `inc` from a cell: its new TAT, or (wait, backlog) when it does not fit.
fn take(cell: &AtomicU64, now: u64, inc: u64) -> Result<u64, (u64, u64)> {
    let mut tat = cell.load(Ordering::Acquire);
    loop {
        match gcra::step(tat, now, inc, MINUTE_NANOS) {
            Step::Admit(next) => {
                match cell.compare_exchange_weak(tat, next, Ordering::AcqRel, Ordering::Acquire) {
                    Ok(_) => return Ok(next),
                    Err(current) => tat = current,
                }
            }
            Step::Refuse { wait, backlog } => return Err((wait, backlog)),
        }
    }
}

fn update(cell: &AtomicU64, f: impl Fn(u64) -> u64) {
    // `fetch_update` only fails when the closure returns `None`, which this one never does.
    let _ = cell.fetch_update(Ordering::AcqRel, Ordering::Acquire, |tat| Some(f(tat)));
}

/// A cell's quota, `backlog` nanoseconds from full.
fn quota_of(scope: LimitScope, kind: LimitKind, limit: u64, backlog: u64) -> Quota {
    Quota {
        scope,
        kind,
        limit,
        remaining: gcra::remaining(backlog, limit, MINUTE_NANOS),
        reset: Duration::from_nanos(backlog),
    }
}
