package main

import (
	"fmt"

	"github.com/edgeshard/edgeshard/abi/sdk"
)

// The room's history in storage:
//
//	h:<seq>   one JSON line, seq in 16 hex digits (so keys sort by it)
//	seq       the last seq written
//
// Only the last keep lines are kept: each new line deletes the one keep
// lines before it.
const (
	historyPrefix = "h:"
	keySeq        = "seq"
	keep          = 50
)

func historyKey(seq uint64) string { return fmt.Sprintf("%s%016x", historyPrefix, seq) }

// remember appends a line to the history.
func remember(l []byte) error {
	st := sdk.Storage()
	var seq uint64
	if v, ok, err := st.Get(keySeq); err != nil {
		return err
	} else if ok {
		if _, err := fmt.Sscanf(string(v), "%x", &seq); err != nil {
			return fmt.Errorf("chat: corrupt %s %q", keySeq, v)
		}
	}
	seq++
	if err := st.PutMulti([]sdk.KV{{Key: historyKey(seq), Value: l}, {Key: keySeq, Value: fmt.Appendf(nil, "%x", seq)}}); err != nil {
		return err
	}
	if seq > keep {
		_, err := st.Delete(historyKey(seq - keep))
		return err
	}
	return nil
}

// recent returns the history, oldest first.
func recent() ([][]byte, error) {
	kvs, err := sdk.Storage().List(sdk.ListOptions{Prefix: historyPrefix})
	if err != nil {
		return nil, err
	}
	out := make([][]byte, len(kvs))
	for i, kv := range kvs {
		out[i] = kv.Value
	}
	return out, nil
}
