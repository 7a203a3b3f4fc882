// Command edgeshard runs Durable-Object-style shards as WebAssembly
// plugins. Subcommands:
//
//	edgeshard serve [--config edgeshard.toml] [--watch]  run the host
//	edgeshard validate [--config F --binding B] FILE     check a module against ABI v1 (and a binding)
//	edgeshard conformance --plugin FILE.wasm             run a conformance suite against a plugin
//	edgeshard new NAME [--dir DIR] [--sdk PATH]          scaffold a shard project
//	edgeshard dev [--dir DIR]                            build, serve, rebuild + hot-swap + rerun the suite on save
//	edgeshard push --binding NAME FILE.wasm              hot-swap a binding's module (admin API)
//	edgeshard rollback --binding NAME                    back to the previous module (admin API)
//	edgeshard status                                     the bindings table (admin API)
//	edgeshard drain [--wait 1m]                          flush every buffer shard before stopping a POP (admin API)
//	edgeshard backup FILE                                online, consistent backup of every shard (admin API)
//	edgeshard restore [--config F] FILE                  load a backup into an empty data dir, host stopped
//	edgeshard export-shard --binding B --shard S FILE    one shard's snapshot (admin API)
//	edgeshard import-shard --binding B --shard S FILE    load a snapshot into an empty shard (admin API)
//	edgeshard cluster status|evict NODE|leave           a POP of several hosts (admin API)
//	edgeshard version                                    print the version
package main

import (
	"fmt"
	"io"
	"os"
)

// version is stamped at build time (-ldflags "-X main.version=...").
var version = "dev"

type command struct {
	name  string
	usage string
	run   func(args []string, stdout, stderr io.Writer) int
}

func commands() []command {
	return []command{
		{"serve", "run the host (edge API, shards, admin API)", runServe},
		{"validate", "check a plugin module against ABI v1", runValidate},
		{"conformance", "run a conformance suite against a plugin module", runConformance},
		{"new", "scaffold a shard project (go.mod, main.go, conformance suite, Makefile)", runNew},
		{"dev", "in a shard project: build, serve, and on every save rebuild, hot-swap and rerun the suite", runDev},
		{"push", "upload a module to a running host and hot-swap it in (admin API)", runPush},
		{"rollback", "make a binding's previous module version current again (admin API)", runRollback},
		{"status", "print the bindings of a running host (admin API)", runStatus},
		{"drain", "flush every buffer shard of a running host; exit 0 once all are empty (admin API)", runDrain},
		{"backup", "write an online, consistent backup of every shard to a file (admin API)", runBackup},
		{"restore", "load a backup into the empty data dir of a stopped host", runRestore},
		{"export-shard", "write one shard's snapshot to a file (admin API)", runExportShard},
		{"import-shard", "load a one-shard snapshot into an empty shard (admin API)", runImportShard},
		{"cluster", "a POP of several hosts: status, evict NODE, leave (admin API)", runCluster},
		{"version", "print the version", func([]string, io.Writer, io.Writer) int { fmt.Println("edgeshard", version); return 0 }},
	}
}

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		usage(stdout)
		return 0
	}
	for _, c := range commands() {
		if c.name == args[0] {
			return c.run(args[1:], stdout, stderr)
		}
	}
	fmt.Fprintf(stderr, "edgeshard: unknown command %q\n\n", args[0])
	usage(stderr)
	return 2
}

func usage(w io.Writer) {
	fmt.Fprintln(w, "usage: edgeshard <command> [flags]\n\ncommands:")
	for _, c := range commands() {
		fmt.Fprintf(w, "  %-12s %s\n", c.name, c.usage)
	}
	fmt.Fprintln(w, "\nRun 'edgeshard <command> -h' for a command's flags.")
}
