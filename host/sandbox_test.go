package host_test

import (
	"context"
	"io"
	"net/http"
	"testing"

	"github.com/edgeshard/edgeshard/abi"
	"github.com/edgeshard/edgeshard/host"
	"github.com/edgeshard/edgeshard/internal/hostinternal"
)

// TestGuestHasNoFilesystem: a guest's reads, listings and writes of files
// all fail, because the host mounts no filesystem.
func TestGuestHasNoFilesystem(t *testing.T) {
	f := startMemory(t, onlyPlugin(t, "FS", "host/testdata/plugins/fsprobe"))
	resp, err := f.h.Fetch(context.Background(), "FS", "x", &abi.Request{Method: "GET", Path: "/"})
	if err != nil {
		t.Fatal(err)
	}
	if resp.Status != 403 {
		t.Fatalf("guest reached the filesystem: %d %s", resp.Status, resp.Body)
	}
}

type framingShard struct{}

func (framingShard) Fetch(context.Context, hostinternal.Env, *abi.Request) (*abi.Response, error) {
	return &abi.Response{Status: 200, Header: []abi.Header{
		{Name: "Transfer-Encoding", Value: "chunked"},
		{Name: "Connection", Value: "close"},
		{Name: "Content-Length", Value: "999"},
		{Name: "X-Evil", Value: "a\x00b"},
		{Name: "X-Fine", Value: "ok"},
	}, Body: []byte("hello")}, nil
}

func (framingShard) Alarm(context.Context, hostinternal.Env, int) (bool, error) { return true, nil }

// TestShardCannotSetFramingHeaders: hop-by-hop headers, Content-Length and
// values with NUL from a shard never reach the client.
func TestShardCannotSetFramingHeaders(t *testing.T) {
	f := startNative(t, map[string]hostinternal.NativeShard{"F": framingShard{}}, func(c *host.Config) {
		c.Bindings = []host.Binding{{Name: "F", Shards: 1}}
	})
	srv := f.serve(t)
	resp, err := http.Get(srv.URL + "/do/F/k/")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if string(body) != "hello" || resp.ContentLength != 5 || len(resp.TransferEncoding) != 0 {
		t.Fatalf("framing leaked: body %q, length %d, transfer-encoding %v", body, resp.ContentLength, resp.TransferEncoding)
	}
	if resp.Header.Get("X-Evil") != "" || resp.Header.Get("X-Fine") != "ok" || resp.Close {
		t.Fatalf("headers: %v (close=%v)", resp.Header, resp.Close)
	}
}
