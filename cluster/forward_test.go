package cluster

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/edgeshard/edgeshard/abi"
	"github.com/edgeshard/edgeshard/host"
	"github.com/edgeshard/edgeshard/internal/etcdtest"
	"github.com/edgeshard/edgeshard/storage"
)

// TestForwardOutcomeUnknown: a forward that never reached the owner (it
// cannot be dialled) is ErrNotOwner — the origin asks the placement again
// — while one the owner received and then lost (it died before answering)
// is ErrOutcomeUnknown: it may have run, and a caller with a fallback must
// not apply it again.
func TestForwardOutcomeUnknown(t *testing.T) {
	n := open(t, etcdtest.Prefix(t), "origin")
	id := storage.ShardID{Namespace: "COUNTER_SHARD", Name: "3"}
	req := &abi.Request{Method: "POST", Path: "/increment", Body: []byte("post_stats\tp\tviews\t1")}

	received := make(chan struct{}, 1)
	owner := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		received <- struct{}{}
		conn, _, err := w.(http.Hijacker).Hijack()
		if err == nil {
			conn.Close() // the owner dies with the request in hand
		}
	}))
	defer owner.Close()
	_, err := n.Forward(context.Background(), owner.URL, id, req)
	if !errors.Is(err, host.ErrOutcomeUnknown) || errors.Is(err, host.ErrNotOwner) {
		t.Fatalf("owner died mid-request: %v, want ErrOutcomeUnknown", err)
	}
	<-received
	if st, code := host.ErrorStatus(err); st != http.StatusBadGateway || code != "outcome_unknown" {
		t.Fatalf("ErrorStatus: %d %s", st, code)
	}

	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	down := "http://" + l.Addr().String()
	l.Close()
	if _, err := n.Forward(context.Background(), down, id, req); !errors.Is(err, host.ErrNotOwner) || errors.Is(err, host.ErrOutcomeUnknown) {
		t.Fatalf("owner not listening: %v, want ErrNotOwner", err)
	}
}
