-- A stack's lineage: a random UUID (version 4) given to its row when the row is created and kept
-- for as long as the row lives. A saved plan records it with the serial, so a plan made against one
-- state is never applied to another state that happens to reach the same serial (a state file
-- recreated, or another one swapped in).
ALTER TABLE stacks ADD COLUMN lineage TEXT;

-- Every stack row gets one when it is created, whichever statement creates it.
CREATE TRIGGER stacks_lineage AFTER INSERT ON stacks WHEN NEW.lineage IS NULL
BEGIN
    UPDATE stacks SET lineage = (
        lower(hex(randomblob(4))) || '-' || lower(hex(randomblob(2))) || '-4' || substr(lower(hex(randomblob(2))), 2) || '-'
        || substr('89ab', 1 + (abs(random()) % 4), 1) || substr(lower(hex(randomblob(2))), 2) || '-' || lower(hex(randomblob(6)))
    ) WHERE name = NEW.name;
END;

-- Rows made before lineage existed get theirs now.
UPDATE stacks SET lineage = (
    lower(hex(randomblob(4))) || '-' || lower(hex(randomblob(2))) || '-4' || substr(lower(hex(randomblob(2))), 2) || '-'
    || substr('89ab', 1 + (abs(random()) % 4), 1) || substr(lower(hex(randomblob(2))), 2) || '-' || lower(hex(randomblob(6)))
) WHERE lineage IS NULL;
