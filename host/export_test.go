package host

// VersionRefs returns v's reference count (Version), for tests of the
// version lifecycle.
func VersionRefs(v *Version) int64 { return v.refs.Load() }
