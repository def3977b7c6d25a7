-- One writer per stack: apply, destroy and remediation hold this row while they run.
CREATE TABLE locks (
    stack       TEXT PRIMARY KEY NOT NULL,
    id          TEXT NOT NULL,
    operation   TEXT NOT NULL,
    pid         INTEGER NOT NULL,
    host        TEXT NOT NULL,
    acquired_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
);
