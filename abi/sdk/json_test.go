package sdk

import (
	"encoding/json"
	"testing"
)

func TestAppendJSONStringIsValidJSON(t *testing.T) {
	for _, s := range []string{"", "plain", `q"uote\back`, "tab\tnl\ncr\r", "\x00\x1f", "é ü 日本", "bad\xffutf8", "\u2028\u2029"} {
		b := AppendJSONString(nil, s)
		var got string
		if err := json.Unmarshal(b, &got); err != nil {
			t.Fatalf("%q → %s: %v", s, b, err)
		}
		want := s
		if s == "bad\xffutf8" {
			want = "bad\ufffdutf8"
		}
		if got != want {
			t.Fatalf("%q → %s → %q", s, b, got)
		}
	}
}

func TestAppendFields(t *testing.T) {
	b := append([]byte(nil), '{')
	b = AppendJSONInt(b, "n", -3)
	b = AppendJSONBool(b, "ok", true)
	b = AppendJSONStr(b, "s", "x")
	b = append(b, '}')
	if string(b) != `{"n":-3,"ok":true,"s":"x"}` {
		t.Fatal(string(b))
	}
}
