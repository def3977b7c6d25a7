-- `retain_on_delete = true` as the manifest last had it when apply ran: a resource that leaves the
-- manifest (or the whole stack, on destroy) is then forgotten and left in AWS rather than deleted.
ALTER TABLE resources ADD COLUMN retain_on_delete INTEGER NOT NULL DEFAULT 0;
-- Drift in a field the manifest's `ignore_changes` names: recorded and listed (`drift --ignored`,
-- `drift --all`), but never counted as open drift nor remediated.
ALTER TABLE drift_events ADD COLUMN ignored INTEGER NOT NULL DEFAULT 0;
