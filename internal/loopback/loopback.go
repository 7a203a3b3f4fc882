// Package loopback picks free loopback ports for the processes the tests,
// the crash test and the benchmark drivers start: tests bind 127.0.0.1
// only, never a fixed port.
package loopback

import "net"

// FreeAddr returns a 127.0.0.1 address whose port was free a moment ago
// (another process may take it before the caller binds it).
func FreeAddr() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}

// FreePort is FreeAddr's port.
func FreePort() (int, error) {
	a, err := FreeAddr()
	if err != nil {
		return 0, err
	}
	addr, err := net.ResolveTCPAddr("tcp", a)
	if err != nil {
		return 0, err
	}
	return addr.Port, nil
}
