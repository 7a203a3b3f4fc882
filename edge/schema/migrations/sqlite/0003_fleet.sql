-- 0003_fleet: many hosts writing one database (SCHEMA.md, "counter_flushes"
-- and "counter_fences").
--
-- counter_flushes is keyed by node and shard: each host's copy of a counter
-- shard keeps a flush sequence of its own. The rows written before keep
-- node '' (the key of a shard that flushed without a node id), so a single
-- host's batches frozen before the upgrade still replay under the key they
-- were applied with. SQLite cannot change a primary key in place: the
-- table is rebuilt, and its trigger with it.
CREATE TABLE counter_flushes_0003 (
    shard      TEXT NOT NULL,
    seq        INTEGER NOT NULL,
    flushed_at INTEGER NOT NULL,
    node       TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (node, shard)
) STRICT;
INSERT INTO counter_flushes_0003 (shard, seq, flushed_at, node)
    SELECT shard, seq, flushed_at, '' FROM counter_flushes;
DROP TABLE counter_flushes;
ALTER TABLE counter_flushes_0003 RENAME TO counter_flushes;
CREATE TRIGGER counter_flushes_seq_forward
BEFORE UPDATE OF seq ON counter_flushes
WHEN NEW.seq <= OLD.seq
BEGIN
    SELECT RAISE(ABORT, 'counter flush already applied');
END;

-- The fence of a counter that has source rows: bumped by reconcileCounters
-- when it sets the counter from its source rows. A delta carries the fence
-- its source-row change read; a flush applies it only while the fence is
-- unchanged (a missing row is fence 0), so a delta the recount already
-- counted, buffered by any host, is never applied on top of it.
CREATE TABLE counter_fences (
    table_name  TEXT NOT NULL,
    row_id      TEXT NOT NULL,
    column_name TEXT NOT NULL,
    epoch       INTEGER NOT NULL CHECK (epoch >= 0),
    PRIMARY KEY (table_name, row_id, column_name)
) WITHOUT ROWID, STRICT;

-- Which host ran the reconcile run that made a correction.
ALTER TABLE counter_reconcile_log ADD COLUMN node TEXT NOT NULL DEFAULT '';
