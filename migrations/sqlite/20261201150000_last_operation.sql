-- The last command that changed a stack as a whole: `apply` or `destroy` (NULL before either ran).
-- `watch --remediate` leaves a stack whose last operation was a destroy alone until the next apply.
ALTER TABLE stacks ADD COLUMN last_operation TEXT;
