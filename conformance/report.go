package conformance

import (
	"fmt"
	"strings"
	"time"
)

// Report is the outcome of RunSuite.
type Report struct {
	// Suite is the suite's name.
	Suite          string
	Passed, Failed int
	Results        []ScenarioResult
	// Err is a problem that kept every scenario from running (invalid
	// suite or options, unreadable plugin; those scenarios are failed with
	// it too), or why the run stopped early (its context ended).
	Err error
}

func (r *Report) add(res ScenarioResult) {
	res.Passed = res.Failure == nil
	if res.Passed {
		r.Passed++
	} else {
		r.Failed++
	}
	r.Results = append(r.Results, res)
}

// String lists every scenario (PASS/FAIL, failure detail) and ends with
// the line "N passed, M failed".
func (r Report) String() string {
	var b strings.Builder
	for _, res := range r.Results {
		b.WriteString(res.String())
		b.WriteByte('\n')
	}
	if r.Err != nil && !r.errShown() {
		fmt.Fprintf(&b, "error: %v\n", r.Err)
	}
	fmt.Fprintf(&b, "%d passed, %d failed\n", r.Passed, r.Failed)
	return b.String()
}

// errShown reports whether Err is already shown as a setup failure.
func (r Report) errShown() bool {
	for _, res := range r.Results {
		if f := res.Failure; f != nil && f.Kind == "setup" && f.Message == r.Err.Error() {
			return true
		}
	}
	return false
}

// ScenarioResult is the outcome of one scenario.
type ScenarioResult struct {
	Name     string
	Passed   bool
	Duration time.Duration
	// Failure is the first step that failed; nil when Passed.
	Failure *Failure
	// Logs are the host's JSON log lines of a failed scenario.
	Logs []string
}

// String is "PASS name (12ms)", or "FAIL name (12ms)" followed by the
// failure, indented.
func (r ScenarioResult) String() string {
	d := r.Duration.Round(time.Millisecond)
	if r.Failure == nil {
		return fmt.Sprintf("PASS %s (%v)", r.Name, d)
	}
	return fmt.Sprintf("FAIL %s (%v)\n    %s", r.Name, d, strings.ReplaceAll(r.Failure.Error(), "\n", "\n    "))
}

// Failure says where a scenario failed and how.
type Failure struct {
	// Step is the index of the failing step in the scenario's steps; -1
	// when the world could not be set up.
	Step int
	// Iteration (from 1) and Repeat locate the failure inside a repeat step.
	Iteration, Repeat int
	// Kind is the failing step's action ("fetch", "expect_sql", ...), or
	// "setup" / "teardown".
	Kind string
	// Action describes the step, e.g. `fetch POST /increment key="a"`.
	Action string
	// Message says what went wrong, e.g. `json $.count: want 0, got 3`.
	Message string
	// Expected and Got render the expectation and what happened.
	Expected, Got string
	// Detail holds more lines: a diff of the shard's keys, near-miss log
	// records, the host's last warnings and errors.
	Detail string
}

// Error renders the failure:
//
//	steps[6] fetch GET / key="x": json $.count: want 0, got 3
//	expected: status 2xx, json {"count":0}
//	got:      status 200, body {"count":3,"version":"dev"}
func (f *Failure) Error() string {
	var b strings.Builder
	switch f.Kind {
	case "setup":
		b.WriteString("setup: ")
	case "teardown":
		b.WriteString("teardown: ")
	default:
		fmt.Fprintf(&b, "steps[%d]", f.Step)
		if f.Iteration > 0 {
			fmt.Fprintf(&b, " (repetition %d of %d)", f.Iteration, f.Repeat)
		}
		if f.Action != "" {
			b.WriteString(" " + f.Action)
		}
		b.WriteString(": ")
	}
	b.WriteString(f.Message)
	if f.Expected != "" {
		b.WriteString("\nexpected: " + f.Expected)
	}
	if f.Got != "" {
		b.WriteString("\ngot:      " + strings.ReplaceAll(f.Got, "\n", "\n          "))
	}
	if f.Detail != "" {
		b.WriteString("\n" + f.Detail)
	}
	return b.String()
}
