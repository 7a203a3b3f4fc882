package proto

import (
	"strings"
	"testing"
)

// TestValidID is the one id rule: 1-128 bytes of [A-Za-z0-9._:@+=~|-].
func TestValidID(t *testing.T) {
	for _, s := range []string{"a", "Z9", "user.1", "cap:2026-01-01", "a@b+c=d~e|f-g", "snake_case", "0b6f7c8e-5d3a-4e7b-9a51-2f0c1d9e8a7b", strings.Repeat("x", MaxIDBytes)} {
		if !ValidID(s) {
			t.Errorf("ValidID(%q) = false", s)
		}
	}
	for _, s := range []string{"", strings.Repeat("x", MaxIDBytes+1), "a b", "a/b", "../..", "a\tb", "a\nb", "r😀", "r\u202e1",
		"é", "a\x00", "a\x7f", `a"b`, "a\\b", "a,b", "a;b", "a?b", "a#b", "a%2f"} {
		if ValidID(s) {
			t.Errorf("ValidID(%q) = true", s)
		}
	}
}

func TestLineError(t *testing.T) {
	if s := (&LineError{Line: 3, Code: "bad_id", Msg: "id must be x"}).Error(); s != "line 3: id must be x" {
		t.Fatal(s)
	}
	if s := (&LineError{Code: "empty_body", Msg: "no lines"}).Error(); s != "no lines" {
		t.Fatal(s)
	}
}

func TestLinesNumbersEveryPhysicalLine(t *testing.T) {
	l := NewLines("a\r\n\nb\nc")
	var got []string
	var nos []int
	for {
		s, no, ok := l.Next()
		if !ok {
			break
		}
		got = append(got, s)
		nos = append(nos, no)
	}
	if len(got) != 3 || got[0] != "a" || got[1] != "b" || got[2] != "c" || nos[0] != 1 || nos[1] != 3 || nos[2] != 4 {
		t.Fatalf("lines %q at %v", got, nos)
	}
}

func TestFields(t *testing.T) {
	var f [3]string
	if n := Fields("a\t\tc", f[:]); n != 3 || f[0] != "a" || f[1] != "" || f[2] != "c" {
		t.Fatalf("%d %q", n, f)
	}
	if n := Fields("a\tb\tc\td", f[:]); n != 4 {
		t.Fatalf("4 fields counted as %d", n)
	}
	if n := Fields("", f[:]); n != 1 {
		t.Fatalf("empty line: %d fields", n)
	}
}

// TestAppendLineRoundTrip: a line AppendFields, AppendInts and EndLine
// build splits back into its fields.
func TestAppendLineRoundTrip(t *testing.T) {
	b := EndLine(AppendInts(AppendFields(nil, "a", "", "c"), -7, 42))
	if string(b) != "a\t\tc\t-7\t42\n" {
		t.Fatalf("line %q", b)
	}
	var f [6]string
	if n := Fields(string(b[:len(b)-1]), f[:]); n != 5 || f[1] != "" || f[3] != "-7" || f[4] != "42" {
		t.Fatalf("%d fields %q", n, f)
	}
}
