package main

import (
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/edgeshard/edgeshard/cluster"
)

// runCluster: edgeshard cluster status|evict NODE|leave — a POP of several
// hosts, through one host's admin API.
func runCluster(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("cluster", flag.ContinueOnError)
	fs.SetOutput(stderr)
	asJSON := fs.Bool("json", false, "status, leave: print the admin API's JSON")
	wait := fs.Duration("wait", 30*time.Second, "leave: wait this long for every shard to move off the host")
	client := adminFlags(fs)
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: edgeshard cluster status [--json] | evict NODE | leave [--wait 30s] [--json]  [--admin URL] [--token T]\n\n"+
			"status  the POP's members, the shards each owns, this host's shards and moves in progress\n"+
			"evict   forget a node that is gone for good: its per-name objects start afresh on\n"+
			"        the other hosts (their storage on its disk is given up); refused while it is live\n"+
			"leave   move every shard off this host: flushed, its storage shipped to the next\n"+
			"        owner, idle per-name objects too (it stays up, forwarding); then stop it")
		fs.PrintDefaults()
	}
	if len(args) == 0 {
		fs.Usage()
		return 2
	}
	sub, rest := args[0], args[1:]
	// Flags may come before or after NODE.
	var pos []string
	for {
		if err := fs.Parse(rest); err != nil {
			return 2
		}
		if fs.NArg() == 0 {
			break
		}
		pos, rest = append(pos, fs.Arg(0)), fs.Args()[1:]
	}
	c, err := client()
	if err != nil {
		fmt.Fprintf(stderr, "edgeshard cluster: %v\n", err)
		return 2
	}
	switch {
	case sub == "status" && len(pos) == 0:
		var st cluster.Status
		if err := c.call(http.MethodGet, "/admin/cluster", nil, &st); err != nil {
			fmt.Fprintf(stderr, "edgeshard cluster status: %v\n", err)
			return 1
		}
		if *asJSON {
			printJSON(stdout, st)
			return 0
		}
		printCluster(stdout, st)
		return 0
	case sub == "evict" && len(pos) == 1:
		var res struct {
			Node    string `json:"node"`
			Objects int    `json:"objects_freed"`
		}
		if err := c.call(http.MethodPost, "/admin/cluster/evict/"+url.PathEscape(pos[0]), nil, &res); err != nil {
			fmt.Fprintf(stderr, "edgeshard cluster evict: %v\n", err)
			return 1
		}
		fmt.Fprintf(stdout, "evicted %s: %d per-name object(s) start afresh on the other hosts\n", res.Node, res.Objects)
		return 0
	case sub == "leave" && len(pos) == 0:
		if c.timeout < *wait+time.Minute {
			c.timeout = *wait + time.Minute
		}
		var res struct {
			Result cluster.LeaveReport `json:"result"`
		}
		if err := c.call(http.MethodPost, "/admin/cluster/leave?wait="+wait.String(), nil, &res); err != nil {
			fmt.Fprintf(stderr, "edgeshard cluster leave: %v\n", err)
			return 1
		}
		if *asJSON {
			printJSON(stdout, res.Result)
		} else {
			printLeave(stdout, res.Result)
		}
		return leaveExit(res.Result)
	}
	fs.Usage()
	return 2
}

// printLeave writes what leaving the POP moved off the host.
func printLeave(w io.Writer, r cluster.LeaveReport) {
	fmt.Fprintf(w, "node %s left the POP after %v: %d running shard(s) moved, %d idle shard(s) shipped; it forwards every request until you stop it (SIGTERM)\n",
		r.Node, r.Duration.Round(100*time.Millisecond), r.Moved, r.Shipped)
	if len(r.Kept) > 0 {
		fmt.Fprintf(w, "NOT moved (their move failed; see the host's log), unavailable while it is down: %s\n", strings.Join(r.Kept, ", "))
	}
}

// leaveExit is the exit code of a leave: 0 only if nothing stayed.
func leaveExit(r cluster.LeaveReport) int {
	if !r.Left || len(r.Kept) > 0 {
		return 1
	}
	return 0
}

// printCluster writes the POP's members and this host's shards.
func printCluster(w io.Writer, st cluster.Status) {
	fmt.Fprintf(w, "node %s  joined=%v leaving=%v lease=%x ttl=%s\n\n", st.Node, st.Joined, st.Leaving, st.Lease, st.LeaseTTL)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "MEMBER\tADDRESS\tSHARDS OWNED\tOBJECT HOMES\tSINCE")
	for _, m := range st.Members {
		fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%s\n", m.Node, m.Addr, m.Shards, st.Homes[m.Node], m.Since.Local().Format(time.DateTime))
	}
	tw.Flush()
	if len(st.Homeless) > 0 {
		fmt.Fprintf(w, "\nper-name objects of nodes that are not members (unavailable until they return or are evicted): %s\n", strings.Join(st.Homeless, ", "))
	}
	fmt.Fprintf(w, "\nthis host owns %d shard(s); %d moving off it\n", len(st.Owned), len(st.Moving))
	tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	for _, c := range st.Moving {
		fmt.Fprintf(tw, "moving\t%s\tepoch %d\n", c.Shard, c.Epoch)
	}
	for _, c := range st.Owned {
		fmt.Fprintf(tw, "owned\t%s\tepoch %d\tsince %s\n", c.Shard, c.Epoch, c.Since.Local().Format(time.DateTime))
	}
	tw.Flush()
}
