package host

// StoredKey is the reserved key holding a shard's stored bytes (quota.go),
// for tests that check guests and the inspector never see it.
const StoredKey = storedKey
