//! [`LedgerStore`] on Postgres: the `weir_ledger`, `weir_ledger_daily` and `weir_ledger_spools`
//! tables, money as `NUMERIC(38,12)`.
//!
//! An append is one transaction: the spool offset moves first (its row lock orders appends
//! from the same spool, and a repeated append changes nothing), then the whole batch goes in
//! as one `INSERT ... SELECT FROM UNNEST(...)` of column arrays: one prepared statement and one
//! round trip whatever the batch size, with no limit on parameters.

use std::sync::LazyLock;

use async_trait::async_trait;
use rust_decimal::Decimal;
use serde_json::Value;
use tokio_postgres::Row;
use tokio_postgres::types::ToSql;

use super::PostgresStore;
use crate::error::{StoreError, StoreResult};
use crate::ledger::sql::{self, Dialect, Param};
use crate::ledger::{
    DAY_MS, Dimension, LedgerRecord, LedgerStore, Savings, Spend, SpendFilter, SpoolRange,
    UsageQuery, UsageRow, bucket_start, format_bucket, from_db_u64, round_money, sort_rows,
    to_db_u64,
};

const D: Dialect = Dialect::Postgres;

/// The element type of each column array, in [`sql::record_columns`] order.
const ARRAY_TYPES: [&str; sql::RECORD_COLUMNS] = [
    "int8", "text", "text", "text", "text", "text", "jsonb", "text", "text", "text", "text",
    "int4", "text", "text", "int8", "text", "int8", "int8", "int8", "int8", "int8", "bool",
    "numeric", "numeric", "int8", "int8", "int8", "text",
];

static INSERT: LazyLock<String> = LazyLock::new(|| {
    let arrays: Vec<String> = ARRAY_TYPES
        .iter()
        .enumerate()
        .map(|(i, ty)| format!("${}::{ty}[]", i + 1))
        .collect();
    format!(
        "INSERT INTO weir_ledger ({}) SELECT * FROM UNNEST({})",
        sql::record_columns(D),
        arrays.join(", ")
    )
});
static ENSURE_SPOOL: LazyLock<String> = LazyLock::new(|| sql::ensure_spool(D));
static MOVE_SPOOL: LazyLock<String> = LazyLock::new(|| sql::move_spool(D));
static SPOOL_AT: LazyLock<String> = LazyLock::new(|| sql::spool_at(D));
static ROLL_UP: LazyLock<String> = LazyLock::new(|| sql::roll_up(D));
static RECORDS: LazyLock<String> = LazyLock::new(|| sql::records(D));
static SAVINGS: LazyLock<String> = LazyLock::new(|| sql::savings(D));

/// The largest cost `NUMERIC(38,12)` holds is just under 10²⁶.
static MONEY_LIMIT: LazyLock<Decimal> =
    LazyLock::new(|| Decimal::from_i128_with_scale(100_000_000_000_000_000_000_000_000, 0));

/// A tokio-postgres error while doing `operation`, as ours.
fn query_err(operation: &'static str) -> impl Fn(tokio_postgres::Error) -> StoreError {
    move |e| StoreError::query(operation, &e)
}

/// A batch as one array per column.
#[derive(Default)]
struct Columns {
    at_ms: Vec<i64>,
    request_id: Vec<String>,
    key_id: Vec<Option<String>>,
    user: Vec<Option<String>>,
    team: Vec<Option<String>>,
    project: Vec<Option<String>>,
    tags: Vec<Value>,
    operation: Vec<String>,
    model: Vec<String>,
    provider: Vec<Option<String>>,
    upstream_model: Vec<Option<String>>,
    status: Vec<i32>,
    outcome: Vec<String>,
    error_kind: Vec<Option<String>>,
    attempts: Vec<i64>,
    cache: Vec<String>,
    input_tokens: Vec<i64>,
    output_tokens: Vec<i64>,
    cached_input_tokens: Vec<i64>,
    cache_write_tokens: Vec<i64>,
    reasoning_tokens: Vec<i64>,
    tokens_estimated: Vec<bool>,
    cost: Vec<Option<Decimal>>,
    saved: Vec<Option<Decimal>>,
    latency_us: Vec<i64>,
    upstream_us: Vec<Option<i64>>,
    first_token_us: Vec<Option<i64>>,
    prompt_fingerprint: Vec<Option<String>>,
}

impl Columns {
    fn new(records: &[LedgerRecord]) -> StoreResult<Self> {
        let mut c = Columns::default();
        for r in records {
            c.at_ms.push(r.at_ms);
            c.request_id.push(r.request_id.clone());
            c.key_id.push(r.key_id.clone());
            c.user.push(r.user.clone());
            c.team.push(r.team.clone());
            c.project.push(r.project.clone());
            c.tags.push(serde_json::to_value(&r.tags).map_err(|e| {
                StoreError::InvalidData(format!("cannot encode a call's tags as JSON: {e}"))
            })?);
            c.operation.push(r.operation.clone());
            c.model.push(r.model.clone());
            c.provider.push(r.provider.clone());
            c.upstream_model.push(r.upstream_model.clone());
            c.status.push(i32::from(r.status));
            c.outcome.push(r.outcome.clone());
            c.error_kind.push(r.error_kind.clone());
            c.attempts.push(i64::from(r.attempts));
            c.cache.push(r.cache.clone());
            c.input_tokens.push(to_db_u64(r.input_tokens));
            c.output_tokens.push(to_db_u64(r.output_tokens));
            c.cached_input_tokens.push(to_db_u64(r.cached_input_tokens));
            c.cache_write_tokens.push(to_db_u64(r.cache_write_tokens));
            c.reasoning_tokens.push(to_db_u64(r.reasoning_tokens));
            c.tokens_estimated.push(r.tokens_estimated);
            c.cost.push(r.cost_usd.map(money_to_db).transpose()?);
            c.saved.push(r.saved_usd.map(money_to_db).transpose()?);
            c.latency_us.push(to_db_u64(r.latency_us));
            c.upstream_us.push(r.upstream_us.map(to_db_u64));
            c.first_token_us.push(r.first_token_us.map(to_db_u64));
            c.prompt_fingerprint.push(r.prompt_fingerprint.clone());
        }
        Ok(c)
    }

    fn params(&self) -> [&(dyn ToSql + Sync); sql::RECORD_COLUMNS] {
        [
            &self.at_ms,
            &self.request_id,
            &self.key_id,
            &self.user,
            &self.team,
            &self.project,
            &self.tags,
            &self.operation,
            &self.model,
            &self.provider,
            &self.upstream_model,
            &self.status,
            &self.outcome,
            &self.error_kind,
            &self.attempts,
            &self.cache,
            &self.input_tokens,
            &self.output_tokens,
            &self.cached_input_tokens,
            &self.cache_write_tokens,
            &self.reasoning_tokens,
            &self.tokens_estimated,
            &self.cost,
            &self.saved,
            &self.latency_us,
            &self.upstream_us,
            &self.first_token_us,
            &self.prompt_fingerprint,
        ]
    }
}

/// A cost rounded as SQLite rounds it, and refused (before the transaction) past what
/// `NUMERIC(38,12)` holds.
fn money_to_db(usd: Decimal) -> StoreResult<Decimal> {
    let rounded = round_money(usd);
    if rounded.abs() >= *MONEY_LIMIT {
        return Err(StoreError::InvalidData(format!(
            "the amount {usd} USD is beyond what the ledger holds (under 10^26 USD per call): \
             check the price table"
        )));
    }
    Ok(rounded)
}

#[async_trait]
impl LedgerStore for PostgresStore {
    async fn append(
        &self,
        records: &[LedgerRecord],
        spool: Option<SpoolRange<'_>>,
    ) -> StoreResult<()> {
        let columns = Columns::new(records)?;
        let checked = spool
            .map(|range| Ok::<_, StoreError>((range, range.check(records.len())?)))
            .transpose()?;
        if records.is_empty() && checked.is_none() {
            return Ok(());
        }
        let op = "appending usage records";
        let err = query_err(op);
        let mut client = self.client(op).await?;
        let tx = client.transaction().await.map_err(&err)?;
        if let Some((range, (from, to))) = checked {
            let id = range.spool_id;
            let now = crate::now_ms();
            let stmt = tx.prepare_cached(&ENSURE_SPOOL).await.map_err(&err)?;
            tx.execute(&stmt, &[&id, &now]).await.map_err(&err)?;
            // Locks the spool's row: appends of one spool go one after the other.
            let stmt = tx.prepare_cached(&MOVE_SPOOL).await.map_err(&err)?;
            let moved = tx
                .execute(&stmt, &[&id, &from, &to, &now])
                .await
                .map_err(&err)?;
            if moved == 0 {
                let stmt = tx.prepare_cached(&SPOOL_AT).await.map_err(&err)?;
                let row = tx.query_one(&stmt, &[&id]).await.map_err(&err)?;
                let stored = from_db_u64(row.try_get(0).map_err(&err)?);
                tx.rollback().await.map_err(&err)?;
                if stored >= range.to {
                    // Already stored up to there: a repeat of a committed append.
                    return Ok(());
                }
                return Err(range.out_of_step(stored));
            }
        }
        if !records.is_empty() {
            let stmt = tx.prepare_cached(&INSERT).await.map_err(&err)?;
            tx.execute(&stmt, &columns.params()).await.map_err(&err)?;
        }
        tx.commit().await.map_err(&err)
    }

    async fn spool_offset(&self, spool_id: &str) -> StoreResult<u64> {
        let op = "reading a spool offset";
        let err = query_err(op);
        let client = self.client(op).await?;
        let stmt = client
            .prepare_cached("SELECT consumed FROM weir_ledger_spools WHERE spool_id = $1")
            .await
            .map_err(&err)?;
        let row = client.query_opt(&stmt, &[&spool_id]).await.map_err(&err)?;
        match row {
            Some(row) => Ok(from_db_u64(row.try_get(0).map_err(&err)?)),
            None => Ok(0),
        }
    }

    async fn usage(&self, query: &UsageQuery) -> StoreResult<Vec<UsageRow>> {
        let statement = sql::usage(D, query)?;
        let op = "totalling usage";
        let err = query_err(op);
        let params: Vec<&(dyn ToSql + Sync)> = statement
            .params
            .iter()
            .map(|p| match p {
                Param::Int(v) => v as &(dyn ToSql + Sync),
                Param::Text(s) => s as &(dyn ToSql + Sync),
            })
            .collect();
        let client = self.client(op).await?;
        let rows = client.query(&statement.sql, &params).await.map_err(&err)?;
        let mut out = rows
            .iter()
            .map(|row| usage_row(op, row, &query.group_by))
            .collect::<StoreResult<Vec<_>>>()?;
        sort_rows(&mut out);
        Ok(out)
    }

    async fn spend(&self, filter: &SpendFilter, from_ms: i64, to_ms: i64) -> StoreResult<Spend> {
        let query = UsageQuery {
            from_ms,
            to_ms,
            group_by: Vec::new(),
            filters: filter.to_filters(),
        };
        let total = self.usage(&query).await?;
        Ok(total
            .first()
            .map(|row| Spend {
                cost_usd: row.cost_usd,
                calls: row.requests,
                unpriced_calls: row.unpriced_calls,
            })
            .unwrap_or_default())
    }

    async fn savings(&self, from_ms: i64, to_ms: i64) -> StoreResult<Savings> {
        let op = "totalling cache savings";
        let err = query_err(op);
        let client = self.client(op).await?;
        let stmt = client.prepare_cached(&SAVINGS).await.map_err(&err)?;
        let rows = client
            .query(&stmt, &[&from_ms, &to_ms])
            .await
            .map_err(&err)?;
        let mut total = Savings::default();
        for row in &rows {
            let label: String = row.try_get(0).map_err(&err)?;
            let calls = from_db_u64(row.try_get(1).map_err(&err)?);
            let saved: Decimal = row.try_get(2).map_err(&err)?;
            sql::add_savings(&mut total, &label, calls, saved.normalize());
        }
        Ok(total)
    }

    async fn records(
        &self,
        from_ms: i64,
        to_ms: i64,
        limit: usize,
    ) -> StoreResult<Vec<LedgerRecord>> {
        let op = "listing usage records";
        let err = query_err(op);
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let client = self.client(op).await?;
        let stmt = client.prepare_cached(&RECORDS).await.map_err(&err)?;
        let rows = client
            .query(&stmt, &[&from_ms, &to_ms, &limit])
            .await
            .map_err(&err)?;
        rows.iter().map(|r| record_from_row(op, r)).collect()
    }

    async fn delete_before(&self, ms: i64) -> StoreResult<u64> {
        let op = "deleting old usage records";
        let err = query_err(op);
        let mut client = self.client(op).await?;
        let tx = client.transaction().await.map_err(&err)?;
        let calls = tx
            .execute("DELETE FROM weir_ledger WHERE at_ms < $1", &[&ms])
            .await
            .map_err(&err)?;
        let days = tx
            .execute(
                "DELETE FROM weir_ledger_daily WHERE day_ms <= $1",
                &[&ms.saturating_sub(DAY_MS)],
            )
            .await
            .map_err(&err)?;
        tx.commit().await.map_err(&err)?;
        Ok(calls.saturating_add(days))
    }

    async fn roll_up_days_before(&self, ms: i64) -> StoreResult<u64> {
        let op = "rolling usage up into daily totals";
        let err = query_err(op);
        let cutoff = bucket_start(ms, DAY_MS);
        let mut client = self.client(op).await?;
        let tx = client.transaction().await.map_err(&err)?;
        // Appends racing the roll-up on other replicas either commit before the lock (and are
        // folded) or wait for it (and stay rows): none is both folded and kept.
        tx.execute("LOCK TABLE weir_ledger IN SHARE ROW EXCLUSIVE MODE", &[])
            .await
            .map_err(&err)?;
        tx.execute(ROLL_UP.as_str(), &[&cutoff])
            .await
            .map_err(&err)?;
        let folded = tx
            .execute("DELETE FROM weir_ledger WHERE at_ms < $1", &[&cutoff])
            .await
            .map_err(&err)?;
        tx.commit().await.map_err(&err)?;
        Ok(folded)
    }

    async fn count(&self) -> StoreResult<u64> {
        let op = "counting usage records";
        let err = query_err(op);
        let client = self.client(op).await?;
        let row = client
            .query_one("SELECT COUNT(*) FROM weir_ledger", &[])
            .await
            .map_err(&err)?;
        Ok(from_db_u64(row.try_get(0).map_err(&err)?))
    }

    fn describe(&self) -> String {
        super::describe_target(&self.target)
    }
}

fn usage_row(op: &'static str, row: &Row, group_by: &[Dimension]) -> StoreResult<UsageRow> {
    let err = query_err(op);
    let mut group = Vec::with_capacity(group_by.len());
    for (i, d) in group_by.iter().enumerate() {
        let value = match d {
            Dimension::Day | Dimension::Hour => row
                .try_get::<_, Option<i64>>(i)
                .map_err(&err)?
                .map(|start| format_bucket(*d, start)),
            _ => row.try_get::<_, Option<String>>(i).map_err(&err)?,
        };
        group.push((*d, value));
    }
    let n = group_by.len();
    let int = |k: usize| -> StoreResult<u64> {
        Ok(from_db_u64(row.try_get::<_, i64>(n + k).map_err(&err)?))
    };
    let money = |k: usize| -> StoreResult<Decimal> {
        Ok(row.try_get::<_, Decimal>(n + k).map_err(&err)?.normalize())
    };
    Ok(UsageRow {
        group,
        requests: int(0)?,
        errors: int(1)?,
        cache_hits: int(2)?,
        input_tokens: int(3)?,
        output_tokens: int(4)?,
        cached_input_tokens: int(5)?,
        reasoning_tokens: int(6)?,
        cost_usd: money(7)?,
        saved_usd: money(8)?,
        unpriced_calls: int(9)?,
    })
}

fn record_from_row(op: &'static str, row: &Row) -> StoreResult<LedgerRecord> {
    let err = query_err(op);
    let request_id: String = row.try_get(1).map_err(&err)?;
    let tags: Value = row.try_get(6).map_err(&err)?;
    let tags = serde_json::from_value(tags).map_err(|e| {
        StoreError::InvalidData(format!(
            "the usage record of request {request_id} has tags that are not a JSON list of \
             pairs ({e}): check that nothing else writes to weir_ledger"
        ))
    })?;
    let status: i32 = row.try_get(11).map_err(&err)?;
    let attempts: i64 = row.try_get(14).map_err(&err)?;
    let narrow = |column: &str, value: i64| {
        StoreError::InvalidData(format!(
            "the usage record of request {request_id} has {column} {value}, out of range: \
             check that nothing else writes to weir_ledger"
        ))
    };
    let u =
        |k: usize| -> StoreResult<u64> { Ok(from_db_u64(row.try_get::<_, i64>(k).map_err(&err)?)) };
    let opt_u = |k: usize| -> StoreResult<Option<u64>> {
        Ok(row
            .try_get::<_, Option<i64>>(k)
            .map_err(&err)?
            .map(from_db_u64))
    };
    let opt_money = |k: usize| -> StoreResult<Option<Decimal>> {
        Ok(row
            .try_get::<_, Option<Decimal>>(k)
            .map_err(&err)?
            .map(|d| d.normalize()))
    };
    Ok(LedgerRecord {
        at_ms: row.try_get(0).map_err(&err)?,
        key_id: row.try_get(2).map_err(&err)?,
        user: row.try_get(3).map_err(&err)?,
        team: row.try_get(4).map_err(&err)?,
        project: row.try_get(5).map_err(&err)?,
        tags,
        operation: row.try_get(7).map_err(&err)?,
        model: row.try_get(8).map_err(&err)?,
        provider: row.try_get(9).map_err(&err)?,
        upstream_model: row.try_get(10).map_err(&err)?,
        status: u16::try_from(status).map_err(|_| narrow("status", i64::from(status)))?,
        outcome: row.try_get(12).map_err(&err)?,
        error_kind: row.try_get(13).map_err(&err)?,
        attempts: u32::try_from(attempts).map_err(|_| narrow("attempts", attempts))?,
        cache: row.try_get(15).map_err(&err)?,
        input_tokens: u(16)?,
        output_tokens: u(17)?,
        cached_input_tokens: u(18)?,
        cache_write_tokens: u(19)?,
        reasoning_tokens: u(20)?,
        tokens_estimated: row.try_get(21).map_err(&err)?,
        cost_usd: opt_money(22)?,
        saved_usd: opt_money(23)?,
        latency_us: u(24)?,
        upstream_us: opt_u(25)?,
        first_token_us: opt_u(26)?,
        prompt_fingerprint: row.try_get(27).map_err(&err)?,
        request_id,
    })
}
