package main

import (
	"strconv"
	"strings"

	"github.com/edgeshard/edgeshard/abi"
	"github.com/edgeshard/edgeshard/plugins/proto"
	"github.com/edgeshard/edgeshard/plugins/proto/counters"
)

// addOverflows reports whether a+b overflows int64.
func addOverflows(a, b int64) bool {
	s := a + b
	return (a > 0 && b > 0 && s < 0) || (a < 0 && b < 0 && s >= 0)
}

// Batch is a frozen flush: a sequence number, the node it was frozen on
// (the host's node id then; its sequence is kept under that node and the
// shard's name, also when the host's node id changes before it is sent),
// and its deltas.
type Batch struct {
	Seq    int64
	Node   string
	Deltas []counters.Delta
}

// Encode returns "seq[\tnode]\n" followed by one delta line each. A batch
// of no node encodes as batches did before nodes existed.
func (b *Batch) Encode() []byte {
	out := strconv.AppendInt(make([]byte, 0, 16+len(b.Node)+len(b.Deltas)*40), b.Seq, 10)
	if b.Node != "" {
		out = append(out, '\t')
		out = append(out, b.Node...)
	}
	out = append(out, '\n')
	for i := range b.Deltas {
		out = b.Deltas[i].AppendLine(out)
	}
	return out
}

// DecodeBatch parses what Encode produced.
func DecodeBatch(s string) (Batch, error) {
	lines := proto.NewLines(s)
	first, _, ok := lines.Next()
	if !ok {
		return Batch{}, errBatch("empty")
	}
	first, node, _ := strings.Cut(first, "\t")
	seq, ok := proto.ParseInt(first)
	if !ok || seq < 1 {
		return Batch{}, errBatch("bad sequence " + strconv.Quote(first))
	}
	if node != "" && !abi.ValidNodeID(node) {
		return Batch{}, errBatch("bad node " + strconv.Quote(node))
	}
	b := Batch{Seq: seq, Node: node}
	for {
		l, no, ok := lines.Next()
		if !ok {
			return b, nil
		}
		d, le := counters.ParseDelta(l)
		if le != nil {
			return Batch{}, errBatch("line " + strconv.Itoa(no) + ": " + le.Msg)
		}
		b.Deltas = append(b.Deltas, d)
	}
}

type errBatch string

func (e errBatch) Error() string { return "malformed inflight batch: " + string(e) }
