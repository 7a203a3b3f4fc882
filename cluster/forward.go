package cluster

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/edgeshard/edgeshard/abi"
	"github.com/edgeshard/edgeshard/host"
	"github.com/edgeshard/edgeshard/internal/httpx"
	"github.com/edgeshard/edgeshard/storage"
)

// Forwarding between the hosts of a POP: the origin host sends the shard's
// request, encoded with abi's codec, to the owner's PeerPath on its main
// listener, over keep-alive connections; the owner runs it there and only
// there (host.LocalOnly: a forwarded request is never forwarded again) and
// answers the shard's response, or the error code host.ErrorStatus gives.
//
//	POST PeerPath?binding=B&shard=S
//	Authorization: Bearer <[cluster] secret>
//	X-Edgeshard-Hop: <origin node>             who forwarded it
//	X-Edgeshard-Deadline: <unix ms>            the original request's deadline
//	X-Edgeshard-Chain: <a>,<b>                 a shard_call's chain (host.CallChain),
//	                                           each "binding/shard" query-escaped
//	body: abi.AppendRequest
//	→ 200 body: abi.AppendResponse, or an error envelope with X-Edgeshard-Error: <code>
const (
	PeerPath       = "/_edgeshard/cluster/fetch"
	HopHeader      = "X-Edgeshard-Hop"
	DeadlineHeader = "X-Edgeshard-Deadline"
	ChainHeader    = "X-Edgeshard-Chain"
	ErrorHeader    = "X-Edgeshard-Error"
)

// forwardTimeout bounds a forward whose request has no deadline of its own.
const forwardTimeout = 30 * time.Second

// maxPeerBody bounds a forwarded request or response (the host's own
// limits are far below).
const maxPeerBody = 64 << 20

func newPeerClient() *http.Client {
	return &http.Client{Transport: &http.Transport{
		Proxy:               nil,
		DialContext:         (&net.Dialer{Timeout: 2 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		MaxIdleConns:        256,
		MaxIdleConnsPerHost: 64,
		IdleConnTimeout:     90 * time.Second,
	}}
}

// Forward implements host.Placement: the request goes to the owner, its
// answer comes back. A request that never reached the owner (it could not
// be dialled: it is down or not listening yet) or that the owner did not
// run because it does not own the shard matches host.ErrNotOwner: the
// host asks the placement again. One sent whose answer never came back
// (the connection broke or timed out) matches host.ErrOutcomeUnknown.
func (n *Node) Forward(ctx context.Context, owner string, id storage.ShardID, req *abi.Request) (*abi.Response, error) {
	t0 := time.Now()
	resp, err := n.forward(ctx, owner, id, req)
	n.m.forwardDur.Observe(time.Since(t0).Seconds())
	switch {
	case err == nil:
		n.m.forwards.WithLabelValues("ok").Inc()
	case errors.Is(err, host.ErrNotOwner):
		n.m.forwards.WithLabelValues("not_owner").Inc()
	default:
		n.m.forwards.WithLabelValues("error").Inc()
	}
	return resp, err
}

func (n *Node) forward(ctx context.Context, owner string, id storage.ShardID, req *abi.Request) (*abi.Response, error) {
	if _, ok := ctx.Deadline(); !ok {
		// A forward never waits forever on an owner that stopped answering
		// (paused, cut off): its lease lapses well before this.
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, forwardTimeout)
		defer cancel()
	}
	q := url.Values{"binding": {id.Namespace}, "shard": {id.Name}}
	hr, err := http.NewRequestWithContext(ctx, http.MethodPost, owner+PeerPath+"?"+q.Encode(), bytes.NewReader(abi.AppendRequest(nil, req)))
	if err != nil {
		return nil, fmt.Errorf("forward %s to %s: %w", id, owner, err)
	}
	hr.Header.Set("Authorization", "Bearer "+n.cfg.Secret)
	hr.Header.Set(HopHeader, n.cfg.NodeID)
	if d, ok := ctx.Deadline(); ok {
		hr.Header.Set(DeadlineHeader, strconv.FormatInt(d.UnixMilli(), 10))
	}
	if chain := host.CallChain(ctx); len(chain) > 0 {
		hr.Header.Set(ChainHeader, encodeChain(chain))
	}
	resp, err := n.peer.Do(hr)
	if err != nil {
		var oe *net.OpError
		if errors.As(err, &oe) && oe.Op == "dial" {
			return nil, fmt.Errorf("%w: forward %s to %s: %w", host.ErrNotOwner, id, owner, err)
		}
		// Sent, maybe run: the owner died or the connection broke.
		return nil, fmt.Errorf("%w: forward %s to %s: %w", host.ErrOutcomeUnknown, id, owner, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxPeerBody))
	if err != nil {
		return nil, fmt.Errorf("%w: forward %s to %s: read answer: %w", host.ErrOutcomeUnknown, id, owner, err)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, peerError(resp.Header.Get(ErrorHeader), resp.StatusCode, id, owner, body)
	}
	out, err := abi.DecodeResponse(body)
	if err != nil {
		return nil, fmt.Errorf("%w: forward %s to %s: bad answer: %w", host.ErrOutcomeUnknown, id, owner, err)
	}
	return out, nil
}

// peerErrors turn the owner's error codes back into the errors the host
// would have had running the shard itself (a shard moved or an owner
// shutting down: ask the placement again).
var peerErrors = map[string]error{
	"shard_moved":         host.ErrNotOwner,
	"shutting_down":       host.ErrNotOwner,
	"shard_unavailable":   host.ErrShardUnavailable,
	"shard_overloaded":    host.ErrOverloaded,
	"not_run":             host.ErrNotRun,
	"cancelled":           host.ErrNotRun,
	"shard_timeout":       host.ErrTimeout,
	"storage_full":        storage.ErrStorageFull,
	"storage_unavailable": storage.ErrStorageUnavailable,
	"shard_crashed":       host.ErrTrap,
	"outcome_unknown":     host.ErrOutcomeUnknown,
}

// peerError is the error of the owner's answer: its code's error
// (peerErrors), wrapped with what it said.
func peerError(code string, status int, id storage.ShardID, owner string, body []byte) error {
	msg := fmt.Sprintf("forwarded %s to %s: %d %s: %s", id, owner, status, code, bytes.TrimSpace(body))
	kind, ok := peerErrors[code]
	if !ok {
		return errors.New(msg)
	}
	return fmt.Errorf("%w: %s", kind, msg)
}

// encodeChain writes a call chain for ChainHeader.
func encodeChain(chain []string) string {
	parts := make([]string, len(chain))
	for i, s := range chain {
		parts[i] = url.QueryEscape(s)
	}
	return strings.Join(parts, ",")
}

// decodeChain reads ChainHeader: at most abi.MaxCallDepth names.
func decodeChain(v string) ([]string, error) {
	parts := strings.Split(v, ",")
	if len(parts) > abi.MaxCallDepth {
		return nil, fmt.Errorf("%s: %d shards, at most %d", ChainHeader, len(parts), abi.MaxCallDepth)
	}
	for i, p := range parts {
		s, err := url.QueryUnescape(p)
		if err != nil || s == "" {
			return nil, fmt.Errorf("%s: element %d is not a query-escaped shard name", ChainHeader, i+1)
		}
		parts[i] = s
	}
	return parts, nil
}

// ReceivePath is where a shard's owner ships its storage to the next
// owner in a planned move: POST ReceivePath?binding=B&shard=S, body the
// storage/snapshot stream → 200 once imported.
const ReceivePath = "/_edgeshard/cluster/receive"

// send ships a shard's snapshot stream to the host at addr.
func (n *Node) send(ctx context.Context, addr string, id storage.ShardID, r io.Reader) error {
	q := url.Values{"binding": {id.Namespace}, "shard": {id.Name}}
	hr, err := http.NewRequestWithContext(ctx, http.MethodPost, addr+ReceivePath+"?"+q.Encode(), r)
	if err != nil {
		return err
	}
	hr.Header.Set("Authorization", "Bearer "+n.cfg.Secret)
	hr.Header.Set(HopHeader, n.cfg.NodeID)
	resp, err := n.peer.Do(hr)
	if err != nil {
		return fmt.Errorf("ship %s to %s: %w", id, addr, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	switch {
	case resp.StatusCode == http.StatusOK:
		return nil
	case resp.Header.Get(ErrorHeader) == codeShardKept:
		return fmt.Errorf("%w: ship %s to %s: %s", host.ErrShardKept, id, addr, bytes.TrimSpace(b))
	}
	return fmt.Errorf("ship %s to %s: %d %s", id, addr, resp.StatusCode, bytes.TrimSpace(b))
}

// codeShardKept is the receiver's answer when it keeps a copy of its own
// (host.ErrShardKept).
const codeShardKept = "shard_kept"

// ReceiveHandler serves ReceivePath: a shard shipped here by its owner.
func (n *Node) ReceiveHandler(h *host.Host) http.Handler {
	return httpx.RequireBearer(n.cfg.Secret, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		ns, ok := h.Namespace(q.Get("binding"))
		if !ok {
			httpx.WriteError(w, http.StatusNotFound, "unknown_binding", fmt.Sprintf("%v %q", host.ErrUnknownBinding, q.Get("binding")))
			return
		}
		st, err := ns.ReceiveShard(r.Context(), q.Get("shard"), r.Body)
		if err != nil {
			code := "receive_failed"
			if errors.Is(err, host.ErrShardKept) {
				code = codeShardKept
			}
			w.Header().Set(ErrorHeader, code)
			httpx.WriteError(w, http.StatusConflict, code, err.Error())
			return
		}
		if ns.Shards() > 0 && n.ctx.Err() == nil {
			n.wg.Add(1)
			go n.holdReceived(storage.ShardID{Namespace: ns.Name(), Name: q.Get("shard")})
		}
		httpx.WriteJSON(w, http.StatusOK, map[string]any{"entries": st.Entries, "bytes": st.Bytes})
	}))
}

// holdReceived claims a sharded namespace's shard just shipped here as
// soon as its old owner lets it go: this host's copy is the shard's now,
// and holding its ownership, even with no actor, means a later move of
// the shard ships it on (claim.moveIdle) rather than strand it here. If
// the shard is owned elsewhere by then, or still held, the first event
// here claims it.
func (n *Node) holdReceived(id storage.ShardID) {
	defer n.wg.Done()
	ctx, cancel := context.WithTimeout(n.ctx, 2*n.cfg.ClaimWait)
	defer cancel()
	if _, err := n.Claim(ctx, id, false); err != nil {
		n.log.Debug().Err(err).Str("shard", id.String()).Msg("the shard received here is not claimed now")
	}
}

// PeerHandler serves PeerPath: requests the POP's other hosts forward to
// this one, run here only.
func (n *Node) PeerHandler(h *host.Host) http.Handler {
	inner := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		binding, shard := q.Get("binding"), q.Get("shard")
		ns, ok := h.Namespace(binding)
		if !ok {
			httpx.WriteError(w, http.StatusNotFound, "unknown_binding", fmt.Sprintf("%v %q", host.ErrUnknownBinding, binding))
			return
		}
		ctx := r.Context()
		if ms, err := strconv.ParseInt(r.Header.Get(DeadlineHeader), 10, 64); err == nil {
			var cancel context.CancelFunc
			ctx, cancel = context.WithDeadline(ctx, time.UnixMilli(ms))
			defer cancel()
		}
		body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxPeerBody))
		if err != nil {
			httpx.WriteError(w, http.StatusBadRequest, "bad_body", err.Error())
			return
		}
		req, err := abi.DecodeRequest(body)
		if err != nil {
			httpx.WriteError(w, http.StatusBadRequest, "bad_body", "not an encoded request: "+err.Error())
			return
		}
		if v := r.Header.Get(ChainHeader); v != "" {
			chain, err := decodeChain(v)
			if err != nil {
				httpx.WriteError(w, http.StatusBadRequest, "bad_chain", err.Error())
				return
			}
			ctx = host.WithCallChain(ctx, chain)
		}
		resp, err := ns.FetchShard(host.LocalOnly(ctx), shard, req)
		if err != nil {
			status, code := host.ErrorStatus(err)
			outcome := "error"
			if code == "shard_moved" {
				outcome = "not_owner"
			}
			n.m.served.WithLabelValues(outcome).Inc()
			w.Header().Set(ErrorHeader, code)
			httpx.WriteError(w, status, code, err.Error())
			return
		}
		n.m.served.WithLabelValues("ok").Inc()
		w.Header().Set("Content-Type", "application/octet-stream")
		w.Write(abi.AppendResponse(nil, resp))
	})
	return httpx.RequireBearer(n.cfg.Secret, inner)
}
