-- A stack's lineage: a random UUID (version 4) given to its row when the row is created and kept
-- for as long as the row lives. A saved plan records it with the serial, so a plan made against one
-- state is never applied to another state that happens to reach the same serial (a state recreated,
-- or another one swapped in). Rows that exist now get one too (a volatile default is evaluated per
-- row). gen_random_uuid() is built into PostgreSQL 13 and later.
ALTER TABLE stacks ADD COLUMN lineage TEXT DEFAULT gen_random_uuid()::text;
