package sqldb

import (
	"context"
	"database/sql/driver"
	"encoding/hex"
	"errors"
	"math"
	"strconv"
	"strings"

	"github.com/edgeshard/edgeshard/abi"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgtype"
)

// Transaction heads of a PostgreSQL batch. A write batch is SERIALIZABLE:
// it commits only if the outcome is that of some order of one batch at a
// time, which is what SQLite's single writer gives. A read batch sees one
// snapshot and never fails for its isolation.
const (
	beginWrite = "BEGIN ISOLATION LEVEL SERIALIZABLE"
	beginRead  = "BEGIN ISOLATION LEVEL REPEATABLE READ"
)

// batchPostgres runs plans in one transaction on one connection, in one
// round trip: BEGIN, the statements and COMMIT are pipelined (sent at once
// under one Sync) and the server stops at the first statement that fails,
// so a batch costs one network round trip however many statements it has —
// what a POP far from its database pays for. A batch PostgreSQL aborted
// for a serialization failure or a deadlock left nothing behind and is run
// again (retry).
func (d *DB) batchPostgres(ctx context.Context, plans []plan, readOnly bool) ([]abi.Result, error) {
	var results []abi.Result
	err := retry(ctx, &d.retries, func() error {
		var err error
		results, err = d.pipeline(ctx, plans, readOnly)
		return err
	})
	return results, err
}

// pipeline runs one attempt of a batch on a connection of the pool.
func (d *DB) pipeline(ctx context.Context, plans []plan, readOnly bool) ([]abi.Result, error) {
	conn, err := d.db.Conn(ctx)
	if err != nil {
		return nil, &opError{op: "connect", err: err}
	}
	defer conn.Close()
	var results []abi.Result
	var runErr error
	err = conn.Raw(func(dc any) error {
		pc := dc.(*pgConn).Conn.Conn().PgConn()
		results, runErr = runPipeline(ctx, pc, plans, readOnly)
		if pc.IsClosed() {
			return driver.ErrBadConn // the pool drops it
		}
		return nil
	})
	if runErr != nil {
		return nil, runErr
	}
	if err != nil {
		return nil, &opError{op: "connection", err: err}
	}
	return results, nil
}

func runPipeline(ctx context.Context, pc *pgconn.PgConn, plans []plan, readOnly bool) ([]abi.Result, error) {
	begin := beginWrite
	if readOnly {
		begin = beginRead
	}
	var b pgconn.Batch
	b.ExecParams(begin, nil, nil, nil, nil)
	var enc argEncoder
	for i := range plans {
		vals, formats := enc.encode(plans[i].args)
		b.ExecParams(plans[i].sql, vals, nil, formats, nil)
	}
	b.ExecParams("COMMIT", nil, nil, nil, nil)

	results := make([]abi.Result, len(plans))
	mrr := pc.ExecBatch(ctx, &b)
	n := 0 // results read: 0 BEGIN, 1..len(plans) the statements, then COMMIT
	var failed error
	for failed == nil && mrr.NextResult() {
		rr := mrr.ResultReader()
		if n >= 1 && n <= len(plans) {
			failed = collectPG(rr, &results[n-1])
		} else if _, err := rr.Close(); err != nil {
			failed = err
		}
		if failed == nil {
			n++
		}
	}
	if err := mrr.Close(); failed == nil {
		failed = err
	}
	if failed == nil && n != len(plans)+2 {
		failed = errors.New("the server answered fewer results than statements sent")
	}
	if failed == nil {
		return results, nil
	}
	if !pc.IsClosed() && pc.TxStatus() != 'I' {
		// The failed statement aborted the transaction; COMMIT was skipped.
		if _, err := pc.Exec(ctx, "ROLLBACK").ReadAll(); err != nil {
			pc.Close(context.Background())
		}
	}
	switch {
	case n == 0:
		return nil, &opError{op: "begin transaction", err: failed}
	case n <= len(plans):
		return nil, &StatementError{Index: n - 1, Err: failed}
	}
	return nil, &opError{op: "commit", err: failed}
}

// collectPG reads one statement's result into out: its rows when it
// described any (SELECT, VALUES, RETURNING…), and the count of rows an
// INSERT, UPDATE, DELETE or MERGE changed. PostgreSQL has no last insert
// id: LastInsertID is 0 (use RETURNING).
func collectPG(rr *pgconn.ResultReader, out *abi.Result) error {
	fds := rr.FieldDescriptions()
	if len(fds) > 0 {
		out.Columns = make([]string, len(fds))
		for i := range fds {
			out.Columns[i] = fds[i].Name
		}
		out.Rows = [][]any{}
		for rr.NextRow() {
			raw := rr.Values()
			row := make([]any, len(fds))
			for i := range raw {
				row[i] = decodePG(fds[i].DataTypeOID, raw[i])
			}
			out.Rows = append(out.Rows, row)
		}
	}
	tag, err := rr.Close()
	if err != nil {
		return err
	}
	if tag.Insert() || tag.Update() || tag.Delete() || strings.HasPrefix(tag.String(), "MERGE") {
		out.RowsAffected = tag.RowsAffected()
	}
	return nil
}

// decodePG converts a value PostgreSQL sent in text format to an ABI SQL
// value: integers (int2, int4, int8, oid) to int64; float4 and float8 to
// float64; numeric to int64 when integral and in range, else float64 (so
// SUM(bigint), a numeric, reads as on SQLite); bool to 1 or 0 as SQLite
// stores it; bytea to []byte; everything else (text, varchar, json, uuid,
// timestamps, arrays…) to its text form.
func decodePG(oid uint32, raw []byte) any {
	if raw == nil {
		return nil
	}
	switch oid {
	case pgtype.Int2OID, pgtype.Int4OID, pgtype.Int8OID, pgtype.OIDOID:
		if v, err := strconv.ParseInt(string(raw), 10, 64); err == nil {
			return v
		}
	case pgtype.Float4OID, pgtype.Float8OID:
		if v, err := strconv.ParseFloat(string(raw), 64); err == nil {
			return v
		}
	case pgtype.NumericOID:
		if v, err := strconv.ParseInt(string(raw), 10, 64); err == nil {
			return v
		}
		if v, err := strconv.ParseFloat(string(raw), 64); err == nil {
			return v
		}
	case pgtype.BoolOID:
		if len(raw) == 1 && raw[0] == 't' {
			return int64(1)
		}
		return int64(0)
	case pgtype.ByteaOID:
		if len(raw) >= 2 && raw[0] == '\\' && raw[1] == 'x' {
			b := make([]byte, hex.DecodedLen(len(raw)-2))
			if _, err := hex.Decode(b, raw[2:]); err == nil {
				return b
			}
		}
		return append([]byte{}, raw...)
	}
	return string(raw)
}

// argEncoder encodes a statement's arguments as the parameters of the
// extended protocol: integers and floats in text form (their casts,
// rewrite's $N::bigint and $N::float8, give their types), strings as they
// are, blobs in binary form ($N::bytea), NULL as a nil parameter.
type argEncoder struct {
	buf []byte
}

func (e *argEncoder) encode(args []any) (vals [][]byte, formats []int16) {
	if len(args) == 0 {
		return nil, nil
	}
	vals = make([][]byte, len(args))
	for i, a := range args {
		start := len(e.buf)
		switch v := a.(type) {
		case nil:
			continue
		case int64:
			e.buf = strconv.AppendInt(e.buf, v, 10)
		case float64:
			switch {
			case math.IsInf(v, 1):
				e.buf = append(e.buf, "Infinity"...)
			case math.IsInf(v, -1):
				e.buf = append(e.buf, "-Infinity"...)
			default: // NaN is "NaN" in both
				e.buf = strconv.AppendFloat(e.buf, v, 'g', -1, 64)
			}
		case string:
			vals[i] = []byte(v)
			continue
		case []byte:
			if formats == nil {
				formats = make([]int16, len(args))
			}
			formats[i] = pgtype.BinaryFormatCode
			vals[i] = v
			continue
		}
		vals[i] = e.buf[start:len(e.buf):len(e.buf)]
	}
	return vals, formats
}
