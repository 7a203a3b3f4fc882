// Package watch reloads a binding's module when its file changes on disk
// (edgeshard serve --watch). It polls rather than using inotify so it
// behaves alike on every OS and on network or overlay filesystems.
//
// A change is loaded only once the file has been quiet for the debounce
// period, so a half-written file is not picked up; the bytes go through
// Namespace.Swap, the same validation as an admin push, and a refused module
// leaves the current version serving. A refused file is not retried until it
// changes again.
package watch

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"os"
	"time"

	"github.com/edgeshard/edgeshard/host"
	"github.com/rs/zerolog"
)

// Defaults of Options.
const (
	DefaultInterval = 500 * time.Millisecond
	DefaultDebounce = time.Second
)

// Target is one binding and the module file it is loaded from.
type Target struct {
	Binding string
	Path    string
}

// Options tune the watcher.
type Options struct {
	// Interval is how often each file is polled (default 500 ms).
	Interval time.Duration
	// Debounce is how long a file must stay unchanged before it is loaded
	// (default 1 s).
	Debounce time.Duration
	Logger   zerolog.Logger
}

// Watcher polls module files and swaps changed ones in.
type Watcher struct {
	h       *host.Host
	opts    Options
	log     zerolog.Logger
	targets []*file
}

// file is the watcher's view of one module file; owned by Run's goroutine.
type file struct {
	Target
	ns *host.Namespace

	seen     stamp     // last observed stat
	changed  time.Time // when seen last changed; zero: nothing pending
	loaded   string    // sha256 of the bytes last swapped in (or loaded at start)
	refused  string    // sha256 of the bytes last refused
	missing  bool      // the file could not be read at the last poll
	lastHash time.Time // for files whose mtime is too recent to trust
}

type stamp struct {
	mtime time.Time
	size  int64
}

// New returns a watcher of targets; every target must name a binding of h.
func New(h *host.Host, targets []Target, opts Options) (*Watcher, error) {
	if opts.Interval <= 0 {
		opts.Interval = DefaultInterval
	}
	if opts.Debounce <= 0 {
		opts.Debounce = DefaultDebounce
	}
	w := &Watcher{h: h, opts: opts, log: opts.Logger.With().Str("component", "watch").Logger()}
	for _, t := range targets {
		ns, ok := h.Namespace(t.Binding)
		if !ok {
			return nil, errors.New("watch: unknown binding " + t.Binding)
		}
		f := &file{Target: t, ns: ns, loaded: ns.Current().SHA256()}
		if st, err := os.Stat(t.Path); err == nil {
			f.seen = stamp{st.ModTime(), st.Size()}
		}
		w.targets = append(w.targets, f)
	}
	return w, nil
}

// Run polls until ctx is done.
func (w *Watcher) Run(ctx context.Context) {
	for _, f := range w.targets {
		w.log.Info().Str("binding", f.Binding).Str("path", f.Path).Dur("debounce_ms", w.opts.Debounce).Msg("watching module file")
	}
	tick := time.NewTicker(w.opts.Interval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-tick.C:
			for _, f := range w.targets {
				w.poll(ctx, f, now)
			}
		}
	}
}

// poll looks at one file: a stat change (re)starts the debounce; once the
// file has been quiet long enough its bytes are hashed and, if they are
// neither the running version nor a version already refused, swapped in.
func (w *Watcher) poll(ctx context.Context, f *file, now time.Time) {
	st, err := os.Stat(f.Path)
	if err != nil {
		if !f.missing {
			w.log.Warn().Err(err).Str("binding", f.Binding).Str("path", f.Path).Msg("module file unreadable; the current version keeps serving")
			f.missing = true
		}
		f.seen, f.changed = stamp{}, now // a rename-into-place may follow
		return
	}
	f.missing = false
	s := stamp{st.ModTime(), st.Size()}
	if s != f.seen {
		f.seen, f.changed = s, now
		return
	}
	if f.changed.IsZero() {
		// Unchanged by stat. A rewrite of the same size within the
		// filesystem's mtime granularity would go unseen, so a file modified
		// very recently is hashed anyway (at most once per debounce).
		if now.Sub(s.mtime) > 2*w.opts.Debounce || now.Sub(f.lastHash) < w.opts.Debounce {
			return
		}
		f.lastHash = now
		if sum, _, err := hashFile(f.Path); err == nil && sum != f.loaded && sum != f.refused {
			f.changed = now
		}
		return
	}
	if now.Sub(f.changed) < w.opts.Debounce {
		return
	}
	f.changed = time.Time{}
	sum, bin, err := hashFile(f.Path)
	if err != nil {
		w.log.Warn().Err(err).Str("binding", f.Binding).Str("path", f.Path).Msg("read module file")
		f.changed = now
		return
	}
	if st2, err := os.Stat(f.Path); err != nil || (stamp{st2.ModTime(), st2.Size()}) != s || int64(len(bin)) != s.size {
		f.changed = now // changed while we read it: wait for quiet again
		return
	}
	if sum == f.loaded || sum == f.refused || sum == f.ns.Current().SHA256() {
		f.loaded = f.ns.Current().SHA256()
		return
	}
	t0 := time.Now()
	v, err := f.ns.Swap(ctx, bin, f.Path)
	log := w.log.With().Str("binding", f.Binding).Str("path", f.Path).Str("sha256", sum).Int("size", len(bin)).Dur("duration_ms", time.Since(t0)).Logger()
	if err != nil {
		if ctx.Err() != nil {
			return // shutting down
		}
		f.refused = sum
		log.Error().Err(err).Msg("module file changed but was refused; the current version keeps serving")
		return
	}
	f.loaded, f.refused = v.SHA256(), ""
	log.Info().Msg("module reloaded from file")
}

func hashFile(path string) (string, []byte, error) {
	bin, err := os.ReadFile(path)
	if err != nil {
		return "", nil, err
	}
	sum := sha256.Sum256(bin)
	return hex.EncodeToString(sum[:]), bin, nil
}
