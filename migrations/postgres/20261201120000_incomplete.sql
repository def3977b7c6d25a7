-- A resource whose create did not finish: the reason, or NULL for a complete resource.
ALTER TABLE resources ADD COLUMN incomplete TEXT;
