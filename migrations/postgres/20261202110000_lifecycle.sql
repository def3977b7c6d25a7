-- `retain_on_delete = true` as the manifest last had it when apply ran.
ALTER TABLE resources ADD COLUMN retain_on_delete BOOLEAN NOT NULL DEFAULT FALSE;
-- Drift in a field the manifest's `ignore_changes` names: recorded, never counted nor remediated.
ALTER TABLE drift_events ADD COLUMN ignored BOOLEAN NOT NULL DEFAULT FALSE;
