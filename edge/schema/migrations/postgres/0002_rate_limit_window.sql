-- 0002_rate_limit_window (PostgreSQL): proxy_rate_limits records each
-- window's length, as sqlite/0002_rate_limit_window.sql does; see there and
-- SCHEMA.md. Rows written before have window_ms 0 and so start afresh.
ALTER TABLE proxy_rate_limits ADD COLUMN window_ms BIGINT NOT NULL DEFAULT 0 CHECK (window_ms >= 0);
