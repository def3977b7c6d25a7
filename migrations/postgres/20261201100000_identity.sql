-- The AWS account, partition and region a stack is pinned to (NULL: not pinned).
ALTER TABLE stacks ADD COLUMN account_id TEXT;
ALTER TABLE stacks ADD COLUMN partition TEXT;
ALTER TABLE stacks ADD COLUMN region TEXT;
