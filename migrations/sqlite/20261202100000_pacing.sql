-- The pacing ledger: the recent use of an account's rate-limited API budget (API Gateway's account
-- limits), shared by every process using this state file. One row per bucket of a budget (account,
-- region, service): `bucket` is '' for the account-wide token bucket (`at_ms`: when it is full again)
-- or an operation with its own limit (`at_ms`: its next free slot). `spent_ms`: when a 429 last said the
-- bucket was spent by someone else (0: never). Times are unix milliseconds. A row whose `at_ms` has
-- passed says nothing and is deleted by the next reservation, so the table stays a few rows small.
CREATE TABLE pace_ledger (
    account_id TEXT NOT NULL,
    region     TEXT NOT NULL,
    service    TEXT NOT NULL,
    bucket     TEXT NOT NULL,
    at_ms      INTEGER NOT NULL,
    spent_ms   INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (account_id, region, service, bucket)
);
CREATE INDEX pace_ledger_expiry ON pace_ledger (at_ms);
