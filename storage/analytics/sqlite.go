package analytics

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/edgeshard/edgeshard/abi"
	"github.com/edgeshard/edgeshard/storage/sqldb"
)

// SinkOptions tunes a SQLiteSink. The zero value is valid.
type SinkOptions struct {
	// FlushInterval is how often buffered points are written (default 1s).
	FlushInterval time.Duration
	// MaxBuffered is how many points may wait to be written, counting a
	// batch being written; Write fails with ErrBufferFull beyond it
	// (default 10000).
	MaxBuffered int
	// BatchSize is how many points one transaction writes (default and
	// most 1000, a batch's statements). Reaching it also wakes the writer
	// before FlushInterval.
	BatchSize int
	// Now stamps each point's timestamp at Write (default time.Now).
	Now func() time.Time
	// OnError, if set, receives the errors of background flushes (the
	// points stay buffered and are retried at the next flush).
	OnError func(error)
	// SQL configures the database OpenSQLite opens (default synchronous
	// NORMAL on SQLite: analytics is best-effort, and WAL keeps it
	// crash-safe).
	SQL sqldb.Options
}

func (o SinkOptions) withDefaults() (SinkOptions, error) {
	switch {
	case o.FlushInterval == 0:
		o.FlushInterval = time.Second
	case o.FlushInterval < 0:
		return o, fmt.Errorf("negative FlushInterval %v", o.FlushInterval)
	}
	switch {
	case o.MaxBuffered == 0:
		o.MaxBuffered = 10000
	case o.MaxBuffered < 0:
		return o, fmt.Errorf("negative MaxBuffered %d", o.MaxBuffered)
	}
	switch {
	case o.BatchSize == 0:
		o.BatchSize = 1000
	case o.BatchSize < 0 || o.BatchSize > abi.MaxSQLStatements:
		return o, fmt.Errorf("BatchSize %d: want 1..%d", o.BatchSize, abi.MaxSQLStatements)
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.SQL.Synchronous == "" {
		o.SQL.Synchronous = "NORMAL"
	}
	return o, nil
}

// Table is the name of the table SQLiteSink writes.
const Table = "analytics_events"

// createTableSQL returns the DDL of the Analytics Engine column layout.
// On SQLite the table is not STRICT: a blob is stored as TEXT when it is
// valid UTF-8 (so ops can write blob1 = 'GET', as in AE's SQL API) and as
// BLOB otherwise. On PostgreSQL blobs are BYTEA (blob1 = 'GET' works too:
// the literal is read as bytea) and come back as bytes.
func createTableSQL(dialect string) string {
	blob, double, integer := "BLOB", "REAL", "INTEGER"
	if dialect == sqldb.DialectPostgres {
		blob, double, integer = "BYTEA", "DOUBLE PRECISION", "BIGINT"
	}
	var b strings.Builder
	b.WriteString("CREATE TABLE IF NOT EXISTS " + Table + " (\n    dataset TEXT NOT NULL,\n    timestamp " + integer + " NOT NULL,\n    index1 TEXT NOT NULL DEFAULT ''")
	for i := 1; i <= abi.MaxAnalyticsBlob; i++ {
		b.WriteString(",\n    blob" + strconv.Itoa(i) + " " + blob)
	}
	for i := 1; i <= abi.MaxAnalyticsDbl; i++ {
		b.WriteString(",\n    double" + strconv.Itoa(i) + " " + double)
	}
	b.WriteString(",\n    _sample_interval INTEGER NOT NULL DEFAULT 1\n);\n")
	b.WriteString("CREATE INDEX IF NOT EXISTS " + Table + "_dataset_timestamp ON " + Table + " (dataset, timestamp);")
	return b.String()
}

// insertArgs is the number of bound values of insertSQL.
const insertArgs = 3 + abi.MaxAnalyticsBlob + abi.MaxAnalyticsDbl

// insertSQL returns the INSERT of one data point, insertArgs values.
func insertSQL() string {
	cols := []string{"dataset", "timestamp", "index1"}
	for i := 1; i <= abi.MaxAnalyticsBlob; i++ {
		cols = append(cols, "blob"+strconv.Itoa(i))
	}
	for i := 1; i <= abi.MaxAnalyticsDbl; i++ {
		cols = append(cols, "double"+strconv.Itoa(i))
	}
	return "INSERT INTO " + Table + " (" + strings.Join(cols, ", ") + ") VALUES (?" + strings.Repeat(", ?", len(cols)-1) + ")"
}

// point is a buffered data point.
type point struct {
	dataset string
	ts      int64 // unix ms
	p       abi.DataPoint
}

// SQLiteSink is a Sink that buffers points in memory and writes them to
// SQLite or PostgreSQL in batches from a background goroutine, one
// transaction per batch (one round trip on PostgreSQL), in table
// analytics_events (see Table). It is safe for concurrent use.
type SQLiteSink struct {
	db     *sqldb.DB
	ownDB  bool
	opts   SinkOptions
	insert string // insertSQL()

	mu       sync.Mutex
	buf      []point
	inflight int // points taken by a flush and not yet written
	closed   bool

	flushMu sync.Mutex // one flush at a time, so points keep their order
	kick    chan struct{}
	stop    chan struct{}
	done    chan struct{}

	closeOnce sync.Once
	closeErr  error
}

// OpenSQLite opens (creating if needed) the database at url, in the form
// sqldb.Open takes ("sqlite://./data/analytics.db", or a postgres:// URL),
// creates the analytics_events table and starts the background writer.
// Close the sink to flush and close the database.
func OpenSQLite(url string, opts SinkOptions) (*SQLiteSink, error) {
	o, err := opts.withDefaults()
	if err != nil {
		return nil, fmt.Errorf("open analytics sink %q: %w", url, err)
	}
	db, err := sqldb.Open(url, o.SQL)
	if err != nil {
		return nil, fmt.Errorf("open analytics sink: %w", err)
	}
	s, err := newSink(db, true, o)
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("open analytics sink %q: %w", url, err)
	}
	return s, nil
}

// NewSQLiteSink is OpenSQLite on a database the caller already opened (for
// instance the SQL binding's own). Close flushes but leaves db open.
// opts.SQL is ignored.
func NewSQLiteSink(db *sqldb.DB, opts SinkOptions) (*SQLiteSink, error) {
	o, err := opts.withDefaults()
	if err != nil {
		return nil, fmt.Errorf("new analytics sink: %w", err)
	}
	s, err := newSink(db, false, o)
	if err != nil {
		return nil, fmt.Errorf("new analytics sink: %w", err)
	}
	return s, nil
}

func newSink(db *sqldb.DB, own bool, o SinkOptions) (*SQLiteSink, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := db.SQL().ExecContext(ctx, createTableSQL(db.Dialect())); err != nil {
		return nil, fmt.Errorf("create %s: %w", Table, err)
	}
	s := &SQLiteSink{
		db:     db,
		ownDB:  own,
		opts:   o,
		insert: insertSQL(),
		kick:   make(chan struct{}, 1),
		stop:   make(chan struct{}),
		done:   make(chan struct{}),
	}
	go s.run()
	return s, nil
}

// Write validates p and buffers a copy of it, stamped with Now, for the
// background writer. It never waits for I/O: with MaxBuffered points
// waiting it drops p and returns ErrBufferFull; after Close, ErrClosed.
func (s *SQLiteSink) Write(dataset string, p abi.DataPoint) error {
	if err := validateWrite(dataset, p); err != nil {
		return err
	}
	pt := point{dataset: dataset, ts: s.opts.Now().UnixMilli(), p: clonePoint(p)}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return ErrClosed
	}
	if n := len(s.buf) + s.inflight; n >= s.opts.MaxBuffered {
		s.mu.Unlock()
		return fmt.Errorf("%w: %d points waiting, at most %d", ErrBufferFull, n, s.opts.MaxBuffered)
	}
	s.buf = append(s.buf, pt)
	wake := len(s.buf) >= s.opts.BatchSize
	s.mu.Unlock()
	if wake {
		select {
		case s.kick <- struct{}{}:
		default:
		}
	}
	return nil
}

// Buffered returns how many points wait to be written.
func (s *SQLiteSink) Buffered() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.buf) + s.inflight
}

func (s *SQLiteSink) run() {
	defer close(s.done)
	t := time.NewTicker(s.opts.FlushInterval)
	defer t.Stop()
	for {
		select {
		case <-s.stop:
			return
		case <-t.C:
		case <-s.kick:
		}
		if err := s.Flush(context.Background()); err != nil && s.opts.OnError != nil {
			s.opts.OnError(err)
		}
	}
}

// Flush writes every point buffered when it is called, BatchSize points per
// transaction. If a batch fails, it and the points after it go back to the
// buffer and Flush returns the error.
func (s *SQLiteSink) Flush(ctx context.Context) error {
	s.flushMu.Lock()
	defer s.flushMu.Unlock()

	s.mu.Lock()
	pending := s.buf
	s.buf = nil
	s.inflight = len(pending)
	s.mu.Unlock()

	for len(pending) > 0 {
		n := min(len(pending), s.opts.BatchSize)
		if err := s.write(ctx, pending[:n]); err != nil {
			s.mu.Lock()
			s.buf = append(pending, s.buf...)
			s.inflight = 0
			s.mu.Unlock()
			return fmt.Errorf("analytics: flush %d points: %w", len(pending), err)
		}
		pending = pending[n:]
		s.mu.Lock()
		s.inflight = len(pending)
		s.mu.Unlock()
	}
	return nil
}

// write writes pts in one transaction: one batch of inserts (prepared
// once on SQLite, pipelined in one round trip on PostgreSQL).
func (s *SQLiteSink) write(ctx context.Context, pts []point) error {
	pg := s.db.Dialect() == sqldb.DialectPostgres
	stmts := make([]abi.Statement, len(pts))
	for i, pt := range pts {
		args := make([]any, insertArgs)
		fillArgs(args, pt, pg)
		stmts[i] = abi.Statement{SQL: s.insert, Args: args}
	}
	if _, err := s.db.Batch(ctx, stmts); err != nil {
		return fmt.Errorf("insert: %w", err)
	}
	return nil
}

// fillArgs sets args to the row of pt, in the column order of insertSQL.
// On SQLite a blob of valid UTF-8 goes as text; on PostgreSQL every blob
// goes as bytes (a BYTEA column).
func fillArgs(args []any, pt point, pg bool) {
	clear(args)
	args[0], args[1], args[2] = pt.dataset, pt.ts, ""
	if len(pt.p.Indexes) > 0 {
		args[2] = pt.p.Indexes[0]
	}
	for i, b := range pt.p.Blobs {
		if !pg && utf8.Valid(b) {
			args[3+i] = string(b)
		} else {
			args[3+i] = b
		}
	}
	for i, d := range pt.p.Doubles {
		args[3+abi.MaxAnalyticsBlob+i] = d
	}
}

// Query runs one SQL statement on the sink's database and returns its rows
// as column → value maps (values nil, int64, float64, string or []byte).
// It sees only points already flushed. For tests and operators.
func (s *SQLiteSink) Query(ctx context.Context, sql string, args ...any) ([]map[string]any, error) {
	res, err := s.db.Batch(ctx, []abi.Statement{{SQL: sql, Args: args}})
	if err != nil {
		return nil, fmt.Errorf("analytics: query: %w", err)
	}
	out := make([]map[string]any, len(res[0].Rows))
	for i, row := range res[0].Rows {
		m := make(map[string]any, len(row))
		for j, v := range row {
			m[res[0].Columns[j]] = v
		}
		out[i] = m
	}
	return out, nil
}

// Close stops the background writer, flushes what is buffered and, if the
// sink opened its database, closes it. Close is idempotent; Write fails
// with ErrClosed afterwards.
func (s *SQLiteSink) Close() error {
	s.closeOnce.Do(func() {
		s.mu.Lock()
		s.closed = true
		s.mu.Unlock()
		close(s.stop)
		<-s.done
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		err := s.Flush(ctx)
		if s.ownDB {
			err = errors.Join(err, s.db.Close())
		}
		s.closeErr = err
	})
	return s.closeErr
}

var _ Sink = (*SQLiteSink)(nil)
