package sqldb

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"fmt"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/stdlib"
)

// minServerVersion is the oldest PostgreSQL the binding runs on (12:
// EXECUTE FUNCTION in triggers, generated identity columns, ON CONFLICT).
const minServerVersion = 120000

// openPostgres opens a pool on the PostgreSQL database of url (a libpq
// URL: postgres://user[:password]@host[:port]/db?sslmode=…&sslrootcert=…).
// Whatever the URL leaves out comes from libpq's environment variables
// (PGHOST, PGUSER, PGPASSWORD, PGSSLMODE…) and ~/.pgpass, as pgx reads
// them; opts.Password, when set, wins over both. Every connection reports
// application_name=edgeshard (or opts.ApplicationName), runs with TimeZone=UTC and, when set,
// opts.StatementTimeout. The pool holds at most opts.MaxOpenConns
// connections; a connection idle for over 30 s is pinged before reuse.
func openPostgres(url string, opts Options) (*DB, error) {
	cfg, err := pgx.ParseConfig(url)
	if err != nil {
		return nil, err // pgx's message hides the password
	}
	if opts.Password != "" {
		cfg.Password = opts.Password
	}
	if cfg.RuntimeParams == nil {
		cfg.RuntimeParams = map[string]string{}
	}
	if _, ok := cfg.RuntimeParams["application_name"]; !ok {
		cfg.RuntimeParams["application_name"] = "edgeshard"
		if opts.ApplicationName != "" {
			cfg.RuntimeParams["application_name"] = opts.ApplicationName
		}
	}
	cfg.RuntimeParams["TimeZone"] = "UTC"
	if opts.StatementTimeout > 0 {
		cfg.RuntimeParams["statement_timeout"] = strconv.FormatInt(max(1, opts.StatementTimeout.Milliseconds()), 10)
	}
	connector := stdlib.GetConnector(*cfg, stdlib.OptionShouldPing(func(_ context.Context, p stdlib.ShouldPingParams) bool {
		return p.IdleDuration > 30*time.Second
	}))
	db := sql.OpenDB(pgConnector{connector})
	db.SetMaxOpenConns(opts.MaxOpenConns)
	db.SetMaxIdleConns(opts.MaxOpenConns)
	db.SetConnMaxIdleTime(5 * time.Minute)
	db.SetConnMaxLifetime(time.Hour)
	d := &DB{db: db, url: url, dialect: DialectPostgres, opts: opts}

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var version int
	var v string
	if err := db.QueryRowContext(ctx, "SHOW server_version_num").Scan(&v); err != nil {
		d.Close()
		return nil, err
	}
	if version, err = strconv.Atoi(v); err != nil || version < minServerVersion {
		d.Close()
		return nil, fmt.Errorf("PostgreSQL server version %s is too old: want 12 or newer", v)
	}
	return d, nil
}

// pgConnector opens pgx connections wrapped in pgConn.
type pgConnector struct{ inner driver.Connector }

func (c pgConnector) Connect(ctx context.Context) (driver.Conn, error) {
	dc, err := c.inner.Connect(ctx)
	if err != nil {
		return nil, err
	}
	return &pgConn{Conn: dc.(*stdlib.Conn)}, nil
}

func (c pgConnector) Driver() driver.Driver { return pgDriver{c.inner.Driver()} }

// pgDriver marks a database/sql pool as PostgreSQL (RunTx asks).
type pgDriver struct{ driver.Driver }

// pgConn is a pgx connection whose statements take SQLite's placeholders:
// ? and ?NNN become $N (rewrite), so the edge's and the plugins'
// statements run unchanged on both dialects.
type pgConn struct{ *stdlib.Conn }

func (c *pgConn) Prepare(query string) (driver.Stmt, error) {
	return c.PrepareContext(context.Background(), query)
}

func (c *pgConn) PrepareContext(ctx context.Context, query string) (driver.Stmt, error) {
	q, err := rewritePrepared(query)
	if err != nil {
		return nil, err
	}
	return c.Conn.PrepareContext(ctx, q)
}

func (c *pgConn) ExecContext(ctx context.Context, query string, args []driver.NamedValue) (driver.Result, error) {
	q, err := rewriteNamed(query, args)
	if err != nil {
		return nil, err
	}
	return c.Conn.ExecContext(ctx, q, args)
}

func (c *pgConn) QueryContext(ctx context.Context, query string, args []driver.NamedValue) (driver.Rows, error) {
	q, err := rewriteNamed(query, args)
	if err != nil {
		return nil, err
	}
	return c.Conn.QueryContext(ctx, q, args)
}

// rewriteNamed is rewrite for database/sql's arguments, which it first
// brings to the ABI's types where they are Go integers or bools (as the
// SQLite driver stores them).
func rewriteNamed(query string, args []driver.NamedValue) (string, error) {
	if len(args) == 0 {
		return query, nil
	}
	vals := make([]any, len(args))
	for i := range args {
		if v, err := normalizeArg(args[i].Value); err == nil {
			args[i].Value = v
		}
		vals[i] = args[i].Value
	}
	return rewrite(query, vals)
}

var (
	_ driver.Connector          = pgConnector{}
	_ driver.ExecerContext      = (*pgConn)(nil)
	_ driver.QueryerContext     = (*pgConn)(nil)
	_ driver.ConnPrepareContext = (*pgConn)(nil)
	_ driver.ConnBeginTx        = (*pgConn)(nil)
	_ driver.NamedValueChecker  = (*pgConn)(nil)
	_ driver.SessionResetter    = (*pgConn)(nil)
)
