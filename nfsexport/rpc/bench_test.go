package rpc

import (
	"log/slog"
	"sync"
	"testing"
)

// BenchmarkServerCall measures one echo call round trip over loopback TCP,
// with calls pipelined on one connection; allocs/op counts the server's
// and this client's allocations together.
func BenchmarkServerCall(b *testing.B) {
	addr, _ := startServer(b, Config{Logger: slog.New(slog.DiscardHandler)}, func(s *Server) { s.Register(testProg, 1, echoHandler) })
	c := dialRaw(b, addr)
	rec := withArgs(defaultCall(1, testProg, 1, 1), words(42)).record()
	b.ReportAllocs()
	b.ResetTimer()
	var wg sync.WaitGroup
	wg.Go(func() {
		for i := 0; i < b.N; i++ {
			if _, err := c.c.Write(rec); err != nil {
				b.Error(err)
				return
			}
		}
	})
	buf := make([]byte, 0, 64)
	for i := 0; i < b.N; i++ {
		var err error
		if buf, err = ReadRecord(c.c, buf, 1<<10); err != nil {
			b.Fatal(err)
		}
	}
	wg.Wait()
}
