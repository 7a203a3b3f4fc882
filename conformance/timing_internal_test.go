package conformance

import (
	"context"
	"os"
	"testing"
	"time"

	"github.com/edgeshard/edgeshard/host"
	"github.com/edgeshard/edgeshard/internal/testutil"
)

func TestTimingInternal(t *testing.T) {
	wasm := testutil.Plugin(t, "examples/counter")
	bin, _ := os.ReadFile(wasm)
	for i := 0; i < 4; i++ {
		t0 := time.Now()
		_, err := host.ValidateModule(context.Background(), bin, nil, testutil.CacheDir())
		t.Log(time.Since(t0), err != nil)
	}
}
