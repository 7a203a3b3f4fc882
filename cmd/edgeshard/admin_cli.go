package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"github.com/edgeshard/edgeshard/cluster"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/edgeshard/edgeshard/host/admin"
	"github.com/edgeshard/edgeshard/internal/httpx"
)

// The operator commands talk to a running host's admin API.

// adminClient is the admin API as seen from the CLI.
type adminClient struct {
	base    string
	token   string
	timeout time.Duration
}

// adminCmd is one operator command of the admin API: its flags (those
// of adminFlags and its own) and how it reports a failure.
type adminCmd struct {
	name   string
	fs     *flag.FlagSet
	client func() (*adminClient, error)
	stderr io.Writer
}

func newAdminCmd(name, usage string, stderr io.Writer) *adminCmd {
	fs := newFlags(name, usage, stderr)
	return &adminCmd{name: name, fs: fs, client: adminFlags(fs), stderr: stderr}
}

// parseArgs parses args (flags may follow the positional arguments) and
// wants nargs positional arguments and every required flag set. When it
// reports false it has printed what was wrong or the usage: exit code 2.
func parseArgs(fs *flag.FlagSet, args []string, nargs int, required ...*string) bool {
	if err := parseInterspersed(fs, args); err != nil {
		return false
	}
	for _, r := range required {
		if *r == "" {
			fs.Usage()
			return false
		}
	}
	if fs.NArg() != nargs {
		fs.Usage()
		return false
	}
	return true
}

// newFlags returns the flag set of command name, which reports its errors
// on stderr and, asked for help or given bad flags, prints usage and the
// flags' defaults there.
func newFlags(name, usage string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintln(stderr, usage)
		fs.PrintDefaults()
	}
	return fs
}

// start parses args (flags may follow the positional arguments), wants
// nargs positional arguments and every required flag set, and builds the
// client. On failure the client is nil and code the exit code.
func (a *adminCmd) start(args []string, nargs int, required ...*string) (c *adminClient, code int) {
	if !parseArgs(a.fs, args, nargs, required...) {
		return nil, 2
	}
	c, err := a.client()
	if err != nil {
		return nil, a.fail(2, err)
	}
	return c, 0
}

// fail reports err as the command's and returns the exit code.
func (a *adminCmd) fail(code int, err error) int {
	fmt.Fprintf(a.stderr, "edgeshard %s: %v\n", a.name, err)
	return code
}

// printJSON writes v as indented JSON (a command's --json).
func printJSON(w io.Writer, v any) {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.Encode(v)
}

// adminFlags registers the flags every admin command shares and returns a
// function that builds the client once the flags are parsed.
func adminFlags(fs *flag.FlagSet) func() (*adminClient, error) {
	base := fs.String("admin", "http://127.0.0.1:8788", "admin API base URL")
	token := fs.String("token", "", "admin token (default $EDGESHARD_ADMIN_TOKEN)")
	timeout := fs.Duration("timeout", 5*time.Minute, "give up after this long (a push waits for the module to compile)")
	return func() (*adminClient, error) {
		t := *token
		if t == "" {
			t = os.Getenv("EDGESHARD_ADMIN_TOKEN")
		}
		if t == "" {
			return nil, errors.New("no admin token: set EDGESHARD_ADMIN_TOKEN or pass --token")
		}
		u, err := url.Parse(*base)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return nil, fmt.Errorf("--admin %q: want a URL like http://127.0.0.1:8788", *base)
		}
		return &adminClient{base: strings.TrimRight(*base, "/"), token: t, timeout: *timeout}, nil
	}
}

// call sends a request and decodes a 2xx JSON answer into out; any other
// answer becomes an error carrying the server's code and message.
func (c *adminClient) call(method, path string, body []byte, out any) error {
	var r io.Reader
	if body != nil {
		r = bytes.NewReader(body)
	}
	return c.send(method, path, r, "application/wasm", out)
}

// send sends body (nil: none) as contentType and decodes a 2xx JSON
// answer into out.
func (c *adminClient) send(method, path string, body io.Reader, contentType string, out any) error {
	ctx, cancel := context.WithTimeout(context.Background(), c.timeout)
	defer cancel()
	resp, err := c.do(ctx, method, path, body, contentType)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		return answerError(resp)
	}
	return decodeAnswer(resp, out)
}

// do sends one authorised request.
func (c *adminClient) do(ctx context.Context, method, path string, body io.Reader, contentType string) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, body)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Authorization", "Bearer "+c.token)
	if body != nil {
		req.Header.Set("Content-Type", contentType)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, fmt.Errorf("admin API at %s: %w", c.base, err)
	}
	return resp, nil
}

// answerError turns a non-2xx answer into an error carrying the server's
// code and message.
func answerError(resp *http.Response) error {
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return fmt.Errorf("admin API answered %s: %w", resp.Status, err)
	}
	var e httpx.ErrorBody
	if json.Unmarshal(b, &e) == nil && e.Error.Code != "" {
		return fmt.Errorf("%s (%d %s)", e.Error.Message, resp.StatusCode, e.Error.Code)
	}
	return fmt.Errorf("admin API answered %s: %s", resp.Status, bytes.TrimSpace(b))
}

// decodeAnswer decodes a 2xx JSON answer into out (nil: ignored).
func decodeAnswer(resp *http.Response, out any) error {
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return fmt.Errorf("admin API answer: %w", err)
	}
	if out == nil {
		return nil
	}
	if err := json.Unmarshal(b, out); err != nil {
		return fmt.Errorf("admin API answer: %w", err)
	}
	return nil
}

// swap asks the admin API for a module swap of binding: PUT module (a
// push) or POST rollback.
func (c *adminClient) swap(method, binding, op string, body []byte) (*admin.SwapResult, error) {
	var res admin.SwapResult
	err := c.call(method, "/admin/bindings/"+url.PathEscape(binding)+"/"+op, body, &res)
	return &res, err
}

func runPush(args []string, stdout, stderr io.Writer) int {
	cmd := newAdminCmd("push", "usage: edgeshard push --binding NAME [--admin URL] [--token T] FILE.wasm\n\nUploads the module; the host validates and compiles it, then swaps it in\nwithout dropping a request. A refused module leaves the current one serving.", stderr)
	binding := cmd.fs.String("binding", "", "binding whose module to replace (required)")
	c, code := cmd.start(args, 1, binding)
	if c == nil {
		return code
	}
	bin, err := os.ReadFile(cmd.fs.Arg(0))
	if err != nil {
		return cmd.fail(1, err)
	}
	res, err := c.swap(http.MethodPut, *binding, "module", bin)
	if err != nil {
		return cmd.fail(1, err)
	}
	if !res.Changed {
		fmt.Fprintf(stdout, "%s: already serving %s (%d bytes); nothing changed\n", res.Binding, short(res.Module.SHA256), res.Module.Size)
		return 0
	}
	fmt.Fprintf(stdout, "%s: now serving %s (%d bytes, abi v%d) after %s; previous %s kept for rollback\n",
		res.Binding, short(res.Module.SHA256), res.Module.Size, res.Module.ABIVersion, res.Duration, shortVersion(res.Previous))
	return 0
}

func runRollback(args []string, stdout, stderr io.Writer) int {
	cmd := newAdminCmd("rollback", "usage: edgeshard rollback --binding NAME [--admin URL] [--token T]\n\nMakes the previous module version current again (and the current one the previous).", stderr)
	binding := cmd.fs.String("binding", "", "binding to roll back (required)")
	c, code := cmd.start(args, 0, binding)
	if c == nil {
		return code
	}
	res, err := c.swap(http.MethodPost, *binding, "rollback", nil)
	if err != nil {
		return cmd.fail(1, err)
	}
	fmt.Fprintf(stdout, "%s: rolled back to %s (%d bytes, loaded %s); %s is now the previous\n",
		res.Binding, short(res.Module.SHA256), res.Module.Size, res.Module.LoadedAt.Local().Format(time.DateTime), shortVersion(res.Previous))
	return 0
}

func runStatus(args []string, stdout, stderr io.Writer) int {
	cmd := newAdminCmd("status", "usage: edgeshard status [--admin URL] [--token T] [--json]\n\nPrints every binding: module version, shards, live instances, queued events, alarms, rollback target.", stderr)
	asJSON := cmd.fs.Bool("json", false, "print the admin API's JSON instead of a table")
	c, code := cmd.start(args, 0)
	if c == nil {
		return code
	}
	var list admin.BindingList
	if err := c.call(http.MethodGet, "/admin/bindings", nil, &list); err != nil {
		return cmd.fail(1, err)
	}
	if *asJSON {
		printJSON(stdout, list)
		return 0
	}
	printStatus(stdout, list)
	// A host of a POP of several: the members and its shards too.
	var st cluster.Status
	if err := c.call(http.MethodGet, "/admin/cluster", nil, &st); err == nil {
		fmt.Fprintln(stdout)
		printCluster(stdout, st)
	}
	return 0
}

// printStatus writes the bindings table.
func printStatus(w io.Writer, list admin.BindingList) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "BINDING\tMODULE\tSOURCE\tSIZE\tABI\tSHARDS\tLIVE\tQUEUED\tALARMS\tLOADED AT\tPREVIOUS")
	for _, b := range list.Bindings {
		shards := fmt.Sprint(b.ShardCount)
		if b.ShardCount == 0 {
			shards = "per-name"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\tv%d\t%s\t%d\t%d\t%d\t%s\t%s\n",
			b.Name, short(b.Module.SHA256), b.Module.Source, size(b.Module.Size), b.Module.ABIVersion, shards,
			b.LiveInstances, b.QueuedEvents, b.AlarmsPending,
			b.Module.LoadedAt.Local().Format(time.DateTime), shortVersion(b.Previous))
	}
	tw.Flush()
}

func short(sha string) string {
	if len(sha) > 12 {
		return sha[:12]
	}
	return sha
}

func shortVersion(v *admin.VersionInfo) string {
	if v == nil {
		return "-"
	}
	return short(v.SHA256)
}

func size(n int) string {
	switch {
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d B", n)
}

// parseInterspersed parses flags that may come after positional arguments
// ("push FILE.wasm --binding X" as well as "push --binding X FILE.wasm").
func parseInterspersed(fs *flag.FlagSet, args []string) error {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return err
		}
		args = fs.Args()
		if len(args) == 0 {
			break
		}
		pos = append(pos, args[0])
		args = args[1:]
	}
	return fs.Parse(append([]string{"--"}, pos...))
}
