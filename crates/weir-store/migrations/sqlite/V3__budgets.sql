-- Spend budgets set or removed through the admin API, kept so they survive a restart and
-- reach every replica. A row without a spec records a removal (it hides a configured budget
-- with the same id).

CREATE TABLE weir_budgets (
    id         TEXT PRIMARY KEY NOT NULL,
    spec       TEXT,
    updated_at INTEGER NOT NULL
) STRICT;

-- Bumped in the same transaction as each change, as for keys.
INSERT INTO weir_revisions (name, revision) VALUES ('budgets', 0);
