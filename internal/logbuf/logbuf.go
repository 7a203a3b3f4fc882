// Package logbuf is the one buffer that concurrent writers share: a log
// a test captures, or a child process's output kept for error messages.
// It imports nothing of ours, so any package's tests may use it.
package logbuf

import (
	"strings"
	"sync"
)

// Buffer collects what its writers write, safe for concurrent use. The
// zero value keeps everything; with Max > 0 it keeps about the first Max
// bytes and drops later writes (reporting them written).
type Buffer struct {
	Max int

	mu sync.Mutex
	b  strings.Builder
}

// Write appends p, unless the buffer already holds Max bytes.
func (l *Buffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.Max > 0 && l.b.Len() >= l.Max {
		return len(p), nil
	}
	return l.b.Write(p)
}

// String returns everything kept so far.
func (l *Buffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}
