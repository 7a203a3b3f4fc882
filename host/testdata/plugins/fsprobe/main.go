// Command fsprobe tries to reach the filesystem from a guest: the host
// mounts none, so every attempt must fail.
package main

import (
	"os"

	"github.com/edgeshard/edgeshard/abi/sdk"
)

func main() {}

func init() {
	sdk.Serve(sdk.Handlers{Fetch: func(*sdk.Request) *sdk.Response {
		for _, p := range []string{"/etc/passwd", "/", ".", "go.mod"} {
			if _, err := os.ReadFile(p); err == nil {
				return sdk.Text(200, "read "+p)
			}
			if _, err := os.ReadDir(p); err == nil {
				return sdk.Text(200, "listed "+p)
			}
		}
		if err := os.WriteFile("x", []byte("x"), 0o644); err == nil {
			return sdk.Text(200, "wrote x")
		}
		return sdk.Text(403, "no filesystem")
	}})
}
