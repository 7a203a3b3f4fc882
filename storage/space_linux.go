package storage

import (
	"os"
	"syscall"
)

// stRdonly is ST_RDONLY of statfs(2)'s f_flags.
const stRdonly = 0x1

// statDir stats the directory and its filesystem. free counts the blocks
// available to unprivileged users (f_bavail): a root process could use the
// blocks reserved for root too, so this errs on the safe side.
func statDir(dir string) (dirState, error) {
	info, err := os.Stat(dir)
	if err != nil {
		return dirState{}, err
	}
	var fs syscall.Statfs_t
	if err := syscall.Statfs(dir, &fs); err != nil {
		return dirState{}, &os.PathError{Op: "statfs", Path: dir, Err: err}
	}
	return dirState{info: info, free: int64(fs.Bavail) * int64(fs.Bsize), readOnly: int64(fs.Flags)&stRdonly != 0}, nil
}

// removed reports whether the open directory f has been removed (no links
// left).
func removed(f *os.File) bool {
	if f == nil {
		return false
	}
	var st syscall.Stat_t
	if err := syscall.Fstat(int(f.Fd()), &st); err != nil {
		return true
	}
	return st.Nlink == 0
}
