// Package ownerlog reads the shard ownership intervals the hosts of a POP
// log (cluster: "shard ownership claimed", "released", "lost", each with
// the shard, its epoch, claimed_ns and, when it ends, until_ns) and checks
// the cluster's promise: no shard is ever owned by two hosts at once, and
// every new owner has a larger epoch. The cluster process tests and the
// crash test's cluster mode both check their hosts' logs with it.
package ownerlog

import (
	"encoding/json"
	"fmt"
	"sort"
	"strings"
	"time"
)

// Interval is one host's ownership of one shard.
type Interval struct {
	Node        string
	Shard       string // binding/shard; binding/shard@node for a leftover flush
	Epoch       int64
	From, Until int64 // unix ns
	Open        bool  // never logged as ended: Until is the end of the log
}

func (iv Interval) String() string {
	end := time.Unix(0, iv.Until).UTC().Format("15:04:05.000000")
	if iv.Open {
		end += " (end of its log)"
	}
	return fmt.Sprintf("%s epoch %d on %s from %s to %s", iv.Shard, iv.Epoch, iv.Node,
		time.Unix(0, iv.From).UTC().Format("15:04:05.000000"), end)
}

// line is what Parse reads of a log line.
type line struct {
	Node      string `json:"node"`
	Shard     string `json:"shard"`
	Epoch     int64  `json:"epoch"`
	ClaimedNS int64  `json:"claimed_ns"`
	UntilNS   int64  `json:"until_ns"`
	Message   string `json:"message"`
}

// Parse returns the ownership intervals in the log text of one run of a
// host (JSON lines; others are skipped). An interval the run never ended
// (it was killed, or is still running) ends at end. node names the host
// where a line does not.
func Parse(node, text string, end time.Time) []Interval {
	var out []Interval
	open := map[string]int{} // shard and epoch → index in out
	for _, s := range strings.Split(text, "\n") {
		if !strings.Contains(s, `"shard ownership `) {
			continue
		}
		var l line
		if json.Unmarshal([]byte(s), &l) != nil || l.Shard == "" || l.ClaimedNS == 0 {
			continue
		}
		if l.Node == "" {
			l.Node = node
		}
		k := fmt.Sprintf("%s\x00%d", l.Shard, l.Epoch)
		switch l.Message {
		case "shard ownership claimed":
			open[k] = len(out)
			out = append(out, Interval{Node: l.Node, Shard: l.Shard, Epoch: l.Epoch, From: l.ClaimedNS, Until: end.UnixNano(), Open: true})
		case "shard ownership released", "shard ownership lost":
			if i, ok := open[k]; ok {
				out[i].Until, out[i].Open = l.UntilNS, false
				delete(open, k)
				continue
			}
			// A claim this log does not show (a leftover flush's, logged
			// differently): the line carries the whole interval.
			out = append(out, Interval{Node: l.Node, Shard: l.Shard, Epoch: l.Epoch, From: l.ClaimedNS, Until: l.UntilNS})
		}
	}
	return out
}

// Check returns, for each shard, what breaks the promise: an interval that
// starts before an earlier one (of any host) ended, or whose epoch is not
// larger than the one before it.
func Check(ivs []Interval) []string {
	byShard := map[string][]Interval{}
	for _, iv := range ivs {
		byShard[iv.Shard] = append(byShard[iv.Shard], iv)
	}
	shards := make([]string, 0, len(byShard))
	for s := range byShard {
		shards = append(shards, s)
	}
	sort.Strings(shards)
	var bad []string
	for _, s := range shards {
		iv := byShard[s]
		sort.Slice(iv, func(i, j int) bool { return iv[i].From < iv[j].From })
		last := 0 // the interval that ends last so far
		for i := 1; i < len(iv); i++ {
			if iv[i].From < iv[last].Until {
				bad = append(bad, fmt.Sprintf("overlap: %s starts before %s ends", iv[i], iv[last]))
			}
			if iv[i].Epoch <= iv[i-1].Epoch {
				bad = append(bad, fmt.Sprintf("epoch not larger: %s after %s", iv[i], iv[i-1]))
			}
			if iv[i].Until > iv[last].Until {
				last = i
			}
		}
	}
	return bad
}

// Of returns the intervals of one shard, in order of their start.
func Of(ivs []Interval, shard string) []Interval {
	var out []Interval
	for _, iv := range ivs {
		if iv.Shard == shard {
			out = append(out, iv)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].From < out[j].From })
	return out
}
