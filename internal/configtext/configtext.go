// Package configtext writes tables of edgeshard.toml (host/config) for the
// programs and tests that start a real server from config text — the crash
// test, the benchmark driver, process and server tests: one definition of
// how a binding, a database, a dataset and the edge API's pipelines are
// declared. Each function returns whole tables, starting on a new line.
package configtext

import (
	"fmt"
	"strings"
)

// Binding declares the durable-object binding name served by module over
// shards shards (0: one object per name), granted the SQL database sql and
// the analytics dataset analytics where they are not "".
func Binding(name, module string, shards int, sql, analytics string) string {
	s := fmt.Sprintf("\n[[durable_objects.bindings]]\nname = %q\nmodule = %q\nshards = %d\n", name, module, shards)
	if sql != "" {
		s += fmt.Sprintf("sql = %q\n", sql)
	}
	if analytics != "" {
		s += fmt.Sprintf("analytics = %q\n", analytics)
	}
	return s
}

// Pipelines declares the edge API's buffering shards, shards of each on the
// database DB: RUNTIME_EVENT_SHARD (module events) writing to the dataset
// AE, runtime_events at analyticsURL, and COUNTER_SHARD (module counters).
func Pipelines(events, counters string, shards int, analyticsURL string) string {
	return Binding("RUNTIME_EVENT_SHARD", events, shards, "DB", "AE") +
		Binding("COUNTER_SHARD", counters, shards, "DB", "") +
		Analytics("AE", "runtime_events", analyticsURL)
}

// D1 declares the SQL database binding at url; more are further settings
// of it, as `key = value` lines (max_conns = 8).
func D1(binding, url string, more ...string) string {
	s := fmt.Sprintf("\n[[d1_databases]]\nbinding = %q\nurl = %q\n", binding, url)
	for _, m := range more {
		s += m + "\n"
	}
	return s
}

// Analytics declares the analytics dataset under binding, stored at url.
func Analytics(binding, dataset, url string) string {
	return fmt.Sprintf("\n[[analytics_engine_datasets]]\nbinding = %q\ndataset = %q\nurl = %q\n", binding, dataset, url)
}

// Vars is a [vars] table of name, value pairs.
func Vars(kv ...string) string {
	var b strings.Builder
	b.WriteString("\n[vars]\n")
	for i := 0; i+1 < len(kv); i += 2 {
		fmt.Fprintf(&b, "%s = %q\n", kv[i], kv[i+1])
	}
	return b.String()
}

// Cluster is a [cluster] table: the host is one of a POP's, on the etcd
// at endpoint under prefix, reached by the others at advertise, its lease
// leaseTTL ("2s"), forwarding with secret.
func Cluster(endpoint, advertise, leaseTTL, prefix, secret string) string {
	return fmt.Sprintf("\n[cluster]\netcd = [%q]\nadvertise = %q\nlease_ttl = %q\nprefix = %q\nsecret = %q\n",
		endpoint, advertise, leaseTTL, prefix, secret)
}
