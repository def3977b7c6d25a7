-- The AWS account, partition and region a stack lives in, recorded by its first apply (or `import`,
-- `reconcile pin`, or back-filled from a regional resource found where the state says). NULL = not
-- pinned: a new stack, a destroyed one (its state is empty, so it may move), or a state written
-- before pinning existed. Commands refuse a stack pinned elsewhere than the credentials and region
-- in use.
ALTER TABLE stacks ADD COLUMN account_id TEXT;
ALTER TABLE stacks ADD COLUMN partition TEXT;
ALTER TABLE stacks ADD COLUMN region TEXT;
