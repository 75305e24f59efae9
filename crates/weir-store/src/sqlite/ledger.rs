//! [`LedgerStore`] on SQLite: the `weir_ledger`, `weir_ledger_daily` and `weir_ledger_spools`
//! tables. Money is whole picodollars in 64-bit integers (see [`crate::ledger`] for the bound).
//!
//! An append is one `IMMEDIATE` transaction on the writer connection: the spool offset moves
//! first (which also tells a repeated append apart), then each record goes through one cached
//! prepared insert. Totals run on the read-only connection.

use std::sync::LazyLock;

use async_trait::async_trait;
use rusqlite::types::{ToSqlOutput, Value};
use rusqlite::{Connection, Row, ToSql, Transaction, TransactionBehavior};

use super::{Fail, SqliteStore};
use crate::error::{StoreError, StoreResult};
use crate::ledger::sql::{self, Dialect, Param, RECORD_COLUMNS};
use crate::ledger::{
    DAY_MS, Dimension, LedgerRecord, LedgerStore, Savings, Spend, SpendFilter, SpoolRange,
    UsageQuery, UsageRow, bucket_start, format_bucket, from_db_u64, picodollars_to_usd, sort_rows,
    to_db_u64, usd_to_picodollars,
};

const D: Dialect = Dialect::Sqlite;

static INSERT: LazyLock<String> = LazyLock::new(|| {
    let params: Vec<String> = (1..=RECORD_COLUMNS).map(|i| format!("?{i}")).collect();
    format!(
        "INSERT INTO weir_ledger ({}) VALUES ({})",
        sql::record_columns(D),
        params.join(", ")
    )
});
static ENSURE_SPOOL: LazyLock<String> = LazyLock::new(|| sql::ensure_spool(D));
static MOVE_SPOOL: LazyLock<String> = LazyLock::new(|| sql::move_spool(D));
static SPOOL_AT: LazyLock<String> = LazyLock::new(|| sql::spool_at(D));
static ROLL_UP: LazyLock<String> = LazyLock::new(|| sql::roll_up(D));
static RECORDS: LazyLock<String> = LazyLock::new(|| sql::records(D));
static SAVINGS: LazyLock<String> = LazyLock::new(|| sql::savings(D));

impl ToSql for Param {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(match self {
            Param::Int(v) => ToSqlOutput::Owned(Value::Integer(*v)),
            Param::Text(s) => ToSqlOutput::Borrowed(s.as_str().into()),
        })
    }
}

/// A record as SQLite's column values, converted (and checked) before the transaction.
struct DbRecord {
    record: LedgerRecord,
    tags: String,
    cost: Option<i64>,
    saved: Option<i64>,
}

impl DbRecord {
    fn new(record: &LedgerRecord) -> StoreResult<Self> {
        Ok(DbRecord {
            tags: tags_to_json(&record.tags)?,
            cost: record.cost_usd.map(usd_to_picodollars).transpose()?,
            saved: record.saved_usd.map(usd_to_picodollars).transpose()?,
            record: record.clone(),
        })
    }

    fn insert(&self, insert: &mut rusqlite::CachedStatement<'_>) -> rusqlite::Result<()> {
        let r = &self.record;
        insert.execute(rusqlite::params![
            r.at_ms,
            r.request_id,
            r.key_id,
            r.user,
            r.team,
            r.project,
            self.tags,
            r.operation,
            r.model,
            r.provider,
            r.upstream_model,
            r.status,
            r.outcome,
            r.error_kind,
            r.attempts,
            r.cache,
            to_db_u64(r.input_tokens),
            to_db_u64(r.output_tokens),
            to_db_u64(r.cached_input_tokens),
            to_db_u64(r.cache_write_tokens),
            to_db_u64(r.reasoning_tokens),
            r.tokens_estimated,
            self.cost,
            self.saved,
            to_db_u64(r.latency_us),
            r.upstream_us.map(to_db_u64),
            r.first_token_us.map(to_db_u64),
            r.prompt_fingerprint,
        ])?;
        Ok(())
    }
}

#[async_trait]
impl LedgerStore for SqliteStore {
    async fn append(
        &self,
        records: &[LedgerRecord],
        spool: Option<SpoolRange<'_>>,
    ) -> StoreResult<()> {
        let rows = records
            .iter()
            .map(DbRecord::new)
            .collect::<StoreResult<Vec<_>>>()?;
        let spool = spool
            .map(|range| {
                let (from, to) = range.check(rows.len())?;
                Ok::<_, StoreError>((range.spool_id.to_string(), range.from, range.to, from, to))
            })
            .transpose()?;
        if rows.is_empty() && spool.is_none() {
            return Ok(());
        }
        self.write("appending usage records", move |c| {
            let tx = begin(c)?;
            if let Some((id, from, to, db_from, db_to)) = &spool {
                let now = crate::now_ms();
                tx.prepare_cached(&ENSURE_SPOOL)?
                    .execute(rusqlite::params![id, now])?;
                let moved = tx
                    .prepare_cached(&MOVE_SPOOL)?
                    .execute(rusqlite::params![id, db_from, db_to, now])?;
                if moved == 0 {
                    let stored: i64 = tx
                        .prepare_cached(&SPOOL_AT)?
                        .query_row([id], |r| r.get(0))?;
                    let stored = from_db_u64(stored);
                    if stored >= *to {
                        // Already stored up to there: a repeat of a committed append.
                        return Ok(());
                    }
                    let range = SpoolRange::new(id, *from, *to);
                    return Err(range.out_of_step(stored).into());
                }
            }
            {
                // Prepared once a batch: looking the statement up by its text hashes the
                // whole INSERT, which cost more than binding a row.
                let mut insert = tx.prepare_cached(&INSERT)?;
                for row in &rows {
                    row.insert(&mut insert)?;
                }
            }
            tx.commit()?;
            Ok(())
        })
        .await
    }

    async fn spool_offset(&self, spool_id: &str) -> StoreResult<u64> {
        let id = spool_id.to_string();
        self.read("reading a spool offset", move |c| {
            let offset: Option<i64> = c
                .prepare_cached("SELECT consumed FROM weir_ledger_spools WHERE spool_id = ?1")?
                .query_row([id], |r| r.get(0))
                .map(Some)
                .or_else(|e| match e {
                    rusqlite::Error::QueryReturnedNoRows => Ok(None),
                    e => Err(e),
                })?;
            Ok(offset.map_or(0, from_db_u64))
        })
        .await
    }

    async fn usage(&self, query: &UsageQuery) -> StoreResult<Vec<UsageRow>> {
        let statement = sql::usage(D, query)?;
        let group_by = query.group_by.clone();
        let mut rows = self
            .read("totalling usage", move |c| {
                let mut stmt = c.prepare(&statement.sql)?;
                let mut rows = stmt
                    .query(rusqlite::params_from_iter(statement.params.iter()))
                    .map_err(overflow)?;
                let mut out = Vec::new();
                while let Some(row) = rows.next().map_err(overflow)? {
                    out.push(usage_row(row, &group_by)?);
                }
                Ok(out)
            })
            .await?;
        sort_rows(&mut rows);
        Ok(rows)
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
        self.read("totalling cache savings", move |c| {
            let mut stmt = c.prepare_cached(&SAVINGS)?;
            let mut rows = stmt
                .query(rusqlite::params![from_ms, to_ms])
                .map_err(overflow)?;
            let mut total = Savings::default();
            while let Some(row) = rows.next().map_err(overflow)? {
                let label: String = row.get(0)?;
                let calls = from_db_u64(row.get(1)?);
                let saved = picodollars_to_usd(row.get(2)?);
                sql::add_savings(&mut total, &label, calls, saved);
            }
            Ok(total)
        })
        .await
    }

    async fn records(
        &self,
        from_ms: i64,
        to_ms: i64,
        limit: usize,
    ) -> StoreResult<Vec<LedgerRecord>> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.read("listing usage records", move |c| {
            let mut stmt = c.prepare_cached(&RECORDS)?;
            let mut rows = stmt.query(rusqlite::params![from_ms, to_ms, limit])?;
            let mut out = Vec::new();
            while let Some(row) = rows.next()? {
                out.push(record_from_row(row)?);
            }
            Ok(out)
        })
        .await
    }

    async fn delete_before(&self, ms: i64) -> StoreResult<u64> {
        self.write("deleting old usage records", move |c| {
            let tx = begin(c)?;
            let calls = tx.execute("DELETE FROM weir_ledger WHERE at_ms < ?1", [ms])?;
            let days = tx.execute(
                "DELETE FROM weir_ledger_daily WHERE day_ms <= ?1",
                [ms.saturating_sub(DAY_MS)],
            )?;
            tx.commit()?;
            Ok(count_u64(calls) + count_u64(days))
        })
        .await
    }

    async fn roll_up_days_before(&self, ms: i64) -> StoreResult<u64> {
        let cutoff = bucket_start(ms, DAY_MS);
        self.write("rolling usage up into daily totals", move |c| {
            let tx = begin(c)?;
            tx.execute(&ROLL_UP, [cutoff])?;
            let folded = tx.execute("DELETE FROM weir_ledger WHERE at_ms < ?1", [cutoff])?;
            tx.commit()?;
            Ok(count_u64(folded))
        })
        .await
    }

    async fn count(&self) -> StoreResult<u64> {
        self.read("counting usage records", |c| {
            let n: i64 = c
                .prepare_cached("SELECT COUNT(*) FROM weir_ledger")?
                .query_row([], |r| r.get(0))?;
            Ok(from_db_u64(n))
        })
        .await
    }

    fn describe(&self) -> String {
        super::describe(self.path())
    }
}

/// A write transaction holding the write lock from its start (see the module docs of
/// [`super`]).
fn begin(c: &mut Connection) -> rusqlite::Result<Transaction<'_>> {
    c.transaction_with_behavior(TransactionBehavior::Immediate)
}

/// SQLite's integer overflow in a sum (of picodollars, most likely) as what it means.
fn overflow(e: rusqlite::Error) -> Fail {
    if e.to_string().contains("integer overflow") {
        return Fail::Store(StoreError::InvalidData(
            "the total is beyond what the SQLite ledger can sum (±9,223,372 USD, or 2^63 \
             tokens): total a shorter range or fewer calls, or use the Postgres store"
                .into(),
        ));
    }
    Fail::Sql(e)
}

fn count_u64(n: usize) -> u64 {
    u64::try_from(n).unwrap_or(u64::MAX)
}

fn tags_to_json(tags: &[(String, String)]) -> StoreResult<String> {
    serde_json::to_string(tags)
        .map_err(|e| StoreError::InvalidData(format!("cannot encode a call's tags as JSON: {e}")))
}

fn tags_from_json(request_id: &str, text: &str) -> StoreResult<Vec<(String, String)>> {
    serde_json::from_str(text).map_err(|e| {
        StoreError::InvalidData(format!(
            "the usage record of request {request_id} has tags that are not a JSON list of \
             pairs ({e}): check that nothing else writes to weir_ledger"
        ))
    })
}

fn usage_row(row: &Row<'_>, group_by: &[Dimension]) -> Result<UsageRow, Fail> {
    let mut group = Vec::with_capacity(group_by.len());
    for (i, d) in group_by.iter().enumerate() {
        let value = match d {
            Dimension::Day | Dimension::Hour => row
                .get::<_, Option<i64>>(i)?
                .map(|start| format_bucket(*d, start)),
            _ => row.get::<_, Option<String>>(i)?,
        };
        group.push((*d, value));
    }
    let n = group_by.len();
    let int = |k: usize| -> rusqlite::Result<u64> { Ok(from_db_u64(row.get(n + k)?)) };
    Ok(UsageRow {
        group,
        requests: int(0)?,
        errors: int(1)?,
        cache_hits: int(2)?,
        input_tokens: int(3)?,
        output_tokens: int(4)?,
        cached_input_tokens: int(5)?,
        reasoning_tokens: int(6)?,
        cost_usd: picodollars_to_usd(row.get(n + 7)?),
        saved_usd: picodollars_to_usd(row.get(n + 8)?),
        unpriced_calls: int(9)?,
    })
}

fn record_from_row(row: &Row<'_>) -> Result<LedgerRecord, Fail> {
    let request_id: String = row.get(1)?;
    let tags: String = row.get(6)?;
    let narrow = |column: &str, value: i64| {
        StoreError::InvalidData(format!(
            "the usage record of request {request_id} has {column} {value}, out of range: \
             check that nothing else writes to weir_ledger"
        ))
    };
    let status: i64 = row.get(11)?;
    let attempts: i64 = row.get(14)?;
    let opt_u64 = |k: usize| -> rusqlite::Result<Option<u64>> {
        Ok(row.get::<_, Option<i64>>(k)?.map(from_db_u64))
    };
    Ok(LedgerRecord {
        at_ms: row.get(0)?,
        tags: tags_from_json(&request_id, &tags)?,
        key_id: row.get(2)?,
        user: row.get(3)?,
        team: row.get(4)?,
        project: row.get(5)?,
        operation: row.get(7)?,
        model: row.get(8)?,
        provider: row.get(9)?,
        upstream_model: row.get(10)?,
        status: u16::try_from(status).map_err(|_| narrow("status", status))?,
        outcome: row.get(12)?,
        error_kind: row.get(13)?,
        attempts: u32::try_from(attempts).map_err(|_| narrow("attempts", attempts))?,
        cache: row.get(15)?,
        input_tokens: from_db_u64(row.get(16)?),
        output_tokens: from_db_u64(row.get(17)?),
        cached_input_tokens: from_db_u64(row.get(18)?),
        cache_write_tokens: from_db_u64(row.get(19)?),
        reasoning_tokens: from_db_u64(row.get(20)?),
        tokens_estimated: row.get(21)?,
        cost_usd: row.get::<_, Option<i64>>(22)?.map(picodollars_to_usd),
        saved_usd: row.get::<_, Option<i64>>(23)?.map(picodollars_to_usd),
        latency_us: from_db_u64(row.get(24)?),
        upstream_us: opt_u64(25)?,
        first_token_us: opt_u64(26)?,
        prompt_fingerprint: row.get(27)?,
        request_id,
    })
}
