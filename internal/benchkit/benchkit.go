// Package benchkit is what the benchmark drivers share (cmd/edgeshard-bench
// and bench/cmd/peers, a module of its own): finding the repository, the
// statistics of a figure's rounds, how a measured number is printed, the
// CPU time of this process or another, and a child process's output.
package benchkit

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/edgeshard/edgeshard/internal/logbuf"
)

// RootModule is the module of the repository root.
const RootModule = "github.com/edgeshard/edgeshard"

// FindRoot returns the repository root: the nearest directory at or above
// dir whose go.mod declares RootModule (bench/'s own go.mod declares
// RootModule + "/bench", which does not match).
func FindRoot(dir string) (string, error) {
	dir, err := filepath.Abs(dir)
	if err != nil {
		return "", err
	}
	for {
		b, err := os.ReadFile(filepath.Join(dir, "go.mod"))
		if err == nil {
			if first, _, _ := strings.Cut(strings.TrimSpace(string(b)), "\n"); strings.TrimSpace(first) == "module "+RootModule {
				return dir, nil
			}
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", fmt.Errorf("no go.mod of %s at or above the working directory; run from the repository", RootModule)
		}
		dir = parent
	}
}

// Median returns the median of xs (the mean of the middle two for an even
// count), 0 for none.
func Median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	n := len(s)
	if n%2 == 1 {
		return s[n/2]
	}
	return (s[n/2-1] + s[n/2]) / 2
}

// Spread returns (max−min)/median of xs: how far the rounds of a figure
// disagree.
func Spread(xs []float64) float64 {
	m := Median(xs)
	if m == 0 || len(xs) < 2 {
		return 0
	}
	return (slices.Max(xs) - slices.Min(xs)) / m
}

// FormatNum formats a measured number: integers for large values, three
// significant digits for small ones.
func FormatNum(v float64) string {
	switch {
	case v >= 1000 || v <= -1000:
		return strconv.FormatFloat(v, 'f', 0, 64)
	case v >= 10 || v <= -10:
		return strconv.FormatFloat(v, 'f', 1, 64)
	default:
		return strconv.FormatFloat(v, 'f', 3, 64)
	}
}

// SelfCPU returns the user+system CPU time this process has used.
func SelfCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// ProcCPU returns the user+system CPU time of process pid so far, from
// /proc/<pid>/stat (in clock ticks of 1/100 s on Linux), or 0.
func ProcCPU(pid int) time.Duration {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0
	}
	// Fields after the command (which may hold spaces) start after ")".
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 13 {
		return 0
	}
	ut, _ := strconv.ParseInt(f[11], 10, 64) // utime is field 14 of stat
	st, _ := strconv.ParseInt(f[12], 10, 64) // stime is field 15
	return time.Duration(ut+st) * 10 * time.Millisecond
}

// Send sends req through client and reads the whole answer: the load
// generators' one call (every answer is read, so connections are reused).
func Send(client *http.Client, req *http.Request) (status int, body []byte, err error) {
	resp, err := client.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	body, err = io.ReadAll(resp.Body)
	return resp.StatusCode, body, err
}

// Output collects a child process's output for error messages, safe for
// concurrent writers: a logbuf.Buffer (NewOutput keeps the first MiB).
type Output = logbuf.Buffer

// NewOutput returns an Output that keeps the first MiB of the output.
func NewOutput() *Output { return &Output{Max: 1 << 20} }
