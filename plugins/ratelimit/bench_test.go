//go:build !wasip1

package main

import (
	"testing"

	"github.com/edgeshard/edgeshard/plugins/proto/ratelimit"
)

// BenchmarkParseCheck is the guest's parse of a three-bucket /check body
// (the edge's user, ip and host buckets), run natively.
func BenchmarkParseCheck(b *testing.B) {
	body := "user:alice\t60\t60000\nip:203.0.113.9\t120\t60000\nhost:example.com\t600\t60000\t2\n"
	b.ReportAllocs()
	for b.Loop() {
		if _, le := ratelimit.ParseCheck(body); le != nil {
			b.Fatal(le)
		}
	}
}

// BenchmarkDecideAndReply is the guest's decision and answer for that
// body, its state read from storage.
func BenchmarkDecideAndReply(b *testing.B) {
	bs, _ := ratelimit.ParseCheck("user:alice\t60\t60000\nip:203.0.113.9\t120\t60000\nhost:example.com\t600\t60000\t2\n")
	now := int64(1767225612345)
	buf := make([]byte, 0, 1024)
	b.ReportAllocs()
	for b.Loop() {
		for i := range bs {
			bs[i].Stored, bs[i].Exists = bs[i].State, true
		}
		all := ratelimit.Decide(bs, now)
		buf = ratelimit.AppendReply(buf[:0], all, bs)
		for i := range bs {
			buf = bs[i].State.Encode(buf)
		}
		now += 7
	}
}
