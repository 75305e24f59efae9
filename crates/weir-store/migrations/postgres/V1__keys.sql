-- Gateway keys, the revision counters replicas poll, and the store's own settings.

CREATE TABLE weir_keys (
    id                  TEXT PRIMARY KEY,
    hash                BYTEA NOT NULL CHECK (octet_length(hash) = 32),
    hint                TEXT NOT NULL,
    name                TEXT NOT NULL,
    user_id             TEXT,
    team_id             TEXT,
    project_id          TEXT,
    models              JSONB NOT NULL DEFAULT '[]',
    rpm                 BIGINT,
    tpm                 BIGINT,
    allow_user_override BOOLEAN NOT NULL DEFAULT FALSE,
    enabled             BOOLEAN NOT NULL DEFAULT TRUE,
    expires_at          BIGINT,
    revoked_at          BIGINT,
    metadata            JSONB NOT NULL DEFAULT '{}',
    created_at          BIGINT NOT NULL,
    updated_at          BIGINT NOT NULL,
    last_used_at        BIGINT
);

-- Authentication looks keys up by hash: one indexed query.
CREATE UNIQUE INDEX weir_keys_hash ON weir_keys (hash);
-- Names are unique among keys that are not revoked.
CREATE UNIQUE INDEX weir_keys_name_live ON weir_keys (name) WHERE revoked_at IS NULL;
CREATE INDEX weir_keys_created ON weir_keys (created_at, id);

-- One counter per record kind, bumped in the same transaction as each change (a row lock
-- orders concurrent writers; a sequence would not, and could show a revision before its
-- change commits).
CREATE TABLE weir_revisions (
    name     TEXT PRIMARY KEY,
    revision BIGINT NOT NULL
);
INSERT INTO weir_revisions (name, revision) VALUES ('keys', 0);

-- Values the store keeps for every replica (the key hashing secret).
CREATE TABLE weir_settings (
    name  TEXT PRIMARY KEY,
    value BYTEA NOT NULL
);
