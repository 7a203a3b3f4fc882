// Package eventsbody writes the body of the edge API's POST
// /runtime-events, {"events":[…]}, for the tests, the crash test and the
// benchmarks that send events.
package eventsbody

// Append appends {"events":[e0,…,e(n-1)]} to b: event(b, i) appends the
// JSON object of event i.
func Append(b []byte, n int, event func(b []byte, i int) []byte) []byte {
	b = append(b, `{"events":[`...)
	for i := 0; i < n; i++ {
		if i > 0 {
			b = append(b, ',')
		}
		b = event(b, i)
	}
	return append(b, `]}`...)
}
