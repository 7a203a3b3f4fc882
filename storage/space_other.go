//go:build !linux

package storage

import "os"

// statDir stats the directory; the free space is not known on this system,
// so only a removed or replaced directory refuses writes.
func statDir(dir string) (dirState, error) {
	info, err := os.Stat(dir)
	if err != nil {
		return dirState{}, err
	}
	return dirState{info: info, free: -1}, nil
}

// removed reports whether the open directory f has been removed; this
// system has no cheap way to tell, so the periodic stat of the path does.
func removed(*os.File) bool { return false }
