package main

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"time"
)

// runEnv describes the machine and the code a run measured.
type runEnv struct {
	CPU     string
	Cores   int
	LoadAvg string // 1, 5 and 15 minute load averages at the start
	Go      string
	Commit  string
	Date    string
	Command string
}

func captureEnv(root string, args []string) runEnv {
	e := runEnv{CPU: cpuModel(), Cores: runtime.NumCPU(), Go: runtime.Version(),
		Date: time.Now().UTC().Format("2006-01-02 15:04 UTC"), Command: "go run ./cmd/edgeshard-bench"}
	if len(args) > 0 {
		e.Command += " " + strings.Join(args, " ")
	}
	if b, err := os.ReadFile("/proc/loadavg"); err == nil {
		if f := strings.Fields(string(b)); len(f) >= 3 {
			e.LoadAvg = strings.Join(f[:3], " ")
		}
	}
	e.Commit = "unknown"
	if out, err := exec.Command("git", "-C", root, "rev-parse", "--short=12", "HEAD").Output(); err == nil {
		e.Commit = strings.TrimSpace(string(out))
		if st, err := exec.Command("git", "-C", root, "status", "--porcelain", "--untracked-files=no").Output(); err == nil && len(strings.TrimSpace(string(st))) > 0 {
			e.Commit += "-dirty"
		}
	}
	return e
}

// cpuModel returns the first "model name" of /proc/cpuinfo.
func cpuModel() string {
	f, err := os.Open("/proc/cpuinfo")
	if err != nil {
		return runtime.GOARCH
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if k, v, ok := strings.Cut(sc.Text(), ":"); ok && strings.TrimSpace(k) == "model name" {
			return strings.TrimSpace(v)
		}
	}
	return runtime.GOARCH
}

// Markers of the regions of docs/BENCHMARKS.md the driver rewrites.
const (
	envBegin       = "<!-- bench:env:begin -->"
	envEnd         = "<!-- bench:env:end -->"
	resultsBegin   = "<!-- bench:results:begin -->"
	resultsEnd     = "<!-- bench:results:end -->"
	historyBegin   = "<!-- bench:history:begin -->"
	historyEnd     = "<!-- bench:history:end -->"
	uncheckedBegin = "<!-- bench:unchecked:begin -->"
	uncheckedEnd   = "<!-- bench:unchecked:end -->"
)

// historyRowsAs returns the data rows of the history table hist with their
// cells moved under the columns of figs: a row keeps its figures' values
// when figures are added, removed or reordered ("—" where it has none).
func historyRowsAs(hist string, figs []figure) []string {
	var cols []string
	var rows []string
	for _, l := range strings.Split(hist, "\n") {
		cells := tableCells(l)
		switch {
		case len(cells) > 3 && cells[0] == "date":
			cols = cells[3:]
		case strings.HasPrefix(l, "| 20") && cols != nil: // data rows start with the date
			val := map[string]string{}
			for i, c := range cells[min(3, len(cells)):] {
				if i < len(cols) {
					val[cols[i]] = c
				}
			}
			row := "| " + strings.Join(cells[:min(3, len(cells))], " | ") + " |"
			for _, f := range figs {
				c, ok := val[f.name]
				if !ok {
					c = "—"
				}
				row += " " + c + " |"
			}
			rows = append(rows, row)
		}
	}
	return rows
}

// tableCells splits a Markdown table row into its trimmed cells.
func tableCells(l string) []string {
	l = strings.TrimSpace(l)
	if !strings.HasPrefix(l, "|") || !strings.HasSuffix(l, "|") || len(l) < 2 {
		return nil
	}
	var parts []string
	inner, start := l[1:len(l)-1], 0
	for i := 0; i < len(inner); i++ {
		switch inner[i] {
		case '\\':
			i++ // an escaped character, "\|" among them
		case '|':
			parts = append(parts, strings.TrimSpace(inner[start:i]))
			start = i + 1
		}
	}
	return append(parts, strings.TrimSpace(inner[start:]))
}

// historyRows is how many runs the history table keeps.
const historyRows = 15

// updateDocs rewrites the machine block and the results table of the
// document with this run and appends the run to the history table. Rows
// of figures this run did not measure keep their earlier values.
func updateDocs(root, rel string, env runEnv, results []*result, quick, unchecked bool, sz sizes) error {
	path := filepath.Join(root, rel)
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	doc := string(b)
	mode := "full"
	if quick {
		mode = "quick"
	}
	if unchecked {
		return updateUnchecked(path, doc, env, results, mode)
	}
	envBlock := fmt.Sprintf("| | |\n|---|---|\n| machine | %s, %d cores (shared; load average %s at start) |\n| Go | %s |\n| commit | `%s` |\n| date | %s |\n| command | `%s` (%s: %d rounds × %v per side) |\n",
		env.CPU, env.Cores, env.LoadAvg, env.Go, env.Commit, env.Date, env.Command, mode, sz.Rounds, sz.Side)
	if doc, err = replaceRegion(doc, envBegin, envEnd, envBlock); err != nil {
		return err
	}

	old, err := region(doc, resultsBegin, resultsEnd)
	if err != nil {
		return err
	}
	rows := map[string]string{}
	for _, l := range strings.Split(old, "\n") {
		if name, ok := rowName(l); ok {
			rows[name] = l
		}
	}
	byName := map[string]*result{}
	for _, res := range results {
		byName[res.name] = res
	}
	var tbl strings.Builder
	tbl.WriteString("| figure | measured | goal | met | details | run |\n|---|---|---|---|---|---|\n")
	for _, f := range figures {
		if res := byName[f.name]; res != nil {
			met := "✅ yes"
			if !res.met {
				met = "❌ no"
			}
			fmt.Fprintf(&tbl, "| `%s` | %s | %s | %s | %s | %s, `%s`, %s |\n", f.name, res.headline, f.goal, met,
				strings.ReplaceAll(res.note, "|", "\\|"), env.Date, env.Commit, mode)
		} else if l, ok := rows[f.name]; ok {
			tbl.WriteString(l + "\n")
		} else {
			fmt.Fprintf(&tbl, "| `%s` | not measured yet | %s | | | |\n", f.name, f.goal)
		}
	}
	if doc, err = replaceRegion(doc, resultsBegin, resultsEnd, tbl.String()); err != nil {
		return err
	}

	hist, err := region(doc, historyBegin, historyEnd)
	if err != nil {
		return err
	}
	kept := historyRowsAs(hist, figures)
	row := "| " + env.Date + " | `" + env.Commit + "` | " + mode + " |"
	for _, f := range figures {
		cell := "—"
		if res := byName[f.name]; res != nil {
			cell = res.headline
			if !res.met {
				cell += " ❌"
			}
		}
		row += " " + cell + " |"
	}
	kept = append(kept, row)
	if len(kept) > historyRows {
		kept = kept[len(kept)-historyRows:]
	}
	var h strings.Builder
	h.WriteString("| date | commit | mode |")
	for _, f := range figures {
		h.WriteString(" " + f.name + " |")
	}
	h.WriteString("\n|---|---|---|" + strings.Repeat("---|", len(figures)) + "\n")
	for _, l := range kept {
		h.WriteString(l + "\n")
	}
	if doc, err = replaceRegion(doc, historyBegin, historyEnd, h.String()); err != nil {
		return err
	}
	return os.WriteFile(path, []byte(doc), 0o644)
}

// updateUnchecked rewrites the table of the -unchecked experiment.
func updateUnchecked(path, doc string, env runEnv, results []*result, mode string) error {
	var tbl strings.Builder
	fmt.Fprintf(&tbl, "Run %s, `%s`, %s, load average %s at start, `%s`.\n\n", env.Date, env.Commit, mode, env.LoadAvg, env.Command)
	tbl.WriteString("| figure | measured without termination checks | goal | met |\n|---|---|---|---|\n")
	for _, res := range results {
		met := "yes"
		if !res.met {
			met = "no"
		}
		goal := ""
		for _, f := range figures {
			if f.name == res.name {
				goal = f.goal
			}
		}
		fmt.Fprintf(&tbl, "| `%s` | %s | %s | %s |\n", res.name, res.headline, goal, met)
	}
	doc, err := replaceRegion(doc, uncheckedBegin, uncheckedEnd, tbl.String())
	if err != nil {
		return err
	}
	return os.WriteFile(path, []byte(doc), 0o644)
}

// rowName returns the figure name of a results-table row.
func rowName(l string) (string, bool) {
	if !strings.HasPrefix(l, "| `") {
		return "", false
	}
	rest := strings.TrimPrefix(l, "| `")
	name, _, ok := strings.Cut(rest, "`")
	return name, ok
}

func region(doc, begin, end string) (string, error) {
	i := strings.Index(doc, begin)
	j := strings.Index(doc, end)
	if i < 0 || j < i {
		return "", fmt.Errorf("markers %s … %s not found", begin, end)
	}
	return doc[i+len(begin) : j], nil
}

func replaceRegion(doc, begin, end, body string) (string, error) {
	i := strings.Index(doc, begin)
	j := strings.Index(doc, end)
	if i < 0 || j < i {
		return "", fmt.Errorf("markers %s … %s not found", begin, end)
	}
	return doc[:i+len(begin)] + "\n" + body + doc[j:], nil
}
