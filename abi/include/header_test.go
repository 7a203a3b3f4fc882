//go:build !wasip1

// Package include holds abi/include/edgeshard.h, the C header of ABI v1.
// Its test keeps the header and package abi in step.
package include

import (
	"context"
	"go/ast"
	"go/constant"
	"go/importer"
	"go/parser"
	"go/token"
	"go/types"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"unicode"

	"github.com/edgeshard/edgeshard/abi"
	"github.com/edgeshard/edgeshard/host"
	"github.com/edgeshard/edgeshard/internal/testutil"
)

const header = "edgeshard.h"

// macroName is the C name of a constant of package abi: "EDGESHARD_" and
// the Go name in upper snake case (ErrnoNotFound: EDGESHARD_ERRNO_NOT_FOUND,
// MaxSQLText: EDGESHARD_MAX_SQL_TEXT, listHasStart:
// EDGESHARD_LIST_HAS_START). Version is EDGESHARD_ABI_VERSION.
func macroName(goName string) string {
	if goName == "Version" {
		return "EDGESHARD_ABI_VERSION"
	}
	r := []rune(goName)
	var b strings.Builder
	for i, c := range r {
		if i > 0 && unicode.IsUpper(c) {
			prev := r[i-1]
			nextLower := i+1 < len(r) && unicode.IsLower(r[i+1])
			if unicode.IsLower(prev) || unicode.IsDigit(prev) || unicode.IsUpper(prev) && nextLower {
				b.WriteByte('_')
			}
		}
		b.WriteRune(unicode.ToUpper(c))
	}
	return "EDGESHARD_" + b.String()
}

// abiConstants returns every package-level constant of package abi (from
// its source, exported or not) by Go name: an int64 or a string.
func abiConstants(t *testing.T) map[string]any {
	t.Helper()
	dir := filepath.Join(testutil.RepoRoot(), "abi")
	fset := token.NewFileSet()
	var files []*ast.File
	matches, _ := filepath.Glob(filepath.Join(dir, "*.go"))
	for _, m := range matches {
		if strings.HasSuffix(m, "_test.go") {
			continue
		}
		f, err := parser.ParseFile(fset, m, nil, 0)
		if err != nil {
			t.Fatal(err)
		}
		files = append(files, f)
	}
	conf := types.Config{Importer: importer.ForCompiler(fset, "source", nil)}
	pkg, err := conf.Check("github.com/edgeshard/edgeshard/abi", fset, files, nil)
	if err != nil {
		t.Fatalf("type-check package abi: %v", err)
	}
	out := map[string]any{}
	for _, name := range pkg.Scope().Names() {
		c, ok := pkg.Scope().Lookup(name).(*types.Const)
		if !ok {
			continue
		}
		switch v := c.Val(); v.Kind() {
		case constant.Int:
			n, exact := constant.Int64Val(v)
			if !exact {
				t.Fatalf("constant %s = %s does not fit an int64", name, v)
			}
			out[name] = n
		case constant.String:
			out[name] = constant.StringVal(v)
		default:
			t.Fatalf("constant %s has kind %s: teach this test its C form", name, v.Kind())
		}
	}
	return out
}

var (
	defineRE = regexp.MustCompile(`(?m)^#define (EDGESHARD_[A-Z0-9_]+) +([^ \n/]+)`)
	importRE = regexp.MustCompile(`(?m)^EDGESHARD_IMPORT\("([a-z_]+)"\)\n(int32_t|int64_t) (\w+)\(`)
)

// headerMacros returns the object-like EDGESHARD_ macros of the header
// with their values (int64 or string), leaving out the include guard.
func headerMacros(t *testing.T, src string) map[string]any {
	t.Helper()
	out := map[string]any{}
	for _, m := range defineRE.FindAllStringSubmatch(src, -1) {
		name, val := m[1], m[2]
		if _, dup := out[name]; dup {
			t.Fatalf("%s defined twice", name)
		}
		switch {
		case name == "EDGESHARD_H", strings.HasPrefix(val, "("), strings.HasPrefix(val, "__attribute__"):
			continue // the guard; EDGESHARD_EXPORT(name), EDGESHARD_IMPORT(name)
		case strings.HasPrefix(val, `"`):
			s, err := strconv.Unquote(val)
			if err != nil {
				t.Fatalf("%s: %s is not a C string this test reads: %v", name, val, err)
			}
			out[name] = s
		default:
			n, err := strconv.ParseInt(val, 10, 64)
			if err != nil {
				t.Fatalf("%s: %s is not a decimal integer: %v", name, val, err)
			}
			out[name] = n
		}
	}
	return out
}

// TestHeaderMatchesPackageABI: every constant of package abi is in the
// header under its C name with its value, and the header defines nothing
// package abi does not (so a new errno, limit or function cannot be added
// to one and forgotten in the other).
func TestHeaderMatchesPackageABI(t *testing.T) {
	src, err := os.ReadFile(header)
	if err != nil {
		t.Fatal(err)
	}
	macros := headerMacros(t, string(src))
	consts := abiConstants(t)
	if len(consts) < 50 {
		t.Fatalf("found only %d constants in package abi", len(consts))
	}
	seen := map[string]bool{}
	for goName, want := range consts {
		c := macroName(goName)
		seen[c] = true
		got, ok := macros[c]
		switch {
		case !ok:
			t.Errorf("abi.%s = %#v has no #define %s in %s", goName, want, c, header)
		case got != want:
			t.Errorf("%s is %#v in %s, abi.%s is %#v", c, got, header, goName, want)
		}
	}
	for c, v := range macros {
		if !seen[c] {
			t.Errorf("%s defines %s = %#v, which is no constant of package abi", header, c, v)
		}
	}
}

// TestHeaderDeclaresEveryHostFunction: the header declares each host
// function of abi.FunctionGroups once, as edgeshard_<name>, and no other.
func TestHeaderDeclaresEveryHostFunction(t *testing.T) {
	src, err := os.ReadFile(header)
	if err != nil {
		t.Fatal(err)
	}
	var declared []string
	for _, m := range importRE.FindAllStringSubmatch(string(src), -1) {
		name, cname := m[1], m[3]
		if cname != "edgeshard_"+name {
			t.Errorf("import %q is declared as %s, want edgeshard_%s", name, cname, name)
		}
		if _, ok := abi.FunctionGroups[name]; !ok {
			t.Errorf("%s declares import %q, which is no host function of abi.FunctionGroups", header, name)
		}
		declared = append(declared, name)
	}
	if n := strings.Count(string(src), "\nEDGESHARD_IMPORT("); n != len(declared) {
		t.Errorf("%d EDGESHARD_IMPORT lines, %d read as declarations", n, len(declared))
	}
	for name := range abi.FunctionGroups {
		if !slices.Contains(declared, name) {
			t.Errorf("%s does not declare host function %q", header, name)
		}
	}
	slices.Sort(declared)
	if len(slices.Compact(declared)) != len(abi.FunctionGroups) {
		t.Errorf("imports declared: %v", declared)
	}
}

// TestHeaderSignaturesLoad compiles testdata/every_import.c — a plugin
// that calls every host function the header declares and defines every
// export with the header's macros — with clang, and loads it the way the
// host does: a signature in the header that differs from the host's
// would refuse it. Skipped without clang unless CI=true.
func TestHeaderSignaturesLoad(t *testing.T) {
	out := filepath.Join(t.TempDir(), "every_import.wasm")
	testutil.BuildC(t, out, "testdata/every_import.c")
	bin, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	info, err := host.ValidateModule(context.Background(), bin, abi.AllGroups, testutil.CacheDir())
	if err != nil {
		t.Fatalf("the host refuses a module built from %s: %v", header, err)
	}
	var all []string
	for name := range abi.FunctionGroups {
		all = append(all, abi.ImportModule+"."+name)
	}
	slices.Sort(all)
	imports := slices.Sorted(slices.Values(info.Imports))
	if !slices.Equal(imports, all) {
		t.Fatalf("module imports %v, want every host function %v", imports, all)
	}
}
