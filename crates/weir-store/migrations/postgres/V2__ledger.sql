-- The usage ledger: one row per LLM call, daily totals of rolled-up calls, and how far each
-- spool has been consumed. Money is exact: NUMERIC(38,12).

CREATE TABLE weir_ledger (
    id                  BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at_ms               BIGINT NOT NULL,
    request_id          TEXT NOT NULL,
    key_id              TEXT,
    user_id             TEXT,
    team_id             TEXT,
    project_id          TEXT,
    tags                JSONB NOT NULL DEFAULT '[]',
    operation           TEXT NOT NULL,
    model               TEXT NOT NULL,
    provider            TEXT,
    upstream_model      TEXT,
    status              INTEGER NOT NULL,
    outcome             TEXT NOT NULL,
    error_kind          TEXT,
    attempts            BIGINT NOT NULL,
    cache_status        TEXT NOT NULL,
    input_tokens        BIGINT NOT NULL,
    output_tokens       BIGINT NOT NULL,
    cached_input_tokens BIGINT NOT NULL,
    cache_write_tokens  BIGINT NOT NULL,
    reasoning_tokens    BIGINT NOT NULL,
    tokens_estimated    BOOLEAN NOT NULL,
    cost_usd            NUMERIC(38, 12),
    saved_usd           NUMERIC(38, 12),
    latency_us          BIGINT NOT NULL,
    upstream_us         BIGINT,
    first_token_us      BIGINT,
    prompt_fingerprint  TEXT
);

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
    day_ms              BIGINT NOT NULL,
    key_id              TEXT,
    user_id             TEXT,
    team_id             TEXT,
    project_id          TEXT,
    model               TEXT NOT NULL,
    provider            TEXT,
    requests            BIGINT NOT NULL,
    errors              BIGINT NOT NULL,
    cache_hits          BIGINT NOT NULL,
    input_tokens        BIGINT NOT NULL,
    output_tokens       BIGINT NOT NULL,
    cached_input_tokens BIGINT NOT NULL,
    cache_write_tokens  BIGINT NOT NULL,
    reasoning_tokens    BIGINT NOT NULL,
    cost_usd            NUMERIC(38, 12) NOT NULL,
    saved_usd           NUMERIC(38, 12) NOT NULL,
    unpriced_calls      BIGINT NOT NULL
);

CREATE INDEX weir_ledger_daily_day ON weir_ledger_daily (day_ms);

-- How far each spool (a gateway's local file of calls not yet stored) has been consumed,
-- moved in the same transaction as the rows it covers.
CREATE TABLE weir_ledger_spools (
    spool_id   TEXT PRIMARY KEY,
    consumed   BIGINT NOT NULL,
    updated_ms BIGINT NOT NULL
);
