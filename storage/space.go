package storage

import (
	"errors"
	"fmt"
	"os"
	"sync"
	"time"

	"github.com/rs/zerolog"
)

// spaceGuard decides whether the Badger backend may write: it refuses
// (ErrStorageFull) while the filesystem under dir has less than reserve
// bytes available, and (ErrStorageUnavailable) while dir is gone, replaced
// or on a read-only filesystem. Badger writes its value log and memtables
// through memory-mapped, sparsely preallocated files, so running out of
// space there is a SIGBUS, not an error: the reserve keeps the host from
// getting there, and leaves room for what Badger still writes on its own
// (memtable flushes, compactions, value log GC).
//
// A full check (statfs and stat of the path, about 5 µs here) is cached: it
// is refreshed at most every interval, except when the writes admitted
// since the last check could have eaten the margin above the reserve, and
// on every write while writes are refused (so it recovers at the first
// write after space returns). Every admit also fstats the directory it
// holds open (under 1 µs): a removed directory must be seen before the
// next write, because Badger cannot survive creating a memtable file in
// it (its next write or Close dies on an assertion, log.Fatal).
type spaceGuard struct {
	dir      string
	reserve  int64
	interval time.Duration
	log      *zerolog.Logger

	mu      sync.Mutex
	stat    func(dir string) (dirState, error)
	ident   os.FileInfo // dir as opened
	dirf    *os.File    // dir, held open to notice its removal
	checked time.Time
	free    int64  // bytes available at the last check; -1 unknown
	written int64  // bytes admitted since the last check
	err     error  // the verdict of the last check
	onRoom  func() // called (mu not held) when writes are accepted again
}

// dirState is what a check learns about the data directory.
type dirState struct {
	info     os.FileInfo
	free     int64 // bytes available to the process; -1 if unknown
	readOnly bool
}

func newSpaceGuard(dir string, reserve int64, log *zerolog.Logger) (*spaceGuard, error) {
	g := &spaceGuard{dir: dir, reserve: reserve, interval: 50 * time.Millisecond, log: log, stat: statDir, free: -1}
	st, err := g.stat(dir)
	if err != nil {
		return nil, err
	}
	g.ident = st.info
	if g.dirf, err = os.Open(dir); err != nil {
		return nil, err
	}
	return g, nil
}

// close releases the directory.
func (g *spaceGuard) close() {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.dirf != nil {
		g.dirf.Close()
		g.dirf = nil
	}
}

// admit reports whether n more bytes may be written, and counts them.
func (g *spaceGuard) admit(n int64) error {
	g.mu.Lock()
	now := time.Now()
	var room func()
	if g.err != nil || now.Sub(g.checked) >= g.interval ||
		(g.free >= 0 && g.free-g.written-n < g.reserve) || removed(g.dirf) {
		if g.refresh(now) {
			room = g.onRoom
		}
	}
	err := g.err
	if err == nil {
		g.written += n
	}
	g.mu.Unlock()
	if room != nil {
		room()
	}
	return err
}

// check is admit(0) with a fresh look at the directory.
func (g *spaceGuard) check() error {
	g.mu.Lock()
	g.checked = time.Time{}
	g.mu.Unlock()
	return g.admit(0)
}

// refresh looks at the directory, sets the verdict and logs a change. It
// reports whether writes were refused before and are accepted now. g.mu held.
func (g *spaceGuard) refresh(now time.Time) (reopened bool) {
	st, err := g.stat(g.dir)
	prev := g.err
	g.checked, g.written, g.free = now, 0, -1
	switch {
	case err != nil:
		g.err = fmt.Errorf("%w: data directory %s: %w (removed while the host ran? writes are refused until a restart)", ErrStorageUnavailable, g.dir, err)
	case !os.SameFile(st.info, g.ident):
		g.err = fmt.Errorf("%w: data directory %s was replaced while the host ran (the open database lives in the removed one; writes are refused until a restart)", ErrStorageUnavailable, g.dir)
	case st.readOnly:
		g.err = fmt.Errorf("%w: data directory %s is on a read-only filesystem", ErrStorageUnavailable, g.dir)
	default:
		g.free = st.free
		// Once refused, writes resume only with a sixteenth of the reserve
		// to spare, so that a disk hovering at the limit does not flap.
		need := g.reserve
		if errors.Is(prev, ErrStorageFull) {
			need += g.reserve / 16
		}
		if st.free >= 0 && st.free < need {
			g.err = fmt.Errorf("%w: %s available on the filesystem of %s, below the reserve of %s kept for Badger (storage min_free_mb); writes are refused until space is freed, reads still work",
				ErrStorageFull, mib(st.free), g.dir, mib(g.reserve))
		} else {
			g.err = nil
		}
	}
	if g.log != nil && !sameVerdict(prev, g.err) {
		if g.err != nil {
			g.log.Error().Str("component", "storage").Err(g.err).Msg("refusing writes")
		} else {
			g.log.Info().Str("component", "storage").Str("available", mib(st.free)).Str("reserve", mib(g.reserve)).Msg("storage accepts writes again")
		}
	}
	return prev != nil && g.err == nil
}

// sameVerdict reports whether two verdicts are the same kind (nil, full,
// unavailable), so that a changing free-space figure is not logged anew.
func sameVerdict(a, b error) bool {
	return errors.Is(a, ErrStorageFull) == errors.Is(b, ErrStorageFull) && (a == nil) == (b == nil)
}

// gone reports a fresh verdict on the directory if it is gone or replaced.
func (g *spaceGuard) gone() error {
	g.mu.Lock()
	defer g.mu.Unlock()
	st, err := g.stat(g.dir)
	switch {
	case err != nil:
		return fmt.Errorf("data directory %s: %w", g.dir, err)
	case !os.SameFile(st.info, g.ident):
		return fmt.Errorf("data directory %s was replaced", g.dir)
	}
	return nil
}

// mib formats a byte count in MiB, rounded down to a tenth (so that a
// free space just under the reserve never prints as equal to it).
func mib(n int64) string { return fmt.Sprintf("%d.%d MiB", n>>20, (n&(1<<20-1))*10>>20) }
