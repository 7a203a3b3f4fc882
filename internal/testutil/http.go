package testutil

import (
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
