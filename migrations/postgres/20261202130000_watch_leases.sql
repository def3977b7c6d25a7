-- Watch leases: which `reconcile watch` process watches (reads, records drift for, remediates) each
-- stack, when several watchers share one state database. A holder renews its lease every renew
-- interval; a lease whose `expires_at` (unix milliseconds) has passed may be taken by another watcher,
-- which increments `generation`. The generation is the fencing token: the holder's state writes check
-- it in the same transaction, so a holder that lost its lease can never write after the new one.
-- Rows are never deleted (a released lease expires at once), so generations only grow.
-- Portable SQL: the same statements run on SQLite and PostgreSQL (BIGINT: unix milliseconds do not fit
-- PostgreSQL's 4-byte INTEGER; SQLite stores it as its 8-byte INTEGER).
CREATE TABLE watch_leases (
    stack         TEXT PRIMARY KEY NOT NULL,
    holder        TEXT NOT NULL,
    generation    BIGINT NOT NULL,
    expires_at    BIGINT NOT NULL,
    manifest_hash TEXT NOT NULL,
    acquired_at   BIGINT NOT NULL
);
