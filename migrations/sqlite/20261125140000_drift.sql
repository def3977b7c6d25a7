-- Drift found by `reconcile watch`: one row per (stack, resource, field) while it is open; a drift that
-- comes back after it was resolved is a new row. `field` is a plan field path (`memory_size`,
-- `tags.env`) or `*` for a resource deleted outside reconcile. `expected` and `actual` are JSON
-- (secret values are already "(sensitive)"). `how` says how it ended: `remediated`, `back in sync`
-- or `no longer managed`.
CREATE TABLE drift_events (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    stack       TEXT NOT NULL,
    resource    TEXT NOT NULL,
    kind        TEXT NOT NULL,
    field       TEXT NOT NULL,
    expected    TEXT NOT NULL DEFAULT 'null',
    actual      TEXT NOT NULL DEFAULT 'null',
    first_seen  TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    last_seen   TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    resolved_at TEXT,
    how         TEXT
);
CREATE UNIQUE INDEX drift_events_open ON drift_events (stack, resource, field) WHERE resolved_at IS NULL;
CREATE INDEX drift_events_by_stack ON drift_events (stack, id);
