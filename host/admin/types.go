package admin

import (
	"sort"
	"time"

	"github.com/edgeshard/edgeshard/host"
)

// The JSON shapes of the admin API. They are exported so the CLI (and any
// Go client) decodes exactly what the server encodes.

// VersionInfo describes one loaded module version.
type VersionInfo struct {
	SHA256     string    `json:"sha256"`
	Size       int       `json:"size"`
	ABIVersion int       `json:"abi_version"`
	LoadedAt   time.Time `json:"loaded_at"`
	// Source is the module file path, "config" (bytes given in the
	// configuration) or "push" (uploaded through the admin API).
	Source  string   `json:"source"`
	Imports []string `json:"imports,omitempty"`
}

// ShardInfo describes one running shard (one that has an actor).
type ShardInfo struct {
	Shard       string `json:"shard"`
	QueueDepth  int    `json:"queue_depth"`
	Instance    string `json:"instance"` // "live" (an instance is loaded) or "idle"
	MemoryBytes uint64 `json:"memory_bytes"`
}

// BindingInfo describes one binding (namespace). Shards lists the running
// shards only in the single-binding answer.
type BindingInfo struct {
	Name string `json:"name"`
	// ShardCount is the configured shard count; 0 means one object per name.
	ShardCount int          `json:"shard_count"`
	Grants     []string     `json:"grants"`
	Module     VersionInfo  `json:"module"`
	Previous   *VersionInfo `json:"previous"` // kept for rollback; null when none
	// ActiveShards have an actor (running or queued events); LiveInstances
	// have a loaded wasm instance.
	ActiveShards  int `json:"active_shards"`
	LiveInstances int `json:"live_instances"`
	// QueuedEvents is the sum of the shards' queue depths, MaxQueueDepth the
	// deepest one.
	QueuedEvents  int         `json:"queued_events"`
	MaxQueueDepth int         `json:"max_queue_depth"`
	AlarmsPending int         `json:"alarms_pending"`
	Shards        []ShardInfo `json:"shards,omitempty"`
	// History lists the binding's recent swaps and rollbacks, newest first
	// (kept in memory: a restart starts a new one).
	History []SwapRecord `json:"history"`
}

// SwapRecord is one swap or rollback of a binding.
type SwapRecord struct {
	Time    time.Time `json:"time"`
	Action  string    `json:"action"`  // "swap" or "rollback"
	Outcome string    `json:"outcome"` // "swapped", "rolled_back", "refused", "abandoned"
	From    string    `json:"from"`    // sha256 serving before
	To      string    `json:"to"`      // sha256 asked for; "" when it never loaded
	Source  string    `json:"source"`
	Error   string    `json:"error,omitempty"`
}

// ShardRow is one active shard in a page of GET /admin/bindings/{name}/shards.
type ShardRow struct {
	ShardInfo
	LastEvent *time.Time `json:"last_event"` // start of its last fetch or alarm; null: none yet
	Alarm     *time.Time `json:"alarm"`      // null when none is scheduled
	Tracing   bool       `json:"tracing"`
}

// ShardPage is the answer of GET /admin/bindings/{name}/shards: one page of
// the binding's active shards, in host.CompareShards order.
type ShardPage struct {
	Binding string `json:"binding"`
	Prefix  string `json:"prefix"`
	After   string `json:"after"`
	Limit   int    `json:"limit"`
	// Active counts the binding's active shards, Matching those with the
	// prefix (all pages).
	Active   int        `json:"active"`
	Matching int        `json:"matching"`
	Shards   []ShardRow `json:"shards"`
	// More is true when shards follow; Next is the URL of the next page.
	More bool   `json:"more"`
	Next string `json:"next,omitempty"`
}

// ShardValue is the answer of GET /admin/bindings/{name}/shards/{id}/value:
// one whole value, base64.
type ShardValue struct {
	Binding     string `json:"binding"`
	Shard       string `json:"shard"`
	Key         string `json:"key"`
	KeyEncoding string `json:"key_encoding"` // "utf8" or "base64"
	Size        int    `json:"size"`
	Value       string `json:"value"` // base64
}

// LogField is one field of a log line.
type LogField struct {
	Name  string `json:"name"`
	Value string `json:"value"`
}

// LogLine is one line of a shard's log tap.
type LogLine struct {
	Seq     uint64     `json:"seq"`
	Time    time.Time  `json:"time"`
	Level   string     `json:"level"`
	Source  string     `json:"source"` // "guest" or "trace"
	Message string     `json:"message"`
	Fields  []LogField `json:"fields"`
}

// ShardLog is the answer of GET /admin/bindings/{name}/shards/{id}/log.
type ShardLog struct {
	Binding string    `json:"binding"`
	Shard   string    `json:"shard"`
	Tracing bool      `json:"tracing"`
	Lines   []LogLine `json:"lines"`
	// Last is the seq to pass as ?after= next time.
	Last uint64 `json:"last"`
}

// TraceState is the answer (and, for PUT, the body) of
// /admin/bindings/{name}/shards/{id}/trace.
type TraceState struct {
	Binding string `json:"binding,omitempty"`
	Shard   string `json:"shard,omitempty"`
	On      bool   `json:"on"`
}

// Series are one binding's charts: per-second rates over each sample
// interval ending at T (unix ms); P99 is in milliseconds, null when no
// request ran in the interval.
type Series struct {
	Binding   string     `json:"binding"`
	T         []int64    `json:"t"`
	RPS       []float64  `json:"rps"`
	P99       []*float64 `json:"p99_ms"`
	Flushes   []float64  `json:"flushes"`
	Fallbacks []float64  `json:"fallbacks"`
	Errors    []float64  `json:"errors"`
}

// SeriesList is the answer of GET /admin/series.
type SeriesList struct {
	IntervalMS int64    `json:"interval_ms"`
	WindowMS   int64    `json:"window_ms"`
	Bindings   []Series `json:"bindings"`
}

// BindingList is the answer of GET /admin/bindings.
type BindingList struct {
	Bindings []BindingInfo `json:"bindings"`
}

// SwapResult is the answer of a module push or a rollback.
type SwapResult struct {
	Binding  string       `json:"binding"`
	Changed  bool         `json:"changed"` // false when the pushed bytes were already serving
	Module   VersionInfo  `json:"module"`
	Previous *VersionInfo `json:"previous"`
	Duration string       `json:"duration"` // validate + compile + switch
}

// Entry is one storage entry of a shard listing. Key and value are shown as
// UTF-8 text when they are valid UTF-8 and base64 otherwise; values longer
// than the preview are truncated (Size is always the full length).
type Entry struct {
	Key           string `json:"key"`
	KeyEncoding   string `json:"key_encoding"` // "utf8" or "base64"
	Value         string `json:"value"`
	ValueEncoding string `json:"value_encoding"` // "utf8" or "base64"
	Size          int    `json:"size"`
	Truncated     bool   `json:"truncated"`
}

// ShardListing is the answer of GET /admin/bindings/{name}/shards/{id}.
type ShardListing struct {
	Binding     string     `json:"binding"`
	Shard       string     `json:"shard"`
	Instance    string     `json:"instance"` // "live" or "idle"
	QueueDepth  int        `json:"queue_depth"`
	MemoryBytes uint64     `json:"memory_bytes"`
	Alarm       *time.Time `json:"alarm"`      // null when no alarm is set
	LastEvent   *time.Time `json:"last_event"` // start of its last fetch or alarm; null: none since it became active
	Tracing     bool       `json:"tracing"`
	Prefix      string     `json:"prefix"`
	Limit       int        `json:"limit"`
	Entries     []Entry    `json:"entries"`
	// More is true when entries follow; Next is the URL of the next page.
	More bool   `json:"more"`
	Next string `json:"next,omitempty"`
}

// ReconcileResult is the answer of POST /admin/jobs/reconcile-counters.
type ReconcileResult = JobResult

// JobResult is the answer of a job: POST /admin/jobs/reconcile-counters
// and /admin/jobs/drain.
type JobResult struct {
	Job      string `json:"job"`
	Result   any    `json:"result"`
	Duration string `json:"duration"`
}

func versionInfo(v *host.Version) *VersionInfo {
	if v == nil {
		return nil
	}
	return &VersionInfo{
		SHA256:     v.SHA256(),
		Size:       v.Size(),
		ABIVersion: v.ABIVersion(),
		LoadedAt:   v.LoadedAt.UTC(),
		Source:     v.Source,
		Imports:    v.Imports(),
	}
}

func instanceState(live bool) string {
	if live {
		return "live"
	}
	return "idle"
}

// bindingInfo summarises ns; withShards adds the per-shard rows.
func bindingInfo(ns *host.Namespace, withShards bool) BindingInfo {
	b := BindingInfo{
		Name:          ns.Name(),
		ShardCount:    ns.Shards(),
		Grants:        ns.Grants(),
		Module:        *versionInfo(ns.Current()),
		Previous:      versionInfo(ns.Previous()),
		AlarmsPending: ns.AlarmsPending(),
		History:       []SwapRecord{},
	}
	stats := ns.Stats()
	if withShards {
		sort.Slice(stats, func(i, j int) bool { return host.CompareShards(stats[i].Shard, stats[j].Shard) < 0 })
	}
	for _, s := range stats {
		b.ActiveShards++
		if s.Live {
			b.LiveInstances++
		}
		b.QueuedEvents += s.QueueDepth
		b.MaxQueueDepth = max(b.MaxQueueDepth, s.QueueDepth)
		if withShards {
			b.Shards = append(b.Shards, ShardInfo{Shard: s.Shard, QueueDepth: s.QueueDepth, Instance: instanceState(s.Live), MemoryBytes: s.MemoryBytes})
		}
	}
	for _, r := range ns.SwapHistory() {
		b.History = append(b.History, SwapRecord(r))
	}
	return b
}

// shardRow renders a host.ShardSummary.
func shardRow(s host.ShardSummary) ShardRow {
	r := ShardRow{
		ShardInfo: ShardInfo{Shard: s.Shard, QueueDepth: s.QueueDepth, Instance: instanceState(s.Live), MemoryBytes: s.MemoryBytes},
		LastEvent: timePtr(s.LastEvent), Alarm: timePtr(s.Alarm), Tracing: s.Tracing,
	}
	return r
}

// timePtr is t in UTC, nil for the zero time.
func timePtr(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	t = t.UTC()
	return &t
}
