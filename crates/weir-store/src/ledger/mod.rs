//! The usage ledger: one [`LedgerRecord`] per LLM call, durable and counted exactly once, and
//! [`LedgerStore`], the trait every backend implements.
//!
//! The request path never waits for a database: it appends the record to a local
//! [`Spool`](spool::Spool) (one `write` to a file), and a [`LedgerWriter`](spool::LedgerWriter)
//! moves spooled records into the store in batches, recording in the same transaction how far
//! it has consumed the spool ([`LedgerStore::append`]), so a crash at any point neither loses
//! nor double-counts a call.
//!
//! Reading: [`LedgerStore::usage`] totals by any [`Dimension`]s over a time range,
//! [`LedgerStore::spend`] is the one total that budgets need, [`LedgerStore::savings`] what
//! the cache and single-flight saved, and [`LedgerStore::records`] lists the calls themselves. Old calls are either deleted ([`LedgerStore::delete_before`]) or
//! folded into daily totals ([`LedgerStore::roll_up_days_before`]) that every total still
//! includes.
//!
//! # Money
//!
//! Costs are exact decimals ([`Decimal`]) everywhere in the API. Postgres keeps them as
//! `NUMERIC(38,12)`. SQLite has no exact decimal type, so it keeps whole picodollars
//! (10⁻¹² USD) in a 64-bit integer and sums them in SQL: that bounds a single call's cost, and
//! every sum SQLite computes, to ±9,223,372.036854775807 USD (a larger sum fails the query
//! rather than wrapping). A cost with more than 12 decimals is rounded half-to-even to 12 on
//! both backends before it is stored. `None` means the model had no price: such a call adds
//! nothing to a total and is counted in `unpriced_calls` instead (never as free).
//!
//! # Time
//!
//! `at_ms` is unix milliseconds (when the call ended). Ranges are half-open, `[from_ms,
//! to_ms)`. Days and hours are UTC. Rolled-up calls keep only their day: they count as made
//! at the start of that day (00:00 UTC) for ranges, hour groups and hour filters.
//!
//! ```
//! use std::time::Duration;
//! use weir_store::{Decimal, LedgerRecord, LedgerWriter, SpendFilter, Spool, StoreLocation};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let dir = std::env::temp_dir().join(format!("weir-ledger-doc-{}", std::process::id()));
//! # tokio::runtime::Builder::new_current_thread().enable_all().build()?.block_on(async {
//! let store = weir_store::open_store(&StoreLocation::Sqlite(dir.join("weir.db"))).await?;
//! // At start: the spool (at most 64 MiB waiting), and the writer draining it every second.
//! let spool = Spool::open(dir.join("spool"), 64 << 20)?;
//! let writer = LedgerWriter::start(spool.clone(), store.ledger.clone(), 500, Duration::from_secs(1))?;
//!
//! // When a call ends: one line to a file, never a wait on the database.
//! let mut call = LedgerRecord::new(1_793_886_312_345, "req-1", "chat", "gpt-4o");
//! call.key_id = Some("wk_1".into());
//! call.cost_usd = Some(Decimal::new(6_225, 6)); // 0.006225 USD
//! spool.append(&call)?;
//!
//! // At shutdown (or in a test): store what is spooled, then ask what key wk_1 spent.
//! writer.shutdown().await?;
//! let filter = SpendFilter { key_id: Some("wk_1".into()), ..SpendFilter::default() };
//! let spend = store.ledger.spend(&filter, 0, i64::MAX).await?;
//! assert_eq!(spend.cost_usd, Decimal::new(6_225, 6));
//! # Ok::<(), Box<dyn std::error::Error>>(()) })?;
//! # std::fs::remove_dir_all(&dir)?;
//! # Ok(()) }
//! ```

pub mod spool;
pub(crate) mod sql;
#[cfg(test)]
mod tests;

use std::fmt;
use std::str::FromStr;

use async_trait::async_trait;
use rust_decimal::RoundingStrategy;
use serde::{Deserialize, Serialize};

use crate::error::{StoreError, StoreResult};

pub use rust_decimal::Decimal;
pub use spool::{LedgerHealth, LedgerWriter, Spool, SpoolError, SpoolOptions};

/// Milliseconds in a day.
pub const DAY_MS: i64 = 86_400_000;
/// Milliseconds in an hour.
pub const HOUR_MS: i64 = 3_600_000;
/// Picodollars (the SQLite backend's unit of money) in a dollar.
pub const PICODOLLARS_PER_USD: i64 = 1_000_000_000_000;
/// Decimal places money keeps (picodollars).
pub const MONEY_SCALE: u32 = 12;

/// What one LLM call did and cost: written once, when the call ends.
///
/// Spooled as one JSON line, with empty fields (no value, zero, false) left out: a line is
/// written on every call's path and read back by the writer, and most calls leave half the
/// fields empty.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LedgerRecord {
    /// When the call ended, unix milliseconds.
    pub at_ms: i64,
    /// The gateway's request id.
    pub request_id: String,
    /// The gateway key that made the call.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_id: Option<String>,
    /// The end user the call is attributed to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub team: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub project: Option<String>,
    /// Caller-supplied labels.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<(String, String)>,
    /// `chat`, `embeddings`, `messages`...
    pub operation: String,
    /// The model as requested (an alias stays the alias).
    pub model: String,
    /// The deployment that answered: `provider/upstream_model`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upstream_model: Option<String>,
    /// The HTTP status returned to the client.
    pub status: u16,
    /// `success`, `failure` or `disconnected` (see [`outcome`]).
    pub outcome: String,
    /// The kind of failure, when there was one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_kind: Option<String>,
    /// Upstream attempts made (0 for a cache hit).
    pub attempts: u32,
    /// `bypass`, `hit`, `miss` or `coalesced` (see [`cache`]).
    pub cache: String,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub input_tokens: u64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub output_tokens: u64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub cached_input_tokens: u64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub cache_write_tokens: u64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub reasoning_tokens: u64,
    /// Whether the token counts are the gateway's estimate rather than the provider's.
    #[serde(default, skip_serializing_if = "is_false")]
    pub tokens_estimated: bool,
    /// What the call cost; `None` for a model without a price (never counted as free).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cost_usd: Option<Decimal>,
    /// For a cache hit or a coalesced call: what the call would have cost.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub saved_usd: Option<Decimal>,
    /// The whole call as the gateway saw it, microseconds.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub latency_us: u64,
    /// Time spent waiting on the upstream, microseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upstream_us: Option<u64>,
    /// Time to the first streamed token, microseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_token_us: Option<u64>,
    /// A keyed hash of the prompt (never the prompt itself).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt_fingerprint: Option<String>,
}

impl LedgerRecord {
    /// A successful call (status 200, one attempt, cache bypassed) with no tokens, no
    /// attribution and no price yet (an unpriced call until `cost_usd` is set).
    pub fn new(
        at_ms: i64,
        request_id: impl Into<String>,
        operation: impl Into<String>,
        model: impl Into<String>,
    ) -> Self {
        LedgerRecord {
            at_ms,
            request_id: request_id.into(),
            key_id: None,
            user: None,
            team: None,
            project: None,
            tags: Vec::new(),
            operation: operation.into(),
            model: model.into(),
            provider: None,
            upstream_model: None,
            status: 200,
            outcome: outcome::SUCCESS.into(),
            error_kind: None,
            attempts: 1,
            cache: cache::BYPASS.into(),
            input_tokens: 0,
            output_tokens: 0,
            cached_input_tokens: 0,
            cache_write_tokens: 0,
            reasoning_tokens: 0,
            tokens_estimated: false,
            cost_usd: None,
            saved_usd: None,
            latency_us: 0,
            upstream_us: None,
            first_token_us: None,
            prompt_fingerprint: None,
        }
    }
}

/// The values of [`LedgerRecord::outcome`] the totals know.
pub mod outcome {
    /// The call completed.
    pub const SUCCESS: &str = "success";
    /// The call failed; counted in [`UsageRow::errors`](super::UsageRow::errors).
    pub const FAILURE: &str = "failure";
    /// The client went away before the call completed.
    pub const DISCONNECTED: &str = "disconnected";
}

/// The values of [`LedgerRecord::cache`] the totals know.
pub mod cache {
    /// The cache was not consulted.
    pub const BYPASS: &str = "bypass";
    /// Answered from the cache; counted in [`UsageRow::cache_hits`](super::UsageRow::cache_hits).
    pub const HIT: &str = "hit";
    /// Looked up, not found, called upstream.
    pub const MISS: &str = "miss";
    /// Shared another identical call's upstream answer; counted in
    /// [`UsageRow::cache_hits`](super::UsageRow::cache_hits).
    pub const COALESCED: &str = "coalesced";
}

/// What usage can be grouped and filtered by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Dimension {
    /// The gateway key id.
    Key,
    User,
    Team,
    Project,
    /// The model as requested.
    Model,
    Provider,
    /// The UTC day, `2026-11-05`.
    Day,
    /// The UTC hour, `2026-11-05T13:00:00Z`.
    Hour,
}

impl Dimension {
    /// Every dimension, in declaration order.
    pub const ALL: [Dimension; 8] = [
        Dimension::Key,
        Dimension::User,
        Dimension::Team,
        Dimension::Project,
        Dimension::Model,
        Dimension::Provider,
        Dimension::Day,
        Dimension::Hour,
    ];

    /// The name used in serde and [`FromStr`]: `key`, `user`, ... `hour`.
    pub fn as_str(self) -> &'static str {
        match self {
            Dimension::Key => "key",
            Dimension::User => "user",
            Dimension::Team => "team",
            Dimension::Project => "project",
            Dimension::Model => "model",
            Dimension::Provider => "provider",
            Dimension::Day => "day",
            Dimension::Hour => "hour",
        }
    }

    /// The width of a time bucket, for [`Dimension::Day`] and [`Dimension::Hour`].
    fn bucket_ms(self) -> Option<i64> {
        match self {
            Dimension::Day => Some(DAY_MS),
            Dimension::Hour => Some(HOUR_MS),
            _ => None,
        }
    }
}

impl fmt::Display for Dimension {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A name that is not a [`Dimension`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown usage dimension {0:?}: use one of key, user, team, project, model, provider, day, hour"
)]
pub struct UnknownDimension(pub String);

impl FromStr for Dimension {
    type Err = UnknownDimension;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Dimension::ALL
            .into_iter()
            .find(|d| d.as_str().eq_ignore_ascii_case(s.trim()))
            .ok_or_else(|| UnknownDimension(s.to_string()))
    }
}

/// What [`LedgerStore::usage`] totals.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct UsageQuery {
    /// Start of the range, unix milliseconds, included.
    pub from_ms: i64,
    /// End of the range, unix milliseconds, excluded.
    pub to_ms: i64,
    /// One row per distinct combination of these, in this order; none gives one row of totals.
    /// Each dimension at most once.
    #[serde(default)]
    pub group_by: Vec<Dimension>,
    /// Only calls matching these. Filters on the same dimension are alternatives (any may
    /// match); filters on different dimensions must all match. A call without a value for a
    /// dimension (no user, say) matches no filter on it. Day and hour filters take the forms
    /// the groups show (`2026-11-05`, `2026-11-05T13:00:00Z`).
    #[serde(default)]
    pub filters: Vec<(Dimension, String)>,
}

/// One group's totals.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UsageRow {
    /// The group's value for each of [`UsageQuery::group_by`], in its order (`None`: calls
    /// without a value for that dimension).
    pub group: Vec<(Dimension, Option<String>)>,
    /// Calls.
    pub requests: u64,
    /// Calls whose outcome was `failure`.
    pub errors: u64,
    /// Calls answered without an upstream call of their own (cache `hit` or `coalesced`).
    pub cache_hits: u64,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cached_input_tokens: u64,
    pub reasoning_tokens: u64,
    /// Sum of the priced calls' costs.
    pub cost_usd: Decimal,
    /// Sum of what cache hits and coalesced calls saved.
    pub saved_usd: Decimal,
    /// Calls without a price (not in `cost_usd`).
    pub unpriced_calls: u64,
}

/// Which calls [`LedgerStore::spend`] totals: those matching every field that is set (none set:
/// every call).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct SpendFilter {
    pub key_id: Option<String>,
    pub user: Option<String>,
    pub team: Option<String>,
    pub project: Option<String>,
    pub model: Option<String>,
}

impl SpendFilter {
    /// The same filter as [`UsageQuery::filters`].
    pub fn to_filters(&self) -> Vec<(Dimension, String)> {
        [
            (Dimension::Key, &self.key_id),
            (Dimension::User, &self.user),
            (Dimension::Team, &self.team),
            (Dimension::Project, &self.project),
            (Dimension::Model, &self.model),
        ]
        .into_iter()
        .filter_map(|(d, v)| v.clone().map(|v| (d, v)))
        .collect()
    }
}

/// What [`LedgerStore::spend`] returns.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Spend {
    /// Sum of the priced calls' costs.
    pub cost_usd: Decimal,
    /// Every matching call, priced or not.
    pub calls: u64,
    /// Matching calls without a price (in `calls`, not in `cost_usd`).
    pub unpriced_calls: u64,
}

/// What [`LedgerStore::savings`] returns: the calls answered without an upstream call of their
/// own, and what they would have cost.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Savings {
    /// Calls answered from the response cache.
    pub cache_hits: u64,
    /// What the cache hits would have cost.
    pub cache_hit_saved_usd: Decimal,
    /// Calls that shared an identical in-flight call's answer (single-flight followers).
    pub coalesced: u64,
    /// What the coalesced calls would have cost.
    pub coalesced_saved_usd: Decimal,
    /// Hits and coalesced calls of rolled-up days, which keep the two together.
    pub rolled_up: u64,
    /// What the rolled-up hits and coalesced calls would have cost.
    pub rolled_up_saved_usd: Decimal,
}

impl Savings {
    /// Every call counted here.
    pub fn calls(&self) -> u64 {
        self.cache_hits
            .saturating_add(self.coalesced)
            .saturating_add(self.rolled_up)
    }

    /// Everything saved.
    pub fn saved_usd(&self) -> Decimal {
        self.cache_hit_saved_usd + self.coalesced_saved_usd + self.rolled_up_saved_usd
    }
}

/// The stretch of a spool a batch of records was read from: bytes `[from, to)` of the spool
/// `spool_id` (offsets as [`spool`] describes them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpoolRange<'a> {
    pub spool_id: &'a str,
    /// Where the batch starts: the offset the store has recorded for the spool.
    pub from: u64,
    /// Where the batch ends: the offset the store records with it.
    pub to: u64,
}

impl<'a> SpoolRange<'a> {
    pub fn new(spool_id: &'a str, from: u64, to: u64) -> Self {
        SpoolRange { spool_id, from, to }
    }

    /// Checked before any transaction: `from <= to`, and a batch of records covers bytes.
    pub(crate) fn check(&self, records: usize) -> StoreResult<(i64, i64)> {
        if self.from > self.to || (self.from == self.to && records > 0) {
            return Err(StoreError::InvalidData(format!(
                "a spool range must run forward and cover the records it carries, not {}..{}: \
                 this is a bug in the caller",
                self.from, self.to
            )));
        }
        Ok((offset_to_db(self.from)?, offset_to_db(self.to)?))
    }

    /// Why an append did not apply: the store holds another offset than the range's start.
    pub(crate) fn out_of_step(&self, stored: u64) -> StoreError {
        StoreError::Conflict(format!(
            "the spool {} is stored up to offset {stored}, not {} where this batch starts: \
             another writer is storing the same spool; read again from the stored offset",
            self.spool_id, self.from
        ))
    }
}

/// Where usage records are kept. Every backend passes the shared suite in `tests/ledger.rs`.
#[async_trait]
pub trait LedgerStore: Send + Sync + fmt::Debug {
    /// Append `records` and, in the same transaction, record that their spool has been
    /// consumed up to `spool.to`, so a crash never double-counts or loses a call.
    ///
    /// The batch applies only where the spool stands: when the store's offset for it is
    /// `spool.from` (0 for a spool never seen). When the store is already at `spool.to` or
    /// beyond, the append is a repeat (a retry after a failure that had in fact committed, or
    /// a second writer) and changes nothing. Anywhere else it changes nothing and fails with
    /// [`StoreError::Conflict`]: read again from [`spool_offset`](Self::spool_offset).
    /// `records` may be empty, to move the offset alone. A record the store cannot keep (a
    /// cost beyond the backend's range) fails the whole append with
    /// [`StoreError::InvalidData`], before anything is written.
    async fn append(
        &self,
        records: &[LedgerRecord],
        spool: Option<SpoolRange<'_>>,
    ) -> StoreResult<()>;

    /// How far the spool `spool_id` has been consumed: 0 when never seen.
    async fn spool_offset(&self, spool_id: &str) -> StoreResult<u64>;

    /// Totals over `[from_ms, to_ms)`, grouped and filtered as the query says, rolled-up days
    /// included. Rows come sorted by their group values (no value first). With no grouping
    /// there is exactly one row, of zeros when nothing matched.
    async fn usage(&self, query: &UsageQuery) -> StoreResult<Vec<UsageRow>>;

    /// The total cost over `[from_ms, to_ms)` of the calls matching `filter`, rolled-up days
    /// included: what budgets compare against.
    async fn spend(&self, filter: &SpendFilter, from_ms: i64, to_ms: i64) -> StoreResult<Spend>;

    /// The calls answered without an upstream call of their own over `[from_ms, to_ms)`
    /// (cache hits and coalesced calls, rolled-up days included), and what they saved.
    async fn savings(&self, from_ms: i64, to_ms: i64) -> StoreResult<Savings>;

    /// The calls themselves (not those rolled up) over `[from_ms, to_ms)`, oldest first (in
    /// the order they were appended when at the same millisecond), at most `limit`.
    async fn records(
        &self,
        from_ms: i64,
        to_ms: i64,
        limit: usize,
    ) -> StoreResult<Vec<LedgerRecord>>;

    /// Retention: delete the calls before `ms` and the daily totals of days that end at or
    /// before `ms`. Returns how many rows went (calls and daily totals).
    async fn delete_before(&self, ms: i64) -> StoreResult<u64>;

    /// Fold the calls of whole UTC days before `ms` into daily totals (one per day × key ×
    /// user × team × project × model × provider) and delete them, in one transaction. Returns
    /// how many calls were folded. Totals from [`usage`](Self::usage) and
    /// [`spend`](Self::spend) over whole days do not change; the calls leave
    /// [`records`](Self::records) and [`count`](Self::count).
    async fn roll_up_days_before(&self, ms: i64) -> StoreResult<u64>;

    /// How many calls are held one by one (rolled-up calls are not counted).
    async fn count(&self) -> StoreResult<u64>;

    /// For logs and status: `sqlite /path` or `postgres host:port/db` (never the password).
    fn describe(&self) -> String;
}

/// A cost as whole picodollars, as SQLite keeps it: rounded half-to-even to 12 decimals, and
/// refused (with what to do) beyond ±9.2 million dollars.
pub fn usd_to_picodollars(usd: Decimal) -> StoreResult<i64> {
    let rounded = round_money(usd);
    let shift = MONEY_SCALE.saturating_sub(rounded.scale());
    10i128
        .checked_pow(shift)
        .and_then(|factor| rounded.mantissa().checked_mul(factor))
        .and_then(|picos| i64::try_from(picos).ok())
        .ok_or_else(|| {
            StoreError::InvalidData(format!(
                "the amount {usd} USD is beyond what the SQLite ledger can hold (±9,223,372 USD \
                 per call): check the price table, or use the Postgres store"
            ))
        })
}

/// Picodollars (as SQLite keeps money) as an exact decimal.
pub fn picodollars_to_usd(picos: i64) -> Decimal {
    Decimal::from_i128_with_scale(i128::from(picos), MONEY_SCALE).normalize()
}

/// Money rounded half-to-even to [`MONEY_SCALE`] decimals (unchanged when it has no more).
pub(crate) fn round_money(usd: Decimal) -> Decimal {
    usd.round_dp_with_strategy(MONEY_SCALE, RoundingStrategy::MidpointNearestEven)
}

/// A token count or duration as a signed 64-bit column (saturating: no real count reaches it).
pub(crate) fn to_db_u64(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

/// A spool offset as a column value; offsets past `i64::MAX` are refused.
pub(crate) fn offset_to_db(offset: u64) -> StoreResult<i64> {
    i64::try_from(offset).map_err(|_| {
        StoreError::InvalidData(format!(
            "spool offset {offset} is beyond what the store keeps (2^63 - 1): start a new spool \
             directory"
        ))
    })
}

/// A signed 64-bit column back as a count (a negative value, which weir never writes, is 0).
pub(crate) fn from_db_u64(value: i64) -> u64 {
    u64::try_from(value).unwrap_or(0)
}

/// The start of the `width_ms` bucket holding `ms` (floor, also before 1970).
pub(crate) fn bucket_start(ms: i64, width_ms: i64) -> i64 {
    ms - ms.rem_euclid(width_ms)
}

/// How a bucket start shows in a group: `2026-11-05` (day) or `2026-11-05T13:00:00Z` (hour).
pub(crate) fn format_bucket(dimension: Dimension, start_ms: i64) -> String {
    let days = start_ms.div_euclid(DAY_MS);
    let (y, m, d) = civil_from_days(days);
    match dimension {
        Dimension::Hour => {
            let hour = start_ms.rem_euclid(DAY_MS) / HOUR_MS;
            format!("{y:04}-{m:02}-{d:02}T{hour:02}:00:00Z")
        }
        _ => format!("{y:04}-{m:02}-{d:02}"),
    }
}

/// A day or hour filter's value as its bucket's `[start, start + width)`.
pub(crate) fn parse_bucket(dimension: Dimension, text: &str) -> StoreResult<(i64, i64)> {
    let bad = || {
        StoreError::InvalidData(format!(
            "{text:?} is not a {dimension}: write a day as 2026-11-05 and an hour as \
             2026-11-05T13:00:00Z (UTC)"
        ))
    };
    let text = text.trim();
    let (date, hour) = match dimension {
        Dimension::Day => (text, 0),
        Dimension::Hour => {
            let (date, time) = text.split_once('T').ok_or_else(bad)?;
            let time = time.strip_suffix('Z').unwrap_or(time);
            let hour = time.split(':').next().ok_or_else(bad)?;
            let rest_is_zero = time.split(':').skip(1).all(|p| p.chars().all(|c| c == '0'));
            let hour: i64 = hour.parse().map_err(|_| bad())?;
            if !(0..24).contains(&hour) || !rest_is_zero {
                return Err(bad());
            }
            (date, hour)
        }
        _ => return Err(bad()),
    };
    let mut parts = date.splitn(3, '-');
    let (Some(y), Some(m), Some(d)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(bad());
    };
    let (y, m, d): (i64, u32, u32) = (
        y.parse().map_err(|_| bad())?,
        m.parse().map_err(|_| bad())?,
        d.parse().map_err(|_| bad())?,
    );
    let days = days_from_civil(y, m, d).ok_or_else(bad)?;
    let width = dimension.bucket_ms().unwrap_or(DAY_MS);
    let start = days
        .checked_mul(DAY_MS)
        .and_then(|ms| ms.checked_add(hour * HOUR_MS))
        .ok_or_else(bad)?;
    Ok((start, width))
}

/// Days since 1970-01-01 of a proleptic Gregorian date, `None` for an impossible date.
fn days_from_civil(y: i64, m: u32, d: u32) -> Option<i64> {
    if !(1..=12).contains(&m) || d == 0 || d > days_in_month(y, m) || !(0..=9999).contains(&y) {
        return None;
    }
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(m);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    Some(era * 146_097 + doe - 719_468)
}

/// The proleptic Gregorian date `days` after 1970-01-01.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    // d is in 1..=31 and m in 1..=12 by construction.
    (
        y,
        u32::try_from(m).unwrap_or(1),
        u32::try_from(d).unwrap_or(1),
    )
}

fn days_in_month(y: i64, m: u32) -> u32 {
    match m {
        4 | 6 | 9 | 11 => 30,
        2 if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 => 29,
        2 => 28,
        _ => 31,
    }
}

/// Checks a usage query before any SQL is built: each grouping dimension once, day and hour
/// filters parseable.
pub(crate) fn check_query(query: &UsageQuery) -> StoreResult<()> {
    for (i, d) in query.group_by.iter().enumerate() {
        if query.group_by[..i].contains(d) {
            return Err(StoreError::InvalidData(format!(
                "usage is grouped by {d} twice: name each dimension once"
            )));
        }
    }
    for (d, value) in &query.filters {
        if d.bucket_ms().is_some() {
            parse_bucket(*d, value)?;
        }
    }
    Ok(())
}

/// Sorts usage rows by their groups, no value first, so both backends answer in one order.
pub(crate) fn sort_rows(rows: &mut [UsageRow]) {
    rows.sort_by(|a, b| {
        let (a, b) = (a.group.iter(), b.group.iter());
        a.map(|(_, v)| v).cmp(b.map(|(_, v)| v))
    });
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

fn is_false(b: &bool) -> bool {
    !*b
}
