-- 0003_fleet (PostgreSQL): many hosts writing one database, as
-- sqlite/0003_fleet.sql does; see there and SCHEMA.md. Here the primary
-- key changes in place and the trigger stays.
ALTER TABLE counter_flushes ADD COLUMN node TEXT NOT NULL DEFAULT '';
ALTER TABLE counter_flushes DROP CONSTRAINT counter_flushes_pkey;
ALTER TABLE counter_flushes ADD PRIMARY KEY (node, shard);

CREATE TABLE counter_fences (
    table_name  TEXT NOT NULL,
    row_id      TEXT NOT NULL,
    column_name TEXT NOT NULL,
    epoch       BIGINT NOT NULL CHECK (epoch >= 0),
    PRIMARY KEY (table_name, row_id, column_name)
);

ALTER TABLE counter_reconcile_log ADD COLUMN node TEXT NOT NULL DEFAULT '';
