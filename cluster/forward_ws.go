package cluster

import (
	"fmt"
	"net/http"
	"net/http/httputil"
	"net/url"

	"github.com/edgeshard/edgeshard/host"
	"github.com/edgeshard/edgeshard/internal/httpx"
)

// ForwardUpgrade implements host.UpgradeForwarder: a WebSocket upgrade
// for a shard another host owns is relayed to the owner's main listener,
// as it came (same path, headers and query; X-Edgeshard-Hop naming this
// node), and once the owner answers 101 the two connections are copied
// into each other until either side closes. The socket, its shard and its
// hibernation are the owner's; this host only holds the relay (two
// goroutines and two buffers while it is open). When the shard moves the
// owner closes the socket with 1012 and the client reconnects, to any
// host. An upgrade that is itself relayed is not relayed again (false:
// the host answers 421 shard_elsewhere), so hosts whose views of the
// placement differ for a moment cannot bounce it between them.
func (n *Node) ForwardUpgrade(w http.ResponseWriter, r *http.Request, owner string) bool {
	if r.Header.Get(HopHeader) != "" {
		return false
	}
	target, err := url.Parse(owner)
	if err != nil {
		return false
	}
	rp := &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(target)
			pr.SetXForwarded()
			pr.Out.Header.Set(HopHeader, n.cfg.NodeID)
		},
		Transport: n.peer.Transport,
		ErrorHandler: func(w http.ResponseWriter, _ *http.Request, err error) {
			n.m.forwards.WithLabelValues("upgrade_error").Inc()
			status, code := host.ErrorStatus(host.ErrNotOwner)
			w.Header().Set("Retry-After", "1")
			httpx.WriteError(w, status, code, fmt.Sprintf("relaying the WebSocket upgrade to the shard's owner %s failed: %v; reconnect", owner, err))
		},
	}
	n.m.forwards.WithLabelValues("upgrade").Inc()
	rp.ServeHTTP(w, r)
	return true
}

var _ host.UpgradeForwarder = (*Node)(nil)
