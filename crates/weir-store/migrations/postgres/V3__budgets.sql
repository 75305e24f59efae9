-- Spend budgets set or removed through the admin API, kept so they survive a restart and
-- reach every replica. A row without a spec records a removal (it hides a configured budget
-- with the same id).

CREATE TABLE weir_budgets (
    id         TEXT PRIMARY KEY,
    spec       JSONB,
    updated_at BIGINT NOT NULL
);

-- Bumped in the same transaction as each change (its row lock orders writers), as for keys.
INSERT INTO weir_revisions (name, revision) VALUES ('budgets', 0);
