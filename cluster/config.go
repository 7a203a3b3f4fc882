package cluster

import (
	"errors"
	"fmt"
	"net/url"
	"strings"
	"time"

	"github.com/edgeshard/edgeshard/host/config"
)

// Config is the [cluster] table of edgeshard.toml:
//
//	[cluster]
//	etcd      = ["http://127.0.0.1:2379"]   # etcd client endpoints
//	advertise = "http://10.0.0.5:8080"      # where the POP's other hosts forward to (this host's listen)
//	lease_ttl = "5s"                        # membership and ownership lapse this long after the host stops renewing
//	prefix    = "/edgeshard/pop1"           # etcd key prefix: one per POP
//	secret    = "…"                         # bearer the hosts forward with (or EDGESHARD_CLUSTER_SECRET)
//
// Without the table the host runs alone.
type Config struct {
	Etcd      []string
	Advertise string
	LeaseTTL  time.Duration
	Prefix    string
	Secret    string
	// ClaimWait bounds how long a claim waits for a previous owner to
	// let the shard go (a planned move in progress) — default 10 s.
	ClaimWait time.Duration
	// NodeID is the host's node id (internal/server settles it).
	NodeID string
}

// Table is the config table the cluster owns.
const Table = "cluster"

// EnvSecret overrides [cluster] secret.
const EnvSecret = "EDGESHARD_CLUSTER_SECRET"

// Defaults.
const (
	DefaultLeaseTTL  = 5 * time.Second
	DefaultPrefix    = "/edgeshard"
	DefaultClaimWait = 10 * time.Second
)

type table struct {
	Etcd      []string        `toml:"etcd"`
	Advertise string          `toml:"advertise"`
	LeaseTTL  config.Duration `toml:"lease_ttl"`
	Prefix    string          `toml:"prefix"`
	Secret    string          `toml:"secret"`
	ClaimWait config.Duration `toml:"claim_wait"`
}

// ConfigFromFile reads [cluster]; enabled is false without the table.
func ConfigFromFile(f *config.File, lookup func(string) (string, bool)) (cfg Config, enabled bool, err error) {
	if _, ok := f.Extra[Table]; !ok {
		return Config{}, false, nil
	}
	var t table
	if err := f.DecodeExtra(Table, &t); err != nil {
		return Config{}, false, err
	}
	cfg = Config{Etcd: t.Etcd, Advertise: strings.TrimRight(t.Advertise, "/"), LeaseTTL: t.LeaseTTL.Duration,
		Prefix: strings.TrimRight(t.Prefix, "/"), Secret: t.Secret, ClaimWait: t.ClaimWait.Duration}
	if lookup != nil {
		if v, ok := lookup(EnvSecret); ok && v != "" {
			cfg.Secret = v
		}
	}
	cfg = cfg.withDefaults()
	return cfg, true, errors.Join(cfg.check(), checkBindings(f))
}

// checkBindings refuses what a POP cannot keep: a binding whose shards
// each have their own SQLite database (sql = "shard") — the database
// would not move with its shard.
func checkBindings(f *config.File) error {
	var errs []error
	for _, b := range f.DurableObjects.Bindings {
		if b.SQL == config.ShardSQL {
			errs = append(errs, fmt.Errorf("[cluster] with binding %q: sql = %q is not supported on a POP of several hosts (a shard's own database does not move with the shard); use a [[d1_databases]] database the hosts share (its writes are fenced), or run the binding on a host alone", b.Name, config.ShardSQL))
		}
	}
	return errors.Join(errs...)
}

func (c Config) withDefaults() Config {
	if c.LeaseTTL == 0 {
		c.LeaseTTL = DefaultLeaseTTL
	}
	if c.Prefix == "" {
		c.Prefix = DefaultPrefix
	}
	if c.ClaimWait == 0 {
		c.ClaimWait = DefaultClaimWait
	}
	return c
}

func (c Config) check() error {
	var errs []error
	if len(c.Etcd) == 0 {
		errs = append(errs, errors.New(`[cluster] etcd: no endpoint (etcd = ["http://127.0.0.1:2379"])`))
	}
	for _, e := range c.Etcd {
		if u, err := url.Parse(e); err != nil || u.Host == "" {
			errs = append(errs, fmt.Errorf("[cluster] etcd: %q is not a URL (http://host:port)", e))
		}
	}
	if u, err := url.Parse(c.Advertise); err != nil || u.Host == "" || (u.Scheme != "http" && u.Scheme != "https") {
		errs = append(errs, fmt.Errorf("[cluster] advertise = %q: want the URL the POP's other hosts reach this host's listen at (http://host:port)", c.Advertise))
	}
	if c.LeaseTTL < 2*time.Second || c.LeaseTTL%time.Second != 0 {
		errs = append(errs, fmt.Errorf("[cluster] lease_ttl = %s: want whole seconds, at least 2s (etcd leases count in seconds)", c.LeaseTTL))
	}
	if !strings.HasPrefix(c.Prefix, "/") {
		errs = append(errs, fmt.Errorf("[cluster] prefix = %q: want an absolute etcd key prefix such as /edgeshard/pop1", c.Prefix))
	}
	if c.Secret == "" {
		errs = append(errs, fmt.Errorf("[cluster] secret: empty; the hosts of a POP forward requests to each other's internal bindings with it (set it, the same on every host, or %s)", EnvSecret))
	}
	if c.ClaimWait < 0 {
		errs = append(errs, fmt.Errorf("[cluster] claim_wait = %s: want > 0", c.ClaimWait))
	}
	return errors.Join(errs...)
}
