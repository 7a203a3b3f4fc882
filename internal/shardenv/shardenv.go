// Package shardenv defines what one event of one shard may reach: its
// storage, its alarm, vars, log, SQL and analytics, the shards of the
// bindings it may call, and the HTTP(S) hosts it may fetch. The host's actor
// implements Env; wasm guests reach it through host functions
// (host/internal/wasm), the benchmark's native shards directly
// (internal/hostinternal). One definition for both.
package shardenv

import (
	"context"

	"github.com/edgeshard/edgeshard/abi"
)

// Store is a shard's storage during one event (*storage.Shard implements
// it).
type Store interface {
	Get(key string) ([]byte, bool, error)
	GetMulti(keys []string) ([]abi.KV, error)
	Put(key string, val []byte, unconfirmed bool) error
	PutMulti(kvs []abi.KV, unconfirmed bool) error
	Delete(key string) (bool, error)
	DeleteMulti(keys []string) (int, error)
	List(opts abi.ListOptions) ([]abi.KV, error)
	DeleteAll() error
}

// Env is what one event of one shard may reach. A nil Store, or an error
// wrapping a "not granted" error, means the binding was not granted it.
type Env interface {
	Store() Store
	SetAlarm(unixMs int64) error
	GetAlarm() (int64, bool, error)
	DeleteAlarm() error
	Var(name string) (string, bool)
	Log(level int32, rec abi.LogRecord)
	SQL(ctx context.Context, stmts []abi.Statement) ([]abi.Result, error)
	WriteDataPoint(p abi.DataPoint) error
	// CallShard sends c's request to the shard of binding c.Binding that
	// c.Key routes to, as /do/{binding}/{key}/... would, and returns its
	// answer once that event's writes are durable. It waits no later than
	// ctx's deadline (the calling event's).
	CallShard(ctx context.Context, c *abi.CallRequest) (*abi.Response, error)
	// FetchHTTP sends req over HTTP(S) to the absolute URL in req.Path,
	// through the SSRF guard and the binding's allowed hosts.
	FetchHTTP(ctx context.Context, req *abi.Request) (*abi.Response, error)
}
