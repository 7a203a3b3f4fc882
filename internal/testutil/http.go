package testutil

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
)

// Do sends one request through http.DefaultClient and returns the answer's
// status and body. body "" sends none; headers are name, value pairs (a
// pair with an empty value is left out, so an absent token sends no
// Authorization). A request that cannot be built or gets no answer fails
// the test.
func Do(tb testing.TB, method, url, body string, headers ...string) (int, string) {
	tb.Helper()
	return DoWith(tb, http.DefaultClient, method, url, body, headers...)
}

// DoWith is Do through client (its own redirect policy, pool or timeout).
func DoWith(tb testing.TB, client *http.Client, method, url, body string, headers ...string) (int, string) {
	tb.Helper()
	var r io.Reader
	if body != "" {
		r = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, url, r)
	if err != nil {
		tb.Fatalf("%s %s: %v", method, url, err)
	}
	for i := 0; i+1 < len(headers); i += 2 {
		if headers[i+1] != "" {
			req.Header.Set(headers[i], headers[i+1])
		}
	}
	resp, err := client.Do(req)
	if err != nil {
		tb.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		tb.Fatalf("%s %s: read the answer: %v", method, url, err)
	}
	return resp.StatusCode, string(b)
}

// Bearer is the Authorization value for token, "" (no header) for none.
func Bearer(token string) string {
	if token == "" {
		return ""
	}
	return "Bearer " + token
}

// CounterReply is the counter example's answer (examples/counter): its
// count and the version it was built with.
type CounterReply struct {
	Count   int    `json:"count"`
	Version string `json:"version"`
}

// Increment posts /increment to the counter example object at url (its
// /do/COUNTER/<name> base) through client and decodes the answer; another
// status than 200, or an answer that is not the counter's, is an error.
// It takes no testing.TB: load generators call it from their workers.
func Increment(ctx context.Context, client *http.Client, url string) (CounterReply, error) {
	var r CounterReply
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url+"/increment", nil)
	if err != nil {
		return r, err
	}
	resp, err := client.Do(req)
	if err != nil {
		return r, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return r, err
	}
	if resp.StatusCode != http.StatusOK {
		return r, fmt.Errorf("status %d: %s", resp.StatusCode, b)
	}
	if err := json.Unmarshal(b, &r); err != nil || r.Count < 1 {
		return r, fmt.Errorf("bad answer %q", b)
	}
	return r, nil
}
