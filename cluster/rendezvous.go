package cluster

import "hash/fnv"

// Place returns the member a shard key belongs to by rendezvous (highest
// random weight) hashing: each member scores score(member, key) and the
// highest wins. It depends only on the key and the set of members, so
// every host places alike, and a member joining or leaving moves only the
// keys it wins or won (about 1/N of them). "" when there is no member.
func Place(key string, members []string) string {
	best, bestScore := "", uint64(0)
	for _, m := range members {
		s := score(m, key)
		if best == "" || s > bestScore || (s == bestScore && m < best) {
			best, bestScore = m, s
		}
	}
	return best
}

// score is 64-bit FNV-1a over member, a zero byte and key, finished by
// SplitMix64's mixer (FNV alone scores similar strings alike).
func score(member, key string) uint64 {
	h := fnv.New64a()
	h.Write([]byte(member))
	h.Write([]byte{0})
	h.Write([]byte(key))
	x := h.Sum64()
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	x ^= x >> 31
	return x
}
