-- The usage ledger: one row per LLM call, daily totals of rolled-up calls, and how far each
-- spool has been consumed. Money is whole picodollars (1e-12 USD) in a 64-bit integer:
-- exact, and bounded to +-9.2 million dollars per row and per sum.

CREATE TABLE weir_ledger (
    id                  INTEGER PRIMARY KEY,
    at_ms               INTEGER NOT NULL,
    request_id          TEXT NOT NULL,
    key_id              TEXT,
    user_id             TEXT,
    team_id             TEXT,
    project_id          TEXT,
    tags                TEXT NOT NULL DEFAULT '[]',
    operation           TEXT NOT NULL,
    model               TEXT NOT NULL,
    provider            TEXT,
    upstream_model      TEXT,
    status              INTEGER NOT NULL,
    outcome             TEXT NOT NULL,
    error_kind          TEXT,
    attempts            INTEGER NOT NULL,
    cache_status        TEXT NOT NULL,
    input_tokens        INTEGER NOT NULL,
    output_tokens       INTEGER NOT NULL,
    cached_input_tokens INTEGER NOT NULL,
    cache_write_tokens  INTEGER NOT NULL,
    reasoning_tokens    INTEGER NOT NULL,
    tokens_estimated    INTEGER NOT NULL,
    cost_pusd           INTEGER,
    saved_pusd          INTEGER,
    latency_us          INTEGER NOT NULL,
    upstream_us         INTEGER,
    first_token_us      INTEGER,
    prompt_fingerprint  TEXT
) STRICT;

-- Every total reads a time range, alone or with one of the filter columns.
CREATE INDEX weir_ledger_at ON weir_ledger (at_ms);
CREATE INDEX weir_ledger_key_at ON weir_ledger (key_id, at_ms);
CREATE INDEX weir_ledger_user_at ON weir_ledger (user_id, at_ms);
CREATE INDEX weir_ledger_team_at ON weir_ledger (team_id, at_ms);
CREATE INDEX weir_ledger_project_at ON weir_ledger (project_id, at_ms);
CREATE INDEX weir_ledger_model_at ON weir_ledger (model, at_ms);
CREATE INDEX weir_ledger_provider_at ON weir_ledger (provider, at_ms);

-- Calls folded by day (UTC midnight, unix ms) x key x user x team x project x model x
-- provider. A day rolled up twice (calls that arrived late) has two rows per group: totals
-- add them up.
CREATE TABLE weir_ledger_daily (
    day_ms              INTEGER NOT NULL,
    key_id              TEXT,
    user_id             TEXT,
    team_id             TEXT,
    project_id          TEXT,
    model               TEXT NOT NULL,
    provider            TEXT,
    requests            INTEGER NOT NULL,
    errors              INTEGER NOT NULL,
    cache_hits          INTEGER NOT NULL,
    input_tokens        INTEGER NOT NULL,
    output_tokens       INTEGER NOT NULL,
    cached_input_tokens INTEGER NOT NULL,
    cache_write_tokens  INTEGER NOT NULL,
    reasoning_tokens    INTEGER NOT NULL,
    cost_pusd           INTEGER NOT NULL,
    saved_pusd          INTEGER NOT NULL,
    unpriced_calls      INTEGER NOT NULL
) STRICT;

CREATE INDEX weir_ledger_daily_day ON weir_ledger_daily (day_ms);

-- How far each spool (a gateway's local file of calls not yet stored) has been consumed,
-- moved in the same transaction as the rows it covers.
CREATE TABLE weir_ledger_spools (
    spool_id   TEXT PRIMARY KEY NOT NULL,
    consumed   INTEGER NOT NULL,
    updated_ms INTEGER NOT NULL
) STRICT;
