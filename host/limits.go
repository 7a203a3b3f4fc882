package host

import (
	"fmt"
	"strings"
	"time"

	"github.com/edgeshard/edgeshard/host/internal/wasm"
)

// Limits bound what one plugin can make the host do, per event and per
// shard, so that an untrusted module cannot exhaust the host's memory,
// disk, CPU or log (docs/SECURITY.md, "Plugins"). A zero field takes its
// default; a negative one removes that limit.
type Limits struct {
	// EventWriteBytes bounds the bytes of keys and values one event hands
	// to storage writes; every put and delete counts, an overwrite of the
	// same key included (default 16 MiB). Past it a write answers
	// -ErrnoLimit and changes nothing.
	EventWriteBytes int64
	// EventWriteKeys bounds the keys one event writes or deletes
	// (default 10,000).
	EventWriteKeys int64
	// EventLogLines and EventLogBytes bound one event's log records and
	// their encoded bytes (defaults 100 and 256 KiB); past them records are
	// dropped and log_write answers -ErrnoLimit.
	EventLogLines int64
	EventLogBytes int64
	// StorageQuotaBytes bounds the bytes of keys and values one shard
	// stores (default 1 GiB); a write that would grow it further answers
	// -ErrnoQuota. A negative value also turns the accounting off.
	StorageQuotaBytes int64
	// ShardSQLBytes caps the file of each shard's own SQL database (a
	// binding with sql = "shard"; default 1 GiB); a statement that would
	// grow it further answers -ErrnoQuota and changes nothing.
	ShardSQLBytes int64
	// AlarmRearmInterval and AlarmRearmBurst pace the alarms an alarm
	// handler sets sooner than one interval ahead: a burst of that many,
	// then one per interval; a faster one is moved later (defaults 100ms
	// and 10).
	AlarmRearmInterval time.Duration
	AlarmRearmBurst    int
}

// DefaultLimits returns the limits a zero Limits takes.
func DefaultLimits() Limits {
	return Limits{
		EventWriteBytes:    16 << 20,
		EventWriteKeys:     10_000,
		EventLogLines:      100,
		EventLogBytes:      256 << 10,
		StorageQuotaBytes:  1 << 30,
		ShardSQLBytes:      1 << 30,
		AlarmRearmInterval: 100 * time.Millisecond,
		AlarmRearmBurst:    10,
	}
}

// over returns l with every non-zero field of o in place of its own.
func (l Limits) over(o *Limits) Limits {
	if o == nil {
		return l
	}
	pick := func(dst *int64, v int64) {
		if v != 0 {
			*dst = v
		}
	}
	pick(&l.EventWriteBytes, o.EventWriteBytes)
	pick(&l.EventWriteKeys, o.EventWriteKeys)
	pick(&l.EventLogLines, o.EventLogLines)
	pick(&l.EventLogBytes, o.EventLogBytes)
	pick(&l.StorageQuotaBytes, o.StorageQuotaBytes)
	pick(&l.ShardSQLBytes, o.ShardSQLBytes)
	if o.AlarmRearmInterval != 0 {
		l.AlarmRearmInterval = o.AlarmRearmInterval
	}
	if o.AlarmRearmBurst != 0 {
		l.AlarmRearmBurst = o.AlarmRearmBurst
	}
	return l
}

// ResolveLimits returns the limits in force for a binding: its override
// over the host's limits over DefaultLimits. A negative field stays
// negative (no limit).
func ResolveLimits(host Limits, binding *Limits) Limits {
	return DefaultLimits().over(&host).over(binding)
}

// eventLimits returns the per-event part for the wasm engine, where a
// field ≤ 0 is no limit.
func (l Limits) eventLimits() wasm.EventLimits {
	return wasm.EventLimits{
		WriteBytes: l.EventWriteBytes,
		WriteKeys:  l.EventWriteKeys,
		LogLines:   l.EventLogLines,
		LogBytes:   l.EventLogBytes,
	}
}

// Limit names as metrics and log lines give them (besides the per-event
// ones of package wasm).
const (
	limitQuota = "storage_quota_bytes"
	limitRearm = "alarm_rearm_interval"
)

// logCodes decides which code fields of a guest's log records the host
// honours (logs as "code" and counts in edgeshard_guest_log_codes_total):
// those matching a pattern, an exact code or a prefix ending in "*". nil
// patterns honour every code.
type logCodes struct {
	all      bool
	exact    map[string]bool
	prefixes []string
}

func newLogCodes(patterns []string) logCodes {
	if patterns == nil {
		return logCodes{all: true}
	}
	lc := logCodes{exact: map[string]bool{}}
	for _, p := range patterns {
		switch {
		case p == "*":
			lc.all = true
		case strings.HasSuffix(p, "*"):
			lc.prefixes = append(lc.prefixes, strings.TrimSuffix(p, "*"))
		default:
			lc.exact[p] = true
		}
	}
	return lc
}

func (lc *logCodes) allows(code string) bool {
	if lc.all || lc.exact[code] {
		return true
	}
	for _, p := range lc.prefixes {
		if strings.HasPrefix(code, p) {
			return true
		}
	}
	return false
}

// checkLogCodes reports a malformed pattern: empty, or with "*" other
// than at its end.
func checkLogCodes(patterns []string) error {
	for _, p := range patterns {
		if p == "" || strings.Contains(strings.TrimSuffix(p, "*"), "*") {
			return fmt.Errorf("log code pattern %q: want a code, or a prefix followed by one final *", p)
		}
	}
	return nil
}

// guestState is an actor's side of the limits: resolved once, on its
// first event, then kept for the actor's life.
type guestState struct {
	ready   bool
	lim     Limits
	ev      wasm.EventLimits
	codes   logCodes
	store   quotaStore
	inAlarm bool // the current event is an alarm (BeginEvent)

	// Alarm pacing (GCRA): rearmTAT is the theoretical time (unix ms) at
	// which the re-arm budget is full again; pacing is set while re-arms
	// are being moved later (logged once per streak).
	rearmTAT int64
	pacing   bool
}

// guest returns the actor's guestState, resolving it on first use.
func (a *actor) guest() *guestState {
	g := &a.guestLim
	if !g.ready {
		g.lim = ResolveLimits(a.ns.h.cfg.Limits, a.ns.binding.Limits)
		g.ev = g.lim.eventLimits()
		g.codes = newLogCodes(a.ns.binding.LogCodes)
		g.store = quotaStore{a: a, s: a.store, quota: g.lim.StorageQuotaBytes}
		g.ready = true
	}
	return g
}

// paceRearm returns when an alarm an alarm handler sets for ms (unix ms)
// may fire: ms itself when it is at least one interval ahead of now or the
// re-arm budget allows it (a burst of AlarmRearmBurst, refilled one per
// AlarmRearmInterval), else the earliest time the budget allows. It is
// the generic cell rate algorithm: rearmTAT advances one interval per
// re-arm and may run at most burst−1 intervals ahead of the time granted.
func (g *guestState) paceRearm(now, ms int64) (at int64, deferred bool) {
	iv := g.lim.AlarmRearmInterval.Milliseconds()
	if iv <= 0 || ms >= now+iv {
		return ms, false
	}
	burst := int64(max(g.lim.AlarmRearmBurst, 1))
	at = max(ms, g.rearmTAT-(burst-1)*iv)
	g.rearmTAT = max(g.rearmTAT, max(at, now)) + iv
	return at, at > max(ms, now)
}
