//! The ledger's SQL, written once for both backends: they differ only in how parameters are
//! numbered (`?1` or `$1`) and in how money is kept (picodollar integers or `NUMERIC`).
//!
//! Totals read two tables: the calls (`weir_ledger`) and the daily totals of rolled-up calls
//! (`weir_ledger_daily`). Each is aggregated on its own, by the same groups, and the two are
//! summed in an outer query, so rolled-up days are included without the caller knowing.

use std::fmt::Write as _;

use super::{DAY_MS, Dimension, UsageQuery, check_query, parse_bucket};
use crate::error::StoreResult;

/// Which database a statement is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Dialect {
    Sqlite,
    Postgres,
}

impl Dialect {
    /// The `n`th (1-based) parameter.
    fn param(self, n: usize) -> String {
        match self {
            Dialect::Sqlite => format!("?{n}"),
            Dialect::Postgres => format!("${n}"),
        }
    }

    /// The money columns, in both tables.
    fn money(self) -> (&'static str, &'static str) {
        match self {
            Dialect::Sqlite => ("cost_pusd", "saved_pusd"),
            Dialect::Postgres => ("cost_usd", "saved_usd"),
        }
    }

    /// The final sum of a money column: an exact integer (SQLite) or `NUMERIC` (Postgres).
    fn money_total(self, column: &str) -> String {
        match self {
            Dialect::Sqlite => format!("CAST(COALESCE(SUM({column}), 0) AS INTEGER)"),
            Dialect::Postgres => format!("COALESCE(SUM({column}), 0)"),
        }
    }
}

/// A parameter value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Param {
    Int(i64),
    Text(String),
}

/// A statement and its parameters, in order.
#[derive(Debug)]
pub(crate) struct Statement {
    pub sql: String,
    pub params: Vec<Param>,
}

/// What the columns of a usage statement after the groups hold, in order. Group `i` is
/// column `i`: text for the named dimensions, a bucket start (unix ms) for day and hour.
pub(crate) const TOTALS: [&str; 10] = [
    "requests",
    "errors",
    "cache_hits",
    "input_tokens",
    "output_tokens",
    "cached_input_tokens",
    "reasoning_tokens",
    "cost",
    "saved",
    "unpriced",
];

/// Which table a fragment is for.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Table {
    Calls,
    Daily,
}

impl Table {
    fn time_column(self) -> &'static str {
        match self {
            Table::Calls => "at_ms",
            Table::Daily => "day_ms",
        }
    }
}

/// The column (or expression) a dimension reads in `table`.
fn dimension_expr(dimension: Dimension, table: Table) -> String {
    match dimension {
        Dimension::Key => "key_id".into(),
        Dimension::User => "user_id".into(),
        Dimension::Team => "team_id".into(),
        Dimension::Project => "project_id".into(),
        Dimension::Model => "model".into(),
        Dimension::Provider => "provider".into(),
        // Rolled-up calls keep only their day: they count as made at its start.
        Dimension::Day | Dimension::Hour if table == Table::Daily => "day_ms".into(),
        Dimension::Day => bucket_expr("at_ms", DAY_MS),
        Dimension::Hour => bucket_expr("at_ms", super::HOUR_MS),
    }
}

/// The start of `column`'s bucket of `width` ms, flooring also before 1970 (SQL's `%`
/// truncates toward zero).
pub(crate) fn bucket_expr(column: &str, width: i64) -> String {
    format!("({column} - ((({column} % {width}) + {width}) % {width}))")
}

/// The statement totalling `query` (already checked by the caller or not: it is checked here).
pub(crate) fn usage(dialect: Dialect, query: &UsageQuery) -> StoreResult<Statement> {
    check_query(query)?;
    let mut params = vec![Param::Int(query.from_ms), Param::Int(query.to_ms)];
    // Filters become one condition per dimension (its values OR-ed), shared by both tables
    // through the same parameter numbers.
    let mut conditions: Vec<(Dimension, Vec<usize>)> = Vec::new();
    for (dimension, value) in &query.filters {
        let mut numbers = Vec::new();
        match dimension {
            Dimension::Day | Dimension::Hour => {
                let (start, width) = parse_bucket(*dimension, value)?;
                params.push(Param::Int(start));
                numbers.push(params.len());
                params.push(Param::Int(start.saturating_add(width)));
                numbers.push(params.len());
            }
            _ => {
                params.push(Param::Text(value.clone()));
                numbers.push(params.len());
            }
        }
        match conditions.iter_mut().find(|(d, _)| d == dimension) {
            Some((_, existing)) => existing.extend(numbers),
            None => conditions.push((*dimension, numbers)),
        }
    }

    let (cost, saved) = dialect.money();
    let groups: Vec<String> = (0..query.group_by.len()).map(|i| format!("g{i}")).collect();
    let mut sql = String::from("SELECT ");
    for g in &groups {
        let _ = write!(sql, "{g}, ");
    }
    for (i, total) in TOTALS.iter().enumerate() {
        if i > 0 {
            sql.push_str(", ");
        }
        if matches!(*total, "cost" | "saved") {
            sql.push_str(&dialect.money_total(total));
        } else {
            let _ = write!(sql, "CAST(COALESCE(SUM({total}), 0) AS BIGINT)");
        }
    }
    sql.push_str(" FROM (");
    for table in [Table::Calls, Table::Daily] {
        if table == Table::Daily {
            sql.push_str(" UNION ALL ");
        }
        sql.push_str("SELECT ");
        for (i, d) in query.group_by.iter().enumerate() {
            let _ = write!(sql, "{} AS g{i}, ", dimension_expr(*d, table));
        }
        match table {
            Table::Calls => {
                let _ = write!(
                    sql,
                    "COUNT(*) AS requests, \
                     SUM(CASE WHEN outcome = 'failure' THEN 1 ELSE 0 END) AS errors, \
                     SUM(CASE WHEN cache_status IN ('hit', 'coalesced') THEN 1 ELSE 0 END) \
                     AS cache_hits, \
                     SUM(input_tokens) AS input_tokens, SUM(output_tokens) AS output_tokens, \
                     SUM(cached_input_tokens) AS cached_input_tokens, \
                     SUM(reasoning_tokens) AS reasoning_tokens, \
                     SUM({cost}) AS cost, SUM({saved}) AS saved, \
                     SUM(CASE WHEN {cost} IS NULL THEN 1 ELSE 0 END) AS unpriced \
                     FROM weir_ledger"
                );
            }
            Table::Daily => {
                let _ = write!(
                    sql,
                    "SUM(requests) AS requests, SUM(errors) AS errors, \
                     SUM(cache_hits) AS cache_hits, \
                     SUM(input_tokens) AS input_tokens, SUM(output_tokens) AS output_tokens, \
                     SUM(cached_input_tokens) AS cached_input_tokens, \
                     SUM(reasoning_tokens) AS reasoning_tokens, \
                     SUM({cost}) AS cost, SUM({saved}) AS saved, \
                     SUM(unpriced_calls) AS unpriced \
                     FROM weir_ledger_daily"
                );
            }
        }
        let time = table.time_column();
        let _ = write!(
            sql,
            " WHERE {time} >= {} AND {time} < {}",
            dialect.param(1),
            dialect.param(2)
        );
        for (dimension, numbers) in &conditions {
            sql.push_str(" AND (");
            let mut first = true;
            match dimension {
                Dimension::Day | Dimension::Hour => {
                    for pair in numbers.chunks(2) {
                        let [start, end] = pair else { continue };
                        if !first {
                            sql.push_str(" OR ");
                        }
                        first = false;
                        let _ = write!(
                            sql,
                            "({time} >= {} AND {time} < {})",
                            dialect.param(*start),
                            dialect.param(*end)
                        );
                    }
                }
                _ => {
                    let _ = write!(sql, "{} IN (", dimension_expr(*dimension, table));
                    for n in numbers {
                        if !first {
                            sql.push_str(", ");
                        }
                        first = false;
                        sql.push_str(&dialect.param(*n));
                    }
                    sql.push(')');
                }
            }
            sql.push(')');
        }
        if !query.group_by.is_empty() {
            sql.push_str(" GROUP BY ");
            sql.push_str(&positions(query.group_by.len()));
        }
    }
    sql.push_str(") AS parts");
    if !groups.is_empty() {
        let _ = write!(sql, " GROUP BY {}", groups.join(", "));
    }
    Ok(Statement { sql, params })
}

/// `1, 2, ..., n`: grouping by output position, which both databases accept.
fn positions(n: usize) -> String {
    (1..=n)
        .map(|i| i.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Folds the calls before `?1`/`$1` (a UTC midnight) into daily totals.
pub(crate) fn roll_up(dialect: Dialect) -> String {
    let (cost, saved) = dialect.money();
    let day = bucket_expr("at_ms", DAY_MS);
    let cutoff = dialect.param(1);
    format!(
        "INSERT INTO weir_ledger_daily (day_ms, key_id, user_id, team_id, project_id, model, \
         provider, requests, errors, cache_hits, input_tokens, output_tokens, \
         cached_input_tokens, cache_write_tokens, reasoning_tokens, {cost}, {saved}, \
         unpriced_calls) \
         SELECT {day}, key_id, user_id, team_id, project_id, model, provider, COUNT(*), \
         SUM(CASE WHEN outcome = 'failure' THEN 1 ELSE 0 END), \
         SUM(CASE WHEN cache_status IN ('hit', 'coalesced') THEN 1 ELSE 0 END), \
         SUM(input_tokens), SUM(output_tokens), SUM(cached_input_tokens), \
         SUM(cache_write_tokens), SUM(reasoning_tokens), COALESCE(SUM({cost}), 0), \
         COALESCE(SUM({saved}), 0), SUM(CASE WHEN {cost} IS NULL THEN 1 ELSE 0 END) \
         FROM weir_ledger WHERE at_ms < {cutoff} \
         GROUP BY 1, 2, 3, 4, 5, 6, 7"
    )
}

/// Makes sure a spool has its row (at offset 0): `(id, now)`.
pub(crate) fn ensure_spool(dialect: Dialect) -> String {
    format!(
        "INSERT INTO weir_ledger_spools (spool_id, consumed, updated_ms) VALUES ({}, 0, {}) \
         ON CONFLICT (spool_id) DO NOTHING",
        dialect.param(1),
        dialect.param(2)
    )
}

/// Moves a spool from one offset to the next: `(id, from, to, now)`. Changes one row when the
/// spool was at `from` (locking it until the transaction ends), none otherwise.
pub(crate) fn move_spool(dialect: Dialect) -> String {
    format!(
        "UPDATE weir_ledger_spools SET consumed = {}, updated_ms = {} \
         WHERE spool_id = {} AND consumed = {}",
        dialect.param(3),
        dialect.param(4),
        dialect.param(1),
        dialect.param(2)
    )
}

/// A spool's offset: `(id)`.
pub(crate) fn spool_at(dialect: Dialect) -> String {
    format!(
        "SELECT consumed FROM weir_ledger_spools WHERE spool_id = {}",
        dialect.param(1)
    )
}

/// The columns every insert writes and [`records`] reads, in order.
pub(crate) fn record_columns(dialect: Dialect) -> String {
    let (cost, saved) = dialect.money();
    format!(
        "at_ms, request_id, key_id, user_id, team_id, project_id, tags, operation, model, \
         provider, upstream_model, status, outcome, error_kind, attempts, cache_status, \
         input_tokens, output_tokens, cached_input_tokens, cache_write_tokens, \
         reasoning_tokens, tokens_estimated, {cost}, {saved}, latency_us, upstream_us, \
         first_token_us, prompt_fingerprint"
    )
}

/// How many columns [`record_columns`] names.
pub(crate) const RECORD_COLUMNS: usize = 28;

/// The calls in `[?1, ?2)`, oldest first, at most `?3`.
pub(crate) fn records(dialect: Dialect) -> String {
    format!(
        "SELECT {} FROM weir_ledger WHERE at_ms >= {} AND at_ms < {} ORDER BY at_ms, id \
         LIMIT {}",
        record_columns(dialect),
        dialect.param(1),
        dialect.param(2),
        dialect.param(3)
    )
}

/// The label [`savings`] gives the rolled-up days' row.
pub(crate) const ROLLED_UP: &str = "rolled_up";

/// Hits and coalesced calls in `[?1, ?2)`: one row per cache status among the calls (`hit`,
/// `coalesced`), and one for the rolled-up days ([`ROLLED_UP`]): (label, calls, saved).
pub(crate) fn savings(dialect: Dialect) -> String {
    let (_, saved) = dialect.money();
    let total = dialect.money_total(saved);
    let (from, to) = (dialect.param(1), dialect.param(2));
    format!(
        "SELECT cache_status, CAST(COUNT(*) AS BIGINT), {total} FROM weir_ledger \
         WHERE at_ms >= {from} AND at_ms < {to} AND cache_status IN ('hit', 'coalesced') \
         GROUP BY cache_status \
         UNION ALL \
         SELECT '{ROLLED_UP}', CAST(COALESCE(SUM(cache_hits), 0) AS BIGINT), {total} \
         FROM weir_ledger_daily WHERE day_ms >= {from} AND day_ms < {to}"
    )
}

/// Adds one row of [`savings`] to the total.
pub(crate) fn add_savings(
    total: &mut super::Savings,
    label: &str,
    calls: u64,
    saved: rust_decimal::Decimal,
) {
    match label {
        super::cache::HIT => {
            total.cache_hits += calls;
            total.cache_hit_saved_usd += saved;
        }
        super::cache::COALESCED => {
            total.coalesced += calls;
            total.coalesced_saved_usd += saved;
        }
        _ => {
            total.rolled_up += calls;
            total.rolled_up_saved_usd += saved;
        }
    }
}
