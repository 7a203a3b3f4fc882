-- 0002_rate_limit_window: proxy_rate_limits records each window's length,
-- so the SQL fallback keeps a bucket exactly as RateLimitShard keeps it in
-- shard storage and decides alike (plugins/proto/ratelimit): a bucket kept
-- with another window length starts afresh, and expired windows are swept
-- by their own length. Rows written before have window_ms 0 and so start
-- afresh (a fallback table: at most one window of counts is forgotten).
ALTER TABLE proxy_rate_limits ADD COLUMN window_ms INTEGER NOT NULL DEFAULT 0 CHECK (window_ms >= 0);
