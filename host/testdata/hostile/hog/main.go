// Command hog is a hostile Go plugin for the host's limit tests: each
// route asks the host for more than it should get and answers what it got,
// as "written=N errno=E" (E is 0 when nothing was refused; the message of
// a refusal follows).
//
//	POST /overwrite?n=N&size=S  puts one key N times with S-byte values
//	POST /fill?prefix=P&n=N&size=S[&crash=1]
//	                            puts keys P0..P(N-1) with S-byte values
//	                            (crash=1: then panics, so the event aborts)
//	POST /delete?prefix=P       deletes every key with prefix P
//	GET  /keys                  the number of keys the shard lists
//	POST /log?n=N               logs N records
//	POST /forge?shard=S         logs one record whose fields name the
//	                            host's (level, time, message, component,
//	                            binding, shard S, guest_code), with two
//	                            codes: E-VIBECODR-2131, then E-OTHER-1
//	POST /reserved?key=HEX      get, put, delete of the key; their errnos
package main

import (
	"encoding/hex"
	"errors"
	"strconv"
	"strings"

	"github.com/edgeshard/edgeshard/abi"
	"github.com/edgeshard/edgeshard/abi/sdk"
)

func main() {}

func init() {
	sdk.Serve(sdk.Handlers{Fetch: fetch})
}

func num(req *sdk.Request, name string) int {
	n, _ := strconv.Atoi(sdk.Query(req, name))
	return n
}

// errno returns the errno of a host call's error, 0 for none.
func errno(err error) abi.Errno {
	var he *sdk.HostError
	if errors.As(err, &he) {
		return he.Errno
	}
	if err != nil {
		return abi.ErrnoInternal
	}
	return 0
}

func report(n int, err error) *sdk.Response {
	s := "written=" + strconv.Itoa(n) + " errno=" + strconv.Itoa(int(errno(err)))
	if err != nil {
		s += " " + err.Error()
	}
	return sdk.Text(200, s)
}

func fetch(req *sdk.Request) *sdk.Response {
	st := sdk.Storage()
	switch sdk.PathOnly(req) {
	case "/overwrite":
		val := make([]byte, num(req, "size"))
		for i := 0; i < num(req, "n"); i++ {
			if err := st.Put("k", val); err != nil {
				return report(i, err)
			}
		}
		return report(num(req, "n"), nil)
	case "/fill":
		val := make([]byte, num(req, "size"))
		prefix := sdk.Query(req, "prefix")
		for i := 0; i < num(req, "n"); i++ {
			if err := st.Put(prefix+strconv.Itoa(i), val); err != nil {
				return report(i, err)
			}
		}
		if sdk.Query(req, "crash") == "1" {
			panic("hog: crash after the writes, on purpose")
		}
		return report(num(req, "n"), nil)
	case "/delete":
		kvs, err := st.List(sdk.ListOptions{Prefix: sdk.Query(req, "prefix")})
		if err != nil {
			return report(0, err)
		}
		keys := make([]string, 0, len(kvs))
		for _, kv := range kvs {
			keys = append(keys, kv.Key)
		}
		n, err := st.DeleteMulti(keys)
		return report(n, err)
	case "/keys":
		kvs, err := st.List(sdk.ListOptions{})
		return report(len(kvs), err)
	case "/log":
		for i := 0; i < num(req, "n"); i++ {
			rec := abi.LogRecord{Message: "hog line " + strconv.Itoa(i)}
			enc := abi.AppendLogRecord(nil, &rec)
			if r := logWrite(abi.LogInfo, &enc[0], uint32(len(enc))); r < 0 {
				return report(i, &sdk.HostError{Errno: abi.Errno(-r), Op: "log"})
			}
		}
		return report(num(req, "n"), nil)
	case "/forge":
		sdk.Info("forged", "code", "E-VIBECODR-2131", "level", "error", "time", "0", "message", "m",
			"component", "host", "binding", "OTHER", "shard", sdk.Query(req, "shard"),
			"guest_code", "g", "code", "E-OTHER-1", "k", "v")
		return sdk.Text(200, "ok")
	case "/reserved":
		key, _ := hex.DecodeString(sdk.Query(req, "key"))
		_, _, gerr := st.Get(string(key))
		perr := st.Put(string(key), []byte("x"))
		_, derr := st.Delete(string(key))
		kvs, lerr := st.List(sdk.ListOptions{})
		var listed []string
		for _, kv := range kvs {
			listed = append(listed, hex.EncodeToString([]byte(kv.Key)))
		}
		return sdk.Text(200, strings.Join([]string{
			strconv.Itoa(int(errno(gerr))), strconv.Itoa(int(errno(perr))), strconv.Itoa(int(errno(derr))),
			strconv.Itoa(int(errno(lerr))), strings.Join(listed, "+"),
		}, ","))
	}
	return sdk.Text(200, "ok")
}

// logWrite is the raw import: sdk.Log drops the result.
//
//go:wasmimport edgeshard log_write
func logWrite(level int32, p *byte, l uint32) int32
