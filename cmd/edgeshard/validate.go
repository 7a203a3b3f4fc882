package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/edgeshard/edgeshard/abi"
	"github.com/edgeshard/edgeshard/host"
)

func runValidate(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("validate", flag.ContinueOnError)
	fs.SetOutput(stderr)
	grants := fs.String("grant", strings.Join(abi.AllGroups[1:], ","), "binding groups the module may import from")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: edgeshard validate [--grant storage,alarm,...] FILE.wasm")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() != 1 {
		fs.Usage()
		return 2
	}
	path := fs.Arg(0)
	bin, err := os.ReadFile(path)
	if err != nil {
		fmt.Fprintf(stderr, "edgeshard validate: %v\n", err)
		return 1
	}
	m, err := host.ValidateModule(context.Background(), bin, strings.Split(*grants, ","), defaultCacheDir())
	if err != nil {
		if errors.Is(err, host.ErrInvalidModule) {
			fmt.Fprintf(stderr, "%s: %v\n", path, err)
		} else {
			fmt.Fprintf(stderr, "%s: invalid module: %v\n", path, err)
		}
		return 1
	}
	fmt.Fprintf(stdout, "%s: ok\n  sha256   %s\n  size     %d bytes\n  abi      v%d\n  bindings %s\n  imports  %s\n",
		path, m.SHA256, m.Size, m.ABIVersion, strings.Join(m.Groups, ", "), strings.Join(m.Imports, ", "))
	return 0
}

// defaultCacheDir is the compilation cache of one-off commands.
func defaultCacheDir() string {
	if d, err := os.UserCacheDir(); err == nil {
		return d + "/edgeshard/wazero"
	}
	return ""
}
