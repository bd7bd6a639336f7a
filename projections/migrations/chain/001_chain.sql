-- The public chain tables of one institution's database (DESIGN.md section 6), written by
-- projections/chain.py. Everything lives in schema "chain" so that a rebuild can drop it whole.
CREATE SCHEMA IF NOT EXISTS chain;

-- Where the projection stands: the last projected (final, verified, re-executed) block.
CREATE TABLE chain.meta (
    singleton      boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    chain_id       text    NOT NULL,
    genesis_hash   bytea   NOT NULL,
    height         bigint  NOT NULL,
    last_hash      bytea   NOT NULL,
    state_root     bytea   NOT NULL,
    last_tx_offset bigint  NOT NULL,  -- last pantheon.tx offset covered by block `height`
    tx_count       bigint  NOT NULL,
    ok_count       bigint  NOT NULL
);

CREATE TABLE chain.blocks (
    height             bigint PRIMARY KEY,
    hash               bytea  NOT NULL UNIQUE,
    prev_hash          bytea  NOT NULL,
    first_offset       bigint NOT NULL,
    last_offset        bigint NOT NULL,
    tx_root            bytea  NOT NULL,
    state_root         bytea  NOT NULL,
    validator_set_hash bytea  NOT NULL,
    timestamp_ms       bigint NOT NULL,
    tx_count           int    NOT NULL,
    ok_count           int    NOT NULL,
    certificate        bytea  NOT NULL,  -- canonical QuorumCertificate
    source_offset      bigint NOT NULL   -- pantheon.blocks offset of the copy that was kept
);

-- The quorum certificate's votes, one row per signature.
CREATE TABLE chain.block_votes (
    height          bigint NOT NULL,
    position        int    NOT NULL,
    operator_key_id bytea  NOT NULL,
    institution_id  text   NOT NULL,
    public_key      bytea  NOT NULL,
    signature       bytea  NOT NULL,
    PRIMARY KEY (height, position)
);
CREATE INDEX block_votes_operator ON chain.block_votes (operator_key_id, height DESC);

-- Every entry of every final block, rejected ones included (result_code != 0). tx_id is not
-- unique: a replayed envelope appears again with BAD_NONCE.
CREATE TABLE chain.transactions (
    height      bigint   NOT NULL,
    position    int      NOT NULL,
    tx_id       bytea    NOT NULL,
    tx_offset   bigint   NOT NULL UNIQUE,
    result_code smallint NOT NULL,
    sender      bytea,             -- NULL unless the signature was checked
    nonce       bigint,
    operation   text,
    envelope    bytea,             -- NULL for TOO_LARGE entries
    PRIMARY KEY (height, position)
);
CREATE INDEX transactions_tx_id ON chain.transactions (tx_id);
CREATE INDEX transactions_sender ON chain.transactions (sender, height DESC, position DESC)
    WHERE sender IS NOT NULL;

-- Receipts are a function of the final blocks (what validators publish on pantheon.receipts).
CREATE VIEW chain.receipts AS
    SELECT t.tx_id, t.height, t.tx_offset AS "offset", t.result_code, b.hash AS block_hash
    FROM chain.transactions t JOIN chain.blocks b USING (height);

-- The world state after `meta.height`, one canonical record per key (resume and audit).
CREATE TABLE chain.state_records (
    key            text   PRIMARY KEY,
    record         bytea  NOT NULL,
    updated_height bigint NOT NULL
);

CREATE TABLE chain.institutions (
    institution_id    text    PRIMARY KEY,
    governance_key_id bytea   NOT NULL,
    operator_key_ids  bytea[] NOT NULL,
    status            text    NOT NULL,
    effective_height  bigint  NOT NULL,
    updated_height    bigint  NOT NULL
);

-- Every key: governance, operator, service, user, device.
CREATE TABLE chain.keys (
    key_id         bytea   PRIMARY KEY,
    public_key     bytea   NOT NULL,
    role           text    NOT NULL,
    institution_id text    NOT NULL,
    label          text    NOT NULL,
    active         boolean NOT NULL,
    next_nonce     bigint  NOT NULL,
    updated_height bigint  NOT NULL
);
CREATE INDEX keys_institution ON chain.keys (institution_id, role, key_id);
CREATE INDEX keys_role ON chain.keys (role, key_id);
CREATE VIEW chain.operators AS SELECT * FROM chain.keys WHERE role = 'OPERATOR';
CREATE VIEW chain.identities AS
    SELECT * FROM chain.keys WHERE role IN ('SERVICE', 'USER', 'DEVICE');
CREATE VIEW chain.devices AS SELECT * FROM chain.keys WHERE role = 'DEVICE';

CREATE TABLE chain.proposals (
    proposal_id           bytea   PRIMARY KEY,
    kind                  text    NOT NULL,
    institution_id        text    NOT NULL,
    governance_public_key bytea   NOT NULL,
    operator_public_keys  bytea[] NOT NULL,
    proposer              text    NOT NULL,
    created_height        bigint  NOT NULL,
    expires_height        bigint  NOT NULL,
    yes                   text[]  NOT NULL,
    no                    text[]  NOT NULL,
    status                text    NOT NULL,
    updated_height        bigint  NOT NULL
);
CREATE INDEX proposals_created ON chain.proposals (created_height DESC, proposal_id);

-- One row per institution's vote on a proposal, with the height of the block that took it.
CREATE TABLE chain.proposal_votes (
    proposal_id    bytea   NOT NULL,
    institution_id text    NOT NULL,
    approve        boolean NOT NULL,
    height         bigint  NOT NULL,
    PRIMARY KEY (proposal_id, institution_id)
);

CREATE TABLE chain.anchors (
    data_id        text   PRIMARY KEY,
    sha256         bytea  NOT NULL,
    metadata       text   NOT NULL,
    institution_id text   NOT NULL,
    anchored_by    bytea  NOT NULL,
    height         bigint NOT NULL
);
CREATE INDEX anchors_institution ON chain.anchors (institution_id, height DESC, data_id);
CREATE INDEX anchors_sha256 ON chain.anchors (sha256);

CREATE TABLE chain.assets (
    asset_id          text   PRIMARY KEY,
    owner_key_id      bytea  NOT NULL,
    metadata          text   NOT NULL,
    registered_height bigint NOT NULL,
    updated_height    bigint NOT NULL
);
CREATE INDEX assets_owner ON chain.assets (owner_key_id, asset_id);

-- Ownership history: registration and every accepted transfer, per transaction.
CREATE TABLE chain.asset_owners (
    asset_id     text   NOT NULL,
    height       bigint NOT NULL,
    position     int    NOT NULL,
    tx_id        bytea  NOT NULL,
    owner_key_id bytea  NOT NULL,
    PRIMARY KEY (asset_id, height, position)
);

CREATE TABLE chain.l2_batches (
    batch_id        text   PRIMARY KEY,
    merkle_root     bytea  NOT NULL,
    leaf_count      bigint NOT NULL,
    window_start_ms bigint NOT NULL,
    window_end_ms   bigint NOT NULL,
    institution_id  text   NOT NULL,
    committed_by    bytea  NOT NULL,
    height          bigint NOT NULL
);
CREATE INDEX l2_batches_height ON chain.l2_batches (height DESC, batch_id);

CREATE TABLE chain.evidence (
    operator_key_id bytea  NOT NULL,
    height          bigint NOT NULL,
    institution_id  text   NOT NULL,
    hash_a          bytea  NOT NULL,
    hash_b          bytea  NOT NULL,
    reported_height bigint NOT NULL,
    PRIMARY KEY (operator_key_id, height)
);

-- Work in progress, written with the positions: pantheon.tx messages after meta.last_tx_offset
-- and FinalizedBlock copies above meta.height, not yet projectable.
CREATE TABLE chain.pending_tx (
    tx_offset    bigint PRIMARY KEY,
    timestamp_ms bigint NOT NULL,
    raw          bytea  NOT NULL
);
CREATE TABLE chain.pending_blocks (
    source_offset bigint PRIMARY KEY,
    height        bigint NOT NULL,
    raw           bytea  NOT NULL
);
