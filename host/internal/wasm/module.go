package wasm

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/edgeshard/edgeshard/abi"
	"github.com/edgeshard/edgeshard/host/internal/wasm/wasmbin"
	"github.com/tetratelabs/wazero"
	"github.com/tetratelabs/wazero/api"
)

// ErrInvalidModule wraps every reason a module is refused at load.
var ErrInvalidModule = errors.New("invalid module")

// Module is one compiled module version.
type Module struct {
	SHA256     string
	Size       int
	ABIVersion int
	Imports    []string // "module.name", sorted, each once
	Groups     []string // binding groups the module imports from, sorted
	// MemoryMinPages and MemoryMaxPages are the linear memory's initial
	// size and the most it may grow to, in 64 KiB pages. A maximum the
	// module does not declare, or declares above the engine's cap, is the
	// cap: memory.grow past it answers -1.
	MemoryMinPages, MemoryMaxPages uint32
	// WebSockets: the module exports abi.ExportWSEvent, so it may accept
	// WebSocket upgrades (instance_ws.go).
	WebSockets bool
	LoadedAt   time.Time
	compiled   wazero.CompiledModule
	engine     *Engine
	refs       int // Load calls not yet matched by Close; guarded by engine.mu
}

// Short returns the first 12 hex digits of the module's sha256.
func (m *Module) Short() string { return m.SHA256[:12] }

func invalid(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrInvalidModule, fmt.Sprintf(format, args...))
}

type sig struct{ params, results []api.ValueType }

var i32, i64 = api.ValueTypeI32, api.ValueTypeI64

var exportSigs = map[string]sig{
	abi.ExportABIVersion: {nil, []api.ValueType{i32}},
	abi.ExportInit:       {nil, []api.ValueType{i32}},
	abi.ExportAlloc:      {[]api.ValueType{i32}, []api.ValueType{i32}},
	abi.ExportFetch:      {[]api.ValueType{i32, i32}, []api.ValueType{i64}},
	abi.ExportAlarm:      {[]api.ValueType{i32}, []api.ValueType{i32}},
	abi.ExportInitialize: {nil, nil},
	abi.ExportFetchBatch: {[]api.ValueType{i32, i32, i32}, []api.ValueType{i32}}, // optional
}

func sigEqual(d api.FunctionDefinition, want sig) bool {
	return slices.Equal(d.ParamTypes(), want.params) && slices.Equal(d.ResultTypes(), want.results)
}

// checkOptionalExport reports whether the module has the optional export
// name, refusing it when its signature is not want (section: where
// abi/ABI.md describes it). A module without it is valid.
func checkOptionalExport(c wazero.CompiledModule, name string, want sig, section string) (bool, error) {
	d, ok := c.ExportedFunctions()[name]
	if !ok {
		return false, nil
	}
	if !sigEqual(d, want) {
		return false, invalid("optional export %q has signature %s, ABI v%d needs %s (abi/ABI.md, %s)", name,
			sigString(d.ParamTypes(), d.ResultTypes()), abi.Version, sigString(want.params, want.results), section)
	}
	return true, nil
}

func sigString(params, results []api.ValueType) string {
	n := func(ts []api.ValueType) string {
		s := make([]string, len(ts))
		for i, t := range ts {
			s[i] = api.ValueTypeName(t)
		}
		return "(" + strings.Join(s, ", ") + ")"
	}
	return n(params) + " -> " + n(results)
}

// Load validates and compiles a module, granting it the given binding
// groups (GroupCore is implied). The same bytes are compiled once and
// shared; a validation failure wraps ErrInvalidModule and names the problem.
//
// Loads of the same bytes do not compile at the same time: the later ones
// wait for the first and share its Module. (Bindings on one module load
// together when a host starts; from a warm compilation cache wazero 1.12
// hands a module still being prepared to a concurrent compile of the same
// bytes, and instantiating that one panics.)
func (e *Engine) Load(ctx context.Context, bin []byte, grants []string) (*Module, error) {
	if len(bin) == 0 {
		return nil, invalid("empty module")
	}
	if len(bin) > e.cfg.MaxModuleBytes {
		return nil, invalid("module is %d bytes, the limit is %d", len(bin), e.cfg.MaxModuleBytes)
	}
	if len(bin) < 8 || string(bin[:4]) != "\x00asm" {
		return nil, invalid("not a WebAssembly binary (missing \\0asm magic)")
	}
	sum := sha256.Sum256(bin)
	id := hex.EncodeToString(sum[:])

	e.mu.Lock()
	for {
		if e.closed {
			e.mu.Unlock()
			return nil, errors.New("wasm: engine closed")
		}
		if m, ok := e.modules[id]; ok {
			if err := e.checkImports(m.compiled, grants); err != nil {
				e.mu.Unlock()
				return nil, err
			}
			m.refs++
			e.mu.Unlock()
			return m, nil
		}
		busy, ok := e.loading[id]
		if !ok {
			break
		}
		e.mu.Unlock()
		select {
		case <-busy:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		e.mu.Lock()
	}
	done := make(chan struct{})
	e.loading[id] = done
	e.mu.Unlock()
	defer func() {
		e.mu.Lock()
		delete(e.loading, id)
		e.mu.Unlock()
		close(done)
	}()

	code, err := wasmbin.Preflight(bin)
	if err != nil {
		return nil, invalid("malformed binary: %v", err)
	}
	code = wasmbin.MergeData(code) // cheaper instances: wasmbin/data.go
	if !e.cfg.UnsafeNoTerminationChecks {
		if code, err = wasmbin.Instrument(code); err != nil {
			return nil, invalid("%v", err)
		}
	}
	compiled, err := e.rt.CompileModule(ctx, code)
	if err != nil {
		return nil, invalid("compile: %v", err)
	}
	m, err := e.validate(ctx, compiled, grants)
	if err != nil {
		compiled.Close(ctx)
		return nil, err
	}
	m.SHA256, m.Size, m.LoadedAt, m.compiled, m.engine = id, len(bin), time.Now(), compiled, e
	e.mu.Lock()
	m.refs = 1
	e.modules[id] = m
	e.mu.Unlock()
	return m, nil
}

// checkImports refuses imports from other modules, of unknown or ungranted
// host functions, of functions whose signature differs from the host's, and
// of memory, naming the offending import.
func (e *Engine) checkImports(c wazero.CompiledModule, grants []string) error {
	for _, d := range c.ImportedFunctions() {
		mod, name, _ := d.Import()
		switch mod {
		case abi.WASIModule:
			if err := e.checkImportSig(d); err != nil {
				return err
			}
		case abi.ImportModule:
			g, ok := abi.FunctionGroups[name]
			if !ok {
				return invalid("imports unknown host function %s.%s (not in ABI v%d)", mod, name, abi.Version)
			}
			if g != abi.GroupCore && !slices.Contains(grants, g) {
				return invalid("imports %s.%s but its binding does not grant %q (granted: %s)", mod, name, g, strings.Join(grants, ", "))
			}
			if err := e.checkImportSig(d); err != nil {
				return err
			}
		default:
			return invalid("imports %s.%s: only modules %q and %q may be imported", mod, name, abi.ImportModule, abi.WASIModule)
		}
	}
	if n := len(c.ImportedMemories()); n > 0 {
		return invalid("imports a memory; a plugin must define and export its own")
	}
	return nil
}

// checkImportSig compares an imported function with the host module's
// export of that name, so a mismatch is reported here rather than as a
// link failure when the module is instantiated.
func (e *Engine) checkImportSig(d api.FunctionDefinition) error {
	mod, name, _ := d.Import()
	var have api.FunctionDefinition
	if hm := e.rt.Module(mod); hm != nil {
		have = hm.ExportedFunctionDefinitions()[name]
	}
	if have == nil {
		return invalid("imports %s.%s, which the host does not provide", mod, name)
	}
	if !slices.Equal(d.ParamTypes(), have.ParamTypes()) || !slices.Equal(d.ResultTypes(), have.ResultTypes()) {
		return invalid("imports %s.%s with signature %s, the host's is %s", mod, name,
			sigString(d.ParamTypes(), d.ResultTypes()), sigString(have.ParamTypes(), have.ResultTypes()))
	}
	return nil
}

func (e *Engine) validate(ctx context.Context, c wazero.CompiledModule, grants []string) (*Module, error) {
	exports := c.ExportedFunctions()
	for _, name := range abi.RequiredExports {
		want := exportSigs[name]
		d, ok := exports[name]
		if !ok {
			if name == abi.ExportInitialize {
				return nil, invalid("missing export %q: a plugin must export %s %s, which the host runs first (abi/ABI.md, section 2); a Go plugin is built with GOOS=wasip1 GOARCH=wasm -buildmode=c-shared",
					name, name, sigString(want.params, want.results))
			}
			return nil, invalid("missing export %q: a plugin must export %s %s (abi/ABI.md, section 2); a Go plugin gets it from the edgeshard SDK (abi/sdk)",
				name, name, sigString(want.params, want.results))
		}
		if !sigEqual(d, want) {
			return nil, invalid("export %q has signature %s, ABI v%d needs %s", name,
				sigString(d.ParamTypes(), d.ResultTypes()), abi.Version, sigString(want.params, want.results))
		}
	}
	ws, err := checkOptionalExport(c, abi.ExportWSEvent, wsEventSig, "section 10")
	if err != nil {
		return nil, err
	}
	if _, err := checkOptionalExport(c, abi.ExportFetchBatch, exportSigs[abi.ExportFetchBatch], "section 2"); err != nil {
		return nil, err
	}
	mem, ok := c.ExportedMemories()[abi.ExportMemory]
	if !ok {
		return nil, invalid("missing exported memory %q", abi.ExportMemory)
	}
	if err := e.checkImports(c, grants); err != nil {
		return nil, err
	}
	m := &Module{MemoryMinPages: mem.Min(), MemoryMaxPages: uint32(e.cfg.MemoryLimitMiB) * 16, WebSockets: ws}
	if max, ok := mem.Max(); ok && max < m.MemoryMaxPages {
		m.MemoryMaxPages = max // wazero lowers a larger one to the cap
	}
	groups := map[string]bool{}
	for _, d := range c.ImportedFunctions() {
		mod, name, _ := d.Import()
		m.Imports = append(m.Imports, mod+"."+name)
		if mod == abi.ImportModule {
			groups[abi.FunctionGroups[name]] = true
		}
	}
	// A module may import a function twice (a Go guest imports
	// wasi_snapshot_preview1.fd_write from its runtime and its syscall
	// package); it is one import of the ABI.
	sort.Strings(m.Imports)
	m.Imports = slices.Compact(m.Imports)
	for g := range groups {
		m.Groups = append(m.Groups, g)
	}
	sort.Strings(m.Groups)

	// Probe: instantiate once, read the ABI version, run init.
	inst, err := e.instantiate(ctx, c, InstanceConfig{})
	switch {
	case errors.Is(err, ErrInvalidModule):
		return nil, err
	case err != nil:
		return nil, invalid("instantiate: %v", err)
	}
	defer inst.Close(ctx)
	m.ABIVersion = inst.abiVersion
	return m, nil
}

// Close releases one reference taken by Load; the compiled code is freed
// with the last one. Instances of the module must be closed first.
func (m *Module) Close(ctx context.Context) error {
	m.engine.mu.Lock()
	m.refs--
	last := m.refs == 0 && !m.engine.cfg.KeepModules
	if last && m.engine.modules[m.SHA256] == m {
		delete(m.engine.modules, m.SHA256)
	}
	m.engine.mu.Unlock()
	if !last {
		return nil
	}
	return m.compiled.Close(ctx)
}
