package host

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// Module versions that a swap made current are kept under
// DataDir/modules/<binding>/, so that a restart serves what was pushed
// rather than silently going back to the config file's module:
//
//	<sha256>.wasm   the current version and the one kept for rollback
//	state.json      which is which, and the config module's sha256 then
//
// At start the config module wins only when it changed since the swap (a
// new deploy is the newer intent); otherwise the kept current version
// serves, and Rollback can return to the kept previous one.

// SourceRestored is Version.Source of a version a restart restored from
// DataDir (it was pushed, watched or rolled back to before the restart).
const SourceRestored = "kept in data_dir (pushed before a restart)"

// keptState is state.json.
type keptState struct {
	Current   string    `json:"current"`            // sha256 of the current version
	Previous  string    `json:"previous,omitempty"` // sha256 kept for rollback ("" for none)
	ConfigSHA string    `json:"config_sha256"`      // the config module's sha256 when this was written
	Source    string    `json:"source"`             // where the current version came from
	At        time.Time `json:"at"`
}

// keptModules is one binding's directory of kept versions.
type keptModules struct{ dir string }

func (h *Host) kept(binding string) (keptModules, bool) {
	if h.cfg.DataDir == "" {
		return keptModules{}, false
	}
	return keptModules{dir: filepath.Join(h.cfg.DataDir, "modules", url.PathEscape(binding))}, true
}

func sha256Hex(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// load returns the state, or ok false when none is kept.
func (k keptModules) load() (st keptState, ok bool, err error) {
	b, err := os.ReadFile(filepath.Join(k.dir, "state.json"))
	if errors.Is(err, fs.ErrNotExist) {
		return st, false, nil
	}
	if err != nil {
		return st, false, err
	}
	if err := json.Unmarshal(b, &st); err != nil {
		return st, false, fmt.Errorf("%s: %w", filepath.Join(k.dir, "state.json"), err)
	}
	return st, true, nil
}

// module reads a kept version's bytes and checks them against their name.
func (k keptModules) module(sha string) ([]byte, error) {
	b, err := os.ReadFile(filepath.Join(k.dir, sha+".wasm"))
	if err != nil {
		return nil, err
	}
	if got := sha256Hex(b); got != sha {
		return nil, fmt.Errorf("kept module %s.wasm has sha256 %s: corrupt", sha, got)
	}
	return b, nil
}

// save records cur (with its bytes, when not kept yet) and prev as the
// binding's versions, atomically, and removes versions no longer named.
func (k keptModules) save(st keptState, curBytes, prevBytes []byte) error {
	if err := os.MkdirAll(k.dir, 0o755); err != nil {
		return err
	}
	for sha, b := range map[string][]byte{st.Current: curBytes, st.Previous: prevBytes} {
		if sha == "" || b == nil {
			continue
		}
		if _, err := os.Stat(filepath.Join(k.dir, sha+".wasm")); err == nil {
			continue
		}
		if err := writeDurably(filepath.Join(k.dir, sha+".wasm"), b); err != nil {
			return err
		}
	}
	js, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return err
	}
	if err := writeDurably(filepath.Join(k.dir, "state.json"), js); err != nil {
		return err
	}
	entries, err := os.ReadDir(k.dir)
	if err != nil {
		return err
	}
	for _, e := range entries {
		sha, isWasm := strings.CutSuffix(e.Name(), ".wasm")
		if isWasm && sha != st.Current && sha != st.Previous {
			os.Remove(filepath.Join(k.dir, e.Name()))
		}
	}
	return nil
}

// forget removes the binding's kept versions.
func (k keptModules) forget() error { return os.RemoveAll(k.dir) }
