package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/edgeshard/edgeshard/abi"
	"github.com/edgeshard/edgeshard/host"
	"github.com/edgeshard/edgeshard/host/config"
	"github.com/edgeshard/edgeshard/internal/server"
)

func runValidate(args []string, stdout, stderr io.Writer) int {
	fs := newFlags("validate", "usage: edgeshard validate [--grant storage,alarm,...] [--memory-limit-mb N] FILE.wasm\n"+
		"       edgeshard validate --config edgeshard.toml --binding NAME [FILE.wasm]", stderr)
	grants := fs.String("grant", strings.Join(abi.AllGroups[1:], ","), "binding groups the module may import from (without --binding)")
	memory := fs.Int("memory-limit-mb", 0, "memory cap to check the module against (default 128, or the config's memory_limit_mb)")
	cfgPath := fs.String("config", "", "config file whose --binding the module is checked against")
	binding := fs.String("binding", "", "binding of --config: its grants, memory cap and limits, and its module unless FILE is given")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	if (*cfgPath == "") != (*binding == "") || (*binding != "" && set["grant"]) || fs.NArg() > 1 || (fs.NArg() == 0 && *binding == "") {
		fs.Usage()
		return 2
	}
	opts := host.ValidateOptions{Grants: strings.Split(*grants, ","), CacheDir: defaultCacheDir(), MemoryLimitMiB: *memory}
	var path string
	var extra []string // lines about the binding, after the module's
	if *binding != "" {
		cfg, err := config.Load(*cfgPath)
		if err != nil {
			fmt.Fprintf(stderr, "edgeshard validate: %v\n", err)
			return 1
		}
		b, hostLimits, err := server.HostBinding(cfg, *binding, os.LookupEnv)
		if err != nil {
			fmt.Fprintf(stderr, "edgeshard validate: %v\n", err)
			return 1
		}
		opts.Grants = b.Grants()
		if !set["memory-limit-mb"] {
			opts.MemoryLimitMiB = cfg.MemoryLimitMB
		}
		path = b.Module
		extra = bindingLines(b, host.ResolveLimits(hostLimits, b.Limits))
	}
	if fs.NArg() == 1 {
		path = fs.Arg(0)
	}
	bin, err := os.ReadFile(path)
	if err != nil {
		fmt.Fprintf(stderr, "edgeshard validate: %v\n", err)
		return 1
	}
	m, err := host.Validate(context.Background(), bin, opts)
	if err != nil {
		if errors.Is(err, host.ErrInvalidModule) {
			fmt.Fprintf(stderr, "%s: %v\n", path, err)
		} else {
			fmt.Fprintf(stderr, "%s: invalid module: %v\n", path, err)
		}
		return 1
	}
	fmt.Fprintf(stdout, "%s: ok\n  sha256   %s\n  size     %d bytes\n  abi      v%d\n  memory   %s\n  bindings %s\n  imports  %s\n",
		path, m.SHA256, m.Size, m.ABIVersion, pages(m.MemoryMinPages, m.MemoryMaxPages), strings.Join(m.Groups, ", "), strings.Join(m.Imports, ", "))
	if m.WebSockets {
		fmt.Fprintf(stdout, "  websockets accepted (exports %s)\n", abi.ExportWSEvent)
	}
	for _, l := range extra {
		fmt.Fprintln(stdout, l)
	}
	return 0
}

// pages describes a memory's range.
func pages(min, max uint32) string {
	mib := func(p uint32) string { return fmt.Sprintf("%.4g MiB", float64(p)/16) }
	return fmt.Sprintf("%d..%d pages (%s..%s; the maximum is at most the memory cap)", min, max, mib(min), mib(max))
}

// bindingLines describe what the binding grants and bounds.
func bindingLines(b host.Binding, l host.Limits) []string {
	n := func(v int64) string {
		if v < 0 {
			return "none"
		}
		return fmt.Sprint(v)
	}
	d := func(v time.Duration) string {
		if v < 0 {
			return "none"
		}
		return v.String()
	}
	codes := "none (logged as guest_code)"
	switch {
	case b.LogCodes == nil:
		codes = "all"
	case len(b.LogCodes) > 0:
		codes = strings.Join(b.LogCodes, ", ")
	}
	return []string{
		fmt.Sprintf("  binding  %s grants %s", b.Name, strings.Join(b.Grants(), ", ")),
		fmt.Sprintf("  limits   event_write_bytes %s, event_write_keys %s, event_log_lines %s, event_log_bytes %s,",
			n(l.EventWriteBytes), n(l.EventWriteKeys), n(l.EventLogLines), n(l.EventLogBytes)),
		fmt.Sprintf("           storage_quota_bytes %s, alarm_rearm_interval %s, alarm_rearm_burst %d",
			n(l.StorageQuotaBytes), d(l.AlarmRearmInterval), l.AlarmRearmBurst),
		fmt.Sprintf("  log codes honoured: %s", codes),
	}
}

// defaultCacheDir is the compilation cache of one-off commands.
func defaultCacheDir() string {
	if d, err := os.UserCacheDir(); err == nil {
		return d + "/edgeshard/wazero"
	}
	return ""
}
