package host

// Accessors the admin API reads; kept apart from the runtime files so the
// operator-facing surface is easy to find.

// ShardStat returns the stats of one shard, and false when the shard has no
// actor (it is not running: no instance, nothing queued).
func (ns *Namespace) ShardStat(shard string) (ShardStats, bool) {
	ns.mu.RLock()
	defer ns.mu.RUnlock()
	a, ok := ns.actors[shard]
	if !ok {
		return ShardStats{Shard: shard}, false
	}
	return ShardStats{Shard: shard, QueueDepth: len(a.queue), Live: a.live.Load(), MemoryBytes: a.memBytes.Load()}, true
}
