-- 0001_init: the tables of the three pipelines (rate limits, runtime events,
-- counters). Times are INTEGER unix milliseconds. Tables are STRICT, so a
-- value of the wrong type is refused instead of stored. See SCHEMA.md.

-- Runtime telemetry, written by RuntimeEventShard flushes (and inline in
-- shadow/off modes) with ON CONFLICT(id) DO NOTHING: id is the event's UUID.
CREATE TABLE runtime_events (
    id          TEXT PRIMARY KEY,
    capsule_id  TEXT,
    run_id      TEXT,
    type        TEXT NOT NULL,
    ts          INTEGER NOT NULL,
    received_at INTEGER NOT NULL,
    payload     TEXT
) STRICT;
CREATE INDEX runtime_events_capsule_ts ON runtime_events (capsule_id, ts);

-- Rate-limit windows, used when RateLimitShard fails.
CREATE TABLE proxy_rate_limits (
    bucket       TEXT NOT NULL,
    window_start INTEGER NOT NULL,
    count        INTEGER NOT NULL DEFAULT 0 CHECK (count >= 0),
    PRIMARY KEY (bucket, window_start)
) WITHOUT ROWID, STRICT;
CREATE INDEX proxy_rate_limits_window_start ON proxy_rate_limits (window_start);

-- Per-post counters, flushed by CounterShard as clamped deltas.
CREATE TABLE post_stats (
    post_id    TEXT PRIMARY KEY,
    likes      INTEGER NOT NULL DEFAULT 0 CHECK (likes >= 0),
    runs       INTEGER NOT NULL DEFAULT 0 CHECK (runs >= 0),
    views      INTEGER NOT NULL DEFAULT 0 CHECK (views >= 0),
    comments   INTEGER NOT NULL DEFAULT 0 CHECK (comments >= 0),
    remixes    INTEGER NOT NULL DEFAULT 0 CHECK (remixes >= 0),
    updated_at INTEGER NOT NULL DEFAULT 0
) STRICT;

-- Per-user counters, flushed by CounterShard as clamped deltas.
CREATE TABLE user_counters (
    user_id        TEXT PRIMARY KEY,
    followers      INTEGER NOT NULL DEFAULT 0 CHECK (followers >= 0),
    following      INTEGER NOT NULL DEFAULT 0 CHECK (following >= 0),
    posts          INTEGER NOT NULL DEFAULT 0 CHECK (posts >= 0),
    runs           INTEGER NOT NULL DEFAULT 0 CHECK (runs >= 0),
    likes_received INTEGER NOT NULL DEFAULT 0 CHECK (likes_received >= 0),
    updated_at     INTEGER NOT NULL DEFAULT 0
) STRICT;

-- The last flush sequence each counter shard applied, written in the same
-- transaction as the flush's deltas: a replayed flush is recognised.
CREATE TABLE counter_flushes (
    shard      TEXT PRIMARY KEY,
    seq        INTEGER NOT NULL,
    flushed_at INTEGER NOT NULL
) STRICT;

-- A shard's sequence only moves forward: updating it to a value not greater
-- than the stored one aborts the whole batch, so a flush replayed with a
-- blind upsert fails loudly instead of counting twice.
CREATE TRIGGER counter_flushes_seq_forward
BEFORE UPDATE OF seq ON counter_flushes
WHEN NEW.seq <= OLD.seq
BEGIN
    SELECT RAISE(ABORT, 'counter flush already applied');
END;

-- Source rows of likes, for reconcileCounters.
CREATE TABLE likes (
    post_id    TEXT NOT NULL,
    user_id    TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    PRIMARY KEY (post_id, user_id)
) WITHOUT ROWID, STRICT;
CREATE INDEX likes_user_id ON likes (user_id);

-- Source rows of follows, for reconcileCounters.
CREATE TABLE follows (
    follower_id TEXT NOT NULL,
    followee_id TEXT NOT NULL,
    created_at  INTEGER NOT NULL,
    PRIMARY KEY (follower_id, followee_id)
) WITHOUT ROWID, STRICT;
CREATE INDEX follows_followee_id ON follows (followee_id);

-- What reconcileCounters corrected: one row per counter it changed.
CREATE TABLE counter_reconcile_log (
    id          INTEGER PRIMARY KEY,
    ran_at      INTEGER,
    table_name  TEXT,
    row_id      TEXT,
    column_name TEXT,
    old_value   INTEGER,
    new_value   INTEGER
) STRICT;
