package host_test

import (
	"context"
	"encoding/json"
	"errors"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/edgeshard/edgeshard/abi"
	"github.com/edgeshard/edgeshard/host"
	"github.com/edgeshard/edgeshard/internal/testutil"
	"github.com/edgeshard/edgeshard/storage"
)

// countIn returns the counter of name in binding.
func (f *fixture) countIn(t *testing.T, binding, name string) int {
	t.Helper()
	resp, err := f.h.Fetch(context.Background(), binding, name, &abi.Request{Method: "GET", Path: "/"})
	if err != nil {
		t.Fatalf("GET %s/%s: %v", binding, name, err)
	}
	var r testutil.CounterReply
	if err := json.Unmarshal(resp.Body, &r); err != nil {
		t.Fatalf("decode %q: %v", resp.Body, err)
	}
	return r.Count
}

// TestMigrationRenameKeepsData: after a [[migrations]] rename the new
// binding name answers the old one's counts and keeps its alarm; the
// migration is logged, recorded, and not run again at the next start; a
// rename whose old name is still configured is refused at start.
// renamedConfig is cfg with its first binding alone, renamed to name by a
// migration tagged v2.
func renamedConfig(cfg host.Config, name string) host.Config {
	from := cfg.Bindings[0].Name
	cfg.Bindings = []host.Binding{cfg.Bindings[0]}
	cfg.Bindings[0].Name = name
	cfg.Migrations = []host.Migration{{Tag: "v2", Renamed: []host.BindingRename{{From: from, To: name}}}}
	return cfg
}

func TestMigrationRenameKeepsData(t *testing.T) {
	cfg := counterConfig(t, nil)
	f := start(t, cfg)
	for i := 0; i < 3; i++ {
		f.call(t, "a", "POST", "/increment")
	}
	f.call(t, "b", "POST", "/increment")
	if _, err := f.call(t, "a", "POST", "/reset-after?ms=3600000"); err != nil {
		t.Fatal(err)
	}
	ns, _ := f.h.Namespace("COUNTER")
	alarm, _ := ns.AlarmAt("a")
	f.h.Close(context.Background())

	renamed := renamedConfig(cfg, "COUNTERS")
	f2 := start(t, renamed)
	if a, b := f2.countIn(t, "COUNTERS", "a"), f2.countIn(t, "COUNTERS", "b"); a != 3 || b != 1 {
		t.Fatalf("after the rename a=%d b=%d; want 3 and 1", a, b)
	}
	ns2, _ := f2.h.Namespace("COUNTERS")
	if at, ok := ns2.AlarmAt("a"); !ok || !at.Equal(alarm) {
		t.Fatalf("alarm after the rename %v %v; want %v", at, ok, alarm)
	}
	logs := f2.logs.String()
	if !strings.Contains(logs, "binding renamed") || !strings.Contains(logs, `"migration":"v2"`) {
		t.Fatalf("no migration log line:\n%s", logs)
	}
	recs, err := f2.h.AppliedMigrations()
	if err != nil || len(recs) != 1 || recs[0].Tag != "v2" || recs[0].Moved != 2 {
		t.Fatalf("records %+v %v; want v2 having moved 2 shards", recs, err)
	}
	f2.h.Close(context.Background())

	f3 := start(t, renamed)
	if strings.Contains(f3.logs.String(), "migration applied") {
		t.Fatal("the migration ran again at the next start")
	}
	if a := f3.countIn(t, "COUNTERS", "a"); a != 3 {
		t.Fatalf("a after the second start %d; want 3", a)
	}
	f3.h.Close(context.Background())

	again := renamed
	again.Migrations = append(again.Migrations, host.Migration{Tag: "v3", Renamed: []host.BindingRename{{From: "COUNTERS", To: "X"}}})
	_, err = host.New(context.Background(), again)
	if !errors.Is(err, host.ErrMigration) || !strings.Contains(err.Error(), "still configured") {
		t.Fatalf("rename of a configured binding: %v; want ErrMigration, still configured", err)
	}
}

// TestMigrationDeleteRemovesData: a deleted binding's shards, entries and
// alarm, are gone: configured again later it starts from nothing. A
// migration deleting a configured binding is refused.
func TestMigrationDeleteRemovesData(t *testing.T) {
	cfg := counterConfig(t, nil)
	keep := cfg.Bindings[0]
	keep.Name = "KEEP"
	cfg.Bindings = append(cfg.Bindings, keep)
	f := start(t, cfg)
	f.call(t, "a", "POST", "/increment")
	if _, err := f.call(t, "a", "POST", "/reset-after?ms=3600000"); err != nil {
		t.Fatal(err)
	}
	if _, err := f.h.Fetch(context.Background(), "KEEP", "a", &abi.Request{Method: "POST", Path: "/increment"}); err != nil {
		t.Fatal(err)
	}
	f.h.Close(context.Background())

	refused := cfg
	refused.Migrations = []host.Migration{{Tag: "drop", Deleted: []string{"COUNTER"}}}
	if _, err := host.New(context.Background(), refused); !errors.Is(err, host.ErrMigration) || !strings.Contains(err.Error(), "still configured") {
		t.Fatalf("delete of a configured binding: %v", err)
	}

	dropped := refused
	dropped.Bindings = []host.Binding{keep}
	f2 := start(t, dropped)
	if !strings.Contains(f2.logs.String(), "binding deleted") {
		t.Fatalf("no log line for the deletion:\n%s", f2.logs.String())
	}
	if got := f2.countIn(t, "KEEP", "a"); got != 1 {
		t.Fatalf("KEEP/a = %d; the deletion touched another binding", got)
	}
	f2.h.Close(context.Background())

	back := dropped
	back.Bindings = cfg.Bindings // COUNTER configured again, the migration applied already
	f3 := start(t, back)
	if got := f3.count(t, "a"); got != 0 {
		t.Fatalf("COUNTER/a after its deletion = %d; want 0", got)
	}
	ns, _ := f3.h.Namespace("COUNTER")
	if _, ok := ns.AlarmAt("a"); ok {
		t.Fatal("the deleted binding's alarm survived")
	}
}

// TestMigrationRefusesMalformed: tags and names are checked before
// anything runs.
func TestMigrationRefusesMalformed(t *testing.T) {
	cfg := counterConfig(t, nil)
	for _, ms := range [][]host.Migration{
		{{Tag: ""}},
		{{Tag: "a"}, {Tag: "a"}},
		{{Tag: "a", Renamed: []host.BindingRename{{From: "X", To: "Y"}}, Deleted: []string{"Y"}}},
	} {
		c := cfg
		c.Migrations = ms
		if _, err := host.New(context.Background(), c); !errors.Is(err, host.ErrMigration) {
			t.Fatalf("%+v: %v; want ErrMigration", ms, err)
		}
	}
}

// failingApply fails every Apply after the first n, as a crash mid-way
// through a migration would stop it.
type failingApply struct {
	storage.Backend
	left atomic.Int32
}

func (f *failingApply) Apply(b []*storage.Batch) error {
	if f.left.Add(-1) < 0 {
		return errors.New("injected: the process died here")
	}
	return f.Backend.Apply(b)
}

func (f *failingApply) View(fn func(storage.View) error) error {
	return f.Backend.(storage.Viewer).View(fn)
}

// TestMigrationResumesAfterInterruption: a rename stopped after part of
// its shards moved (and one copied but not yet deleted from the old name)
// finishes at the next start — COUNTERS holding data does not stop it —
// and every counter is whole, once, under the new name.
func TestMigrationResumesAfterInterruption(t *testing.T) {
	cfg := counterConfig(t, nil)
	f := start(t, cfg)
	names := []string{"a", "b", "c", "d", "e"}
	for i, n := range names {
		for j := 0; j <= i; j++ {
			f.call(t, n, "POST", "/increment")
		}
	}
	f.h.Close(context.Background())

	renamed := renamedConfig(cfg, "COUNTERS")

	b, err := storage.OpenBadger(storage.BadgerOptions{Dir: filepath.Join(cfg.DataDir, "shards")})
	if err != nil {
		t.Fatal(err)
	}
	crashing := &failingApply{Backend: b}
	// The start mark, two shards moved (clear, copy, delete), the third
	// cleared and copied: it stops before the third leaves COUNTER, which
	// then holds it whole under both names.
	crashing.left.Store(1 + 3*2 + 2)
	interrupted := renamed
	interrupted.Storage = crashing
	if _, err := host.New(context.Background(), interrupted); err == nil || !strings.Contains(err.Error(), "injected") {
		t.Fatalf("interrupted migration: %v", err)
	}

	f2 := start(t, renamed)
	for i, n := range names {
		if got := f2.countIn(t, "COUNTERS", n); got != i+1 {
			t.Fatalf("COUNTERS/%s after the resumed migration = %d; want %d", n, got, i+1)
		}
	}
	recs, err := f2.h.AppliedMigrations()
	if err != nil || len(recs) != 1 || recs[0].Moved != 3 {
		// the first run moved 2 shards, the resumed run the other 3
		t.Fatalf("records %+v %v; want v2 recorded by the resumed run (3 shards)", recs, err)
	}
}
