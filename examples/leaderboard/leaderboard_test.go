//go:build !wasip1

package main_test

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/edgeshard/edgeshard/abi"
	"github.com/edgeshard/edgeshard/conformance"
	"github.com/edgeshard/edgeshard/host"
	"github.com/edgeshard/edgeshard/host/clock"
	"github.com/edgeshard/edgeshard/internal/harness"
	"github.com/edgeshard/edgeshard/internal/pgtest"
	"github.com/edgeshard/edgeshard/internal/testutil"
)

// TestConformance runs the example's suite on the real host's storage
// (Badger and a SQLite file), on the in-memory backend, and with its SQL
// on PostgreSQL: the same module.
func TestConformance(t *testing.T) {
	wasm := testutil.Plugin(t, "examples/leaderboard")
	conformance.RunEachBackend(t, wasm, "conformance.json", conformance.Options{CacheDir: testutil.CacheDir()})
	t.Run("postgres", func(t *testing.T) {
		conformance.Run(t, wasm, "conformance.json", conformance.Options{CacheDir: testutil.CacheDir(), SQLURL: pgtest.DB(t)})
	})
}

type topReply struct {
	Board   string `json:"board"`
	Players int    `json:"players"`
	Top     []struct {
		Rank   int    `json:"rank"`
		Player string `json:"player"`
		Score  int64  `json:"score"`
	} `json:"top"`
}

type modelEntry struct {
	player string
	score  int64
	at     int64
}

// TestTopMatchesModel sends random scores to a board on a Badger-backed
// host and checks GET /top and GET /rank against a model of the rules
// (best score per player; ties go to whoever reached the score first),
// then again after a restart of the host.
func TestTopMatchesModel(t *testing.T) {
	wasm := testutil.Plugin(t, "examples/leaderboard")
	dir := t.TempDir()
	vc := clock.NewVirtual(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	h := startHost(t, wasm, dir, vc)

	rng := rand.New(rand.NewPCG(1, 2))
	best := map[string]modelEntry{}
	for i := range 300 {
		p := fmt.Sprintf("p%02d", rng.IntN(40))
		s := int64(rng.IntN(50)) // a small range makes many ties
		vc.Advance(time.Millisecond)
		body := fmt.Sprintf(`{"player":%q,"score":%d}`, p, s)
		resp := fetch(t, h, "POST", "/score", body)
		if resp.Status != 200 {
			t.Fatalf("score %d: status %d: %s", i, resp.Status, resp.Body)
		}
		if b, ok := best[p]; !ok || s > b.score {
			best[p] = modelEntry{player: p, score: s, at: vc.Now().UnixMilli()}
		}
	}
	want := make([]modelEntry, 0, len(best))
	for _, e := range best {
		want = append(want, e)
	}
	slices.SortFunc(want, func(a, b modelEntry) int {
		return cmp.Or(cmp.Compare(b.score, a.score), cmp.Compare(a.at, b.at), cmp.Compare(a.player, b.player))
	})

	check := func(h *host.Host) {
		t.Helper()
		var got topReply
		resp := fetch(t, h, "GET", "/top?k=100", "")
		if err := json.Unmarshal(resp.Body, &got); err != nil {
			t.Fatalf("GET /top: %v: %s", err, resp.Body)
		}
		if got.Players != len(want) || len(got.Top) != len(want) {
			t.Fatalf("GET /top: %d players, %d entries; want %d", got.Players, len(got.Top), len(want))
		}
		for i, e := range want {
			g := got.Top[i]
			if g.Rank != i+1 || g.Player != e.player || g.Score != e.score {
				t.Fatalf("rank %d: got %+v, want %s with %d", i+1, g, e.player, e.score)
			}
		}
		for i, e := range want[:10] {
			var r struct {
				Rank  int   `json:"rank"`
				Score int64 `json:"score"`
			}
			resp := fetch(t, h, "GET", "/rank?player="+e.player, "")
			if err := json.Unmarshal(resp.Body, &r); err != nil || r.Rank != i+1 || r.Score != e.score {
				t.Fatalf("GET /rank?player=%s: %s, want rank %d score %d", e.player, resp.Body, i+1, e.score)
			}
		}
	}
	check(h)
	if err := h.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	check(startHost(t, wasm, dir, vc))
}

// startHost starts a host on dir (testutil.Host), the example as
// LEADERBOARD with the SQL database dir/d1.db.
func startHost(t *testing.T, wasm, dir string, c clock.Clock) *host.Host {
	t.Helper()
	return testutil.Host(t, harness.Dir(dir), harness.Clock(c), harness.SQL(harness.Database{}),
		harness.Bindings(host.Binding{Name: "LEADERBOARD", Module: wasm, SQL: "DB"})).Host
}

func fetch(t *testing.T, h *host.Host, method, path, body string) *abi.Response {
	t.Helper()
	resp, err := h.Fetch(context.Background(), "LEADERBOARD", "weekly", &abi.Request{Method: method, Path: path, Body: []byte(body)})
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	return resp
}
