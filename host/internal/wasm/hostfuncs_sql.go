package wasm

import (
	"fmt"

	"github.com/edgeshard/edgeshard/abi"
	"github.com/tetratelabs/wazero/api"
)

// SQL host functions (group "sql", granted when the binding names a
// database): batches of statements run in one transaction, through
// Env.SQL.

// sqlFuncs are the host functions of group "sql".
var sqlFuncs = []hostFunc{sqlExec}

// sqlExec is sql_exec(stmts_ptr, stmts_len, buf, cap) -> i64: runs a batch
// of statements in one transaction (all apply or none) and answers their
// results.
//
// Parameters:
//   - stmts_ptr, stmts_len: encoded Statements, at most abi.MaxSQLPayload
//     bytes, abi.MaxSQLStatements statements of abi.MaxSQLArgs arguments;
//   - buf, cap: where the encoded Results go (held for result_take past
//     cap).
//
// Result: the encoded Results' length. Errnos: ErrnoSQL when a statement
// failed (the batch rolled back; the message names the statement);
// ErrnoFault; ErrnoTooLarge for a batch over 16 MiB or over a count limit
// (checked before decoding); ErrnoInvalid for a malformed batch.
var sqlExec = hostFunc{abi.FnSQLExec, sqlExecFn, p(i32, i32, i32, i32), p(i64)}

func sqlExecFn(c *call, mod api.Module, s []uint64) {
	raw, ok := c.boundedArg(mod, s, 0, abi.MaxSQLPayload, "SQL batch")
	if !ok {
		return
	}
	if err := sqlCounts(raw); err != nil {
		c.fail(s, abi.ErrnoTooLarge, err.Error())
		return
	}
	stmts, err := abi.DecodeStatements(raw)
	if c.invalid(s, err) {
		return
	}
	rs, err := c.env.SQL(c.ctx, stmts)
	if err != nil {
		s[0] = neg(c.groupErrno(err, abi.ErrnoSQL))
		return
	}
	s[0] = c.reply(mod, abi.AppendResults(nil, rs), u32(s[2]), u32(s[3]))
}

// sqlCounts walks an encoded batch without allocating and reports a
// statement or argument count above the ABI limits. Decoding first would let
// a 16 MiB batch of one-byte NULL arguments cost the host 16 bytes of []any
// per byte. Malformed input is left for the decoder to report.
func sqlCounts(raw []byte) error {
	d := abi.NewDecoder(raw)
	n := d.U32()
	if n > abi.MaxSQLStatements {
		return fmt.Errorf("%d statements in one batch, at most %d allowed", n, abi.MaxSQLStatements)
	}
	for i := uint32(0); i < n && d.Err() == nil; i++ {
		d.Bytes() // SQL text
		na := d.U32()
		if na > abi.MaxSQLArgs {
			return fmt.Errorf("statement %d: %d arguments, at most %d allowed", i+1, na, abi.MaxSQLArgs)
		}
		for j := uint32(0); j < na && d.Err() == nil; j++ {
			switch d.U8() {
			case abi.TagInt, abi.TagFloat:
				d.U64()
			case abi.TagText, abi.TagBlob:
				d.Bytes()
			}
		}
	}
	return nil
}
