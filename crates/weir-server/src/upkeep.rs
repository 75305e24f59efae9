//! The usage ledger's upkeep in the gateway: a background task that, once at start and then
//! every `ledger.sweep_every`, deletes what is older than `ledger.retention` and folds calls
//! older than `ledger.roll_up_after` into daily totals. `/status` shows the settings and the
//! last sweep under `ledger`.
//!
//! Replicas sharing a Postgres store all sweep it, which is safe without electing one: deleting
//! what is older than a cut is idempotent, and a roll-up folds and deletes its calls in one
//! transaction under a table lock, so a second replica's roll-up waits for the first and then
//! finds nothing left to fold (the store's tests race four sweeps to check this). The cost is a
//! little repeated work per sweep, not a wrong total.
//!
//! Deletion runs before the roll-up, so calls about to be deleted are not rolled up first.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use weir::config::LedgerConfig;
use weir_store::{LedgerStore, StoreError};

/// What one sweep did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SweepReport {
    /// When the sweep ended, unix milliseconds.
    pub at_ms: i64,
    /// Calls and daily totals deleted for being past the retention.
    pub deleted: u64,
    /// Calls folded into daily totals.
    pub rolled_up: u64,
    /// Why the sweep stopped short, when it did (it is tried again at the next sweep).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Sweep `store` once as `settings` say, as of `now_ms`: delete, then roll up. A failed step
/// is reported in the result (the other still runs), so one bad day does not stop the rest.
pub async fn sweep(store: &dyn LedgerStore, settings: &LedgerConfig, now_ms: i64) -> SweepReport {
    let cut =
        |age: Duration| now_ms.saturating_sub(i64::try_from(age.as_millis()).unwrap_or(i64::MAX));
    let mut errors: Vec<String> = Vec::new();
    let mut failed = |what: &str, e: StoreError| errors.push(format!("{what}: {e}"));
    let mut deleted = 0;
    if let Some(retention) = settings.retention {
        match store.delete_before(cut(retention)).await {
            Ok(n) => deleted = n,
            Err(e) => failed("deleting calls past the retention", e),
        }
    }
    let mut rolled_up = 0;
    if let Some(age) = settings.roll_up_after {
        match store.roll_up_days_before(cut(age)).await {
            Ok(n) => rolled_up = n,
            Err(e) => failed("rolling old calls up into daily totals", e),
        }
    }
    SweepReport {
        at_ms: crate::ledger::now_ms(),
        deleted,
        rolled_up,
        error: (!errors.is_empty()).then(|| errors.join("; ")),
    }
}

/// The running sweeper: started with the ledger writer, stopped at shutdown (or when dropped).
#[derive(Debug)]
pub struct LedgerUpkeep {
    settings: LedgerConfig,
    last: Arc<Mutex<Option<SweepReport>>>,
    stop: CancellationToken,
    task: Mutex<Option<JoinHandle<()>>>,
}

/// What `/status` shows of the upkeep.
#[derive(Debug, Clone, Serialize)]
pub struct UpkeepStatus {
    /// `90d`, or `null`: kept forever.
    pub retention: Option<String>,
    /// `30d`, or `null`: never rolled up.
    pub roll_up_after: Option<String>,
    pub sweep_every: String,
    /// `null` until the first sweep ends.
    pub last_sweep: Option<SweepReport>,
}

impl LedgerUpkeep {
    /// Start sweeping `store` now and then every `settings.sweep_every`; `None` when the
    /// settings ask for nothing.
    pub fn start(store: Arc<dyn LedgerStore>, settings: LedgerConfig) -> Option<Self> {
        if !settings.sweeps() {
            return None;
        }
        let last = Arc::new(Mutex::new(None));
        let stop = CancellationToken::new();
        let task = tokio::spawn(run(store, settings, Arc::clone(&last), stop.clone()));
        Some(Self {
            settings,
            last,
            stop,
            task: Mutex::new(Some(task)),
        })
    }

    pub fn status(&self) -> UpkeepStatus {
        UpkeepStatus {
            retention: self.settings.retention.map(show),
            roll_up_after: self.settings.roll_up_after.map(show),
            sweep_every: show(self.settings.sweep_every),
            last_sweep: self.last.lock().ok().and_then(|l| l.clone()),
        }
    }

    /// Stop sweeping; a sweep in progress is abandoned (each of its steps is one transaction,
    /// so it leaves nothing half done) and the task awaited.
    pub async fn stop(&self) {
        self.stop.cancel();
        let task = self.task.lock().ok().and_then(|mut t| t.take());
        if let Some(task) = task {
            let _ = task.await;
        }
    }
}

/// A duration as the config writes it, in its largest whole unit: `90d`, `2h`, `30m`, `45s`
/// (a general formatter would show 90 days as months, days and hours).
fn show(d: Duration) -> String {
    let secs = d.as_secs();
    for (unit, size) in [("d", 86_400), ("h", 3_600), ("m", 60)] {
        if secs > 0 && secs.is_multiple_of(size) {
            return format!("{}{unit}", secs / size);
        }
    }
    format!("{secs}s")
}

impl Drop for LedgerUpkeep {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

async fn run(
    store: Arc<dyn LedgerStore>,
    settings: LedgerConfig,
    last: Arc<Mutex<Option<SweepReport>>>,
    stop: CancellationToken,
) {
    loop {
        let report = tokio::select! {
            () = stop.cancelled() => return,
            report = sweep(store.as_ref(), &settings, crate::ledger::now_ms()) => report,
        };
        match &report.error {
            None => tracing::info!(
                deleted = report.deleted,
                rolled_up = report.rolled_up,
                "usage ledger swept"
            ),
            Some(e) => tracing::warn!(
                deleted = report.deleted,
                rolled_up = report.rolled_up,
                error = %e,
                "the usage ledger's sweep stopped short; it is tried again at the next sweep (ledger.sweep_every)"
            ),
        }
        if let Ok(mut l) = last.lock() {
            *l = Some(report);
        }
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(settings.sweep_every) => {}
        }
    }
}
