package host

import (
	"slices"
	"time"
)

// swapHistoryLen is how many swaps and rollbacks a namespace remembers.
const swapHistoryLen = 32

// SwapRecord is one module swap or rollback of a namespace, as the
// inspector shows it. The host keeps the last few per namespace in memory
// only: a restart starts a new history.
type SwapRecord struct {
	Time time.Time
	// Action is "swap" (a push or a --watch reload) or "rollback".
	Action string
	// Outcome is "swapped", "rolled_back", "refused" (the new module failed
	// its checks) or "abandoned" (the caller gave up before the switch).
	Outcome string
	// From is the sha256 of the version serving before; To that of the
	// version asked for ("" when it never loaded).
	From, To string
	// Source is the new version's origin: a file path, "push", "rollback".
	Source string
	// Error says why a refused or abandoned one did not happen.
	Error string
}

// SwapHistory returns the namespace's recent swaps and rollbacks, newest
// first.
func (ns *Namespace) SwapHistory() []SwapRecord {
	in := &ns.h.insp
	in.histMu.Lock()
	defer in.histMu.Unlock()
	out := slices.Clone(in.history[ns.name])
	slices.Reverse(out)
	return out
}

// recordSwap adds a swap or rollback to the namespace's history.
func (ns *Namespace) recordSwap(action, outcome string, from, to *Version, source string, err error) {
	r := SwapRecord{Time: time.Now(), Action: action, Outcome: outcome, Source: source}
	if from != nil {
		r.From = from.SHA256()
	}
	if to != nil {
		r.To = to.SHA256()
	}
	if err != nil {
		r.Error = err.Error()
	}
	in := &ns.h.insp
	in.histMu.Lock()
	defer in.histMu.Unlock()
	if in.history == nil {
		in.history = map[string][]SwapRecord{}
	}
	h := append(in.history[ns.name], r)
	if len(h) > swapHistoryLen {
		h = slices.Clone(h[len(h)-swapHistoryLen:])
	}
	in.history[ns.name] = h
}
