-- IAM read model of one institution (DESIGN.md section 6), written by projections/iam.py,
-- plus three tables the gateway owns that are NOT projections of the topic (they hold
-- secrets that must be deletable or never leave the database): iam_data_keys,
-- iam_signing_keys, iam_setup. A rebuild truncates only the projection tables.

-- Principals: users (kind 'user') and service accounts (kind 'service').
CREATE TABLE IF NOT EXISTS iam_users (
    user_id              text    PRIMARY KEY,
    kind                 text    NOT NULL CHECK (kind IN ('user', 'service')),
    login                text    NOT NULL UNIQUE,
    password_hash        text,            -- scrypt hash sealed under the user's data key
    encrypted_profile    bytea,           -- sealed personal fields; NULL once forgotten
    data_key_id          text    NOT NULL DEFAULT '',
    is_owner             boolean NOT NULL DEFAULT false,
    disabled             boolean NOT NULL DEFAULT false,
    disabled_reason      text    NOT NULL DEFAULT '',
    forgotten            boolean NOT NULL DEFAULT false,
    tokens_not_before_ms bigint  NOT NULL DEFAULT 0,
    created_by           text    NOT NULL DEFAULT '',
    created_at_ms        bigint  NOT NULL,
    updated_at_ms        bigint  NOT NULL
);

CREATE TABLE IF NOT EXISTS iam_service_accounts (
    account_id      text   PRIMARY KEY,
    name            text   NOT NULL UNIQUE,
    credential_hash text   NOT NULL,
    created_by      text   NOT NULL,
    created_at_ms   bigint NOT NULL
);

CREATE TABLE IF NOT EXISTS iam_groups (
    name          text   PRIMARY KEY,
    description   text   NOT NULL,
    created_by    text   NOT NULL,
    created_at_ms bigint NOT NULL
);

CREATE TABLE IF NOT EXISTS iam_memberships (
    user_id     text   NOT NULL,
    group_name  text   NOT NULL,
    added_by    text   NOT NULL,
    added_at_ms bigint NOT NULL,
    PRIMARY KEY (user_id, group_name)
);

-- subject: a principal id, or 'group:<name>'.
CREATE TABLE IF NOT EXISTS iam_grants (
    subject       text   NOT NULL,
    permission    text   NOT NULL,
    granted_by    text   NOT NULL,
    granted_at_ms bigint NOT NULL,
    PRIMARY KEY (subject, permission)
);

CREATE TABLE IF NOT EXISTS iam_revoked_tokens (
    jti           text   PRIMARY KEY,
    user_id       text   NOT NULL,
    expires_at_ms bigint NOT NULL,
    revoked_at_ms bigint NOT NULL
);

-- Gateway-owned: wrapped per-user data keys. Deleting a row is crypto-shredding.
CREATE TABLE IF NOT EXISTS iam_data_keys (
    user_id    text        PRIMARY KEY,
    key_id     text        NOT NULL UNIQUE,
    wrapped    bytea       NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);

-- Gateway-owned: Ed25519 token signing keys, private halves sealed under the master key.
CREATE TABLE IF NOT EXISTS iam_signing_keys (
    kid            text   PRIMARY KEY,
    public_key     bytea  NOT NULL,
    sealed_private bytea  NOT NULL,
    created_at_s   bigint NOT NULL,
    retired_at_s   bigint
);

-- Gateway-owned: the one-time setup credential (SHA-256 only) that creates the first admin.
CREATE TABLE IF NOT EXISTS iam_setup (
    institution text        PRIMARY KEY,
    token_hash  bytea       NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    consumed_at timestamptz
);
