package server

import "testing"

func TestVerifiesServer(t *testing.T) {
	t.Setenv("PGSSLMODE", "")
	for url, want := range map[string]bool{
		"postgres://u@db.example:5432/d?sslmode=verify-full&sslrootcert=/ca.pem": true,
		"postgres://u@db.example/d?sslmode=verify-ca":                            true,
		"postgres://u@db.example/d?sslmode=require":                              false,
		"postgres://u@db.example/d":                                              false,
		"postgres://u@127.0.0.1:5432/d":                                          true,
		"postgres://u@[::1]/d":                                                   true,
		"postgres://u@localhost/d":                                               true,
		"postgres:///d?host=/var/run/postgresql":                                 true,
	} {
		if got := verifiesServer(url); got != want {
			t.Errorf("verifiesServer(%q) = %v, want %v", url, got, want)
		}
	}
	t.Setenv("PGSSLMODE", "verify-full")
	if !verifiesServer("postgres://u@db.example/d") {
		t.Error("PGSSLMODE=verify-full not taken into account")
	}
}
