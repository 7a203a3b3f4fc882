package procdir

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// TestMakeRemovesOrphans: a directory of the prefix whose process is gone
// is removed by the next Make; a live process's, and another prefix's,
// are kept.
func TestMakeRemovesOrphans(t *testing.T) {
	gone := exec.Command("true")
	if err := gone.Run(); err != nil {
		t.Fatal(err)
	}
	prefix := fmt.Sprintf("procdir-test-%d", os.Getpid())
	orphan := filepath.Join(os.TempDir(), fmt.Sprintf("%s-%d-x", prefix, gone.Process.Pid))
	live := filepath.Join(os.TempDir(), fmt.Sprintf("%s-%d-x", prefix, os.Getppid()))
	other := filepath.Join(os.TempDir(), fmt.Sprintf("%sx-%d-x", prefix, gone.Process.Pid))
	for _, d := range []string{orphan, live, other} {
		if err := os.MkdirAll(filepath.Join(d, "data"), 0o755); err != nil {
			t.Fatal(err)
		}
		defer os.RemoveAll(d)
	}
	dir, err := Make(prefix)
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	if _, err := os.Stat(orphan); !os.IsNotExist(err) {
		t.Errorf("the orphan %s is still there (%v)", orphan, err)
	}
	for _, d := range []string{live, other, dir} {
		if _, err := os.Stat(d); err != nil {
			t.Errorf("%s was removed: %v", d, err)
		}
	}
	if want := fmt.Sprintf("%s-%d-", prefix, os.Getpid()); filepath.Base(dir)[:len(want)] != want {
		t.Errorf("Make made %s, want a name starting %s", dir, want)
	}
}
