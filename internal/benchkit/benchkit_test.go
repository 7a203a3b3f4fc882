package benchkit

import (
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestMedianAndSpread(t *testing.T) {
	for _, c := range []struct {
		xs             []float64
		median, spread float64
	}{
		{nil, 0, 0},
		{[]float64{4}, 4, 0},
		{[]float64{3, 1, 2}, 2, 1},
		{[]float64{4, 1, 3, 2}, 2.5, 1.2},
	} {
		if m, s := Median(c.xs), Spread(c.xs); m != c.median || s != c.spread {
			t.Errorf("%v: median %v spread %v, want %v and %v", c.xs, m, s, c.median, c.spread)
		}
	}
}

func TestFormatNum(t *testing.T) {
	for v, want := range map[float64]string{123456.7: "123457", -2500: "-2500", 42.25: "42.2", 0.12345: "0.123"} {
		if got := FormatNum(v); got != want {
			t.Errorf("FormatNum(%v) = %q, want %q", v, got, want)
		}
	}
}

// TestFindRootSkipsNestedModules: bench/'s own go.mod (module
// RootModule/bench) is not the root; the repository's is.
func TestFindRootSkipsNestedModules(t *testing.T) {
	dir := t.TempDir()
	nested := filepath.Join(dir, "bench", "cmd")
	if err := os.MkdirAll(nested, 0o755); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(dir, "go.mod"), []byte("module "+RootModule+"\n\ngo 1.26\n"), 0o644)
	os.WriteFile(filepath.Join(dir, "bench", "go.mod"), []byte("module "+RootModule+"/bench\n"), 0o644)
	if got, err := FindRoot(nested); err != nil || got != dir {
		t.Fatalf("FindRoot = %q, %v; want %q", got, err, dir)
	}
	if _, err := FindRoot(t.TempDir()); err == nil || !strings.Contains(err.Error(), RootModule) {
		t.Fatalf("outside the repository: %v", err)
	}
}

func TestCPUAndOutput(t *testing.T) {
	c0 := SelfCPU()
	for deadline := time.Now().Add(50 * time.Millisecond); time.Now().Before(deadline); {
	}
	if SelfCPU() <= c0 {
		t.Error("SelfCPU did not grow while spinning")
	}
	if ProcCPU(os.Getpid()) <= 0 {
		t.Error("ProcCPU of this process is 0")
	}
	if ProcCPU(-1) != 0 {
		t.Error("ProcCPU of no process is not 0")
	}
	o := NewOutput()
	o.Write([]byte("hello "))
	o.Write([]byte(strings.Repeat("x", 2<<20)))
	o.Write([]byte("dropped"))
	if s := o.String(); !strings.HasPrefix(s, "hello x") || strings.HasSuffix(s, "dropped") {
		t.Errorf("output %d bytes, ends %q", len(s), s[len(s)-10:])
	}
}

// TestSendReadsTheWholeAnswer: status and body of the answer; a server
// that is gone is an error.
func TestSendReadsTheWholeAnswer(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusTeapot)
		io.WriteString(w, "short and stout")
	}))
	req, _ := http.NewRequest("GET", srv.URL, nil)
	if st, b, err := Send(srv.Client(), req); err != nil || st != http.StatusTeapot || string(b) != "short and stout" {
		t.Fatalf("Send = %d %q %v", st, b, err)
	}
	srv.Close()
	if _, _, err := Send(http.DefaultClient, req); err == nil {
		t.Fatal("no error from a closed server")
	}
}
