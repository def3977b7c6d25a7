-- One row per stack; `serial` increases on every write to the stack's state.
CREATE TABLE stacks (
    name        TEXT PRIMARY KEY NOT NULL,
    serial      INTEGER NOT NULL DEFAULT 0,
    outputs     TEXT NOT NULL DEFAULT '{}',
    updated_at  TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
);

-- What the engine created and owns: physical id, the attributes last applied (references resolved),
-- the outputs other resources reference, and what it depended on (for ordering deletes).
CREATE TABLE resources (
    stack       TEXT NOT NULL REFERENCES stacks(name) ON DELETE CASCADE,
    name        TEXT NOT NULL,
    kind        TEXT NOT NULL,
    physical_id TEXT NOT NULL,
    attributes  TEXT NOT NULL,
    outputs     TEXT NOT NULL,
    depends_on  TEXT NOT NULL DEFAULT '[]',
    updated_at  TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    PRIMARY KEY (stack, name)
);

-- Journal of AWS writes: a row is written before the call and finished after it, so a run that dies
-- in between leaves a pending row the next run can reconcile.
CREATE TABLE operations (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    stack         TEXT NOT NULL,
    resource      TEXT NOT NULL,
    kind          TEXT NOT NULL,
    action        TEXT NOT NULL,
    physical_name TEXT,
    started_at    TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    finished_at   TEXT,
    outcome       TEXT
);
CREATE INDEX operations_pending ON operations (stack) WHERE finished_at IS NULL;
