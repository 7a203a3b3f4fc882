package main

import (
	"bufio"
	"bytes"
	"embed"
	"errors"
	"fmt"
	"go/format"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"strconv"
	"strings"
	"text/template"
)

// sdkModule is the module path of the edgeshard repository, whose abi/sdk
// package plugins import.
const sdkModule = "github.com/edgeshard/edgeshard"

// newTemplates are the files of a new shard project; "X.tmpl" becomes X,
// "gitignore.tmpl" becomes .gitignore.
//
//go:embed templates/new/*.tmpl
var newTemplates embed.FS

// project is what the templates of `edgeshard new` see.
type project struct {
	// Name is the project's directory, Go module and .wasm file name.
	Name string
	// Binding is the binding name in its suite and config: Name in upper
	// case, '-' as '_'.
	Binding string
	// SDKPath is the absolute path of the edgeshard module the go.mod
	// replace directive points at.
	SDKPath string
	// GoVersion is the go directive: the SDK module's, so the new module
	// never declares less than what it requires.
	GoVersion string
}

// runNew implements `edgeshard new NAME [--dir DIR] [--sdk PATH]`: it
// writes a shard project into DIR/NAME that builds, passes its own suite and
// serves as it is.
func runNew(args []string, stdout, stderr io.Writer) int {
	flags := newFlags("new", "usage: edgeshard new NAME [--dir DIR] [--sdk PATH]\n\nCreates a shard project: go.mod and go.sum, main.go (a small storage + alarm\nshard), conformance.json and conformance_test.go (the suite from go test),\nedgeshard.toml, Makefile (build, test, test-badger, dev, serve) and README.md.", stderr)
	parent := flags.String("dir", ".", "create the project in DIR/NAME")
	sdkFlag := flags.String("sdk", "", "path of an edgeshard checkout, the SDK the project builds against (default $EDGESHARD_SDK, else the checkout around the current directory)")
	if !parseArgs(flags, args, 1) {
		return 2
	}
	name := flags.Arg(0)
	if err := validProjectName(name); err != nil {
		fmt.Fprintf(stderr, "edgeshard new: %v\n", err)
		return 2
	}
	target := filepath.Join(*parent, name)
	cwd, err := os.Getwd()
	if err != nil {
		fmt.Fprintf(stderr, "edgeshard new: %v\n", err)
		return 1
	}
	sdk, goVersion, err := findSDK(*sdkFlag, os.Getenv("EDGESHARD_SDK"), cwd)
	if err != nil {
		fmt.Fprintf(stderr, "edgeshard new: %v\n", err)
		return 1
	}
	p := project{Name: name, Binding: bindingName(name), SDKPath: sdk, GoVersion: goVersion}
	files, err := scaffold(target, p)
	if err != nil {
		fmt.Fprintf(stderr, "edgeshard new: %v\n", err)
		return 1
	}
	fmt.Fprintf(stdout, "created %s: %s\n", target, strings.Join(files, ", "))
	fmt.Fprintf(stdout, "SDK: %s\n", sdk)
	if _, err := exec.LookPath("edgeshard"); err != nil {
		fmt.Fprintf(stdout, "\nthe edgeshard binary is not on PATH; install it from the SDK:\n")
		fmt.Fprintf(stdout, "  (cd %s && go install ./cmd/edgeshard)   # into $(go env GOPATH)/bin\n", sdk)
	}
	fmt.Fprintf(stdout, "\nnext:\n")
	fmt.Fprintf(stdout, "  cd %s\n", target)
	fmt.Fprintf(stdout, "  go mod tidy\n")
	fmt.Fprintf(stdout, "  edgeshard dev   # build, serve on :8787, rebuild + hot-swap + rerun the suite on every save\n")
	fmt.Fprintf(stdout, "  make build      # %s.wasm\n", name)
	fmt.Fprintf(stdout, "  make test       # edgeshard conformance --plugin %s.wasm --suite conformance.json\n", name)
	fmt.Fprintf(stdout, "  go test ./...   # the same suite from Go, on both storage backends\n")
	fmt.Fprintf(stdout, "  make serve      # then: curl -X POST localhost:8787/do/%s/alice/hit\n", p.Binding)
	return 0
}

// validProjectName accepts names usable as a directory, a Go module path and
// a file name on every system: a letter, then letters, digits, '-' or '_'.
func validProjectName(name string) error {
	ok := len(name) > 0 && len(name) <= 64
	for i := 0; ok && i < len(name); i++ {
		c := name[i]
		letter := 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z'
		ok = letter || i > 0 && ('0' <= c && c <= '9' || c == '-' || c == '_')
	}
	if !ok {
		return fmt.Errorf("project name %q: want a letter, then up to 63 letters, digits, '-' or '_'", name)
	}
	return nil
}

// bindingName turns "my-shard" into "MY_SHARD".
func bindingName(name string) string {
	return strings.ToUpper(strings.ReplaceAll(name, "-", "_"))
}

// findSDK locates the edgeshard module: the --sdk flag, else
// $EDGESHARD_SDK, else the module enclosing dir. It returns its absolute
// path and its go directive.
func findSDK(flagPath, envPath, dir string) (string, string, error) {
	from := ""
	switch {
	case flagPath != "":
		from = "--sdk"
	case envPath != "":
		from, flagPath = "EDGESHARD_SDK", envPath
	}
	if from != "" {
		abs, err := filepath.Abs(flagPath)
		if err != nil {
			return "", "", fmt.Errorf("%s %s: %w", from, flagPath, err)
		}
		mod, goVersion, err := readGoMod(filepath.Join(abs, "go.mod"))
		switch {
		case err != nil:
			return "", "", fmt.Errorf("%s %s: not an edgeshard checkout: %w", from, flagPath, err)
		case mod != sdkModule:
			return "", "", fmt.Errorf("%s %s: go.mod declares module %q, want %s", from, flagPath, mod, sdkModule)
		}
		return abs, goVersion, nil
	}
	for d := dir; ; d = filepath.Dir(d) {
		if mod, goVersion, err := readGoMod(filepath.Join(d, "go.mod")); err == nil && mod == sdkModule {
			return d, goVersion, nil
		}
		if filepath.Dir(d) == d {
			break
		}
	}
	return "", "", errors.New("cannot find the edgeshard SDK: pass --sdk PATH or set EDGESHARD_SDK to a checkout of " +
		sdkModule + " (it is not on a public module proxy, so the new go.mod replaces it with that local path)")
}

// readGoMod returns the module path and go directive of a go.mod file.
func readGoMod(file string) (module, goVersion string, err error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return "", "", err
	}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 2 {
			continue
		}
		switch f[0] {
		case "module":
			if module, err = strconv.Unquote(f[1]); err != nil {
				module = f[1]
			}
		case "go":
			goVersion = f[1]
		}
	}
	if module == "" {
		return "", "", fmt.Errorf("%s has no module directive", file)
	}
	if goVersion == "" {
		goVersion = "1.26.0"
	}
	return module, goVersion, nil
}

// scaffold writes the project's files into dir, which must not exist or be
// empty, and returns their names.
func scaffold(dir string, p project) ([]string, error) {
	if entries, err := os.ReadDir(dir); err == nil && len(entries) > 0 {
		return nil, fmt.Errorf("%s already exists and is not empty", dir)
	}
	tmpl, err := template.New("new").Funcs(template.FuncMap{"modpath": modPath}).ParseFS(newTemplates, "templates/new/*.tmpl")
	if err != nil {
		return nil, fmt.Errorf("templates: %w", err)
	}
	names, err := fs.Glob(newTemplates, "templates/new/*.tmpl")
	if err != nil {
		return nil, err
	}
	out := map[string][]byte{}
	var files []string
	for _, n := range names {
		base := path.Base(n)
		var buf bytes.Buffer
		if err := tmpl.ExecuteTemplate(&buf, base, p); err != nil {
			return nil, fmt.Errorf("template %s: %w", base, err)
		}
		file := strings.TrimSuffix(base, ".tmpl")
		if file == "gitignore" {
			file = ".gitignore"
		}
		b := buf.Bytes()
		if strings.HasSuffix(file, ".go") {
			if b, err = format.Source(b); err != nil {
				return nil, fmt.Errorf("template %s: %w", base, err)
			}
		}
		out[file] = b
		files = append(files, file)
	}
	// The SDK's go.sum: the hashes of every module the project can need
	// through it, so `go mod tidy` verifies them without the checksum
	// database (and works offline with a warm module cache); tidy drops
	// the lines the project does not use.
	if sum, err := os.ReadFile(filepath.Join(p.SDKPath, "go.sum")); err == nil {
		out["go.sum"] = sum
		files = append(files, "go.sum")
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	for _, f := range files {
		if err := os.WriteFile(filepath.Join(dir, f), out[f], 0o644); err != nil {
			return nil, err
		}
	}
	return files, nil
}

// modPath writes a path for a go.mod directive, quoted unless plain.
func modPath(p string) string {
	p = filepath.ToSlash(p)
	for _, c := range p {
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || strings.ContainsRune("/._-+~:", c)) {
			return strconv.Quote(p)
		}
	}
	return p
}
