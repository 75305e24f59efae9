//! The in-memory backend: exact for one gateway instance, lock-free on the request path.
//!
//! Each caller id has one entry per scope, holding two cells (requests and tokens), each an
//! `AtomicU64` TAT in nanoseconds since the backend's start on tokio's clock (so tests can
//! pause time). A call takes its cells one by one with compare-and-swap loops and, refused by
//! one, gives back what it took from the earlier ones: all or none, without a lock. (A
//! concurrent call may see the earlier cells briefly charged and be refused by them: a
//! refusal a moment early, never an admission past a limit.)
//!
//! Entries live in lock-free maps (papaya), read with no bookkeeping: a known id costs one
//! hash and one probe. Ids are forgotten once their cells have been full for [`IDLE`]: a
//! full cell is the same as no cell, so forgetting it changes nothing (a call racing the
//! sweep of its own idle id is admitted, as it would be, but may go uncounted: one extra
//! call at most, after minutes of silence). The sweep runs as new ids arrive, at most once
//! per [`IDLE`], and whenever a scope reaches [`MAX_IDS`] ids, so a flood of new ids (client
//! addresses, say) cannot grow memory without bound: past that many ids busy at once, a new
//! id is limited by a fresh cell that is not remembered, as if it had just been forgotten.

use std::hash::Hash;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use papaya::Equivalent;
use tokio::time::Instant;

use super::gcra::{self, MINUTE_NANOS, Step};
use super::{CellId, Plan, Refusal};
use crate::pipeline::{LimitKind, LimitScope, Quota};

/// How long an id's cells must have been full before it is forgotten: two windows, so a
/// cell charged past its window by a call that used more than it reserved has recovered too.
const IDLE: Duration = Duration::from_secs(120);
/// Ids remembered per scope; past it (after a sweep), new ids get cells that are not kept.
const MAX_IDS: usize = 100_000;
/// Cells one call can take: two kinds in each of four scopes.
const MAX_CELLS: usize = 8;

/// One id's cells in one scope.
#[derive(Debug, Default)]
struct Cells {
    requests: AtomicU64,
    tokens: AtomicU64,
}

impl Cells {
    /// Whether both cells have been full since `before` (a TAT at or before it).
    fn full_since(&self, before: u64) -> bool {
        self.requests.load(Ordering::Acquire) <= before
            && self.tokens.load(Ordering::Acquire) <= before
    }

    fn of(&self, kind: LimitKind) -> &AtomicU64 {
        match kind {
            LimitKind::Requests => &self.requests,
            LimitKind::Tokens => &self.tokens,
        }
    }
}

/// One scope's ids and their cells.
type Ids<K> = papaya::HashMap<K, Arc<Cells>, foldhash::fast::RandomState>;

/// Every scope's cells, in memory.
pub(crate) struct MemoryCells {
    base: Instant,
    keys: Ids<String>,
    users: Ids<String>,
    teams: Ids<String>,
    ips: Ids<IpAddr>,
    /// When the next sweep for idle ids is due, in the backend's nanoseconds.
    next_sweep: AtomicU64,
}

impl std::fmt::Debug for MemoryCells {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryCells")
            .field("keys", &self.keys.len())
            .field("users", &self.users.len())
            .field("teams", &self.teams.len())
            .field("ips", &self.ips.len())
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

fn ids<K: Hash + Eq>() -> Ids<K> {
    papaya::HashMap::builder()
        .hasher(foldhash::fast::RandomState::default())
        .build()
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

impl MemoryCells {
    pub(crate) fn new() -> Self {
        Self {
            base: Instant::now(),
            keys: ids(),
            users: ids(),
            teams: ids(),
            ips: ids(),
            next_sweep: AtomicU64::new(nanos(IDLE)),
        }
    }

    /// Nanoseconds since the backend started, on tokio's clock.
    fn now(&self) -> u64 {
        nanos(Instant::now().saturating_duration_since(self.base))
    }

    /// The cells of one scope's id: a lookup by reference, so a known id costs no allocation.
    fn cells(&self, id: CellId<'_>, now: u64) -> Arc<Cells> {
        match id {
            CellId::Key(name) => self.cells_in(&self.keys, name, str::to_owned, now),
            CellId::User(name) => self.cells_in(&self.users, name, str::to_owned, now),
            CellId::Team(name) => self.cells_in(&self.teams, name, str::to_owned, now),
            CellId::Ip(ip) => self.cells_in(&self.ips, &ip, |ip| *ip, now),
        }
    }

    fn cells_in<K, Q>(
        &self,
        ids: &Ids<K>,
        id: &Q,
        owned: impl FnOnce(&Q) -> K,
        now: u64,
    ) -> Arc<Cells>
    where
        K: Hash + Eq + Send + Sync,
        Q: Hash + Equivalent<K> + ?Sized,
    {
        if let Some(cells) = ids.pin().get(id) {
            return Arc::clone(cells);
        }
        self.sweep_if_due(now);
        if ids.len() >= MAX_IDS {
            sweep(ids, now);
            if ids.len() >= MAX_IDS {
                return Arc::default();
            }
        }
        Arc::clone(ids.pin().get_or_insert_with(owned(id), Arc::default))
    }

    /// Forget idle ids in every scope, at most once per [`IDLE`] (whichever call claims the
    /// due time does it).
    fn sweep_if_due(&self, now: u64) {
        let due = self.next_sweep.load(Ordering::Relaxed);
        if now < due
            || self
                .next_sweep
                .compare_exchange(
                    due,
                    now.saturating_add(nanos(IDLE)),
                    Ordering::AcqRel,
                    Ordering::Relaxed,
                )
                .is_err()
        {
            return;
        }
        sweep(&self.keys, now);
        sweep(&self.users, now);
        sweep(&self.teams, now);
        sweep(&self.ips, now);
    }

    /// Take every cell of `plan`, or none: the first refusal gives back what was taken.
    pub(crate) fn reserve(&self, plan: &Plan<'_>) -> Result<(MemoryHeld, Option<Quota>), Refusal> {
        let now = self.now();
        let mut held = MemoryHeld::default();
        let mut quota = None;
        for (index, scoped) in plan.scopes() {
            let cells = self.cells(scoped.id, now);
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

/// Forget the ids whose cells have been full for [`IDLE`].
fn sweep<K: Hash + Eq + Send + Sync>(ids: &Ids<K>, now: u64) {
    let Some(before) = now.checked_sub(nanos(IDLE)) else {
        return;
    };
    ids.pin().retain(|_, cells| !cells.full_since(before));
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

#[cfg(test)]
mod tests {
    use super::super::{RateLimit, Scoped};
    use super::*;

    fn plan(key: &str, rpm: u64) -> Plan<'_> {
        let scoped = Scoped {
            id: CellId::Key(key),
            limit: RateLimit {
                rpm: Some(rpm),
                tpm: None,
            },
        };
        Plan {
            scopes: [Some(scoped), None, None, None],
            tokens: 0,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn ids_full_for_the_idle_time_are_forgotten_and_the_others_kept() {
        let cells = MemoryCells::new();
        let step = |secs| tokio::time::advance(Duration::from_secs(secs));
        assert!(cells.reserve(&plan("quiet", 1)).is_ok());
        assert!(cells.reserve(&plan("light", 1_000)).is_ok());
        step(190).await;
        assert!(cells.reserve(&plan("busy", 1)).is_ok());
        step(10).await;
        // A new id, past the sweep's due time: "quiet" (full since t=60 s) and "light" go;
        // "busy" (charged until t=250 s) stays, and so does the newcomer.
        assert!(cells.reserve(&plan("new", 1)).is_ok());
        assert_eq!(cells.keys.len(), 2);
        assert!(cells.keys.pin().contains_key("busy"));
        // "busy" was not forgotten: its minute still holds.
        assert!(cells.reserve(&plan("busy", 1)).is_err());
    }

    #[tokio::test(start_paused = true)]
    async fn a_scope_at_capacity_limits_new_ids_without_remembering_them() {
        let cells = MemoryCells::new();
        for i in 0..MAX_IDS {
            cells.keys.pin().insert(format!("k{i}"), Arc::default());
        }
        // Every id is full, but not for long enough to be forgotten.
        assert!(cells.reserve(&plan("extra", 1)).is_ok());
        assert_eq!(cells.keys.len(), MAX_IDS);
        assert!(!cells.keys.pin().contains_key("extra"));
    }
}
