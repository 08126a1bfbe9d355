//go:build linux

package nfs3

import (
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/blockrep/blockrep/internal/rpcclient"
	"github.com/blockrep/blockrep/internal/testfs"
	"github.com/blockrep/blockrep/nfsexport/xdr"
)

// BenchmarkSmallFileRead is the web-host pattern on one server: LOOKUP,
// GETATTR and READ of small files, 32 calls in flight on 4 connections.
// (blockbench -nfs compares it with nfs-ganesha.)
func BenchmarkSmallFileRead(b *testing.B) {
	testfs.NeedRoot(b)
	m := testfs.New(b, "ext4")
	const files = 1000
	data := make([]byte, 16<<10)
	for i := range files {
		if err := os.WriteFile(filepath.Join(m.Dir, fmt.Sprintf("f%04d", i)), data, 0o644); err != nil {
			b.Fatal(err)
		}
	}
	s := benchServer(b, m.Dir)
	conns := make([]*rpcclient.Client, 4)
	for i := range conns {
		c, err := rpcclient.Dial(s.addr)
		if err != nil {
			b.Fatal(err)
		}
		defer c.Close()
		conns[i] = c
	}
	var next atomic.Int64
	b.ResetTimer()
	var wg sync.WaitGroup
	for w := range 32 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := conns[w%len(conns)]
			for {
				i := next.Add(1) - 1
				if i >= int64(b.N) {
					return
				}
				var e xdr.Encoder
				e.Opaque(s.root)
				e.String(fmt.Sprintf("f%04d", i%files))
				body, err := c.Call(Program, Version, ProcLookup, rpcclient.Root, e.Bytes())
				if err != nil {
					b.Error(err)
					return
				}
				d := xdr.NewDecoder(body)
				if status(d) != OK {
					b.Error("lookup failed")
					return
				}
				fh := must(d.Opaque("fh", 64))
				e.Reset(nil)
				e.Opaque(fh)
				if _, err := c.Call(Program, Version, ProcGetattr, rpcclient.Root, e.Bytes()); err != nil {
					b.Error(err)
					return
				}
				e.Uint64(0)
				e.Uint32(64 << 10)
				if _, err := c.Call(Program, Version, ProcRead, rpcclient.Root, e.Bytes()); err != nil {
					b.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
}
