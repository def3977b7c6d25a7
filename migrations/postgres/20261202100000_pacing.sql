-- The pacing ledger (see migrations/sqlite/20261202100000_pacing.sql), shared by every process using
-- this database.
CREATE TABLE pace_ledger (
    account_id TEXT NOT NULL,
    region     TEXT NOT NULL,
    service    TEXT NOT NULL,
    bucket     TEXT NOT NULL,
    at_ms      BIGINT NOT NULL,
    spent_ms   BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (account_id, region, service, bucket)
);
CREATE INDEX pace_ledger_expiry ON pace_ledger (at_ms);
