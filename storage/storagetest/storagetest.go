// Package storagetest is the contract suite of package storage: the cases
// every storage.Backend passes, on its own (RunBackend) and under a
// storage.Engine that gives shards their Durable Objects semantics over it
// (RunEngine). storage runs it for its in-memory backend and for Badger,
// on disk and in memory; every later backend runs the same suite.
//
// A new backend, say shard storage kept in PostgreSQL, runs it from a test
// of its own package:
//
//	func TestContract(t *testing.T) {
//		// A new, empty store for each case; the suite closes it.
//		open := func(t *testing.T) storage.Backend { return openPG(t, newSchema(t)) }
//		// The same store again after Close: durability cases.
//		reopen := storagetest.WithReopen(func(t *testing.T) storagetest.Opener {
//			schema := newSchema(t)
//			return func(t *testing.T) storage.Backend { return openPG(t, schema) }
//		})
//		storagetest.Run(t, open, reopen)
//	}
//
// The backend must behave as storage.Backend documents, including what
// storage's own backends check for the Engine: Apply refuses a group with a
// key over abi.MaxKeySize bytes (storage.ErrKeyTooLarge), a value over
// abi.MaxValueSize bytes (storage.ErrValueTooLarge) or a negative alarm
// (storage.ErrInvalid) without applying any of it; List refuses both Start
// and StartAfter (storage.ErrInvalid); Close is idempotent and every later
// call returns storage.ErrClosed. Batches hold any number of writes:
// abi.MaxMultiKeys bounds one multi-key call of a shard, which the Shard
// checks, not an event or a batch.
//
// The cases run one after another, each on a store of its own. They reach
// the in-flight states by holding Apply at a gate, not by racing the
// backend, so a slow backend makes them slower, not wrong, as long as one
// Apply of a small group takes well under a second (UnconfirmedLinger
// checks that a confirmed commit does not wait out a 2 s linger). The
// suite stops the goroutines it starts before each case ends, so callers
// may check for leaks (goleak) around it.
package storagetest

import (
	"testing"

	"github.com/edgeshard/edgeshard/storage"
)

// An Opener opens a Backend for one test case: a new, empty store each time
// it is called. It may fail t. The suite closes every Backend it opens,
// directly or through Engine.Close.
type Opener func(t *testing.T) storage.Backend

// An Option adjusts a run of the suite.
type Option func(*config)

// WithReopen declares the backend durable across Close. store makes a new,
// empty store for one test case and returns its Opener: each call opens that
// same store and sees everything the Backends it opened before made durable
// (the suite closes each before it opens the next). With it the suite also
// checks that data, deletions, DeleteAll and alarms survive a reopen;
// without it those cases and checks are skipped.
func WithReopen(store func(t *testing.T) Opener) Option {
	return func(c *config) { c.store = store }
}

type config struct {
	open  Opener
	store func(t *testing.T) Opener // nil: the backend cannot be reopened
}

func newConfig(open Opener, opts []Option) *config {
	c := &config{open: open}
	for _, o := range opts {
		o(c)
	}
	return c
}

// newStore returns an Opener of one new store, and whether it reopens the
// same store (otherwise every call opens a new, empty one).
func (c *config) newStore(t *testing.T) (Opener, bool) {
	if c.store == nil {
		return c.open, false
	}
	return c.store(t), true
}

// testCase is one named case of the suite.
type testCase struct {
	name string
	run  func(t *testing.T, c *config)
}

func runCases(t *testing.T, c *config, cases []testCase) {
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) { tc.run(t, c) })
	}
}

// Run runs the whole contract: RunBackend as subtest "Backend", then
// RunEngine as subtest "Engine".
func Run(t *testing.T, open Opener, opts ...Option) {
	t.Run("Backend", func(t *testing.T) { RunBackend(t, open, opts...) })
	t.Run("Engine", func(t *testing.T) { RunEngine(t, open, opts...) })
}

// RunBackend runs the Backend contract, one subtest per case, calling the
// Backend's methods directly: Apply, Get, List (every option), GetAlarm,
// Alarms and Close, with the limits, atomicity, ordering, ownership and
// concurrency storage.Backend promises.
func RunBackend(t *testing.T, open Opener, opts ...Option) {
	runCases(t, newConfig(open, opts), backendCases)
}

// RunEngine runs the Engine contract, one subtest per case: a
// storage.Engine over the Backend, with Shard handles reading and writing
// through the current event, the overlay of commits in flight and the
// durable state; group commit, the output gate, failures and Reset, alarms,
// DeleteAll, the Shard's limits, Close and reopening. A wrapper around the
// Backend holds, delays or fails Apply calls to reach the in-flight states.
func RunEngine(t *testing.T, open Opener, opts ...Option) {
	runCases(t, newConfig(open, opts), engineCases)
}
