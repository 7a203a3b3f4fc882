package storage_test

import (
	"errors"
	"testing"

	"github.com/edgeshard/edgeshard/storage"
	"github.com/edgeshard/edgeshard/storage/storagetest"
)

// TestContract runs the storagetest suite over every Backend of this
// package, directly and under an Engine: the in-memory backend, Badger on
// disk (reopened for the durability cases) and Badger in memory.
func TestContract(t *testing.T) {
	t.Run("memory", func(t *testing.T) {
		storagetest.Run(t, func(*testing.T) storage.Backend { return storage.NewMemory() })
	})
	t.Run("badger", func(t *testing.T) {
		store := func(t *testing.T) storagetest.Opener {
			dir := t.TempDir()
			return func(t *testing.T) storage.Backend {
				return openBadger(t, storage.BadgerOptions{Dir: dir, SyncWrites: true})
			}
		}
		storagetest.Run(t, func(t *testing.T) storage.Backend { return store(t)(t) }, storagetest.WithReopen(store))
	})
	t.Run("badger-inmemory", func(t *testing.T) {
		storagetest.Run(t, func(t *testing.T) storage.Backend {
			return openBadger(t, storage.BadgerOptions{InMemory: true})
		})
	})
}

func openBadger(t testing.TB, opts storage.BadgerOptions) storage.Backend {
	t.Helper()
	b, err := storage.OpenBadger(opts)
	if err != nil {
		t.Fatalf("OpenBadger: %v", err)
	}
	return b
}

func TestOpenBadgerWithoutDir(t *testing.T) {
	if _, err := storage.OpenBadger(storage.BadgerOptions{}); !errors.Is(err, storage.ErrInvalid) {
		t.Fatalf("OpenBadger without Dir = %v; want ErrInvalid", err)
	}
}
