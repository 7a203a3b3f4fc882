// Package procdir makes temporary directories that belong to the process
// that made them: named <prefix>-<pid>-…, so that the next process making
// one of the same prefix removes those whose process is gone. For the
// throwaway servers tests start (PostgreSQL, etcd): they die with their
// test binary, which cannot remove their data itself.
package procdir

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// Make removes the directories of prefix left by processes that no longer
// run, then makes a new one of this process in os.TempDir.
func Make(prefix string) (string, error) {
	RemoveOrphans(prefix)
	return os.MkdirTemp("", fmt.Sprintf("%s-%d-", prefix, os.Getpid()))
}

// RemoveOrphans removes the directories Make made for prefix in processes
// that no longer run.
func RemoveOrphans(prefix string) {
	dirs, _ := filepath.Glob(filepath.Join(os.TempDir(), prefix+"-*-*"))
	for _, d := range dirs {
		pid, err := strconv.Atoi(strings.SplitN(strings.TrimPrefix(filepath.Base(d), prefix+"-"), "-", 2)[0])
		if err != nil || pid <= 0 || pid == os.Getpid() || syscall.Kill(pid, 0) != syscall.ESRCH {
			continue // not one of Make's, or its process may still run
		}
		os.RemoveAll(d)
	}
}
