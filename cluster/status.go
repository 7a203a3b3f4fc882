package cluster

import (
	"sort"
	"strings"
	"time"
)

// Status is the POP as this host sees it (GET /admin/cluster, edgeshard
// status).
type Status struct {
	Node     string         `json:"node"`
	Joined   bool           `json:"joined"`
	Leaving  bool           `json:"leaving"`
	Lease    int64          `json:"lease"`
	LeaseTTL string         `json:"lease_ttl"`
	Members  []MemberStatus `json:"members"`
	Owned    []ClaimStatus  `json:"owned"`  // the shards this host owns
	Moving   []ClaimStatus  `json:"moving"` // the shards moving off this host now
	Homeless []string       `json:"homes_of_missing_nodes,omitempty"`
	Homes    map[string]int `json:"homes"` // per-name objects per home node
}

// MemberStatus is one member and how many shards it owns.
type MemberStatus struct {
	Member
	Shards int `json:"shards"`
}

// ClaimStatus is one shard owned here.
type ClaimStatus struct {
	Shard string    `json:"shard"` // binding/shard
	Epoch int64     `json:"epoch"`
	Since time.Time `json:"since"`
}

// Status returns the POP as the node's mirror holds it.
func (n *Node) Status() Status {
	n.mu.Lock()
	defer n.mu.Unlock()
	st := Status{Node: n.cfg.NodeID, Leaving: n.leaving, LeaseTTL: n.cfg.LeaseTTL.String(), Homes: map[string]int{}}
	_, st.Joined = n.members[n.cfg.NodeID]
	if n.sess != nil {
		st.Lease = int64(n.sess.id)
	}
	perNode := map[string]int{}
	for _, node := range n.owners {
		perNode[node]++
	}
	for _, id := range n.liveMembers() {
		st.Members = append(st.Members, MemberStatus{Member: n.members[id], Shards: perNode[id]})
	}
	missing := map[string]bool{}
	for _, node := range n.homes {
		st.Homes[node]++
		if _, live := n.members[node]; !live {
			missing[node] = true
		}
	}
	for node := range missing {
		st.Homeless = append(st.Homeless, node)
	}
	sort.Strings(st.Homeless)
	for _, c := range n.claims {
		cs := ClaimStatus{Shard: c.id.String(), Epoch: c.epoch, Since: c.since}
		if c.moving.Load() {
			st.Moving = append(st.Moving, cs)
		} else {
			st.Owned = append(st.Owned, cs)
		}
	}
	byShard := func(s []ClaimStatus) {
		sort.Slice(s, func(i, j int) bool { return strings.Compare(s[i].Shard, s[j].Shard) < 0 })
	}
	byShard(st.Owned)
	byShard(st.Moving)
	return st
}
