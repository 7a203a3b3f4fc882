package admin

import (
	"context"
	"errors"
	"net/http"
	"time"

	"github.com/edgeshard/edgeshard/internal/httpx"
	"github.com/gorilla/mux"
)

// ClusterOps are the operator's handles on a host that is one of several
// in a POP (Options.Cluster); nil on a host alone.
type ClusterOps struct {
	// Status returns the POP as the host sees it (JSON-encodable).
	Status func() any
	// Evict forgets a node that is gone for good: its per-name objects
	// start afresh elsewhere. It returns how many objects it freed; an
	// error matching ErrLiveNode for a node that is still a member.
	Evict func(ctx context.Context, node string) (int, error)
	// Leave takes the host out of the POP, moving its shards off it,
	// waiting up to wait, and returns a JSON-encodable report.
	Leave func(ctx context.Context, wait time.Duration) (any, error)
}

// ErrLiveNode is matched by ClusterOps.Evict's error for a live member:
// answered 409.
var ErrLiveNode = errors.New("node is a live member")

// clusterRoutes:
//
//	GET  /admin/cluster               members, shards each owns, this host's shards and moves
//	POST /admin/cluster/evict/{node}  forget a dead node's per-name objects (409 while it is live)
//	POST /admin/cluster/leave         move every shard off this host (?wait=, default 30s)
func (s *Server) clusterRoutes(r *mux.Router) {
	r.HandleFunc("/admin/cluster", s.clusterStatus).Methods(http.MethodGet)
	r.HandleFunc("/admin/cluster/evict/{node}", bearerOnly(s.clusterEvict)).Methods(http.MethodPost)
	r.HandleFunc("/admin/cluster/leave", bearerOnly(s.clusterLeave)).Methods(http.MethodPost)
}

func (s *Server) clusterOff(w http.ResponseWriter) bool {
	if s.opts.Cluster == nil {
		httpx.WriteError(w, http.StatusNotFound, "cluster_off", "this host runs alone (no [cluster] table in its config)")
		return true
	}
	return false
}

func (s *Server) clusterStatus(w http.ResponseWriter, r *http.Request) {
	if s.clusterOff(w) {
		return
	}
	httpx.WriteJSON(w, http.StatusOK, s.opts.Cluster.Status())
}

func (s *Server) clusterEvict(w http.ResponseWriter, r *http.Request) {
	if s.clusterOff(w) {
		return
	}
	node := mux.Vars(r)["node"]
	n, err := s.opts.Cluster.Evict(r.Context(), node)
	switch {
	case errors.Is(err, ErrLiveNode):
		httpx.WriteError(w, http.StatusConflict, "node_live", err.Error())
		return
	case err != nil:
		httpx.WriteError(w, http.StatusInternalServerError, "evict_failed", err.Error())
		return
	}
	s.log.Warn().Str("node", node).Int("objects", n).Str("remote", r.RemoteAddr).Msg("node evicted from the POP")
	httpx.WriteJSON(w, http.StatusOK, map[string]any{"node": node, "objects_freed": n})
}

func (s *Server) clusterLeave(w http.ResponseWriter, r *http.Request) {
	if s.clusterOff(w) {
		return
	}
	wait := 30 * time.Second
	if v := r.URL.Query().Get("wait"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d <= 0 || d > maxDrainWait {
			httpx.WriteError(w, http.StatusBadRequest, "bad_wait", "wait must be a duration from 1s to "+maxDrainWait.String())
			return
		}
		wait = d
	}
	t0 := time.Now()
	res, err := s.opts.Cluster.Leave(r.Context(), wait)
	if err != nil {
		httpx.WriteError(w, http.StatusInternalServerError, "leave_incomplete", err.Error())
		return
	}
	s.log.Info().Dur("duration_ms", time.Since(t0)).Str("remote", r.RemoteAddr).Msg("left the POP")
	httpx.WriteJSON(w, http.StatusOK, JobResult{Job: "leave", Result: res, Duration: time.Since(t0).String()})
}
