package sdk

import "testing"

func TestObjectName(t *testing.T) {
	for h, want := range map[string]string{"ROOMS/lobby": "lobby", "RL/7": "7", "ROOMS/a/b": "a/b", "": "", "nobinding": ""} {
		req := &Request{Header: []Header{{Name: "x-edgeshard-shard", Value: h}}}
		if got := ObjectName(req); got != want {
			t.Errorf("ObjectName(%q) = %q, want %q", h, got, want)
		}
	}
	if got := ObjectName(&Request{}); got != "" {
		t.Errorf("no header: %q", got)
	}
}

func TestPlainID(t *testing.T) {
	for s, want := range map[string]bool{
		"ann": true, "A-Z_a.z:@9": true, "": false, "a b": false, "é": false, "a/b": false, "a\"b": false,
		"0123456789": true, "01234567890": false,
	} {
		if got := PlainID(s, 10); got != want {
			t.Errorf("PlainID(%q, 10) = %v", s, got)
		}
	}
}
