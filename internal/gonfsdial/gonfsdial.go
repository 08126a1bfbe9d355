// Package gonfsdial dials go-nfs-client's RPC client for tests. That client
// binds a random local port in 49152–65535 itself and fails with
// EADDRINUSE when another socket has it (other tests' connections use the
// same range), so Dial tries again with another.
package gonfsdial

import (
	"errors"
	"syscall"
	"testing"

	nfsrpc "github.com/willscott/go-nfs-client/nfs/rpc"
)

// Dial connects to addr, closing the client when the test ends.
func Dial(t testing.TB, addr string) *nfsrpc.Client {
	t.Helper()
	var err error
	for range 20 {
		var c *nfsrpc.Client
		if c, err = nfsrpc.DialTCP("tcp", addr, false); err == nil {
			t.Cleanup(c.Close)
			return c
		}
		if !errors.Is(err, syscall.EADDRINUSE) {
			break
		}
	}
	t.Fatalf("go-nfs-client: dial %s: %v", addr, err)
	return nil
}
