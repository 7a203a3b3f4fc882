package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/edgeshard/edgeshard/edge"
	"github.com/edgeshard/edgeshard/host/admin"
)

// runDrain is `edgeshard drain`: flush every buffer shard of a running
// host (POST /admin/jobs/drain) and say whether all are empty — the step
// before stopping a POP for good. On a host of a POP of several it leaves
// the POP instead (the job is then `cluster leave`'s). Exit 0 when empty
// (left, with nothing kept), 1 otherwise.
func runDrain(args []string, stdout, stderr io.Writer) int {
	cmd := newAdminCmd("drain", "usage: edgeshard drain [--wait 1m] [--leave=false] [--admin URL] [--token T] [--json]\n\n"+
		"Flushes every runtime-event and counter shard of the host to SQL until all\n"+
		"are empty, and exits 0 only then. Take the host out of traffic first: drain\n"+
		"does not stop new writes. Then stop it (SIGTERM); nothing is left on its disk.\n\n"+
		"On a host of a POP of several ([cluster]) drain leaves the POP, as\n"+
		"`edgeshard cluster leave` does: every shard moves off the host (queue finished,\n"+
		"buffers flushed, storage shipped to its next owner, idle per-name objects too)\n"+
		"and the host forwards every request until it is stopped. Exit 0 once\n"+
		"everything moved. --leave=false flushes the buffer shards (all of the\n"+
		"POP's, through their owners) without leaving.", stderr)
	wait := cmd.fs.Duration("wait", time.Minute, "keep flushing (or moving shards) until done or this long has passed (at most 10m)")
	leave := cmd.fs.Bool("leave", true, "on a host of a POP: leave it; false flushes the POP's buffer shards only (the host stays a member)")
	asJSON := cmd.fs.Bool("json", false, "print the admin API's JSON report")
	c, code := cmd.start(args, 0)
	if c == nil {
		return code
	}
	if c.timeout < *wait+time.Minute {
		c.timeout = *wait + time.Minute
	}
	var res struct {
		admin.JobResult
		Result json.RawMessage `json:"result"`
	}
	path := "/admin/jobs/drain?wait=" + wait.String()
	if !*leave {
		path += "&leave=0"
	}
	if err := c.call(http.MethodPost, path, nil, &res); err != nil {
		return cmd.fail(1, err)
	}
	var kind struct {
		Left *bool `json:"left"`
	}
	if err := json.Unmarshal(res.Result, &kind); err != nil {
		return cmd.fail(1, fmt.Errorf("bad report: %w", err))
	}
	var exit int
	var err error
	if kind.Left != nil { // a host of a POP: it left
		exit, err = report(stdout, res.Result, *asJSON, printLeave, leaveExit)
	} else {
		exit, err = report(stdout, res.Result, *asJSON, printDrain, drainExit)
	}
	if err != nil {
		return cmd.fail(1, err)
	}
	return exit
}

// report decodes a job's report, prints it (as JSON, or for people) and
// returns its exit code.
func report[T any](w io.Writer, raw json.RawMessage, asJSON bool, human func(io.Writer, T), exit func(T) int) (int, error) {
	var r T
	if err := json.Unmarshal(raw, &r); err != nil {
		return 1, fmt.Errorf("bad report: %w", err)
	}
	if asJSON {
		printJSON(w, r)
	} else {
		human(w, r)
	}
	return exit(r), nil
}

// drainExit is the exit code of a drain: 0 only if every buffer shard is
// empty.
func drainExit(r edge.DrainReport) int {
	if !r.Empty {
		return 1
	}
	return 0
}

// printDrain writes a drain report for people.
func printDrain(w io.Writer, r edge.DrainReport) {
	var flushed []string
	for _, b := range r.Bindings {
		flushed = append(flushed, fmt.Sprintf("%s %d", b.Binding, b.Flushed))
	}
	took := r.Duration.Round(100 * time.Millisecond)
	if r.Empty {
		fmt.Fprintf(w, "node %s: every buffer shard is empty after %v (flushed: %s); safe to stop\n", r.Node, took, strings.Join(flushed, ", "))
		return
	}
	fmt.Fprintf(w, "node %s: NOT empty after %v (flushed: %s); still holding:\n", r.Node, took, strings.Join(flushed, ", "))
	for _, b := range r.Bindings {
		for _, p := range b.Pending {
			fmt.Fprintf(w, "  %s/%d: %d buffered", b.Binding, p.Shard, p.Buffered)
			if p.Inflight > 0 {
				fmt.Fprintf(w, ", %d in flight", p.Inflight)
			}
			if p.Error != "" {
				fmt.Fprintf(w, " (%s)", p.Error)
			}
			fmt.Fprintln(w)
		}
	}
}
