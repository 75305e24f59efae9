-- Gateway keys, the revision counters replicas poll, and the store's own settings.

CREATE TABLE weir_keys (
    id                  TEXT PRIMARY KEY NOT NULL,
    hash                BLOB NOT NULL CHECK (length(hash) = 32),
    hint                TEXT NOT NULL,
    name                TEXT NOT NULL,
    user_id             TEXT,
    team_id             TEXT,
    project_id          TEXT,
    models              TEXT NOT NULL DEFAULT '[]',
    rpm                 INTEGER,
    tpm                 INTEGER,
    allow_user_override INTEGER NOT NULL DEFAULT 0,
    enabled             INTEGER NOT NULL DEFAULT 1,
    expires_at          INTEGER,
    revoked_at          INTEGER,
    metadata            TEXT NOT NULL DEFAULT '{}',
    created_at          INTEGER NOT NULL,
    updated_at          INTEGER NOT NULL,
    last_used_at        INTEGER
) STRICT;

-- Authentication looks keys up by hash: one indexed query.
CREATE UNIQUE INDEX weir_keys_hash ON weir_keys (hash);
-- Names are unique among keys that are not revoked.
CREATE UNIQUE INDEX weir_keys_name_live ON weir_keys (name) WHERE revoked_at IS NULL;
CREATE INDEX weir_keys_created ON weir_keys (created_at, id);

-- One counter per record kind, bumped in the same transaction as each change.
CREATE TABLE weir_revisions (
    name     TEXT PRIMARY KEY NOT NULL,
    revision INTEGER NOT NULL
) STRICT;
INSERT INTO weir_revisions (name, revision) VALUES ('keys', 0);

-- Values the store keeps for every replica (the key hashing secret).
CREATE TABLE weir_settings (
    name  TEXT PRIMARY KEY NOT NULL,
    value BLOB NOT NULL
) STRICT;
