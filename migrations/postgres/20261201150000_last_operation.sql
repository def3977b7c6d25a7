-- The last command that changed a stack as a whole: `apply` or `destroy` (NULL before either ran).
ALTER TABLE stacks ADD COLUMN last_operation TEXT;
