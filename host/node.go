package host

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/edgeshard/edgeshard/abi"
)

// NodeIDFile is the file in the data directory that keeps the node id a
// host made up for itself (LoadNodeID).
const NodeIDFile = "node_id"

// LoadNodeID returns the node id kept in dataDir/node_id, making one up
// and writing it there (durably: written, synced, renamed into place) on
// first use: "n-" and 12 random hex digits. created says it was made now.
// The id belongs to the data directory: a host started again on the same
// data is the same node, whatever its hostname or address. A file that
// does not hold a valid node id (abi.ValidNodeID) is an error, not
// replaced: a node's id must not change behind its operator's back.
func LoadNodeID(dataDir string) (id string, created bool, err error) {
	path := filepath.Join(dataDir, NodeIDFile)
	b, err := os.ReadFile(path)
	switch {
	case err == nil:
		id = strings.TrimSpace(string(b))
		if !abi.ValidNodeID(id) {
			return "", false, fmt.Errorf("%s holds %q, not a node id (1-%d characters of [A-Za-z0-9._-]); fix or remove it", path, id, abi.MaxNodeID)
		}
		return id, false, nil
	case !errors.Is(err, fs.ErrNotExist):
		return "", false, fmt.Errorf("node id: %w", err)
	}
	var r [6]byte
	if _, err := rand.Read(r[:]); err != nil {
		return "", false, fmt.Errorf("node id: %w", err)
	}
	id = "n-" + hex.EncodeToString(r[:])
	if err := os.MkdirAll(dataDir, 0o755); err != nil {
		return "", false, fmt.Errorf("node id: %w", err)
	}
	if err := writeDurably(path, []byte(id+"\n")); err != nil {
		return "", false, fmt.Errorf("node id: %w", err)
	}
	return id, true, nil
}

// writeDurably writes b to path through a temporary file that is synced
// and renamed into place, then syncs the directory: after a crash the file
// is either absent or whole.
func writeDurably(path string, b []byte) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), filepath.Base(path)+".tmp-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(b); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return err
	}
	d, err := os.Open(filepath.Dir(path))
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
