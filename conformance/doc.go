// Package conformance runs a shard plugin (.wasm) against scenarios written
// as data, laid out like wazero's spectest: a suite is a JSON file
// (format "edgeshard-conformance/v1", see README.md) and one shared runner
// executes it on either backend.
//
// Each scenario runs in a fresh world: a real host.Host with the plugin
// loaded, shard storage in memory (Backend "memory") or in Badger plus a
// SQLite file in a temporary directory (Backend "badger"), a SQLite
// database with the host's migrations applied, an analytics.Recorder, a
// virtual clock starting at 2026-01-01T00:00:00Z that drives alarms and the
// guest's WASI clocks, and a recorder of the host's JSON log.
//
// Plugin authors call Run from their own tests:
//
//	func TestConformance(t *testing.T) {
//		conformance.Run(t, "build/myshard.wasm", "conformance.json")
//	}
//
// or run `edgeshard conformance --plugin myshard.wasm --suite conformance.json`.
package conformance
