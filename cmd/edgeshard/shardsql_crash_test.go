package main_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/edgeshard/edgeshard/host"
	"github.com/edgeshard/edgeshard/internal/proctest"
	"github.com/edgeshard/edgeshard/internal/testutil"
)

// TestShardSQLSurvivesKill9: the real binary serves a ledger whose shards
// each have their own SQL database (sql = "shard"); clients add entries
// while the process is killed with SIGKILL three times. After each
// restart every shard's two stores agree (key-value balance = SUM of its
// SQL rows, one entry key per row) and hold every acknowledged entry.
func TestShardSQLSurvivesKill9(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the real binary under load")
	}
	const shards = 4
	cfg := fmt.Sprintf(`listen = "{{LISTEN}}"
data_dir = "./data"
cache_dir = %q

[[durable_objects.bindings]]
name = "LEDGER"
module = %q
shards = %d
sql = "shard"
`, testutil.CacheDir(), testutil.Plugin(t, "host/testdata/plugins/shardsql"), shards)
	p := proctest.Start(t, t.TempDir(), cfg)

	var next atomic.Int64
	acked := make([]atomic.Int64, shards) // per shard: entries answered 200
	for round := 0; round < 3; round++ {
		ctx, cancel := context.WithCancel(context.Background())
		var wg sync.WaitGroup
		for w := 0; w < 8; w++ {
			wg.Go(func() {
				c := &http.Client{Timeout: 5 * time.Second}
				for ctx.Err() == nil {
					n := next.Add(1)
					key := "acct" + strconv.FormatInt(n%16, 10)
					url := fmt.Sprintf("%s/do/LEDGER/%s/entry?id=e%d&amount=%d", p.URL(), key, n, n%7+1)
					req, _ := http.NewRequestWithContext(ctx, "POST", url, nil)
					resp, err := c.Do(req)
					if err != nil {
						return // the process died
					}
					resp.Body.Close()
					if resp.StatusCode == 200 {
						acked[host.HashToShard(key)%shards].Add(1)
					}
				}
			})
		}
		time.Sleep(time.Duration(400+200*round) * time.Millisecond)
		p.Kill()
		cancel()
		wg.Wait()
		p.Restart()
		for s := 0; s < shards; s++ {
			st := ledgerState(t, p, s, shards)
			if st.Balance != st.Sum || int64(st.Keys) != st.Rows {
				t.Fatalf("round %d, shard %d: the stores disagree after SIGKILL: %+v\n%s", round, s, st, p.Output())
			}
			if a := acked[s].Load(); st.Rows < a {
				t.Fatalf("round %d, shard %d: %d rows, but %d entries were acknowledged", round, s, st.Rows, a)
			}
		}
		// Whether a kill fell between the two commits is luck; the
		// in-process test (host: TestShardSQLCrashBetweenCommits) forces it.
		t.Logf("round %d: %d entries attempted so far; %d shard(s) repaired at restart", round, next.Load(),
			strings.Count(p.Output(), "applied again"))
	}
	if next.Load() < 50 {
		t.Fatalf("only %d entries attempted: the load never ran", next.Load())
	}
}

type shardLedger struct {
	Balance, Sum, Rows int64
	Keys               int
}

// ledgerState reads the state of shard s through a key that routes to it.
func ledgerState(t *testing.T, p *proctest.Proc, s, shards int) shardLedger {
	t.Helper()
	for i := 0; ; i++ {
		key := "probe" + strconv.Itoa(i)
		if int(host.HashToShard(key)%uint32(shards)) == s {
			return readLedger(t, p, key)
		}
	}
}

// readLedger reads the state of ledger key of the real binary.
func readLedger(t *testing.T, p *proctest.Proc, key string) shardLedger {
	t.Helper()
	resp, err := http.Get(p.URL() + "/do/LEDGER/" + key + "/state")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var st shardLedger
	if resp.StatusCode != 200 || json.NewDecoder(resp.Body).Decode(&st) != nil {
		t.Fatalf("state of ledger %s: status %d", key, resp.StatusCode)
	}
	return st
}
