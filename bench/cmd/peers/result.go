package main

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"time"

	"github.com/edgeshard/edgeshard/internal/benchkit"
)

// result is a run's measurements.
type result struct {
	sides []*side
	o     options
}

// sideFigures are the medians of one side over the rounds.
type sideFigures struct {
	rate, p50, p99, cpu, genCPU, spread float64
	rss, hwm                            int64
}

func (s *side) figures() sideFigures {
	var rate, p50, p99, cpu, gen []float64
	for _, r := range s.runs {
		rate = append(rate, r.rate)
		p50 = append(p50, ms(r.p50))
		p99 = append(p99, ms(r.p99))
		cpu = append(cpu, us(r.cpu))
		gen = append(gen, us(r.genCPU))
	}
	return sideFigures{rate: benchkit.Median(rate), p50: benchkit.Median(p50), p99: benchkit.Median(p99), cpu: benchkit.Median(cpu), genCPU: benchkit.Median(gen),
		spread: benchkit.Spread(rate), rss: s.rss, hwm: s.hwm}
}

func (res *result) side(name string) sideFigures {
	for _, s := range res.sides {
		if s.name == name {
			return s.figures()
		}
	}
	return sideFigures{}
}

// line renders the BENCH line.
func (res *result) line() string {
	var b strings.Builder
	b.WriteString("BENCH ratelimit_vs_gubernator")
	add := func(k string, v string) { b.WriteString(" " + k + "=" + v) }
	for _, s := range res.sides {
		f := s.figures()
		add(s.name+"_per_s", benchkit.FormatNum(f.rate))
		add(s.name+"_p50_ms", benchkit.FormatNum(f.p50))
		add(s.name+"_p99_ms", benchkit.FormatNum(f.p99))
		add(s.name+"_cpu_us", benchkit.FormatNum(f.cpu))
		add(s.name+"_rss_mib", benchkit.FormatNum(float64(f.rss)/(1<<20)))
		add(s.name+"_hwm_mib", benchkit.FormatNum(float64(f.hwm)/(1<<20)))
	}
	e, g, bare := res.side("edgeshard"), res.side("gubernator"), res.side("bare")
	add("edgeshard_vs_gubernator", benchkit.FormatNum(e.rate/g.rate))
	add("edgeshard_vs_bare", benchkit.FormatNum(e.rate/bare.rate))
	add("gubernator_vs_bare", benchkit.FormatNum(g.rate/bare.rate))
	var sp float64
	for _, s := range res.sides {
		sp = max(sp, s.figures().spread)
	}
	add("spread", benchkit.FormatNum(sp))
	add("rounds", strconv.Itoa(res.o.rounds))
	add("side_s", benchkit.FormatNum(res.o.side.Seconds()))
	add("workers", strconv.Itoa(res.o.workers))
	add("keys", strconv.Itoa(res.o.keys))
	add("shards", strconv.Itoa(res.o.shards))
	if res.o.variantShards > 0 {
		add("variant_shards", strconv.Itoa(res.o.variantShards))
	}
	return b.String()
}

// sideDoc says what the peers' sides run, for the table (doc).
var sideDoc = map[string]string{
	"gubernator": "gubernator v2.13.0, one in-memory node, `POST /v1/GetRateLimits` (HTTP gateway → GRPC)",
	"bare":       "net/http + in-memory map, same parser and window arithmetic, `POST /check`",
}

// doc says what side name runs, for the table: an edgeshard side with its
// shard count and, for the variant, what it changes.
func (res *result) doc(name string) string {
	switch name {
	case "edgeshard":
		return fmt.Sprintf("`edgeshard serve`, RateLimitShard ×%d, `POST /do/LIMITS/{key}/check` (defaults: Badger, fsync'd group commit)", res.o.shards)
	case "variant":
		d := fmt.Sprintf("`edgeshard serve`, RateLimitShard ×%d", res.o.variantShards)
		if res.o.variant != "" {
			d += fmt.Sprintf(", config %q", res.o.variant)
		}
		if res.o.variantEnv != "" {
			d += ", env " + res.o.variantEnv
		}
		return d
	}
	return sideDoc[name]
}

// table renders the Markdown table.
func (res *result) table() string {
	var b strings.Builder
	bare := res.side("bare")
	b.WriteString("| side | decisions/s | vs bare | p50 ms | p99 ms | server CPU µs/decision | RSS MiB (peak) | what runs |\n")
	b.WriteString("|---|---|---|---|---|---|---|---|\n")
	for _, s := range res.sides {
		f := s.figures()
		fmt.Fprintf(&b, "| %s | %s | %.2f | %s | %s | %s | %d (%d) | %s |\n", s.name, benchkit.FormatNum(f.rate), f.rate/bare.rate,
			benchkit.FormatNum(f.p50), benchkit.FormatNum(f.p99), benchkit.FormatNum(f.cpu), f.rss>>20, f.hwm>>20, res.doc(s.name))
	}
	e, g := res.side("edgeshard"), res.side("gubernator")
	fmt.Fprintf(&b, "\nedgeshard/gubernator: **%.2f×** the decisions/s, %.2f× the p99, %.2f× the RSS.\n",
		e.rate/g.rate, e.p99/g.p99, float64(e.rss)/float64(g.rss))
	return b.String()
}

// runEnv describes the machine and the code a run measured.
type runEnv struct {
	Root, CPU, LoadAvg, Go, Commit, Date, Command string
	Cores                                         int
}

func captureEnv(root string) runEnv {
	e := runEnv{Root: root, CPU: runtime.GOARCH, Cores: runtime.NumCPU(), Go: runtime.Version(),
		Date: time.Now().UTC().Format("2006-01-02 15:04 UTC"), Commit: "unknown"}
	if f, err := os.Open("/proc/cpuinfo"); err == nil {
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			if k, v, ok := strings.Cut(sc.Text(), ":"); ok && strings.TrimSpace(k) == "model name" {
				e.CPU = strings.TrimSpace(v)
				break
			}
		}
		f.Close()
	}
	if b, err := os.ReadFile("/proc/loadavg"); err == nil {
		if f := strings.Fields(string(b)); len(f) >= 3 {
			e.LoadAvg = strings.Join(f[:3], " ")
		}
	}
	if out, err := exec.Command("git", "-C", root, "rev-parse", "--short=12", "HEAD").Output(); err == nil {
		e.Commit = strings.TrimSpace(string(out))
		if st, err := exec.Command("git", "-C", root, "status", "--porcelain", "--untracked-files=no").Output(); err == nil && len(strings.TrimSpace(string(st))) > 0 {
			e.Commit += "-dirty"
		}
	}
	return e
}

// Markers of the region of docs/BENCHMARKS.md this command rewrites.
const (
	peersBegin = "<!-- bench:peers:begin -->"
	peersEnd   = "<!-- bench:peers:end -->"
)

// updateDocs rewrites the peers region of the document with this run.
func updateDocs(path string, env runEnv, res *result, o options) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	doc := string(b)
	i, j := strings.Index(doc, peersBegin), strings.Index(doc, peersEnd)
	if i < 0 || j < i {
		return fmt.Errorf("markers %s … %s not found", peersBegin, peersEnd)
	}
	mode := "full"
	if o.quick {
		mode = "quick"
	}
	var body strings.Builder
	fmt.Fprintf(&body, "Run %s, `%s`, %s (%d rounds × %v per side, %d connections, %d keys), %s, %d cores (shared; load average %s at start), %s; `cd bench && %s`.\n\n",
		env.Date, env.Commit, mode, o.rounds, o.side, o.workers, o.keys, env.CPU, env.Cores, env.LoadAvg, env.Go, env.Command)
	body.WriteString(res.table())
	body.WriteString("\n```\n" + res.line() + "\n```\n")
	doc = doc[:i+len(peersBegin)] + "\n" + body.String() + doc[j:]
	return os.WriteFile(path, []byte(doc), 0o644)
}
