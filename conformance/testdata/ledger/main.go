// Command ledger is a test plugin for the conformance kit's SQL, analytics,
// log and alarm steps: it buffers amounts durably and flushes their sum on
// its alarm, 1 s after the first one, as one SQL row per flush (exactly
// once: the flush sequence number is the row's key) plus one analytics data
// point. A failed flush logs E-LEDGER-2 and retries by alarm after 1 s.
//
// Routes: POST /add?n=K, GET /state, GET /var?name=X, POST /alarm-now.
package main

import (
	"strconv"
	"time"

	"github.com/edgeshard/edgeshard/abi"
	"github.com/edgeshard/edgeshard/abi/sdk"
)

func main() {}

func init() {
	sdk.Serve(sdk.Handlers{Fetch: fetch, Alarm: alarm})
}

func fetch(req *sdk.Request) *sdk.Response {
	st := sdk.Storage()
	switch path := sdk.PathOnly(req); {
	case path == "/add" && req.Method == "POST":
		n, err := strconv.ParseInt(sdk.Query(req, "n"), 10, 64)
		if err != nil || n <= 0 {
			return sdk.ErrorJSON(400, "bad_n", "n must be a positive integer")
		}
		pending := num("pending") + n
		if err := st.Put("pending", strconv.AppendInt(nil, pending, 10)); err != nil {
			return sdk.ErrorJSON(500, "storage", err.Error())
		}
		if err := st.Put("shard", []byte(abi.GetHeader(req.Header, "X-Edgeshard-Shard"))); err != nil {
			return sdk.ErrorJSON(500, "storage", err.Error())
		}
		if _, set, _ := sdk.GetAlarm(); !set {
			if err := sdk.SetAlarm(time.Now().Add(time.Second)); err != nil {
				return sdk.ErrorJSON(500, "alarm", err.Error())
			}
		}
		return sdk.RawJSON(200, []byte(`{"pending":`+strconv.FormatInt(pending, 10)+`}`))
	case path == "/state" && req.Method == "GET":
		return sdk.RawJSON(200, []byte(`{"pending":`+strconv.FormatInt(num("pending"), 10)+`,"seq":`+strconv.FormatInt(num("seq"), 10)+`}`))
	case path == "/var" && req.Method == "GET":
		v, ok := sdk.Var(sdk.Query(req, "name"))
		return sdk.JSON(200, map[string]any{"value": v, "set": ok})
	case path == "/alarm-now" && req.Method == "POST":
		if err := sdk.SetAlarm(time.Now()); err != nil {
			return sdk.ErrorJSON(500, "alarm", err.Error())
		}
		return sdk.RawJSON(200, []byte(`{"ok":true}`))
	}
	return sdk.ErrorJSON(404, "not_found", "no route "+req.Method+" "+sdk.PathOnly(req))
}

func alarm(sdk.AlarmInfo) error {
	st := sdk.Storage()
	pending := num("pending")
	if pending == 0 {
		return nil
	}
	shard := str("shard")
	seq := num("seq") + 1
	_, err := sdk.SQL().Batch([]sdk.Statement{
		{SQL: `CREATE TABLE IF NOT EXISTS ledger_flushes (shard TEXT NOT NULL, seq INTEGER NOT NULL, total INTEGER NOT NULL, PRIMARY KEY (shard, seq))`},
		{SQL: `INSERT INTO ledger_flushes (shard, seq, total) VALUES (?, ?, ?) ON CONFLICT (shard, seq) DO NOTHING`, Args: []any{shard, seq, pending}},
	})
	if err != nil {
		sdk.Error("ledger flush failed", "code", "E-LEDGER-2", "shard", shard, "count", strconv.FormatInt(pending, 10), "error", err.Error())
		return sdk.SetAlarm(time.Now().Add(time.Second))
	}
	if err := sdk.Analytics().WriteDataPoint(sdk.DataPoint{Indexes: []string{shard}, Doubles: []float64{float64(pending)}}); err != nil {
		sdk.Warn("ledger analytics write failed", "error", err.Error())
	}
	if _, err := st.Delete("pending"); err != nil {
		return err
	}
	if err := st.Put("seq", strconv.AppendInt(nil, seq, 10)); err != nil {
		return err
	}
	sdk.Info("ledger flushed", "code", "E-LEDGER-1", "shard", shard, "count", strconv.FormatInt(pending, 10), "seq", strconv.FormatInt(seq, 10))
	return nil
}

func str(key string) string {
	v, _, _ := sdk.Storage().Get(key)
	return string(v)
}

func num(key string) int64 {
	n, _ := strconv.ParseInt(str(key), 10, 64)
	return n
}
