-- A resource whose create made it in AWS but did not finish (e.g. a role whose inline policy was
-- refused, a stage whose settings update failed): the reason, or NULL for a complete resource. The
-- next apply finishes it with an update, or replaces it where the kind cannot be finished.
ALTER TABLE resources ADD COLUMN incomplete TEXT;
