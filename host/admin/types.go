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
	Alarm       *time.Time `json:"alarm"` // null when no alarm is set
	Prefix      string     `json:"prefix"`
	Limit       int        `json:"limit"`
	Entries     []Entry    `json:"entries"`
	// More is true when entries follow; Next is the URL of the next page.
	More bool   `json:"more"`
	Next string `json:"next,omitempty"`
}

// ReconcileResult is the answer of POST /admin/jobs/reconcile-counters.
type ReconcileResult struct {
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
	}
	stats := ns.Stats()
	sort.Slice(stats, func(i, j int) bool { return shardLess(stats[i].Shard, stats[j].Shard) })
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
	return b
}

// shardLess orders numeric shard names numerically, others bytewise.
func shardLess(a, b string) bool {
	if len(a) != len(b) && isDigits(a) && isDigits(b) {
		return len(a) < len(b)
	}
	return a < b
}

func isDigits(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}
