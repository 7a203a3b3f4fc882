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

// FreeAddrs returns n FreeAddr addresses (a process's listen and admin
// addresses, say).
func FreeAddrs(n int) ([]string, error) {
	addrs := make([]string, n)
	for i := range addrs {
		a, err := FreeAddr()
		if err != nil {
			return nil, err
		}
		addrs[i] = a
	}
	return addrs, nil
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
