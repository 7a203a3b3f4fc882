package sqldb

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"math"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"modernc.org/sqlite"

	"github.com/edgeshard/edgeshard/abi"
)

// ErrLimit is matched (errors.Is) by errors for a batch over an ABI limit:
// too many statements, too many arguments or too long a statement. The host
// answers those with abi.ErrnoTooLarge.
var ErrLimit = errors.New("limit exceeded")

// ErrInvalidArg is matched (errors.Is) by errors for an argument of a type
// that is not an ABI SQL value, or an empty statement.
var ErrInvalidArg = errors.New("invalid argument")

// kindError is an error with a fixed message that matches one sentinel.
type kindError struct {
	msg  string
	kind error
}

func (e *kindError) Error() string        { return e.msg }
func (e *kindError) Is(target error) bool { return target == e.kind }

func limitErr(format string, a ...any) error {
	return &kindError{msg: fmt.Sprintf(format, a...), kind: ErrLimit}
}

func invalidErr(format string, a ...any) error {
	return &kindError{msg: fmt.Sprintf(format, a...), kind: ErrInvalidArg}
}

// StatementError reports which statement of a batch failed. Its message is
// "statement N: " and the database's own message (SQLite's "UNIQUE
// constraint failed: t.x", PostgreSQL's "duplicate key value violates
// unique constraint \"t_x_key\""), without the driver's decorations.
type StatementError struct {
	Index int   // position of the failing statement in the batch, from 0
	Err   error // the cause; a *sqlite.Error or *pgconn.PgError when the database refused it
}

func (e *StatementError) Error() string {
	return fmt.Sprintf("statement %d: %s", e.Index, Message(e.Err))
}

func (e *StatementError) Unwrap() error { return e.Err }

// opError prefixes SQLite's own message with the operation that failed.
type opError struct {
	op  string
	err error
}

func (e *opError) Error() string { return e.op + ": " + Message(e.err) }
func (e *opError) Unwrap() error { return e.err }

// Message returns the database's own message for err: SQLite's ("UNIQUE
// constraint failed: t.x") stripped of the driver's generic prefix and
// result code, PostgreSQL's primary message (a trigger's RAISE text as
// written), or err.Error() for other errors.
func Message(err error) string {
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		return pe.Message
	}
	var se *sqlite.Error
	if !errors.As(err, &se) {
		return err.Error()
	}
	// The driver formats "<errstr>: <errmsg> (<code>)[ (SQLITE_BUSY)]", or
	// "<errstr> (<code>)..." when both are equal; no errstr contains ": ".
	msg := strings.TrimSuffix(se.Error(), " (SQLITE_BUSY)")
	if i := strings.LastIndex(msg, " ("); i >= 0 && strings.HasSuffix(msg, ")") && isDigits(msg[i+2:len(msg)-1]) {
		msg = msg[:i]
	}
	if _, after, ok := strings.Cut(msg, ": "); ok {
		msg = after
	}
	return msg
}

// Code returns the SQLite extended result code of err (for example 2067,
// SQLITE_CONSTRAINT_UNIQUE), or 0 when err is not a SQLite error.
func Code(err error) int {
	var se *sqlite.Error
	if errors.As(err, &se) {
		return se.Code()
	}
	return 0
}

// SQLState returns the PostgreSQL SQLSTATE of err (for example "23505",
// unique_violation), or "" when err is not a PostgreSQL error.
func SQLState(err error) string {
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		return pe.Code
	}
	return ""
}

func isDigits(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			if i == 0 && s[i] == '-' && len(s) > 1 {
				continue
			}
			return false
		}
	}
	return true
}

// Batch runs stmts in one transaction, all or nothing, and returns one
// result per statement. A statement that returns rows (it starts with
// SELECT, WITH, PRAGMA, VALUES or EXPLAIN, or has a RETURNING clause) is
// queried and its rows returned; others report RowsAffected and
// LastInsertID. If any statement fails, nothing is committed and the error
// is a *StatementError naming it. On SQLite a batch of only
// SELECT/VALUES/EXPLAIN statements runs in a read transaction; any other
// starts with BEGIN IMMEDIATE, waiting up to the busy timeout for the write
// lock. On PostgreSQL see batchPostgres: the same outcome, one round trip.
//
// Limits: abi.MaxSQLStatements statements, abi.MaxSQLArgs arguments and
// abi.MaxSQLText bytes of SQL per statement (errors match ErrLimit).
// Arguments must be nil, int64, float64, string or []byte; Go's other
// integer types, float32 and bool (as 0/1) are converted for host callers,
// anything else is refused (ErrInvalidArg).
func (d *DB) Batch(ctx context.Context, stmts []abi.Statement) ([]abi.Result, error) {
	if len(stmts) > abi.MaxSQLStatements {
		return nil, limitErr("batch has %d statements, at most %d allowed", len(stmts), abi.MaxSQLStatements)
	}
	if len(stmts) == 0 {
		return []abi.Result{}, nil
	}
	plans := make([]plan, len(stmts))
	readOnly := true
	for i, st := range stmts {
		p, err := makePlan(st, d.dialect)
		if err != nil {
			return nil, &StatementError{Index: i, Err: err}
		}
		plans[i] = p
		readOnly = readOnly && p.kind == kindRead
	}
	return d.run(ctx, plans, readOnly)
}

// run runs planned statements in one transaction (Batch).
func (d *DB) run(ctx context.Context, plans []plan, readOnly bool) ([]abi.Result, error) {
	if d.dialect == DialectPostgres {
		return d.batchPostgres(ctx, plans, readOnly)
	}

	tx, err := d.db.BeginTx(ctx, &sql.TxOptions{ReadOnly: readOnly})
	if err != nil {
		return nil, &opError{op: "begin transaction", err: err}
	}
	committed := false
	defer func() {
		if !committed {
			_ = tx.Rollback()
		}
	}()
	results, err := runPlans(ctx, tx, plans)
	if err != nil {
		return nil, err
	}
	if err := tx.Commit(); err != nil {
		return nil, &opError{op: "commit", err: err}
	}
	committed = true
	return results, nil
}

// BatchInTx runs stmts on tx, an SQLite transaction the caller owns (it
// commits or rolls back), and returns one result per statement, with the
// limits, argument rules and errors of DB.Batch. It does not undo the
// statements that ran before a failing one: a caller that wants the batch
// all or nothing inside a longer transaction wraps it in a SAVEPOINT
// (storage/shardsql does).
func BatchInTx(ctx context.Context, tx *sql.Tx, stmts []abi.Statement) ([]abi.Result, error) {
	if len(stmts) > abi.MaxSQLStatements {
		return nil, limitErr("batch has %d statements, at most %d allowed", len(stmts), abi.MaxSQLStatements)
	}
	plans := make([]plan, len(stmts))
	for i, st := range stmts {
		p, err := makePlan(st, DialectSQLite)
		if err != nil {
			return nil, &StatementError{Index: i, Err: err}
		}
		plans[i] = p
	}
	return runPlans(ctx, tx, plans)
}

// runPlans runs plans in order on tx; the first failure is a
// *StatementError naming its statement.
func runPlans(ctx context.Context, tx *sql.Tx, plans []plan) ([]abi.Result, error) {
	r := runner{tx: tx}
	defer r.close()
	results := make([]abi.Result, len(plans))
	for i := range plans {
		if err := r.run(ctx, &plans[i], &results[i], len(plans) > 1); err != nil {
			return nil, &StatementError{Index: i, Err: err}
		}
	}
	return results, nil
}

// stmtKind says how a statement is run.
type stmtKind uint8

const (
	kindExec      stmtKind = iota // returns no rows
	kindRead                      // SELECT, VALUES, EXPLAIN: rows, no writes
	kindPragma                    // PRAGMA: rows, may write, no change count
	kindWriteRows                 // WITH or RETURNING: rows, may write
)

type plan struct {
	sql  string
	args []any
	kind stmtKind
}

// makePlan checks a statement against the limits, converts its arguments
// and, for PostgreSQL, rewrites its placeholders.
func makePlan(st abi.Statement, dialect string) (plan, error) {
	if len(st.SQL) > abi.MaxSQLText {
		return plan{}, limitErr("SQL text is %d bytes, at most %d allowed", len(st.SQL), abi.MaxSQLText)
	}
	if len(st.Args) > abi.MaxSQLArgs {
		return plan{}, limitErr("%d arguments, at most %d allowed", len(st.Args), abi.MaxSQLArgs)
	}
	first, returning := scanSQL(st.SQL)
	if first == "" {
		return plan{}, invalidErr("empty SQL")
	}
	p := plan{sql: st.SQL, kind: classify(first, returning)}
	if len(st.Args) > 0 {
		p.args = make([]any, len(st.Args))
		for j, a := range st.Args {
			v, err := normalizeArg(a)
			if err != nil {
				return plan{}, invalidErr("argument %d: %v", j+1, err)
			}
			p.args[j] = v
		}
	}
	if dialect == DialectPostgres {
		q, err := rewrite(p.sql, p.args)
		if err != nil {
			return plan{}, err
		}
		p.sql = q
	}
	return p, nil
}

func classify(first string, returning bool) stmtKind {
	switch {
	case returning && first != "SELECT" && first != "VALUES" && first != "EXPLAIN":
		return kindWriteRows
	case first == "SELECT" || first == "VALUES" || first == "EXPLAIN":
		return kindRead
	case first == "PRAGMA":
		return kindPragma
	case first == "WITH":
		// WITH may lead a SELECT or an INSERT/UPDATE/DELETE.
		return kindWriteRows
	}
	return kindExec
}

// runner runs the statements of one batch on its transaction, preparing
// each distinct SQL text once.
type runner struct {
	tx    *sql.Tx
	stmts map[string]*sql.Stmt
	dest  []any
}

func (r *runner) close() {
	for k, s := range r.stmts {
		_ = s.Close()
		delete(r.stmts, k)
	}
}

// prepared returns the transaction's prepared statement for query, or nil
// when the batch has a single statement (a one-shot call is cheaper).
func (r *runner) prepared(ctx context.Context, query string, reuse bool) (*sql.Stmt, error) {
	if !reuse {
		return nil, nil
	}
	if s, ok := r.stmts[query]; ok {
		return s, nil
	}
	s, err := r.tx.PrepareContext(ctx, query)
	if err != nil {
		return nil, err
	}
	if r.stmts == nil {
		r.stmts = make(map[string]*sql.Stmt)
	}
	r.stmts[query] = s
	return s, nil
}

func (r *runner) run(ctx context.Context, p *plan, out *abi.Result, reuse bool) error {
	s, err := r.prepared(ctx, p.sql, reuse)
	if err != nil {
		return err
	}
	if p.kind == kindExec {
		var res sql.Result
		if s != nil {
			res, err = s.ExecContext(ctx, p.args...)
		} else {
			res, err = r.tx.ExecContext(ctx, p.sql, p.args...)
		}
		if err != nil {
			return err
		}
		if out.RowsAffected, err = res.RowsAffected(); err != nil {
			return err
		}
		if out.LastInsertID, err = res.LastInsertId(); err != nil {
			return err
		}
		return nil
	}

	var before int64
	if p.kind == kindWriteRows {
		if err := r.tx.QueryRowContext(ctx, "SELECT total_changes()").Scan(&before); err != nil {
			return fmt.Errorf("count changes: %w", err)
		}
	}
	var rows *sql.Rows
	if s != nil {
		rows, err = s.QueryContext(ctx, p.args...)
	} else {
		rows, err = r.tx.QueryContext(ctx, p.sql, p.args...)
	}
	if err != nil {
		return err
	}
	if err := r.collect(rows, out); err != nil {
		return err
	}
	if p.kind == kindWriteRows {
		var after, changes, lastID int64
		err := r.tx.QueryRowContext(ctx, "SELECT total_changes(), changes(), last_insert_rowid()").Scan(&after, &changes, &lastID)
		if err != nil {
			return fmt.Errorf("count changes: %w", err)
		}
		if after != before {
			out.RowsAffected = changes
		}
		out.LastInsertID = lastID
	}
	return nil
}

func (r *runner) collect(rows *sql.Rows, out *abi.Result) error {
	defer rows.Close()
	cols, err := rows.Columns()
	if err != nil {
		return err
	}
	out.Columns = cols
	out.Rows = [][]any{}
	if cap(r.dest) < len(cols) {
		r.dest = make([]any, len(cols))
	}
	dest := r.dest[:len(cols)]
	for rows.Next() {
		row := make([]any, len(cols))
		for i := range row {
			dest[i] = &row[i]
		}
		if err := rows.Scan(dest...); err != nil {
			return err
		}
		for i, v := range row {
			row[i] = normalizeValue(v)
		}
		out.Rows = append(out.Rows, row)
	}
	clear(dest)
	return rows.Err()
}

// normalizeArg converts a bound argument to an ABI SQL value.
func normalizeArg(v any) (any, error) {
	switch x := v.(type) {
	case nil, int64, float64, string:
		return x, nil
	case []byte:
		if x == nil {
			return []byte{}, nil // an empty blob, not NULL
		}
		return x, nil
	case int:
		return int64(x), nil
	case int8:
		return int64(x), nil
	case int16:
		return int64(x), nil
	case int32:
		return int64(x), nil
	case uint8:
		return int64(x), nil
	case uint16:
		return int64(x), nil
	case uint32:
		return int64(x), nil
	case uint:
		if uint64(x) > math.MaxInt64 {
			return nil, fmt.Errorf("uint %d overflows int64", x)
		}
		return int64(x), nil
	case uint64:
		if x > math.MaxInt64 {
			return nil, fmt.Errorf("uint64 %d overflows int64", x)
		}
		return int64(x), nil
	case float32:
		return float64(x), nil
	case bool:
		if x {
			return int64(1), nil
		}
		return int64(0), nil
	}
	return nil, fmt.Errorf("unsupported type %T (want nil, int64, float64, string or []byte)", v)
}

// normalizeValue converts what the driver returned to an ABI SQL value.
// The driver turns TEXT in columns declared DATE, DATETIME or TIMESTAMP into
// time.Time; it comes back as text in SQLite's own format
// ("2006-01-02 15:04:05.999999999-07:00", offset omitted for UTC).
func normalizeValue(v any) any {
	switch x := v.(type) {
	case nil, int64, float64, string:
		return x
	case []byte:
		if x == nil {
			return []byte{}
		}
		return x
	case time.Time:
		if x.Location() == time.UTC {
			return x.Format("2006-01-02 15:04:05.999999999")
		}
		return x.Format("2006-01-02 15:04:05.999999999-07:00")
	case bool:
		if x {
			return int64(1)
		}
		return int64(0)
	case int:
		return int64(x)
	case int32:
		return int64(x)
	case float32:
		return float64(x)
	}
	return fmt.Sprint(v)
}

// scanSQL returns the first keyword of a statement, upper-cased, and
// whether a RETURNING keyword appears anywhere outside quotes and comments.
func scanSQL(s string) (first string, returning bool) {
	i := 0
	for i < len(s) {
		c := s[i]
		switch {
		case c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v' || c == ';':
			i++
		case c == '-' && i+1 < len(s) && s[i+1] == '-':
			for i < len(s) && s[i] != '\n' {
				i++
			}
		case c == '/' && i+1 < len(s) && s[i+1] == '*':
			if j := strings.Index(s[i+2:], "*/"); j >= 0 {
				i += j + 4
			} else {
				i = len(s)
			}
		case c == '\'' || c == '"' || c == '`' || c == '[':
			end := c
			if c == '[' {
				end = ']'
			}
			i++
			for i < len(s) {
				if s[i] == end {
					if end != ']' && i+1 < len(s) && s[i+1] == end {
						i += 2 // doubled quote
						continue
					}
					break
				}
				i++
			}
			i++
			if first == "" {
				first = "?" // not a keyword: not a statement we know
			}
		case isWordByte(c):
			j := i
			for j < len(s) && isWordByte(s[j]) {
				j++
			}
			w := s[i:j]
			if first == "" {
				first = strings.ToUpper(w)
			} else if strings.EqualFold(w, "RETURNING") {
				returning = true
			}
			i = j
		default:
			if first == "" {
				first = "?"
			}
			i++
		}
	}
	return first, returning
}

func isWordByte(c byte) bool {
	return c == '_' || c == '$' || c >= 0x80 ||
		('a' <= c && c <= 'z') || ('A' <= c && c <= 'Z') || ('0' <= c && c <= '9')
}
