//go:build linux

package nfs3

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/blockrep/blockrep/internal/rpcclient"
	"github.com/blockrep/blockrep/internal/testfs"
	"github.com/blockrep/blockrep/nfsexport/export"
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
		c, err := rpcclient.Dial(context.Background(), s.addr, rpcclient.Options{Cred: rpcclient.Root})
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
				var fh []byte
				name := fmt.Sprintf("f%04d", i%files)
				err := c.Call(context.Background(), Program, Version, ProcLookup,
					func(e *xdr.Encoder) { e.Opaque(s.root); e.String(name) }, nil,
					func(d *xdr.Decoder) error {
						if status(d) != OK {
							return fmt.Errorf("LOOKUP %s failed", name)
						}
						fh = append([]byte(nil), must(d.Opaque("fh", 64))...)
						return nil
					})
				if err == nil {
					err = c.Call(context.Background(), Program, Version, ProcGetattr, func(e *xdr.Encoder) { e.Opaque(fh) }, nil, nil)
				}
				if err == nil {
					err = c.Call(context.Background(), Program, Version, ProcRead, func(e *xdr.Encoder) { e.Opaque(fh); e.Uint64(0); e.Uint32(64 << 10) }, nil, nil)
				}
				if err != nil {
					b.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
}

// BenchmarkSquashedIO is READ and WRITE by a client that is not root
// (uid 1000, a 0666 file of root's: no owner override), the web-host
// case: every call switches the thread's fsuid/fsgid/groups.
func BenchmarkSquashedIO(b *testing.B) {
	testfs.NeedRoot(b)
	m := testfs.New(b, "ext4")
	p := filepath.Join(m.Dir, "f")
	if err := os.WriteFile(p, make([]byte, 4096), 0o666); err != nil {
		b.Fatal(err)
	}
	os.Chmod(p, 0o666)
	s := serveDir(b, m.Dir, export.Options{})
	c, err := rpcclient.Dial(context.Background(), s.addr, rpcclient.Options{Cred: rpcclient.User(1000, 1000, 1000)})
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	var fh []byte
	if err := c.Call(context.Background(), Program, Version, ProcLookup, func(e *xdr.Encoder) { e.Opaque(s.root); e.String("f") }, nil,
		func(d *xdr.Decoder) error {
			status(d)
			fh = append([]byte(nil), must(d.Opaque("fh", 64))...)
			return nil
		}); err != nil {
		b.Fatal(err)
	}
	data := make([]byte, 4096)
	checkOK := func(d *xdr.Decoder) error {
		if st := status(d); st != OK {
			return fmt.Errorf("status %d", st)
		}
		return nil
	}
	b.ResetTimer()
	for i := range b.N {
		var err error
		if i%2 == 0 {
			err = c.Call(context.Background(), Program, Version, ProcRead, func(e *xdr.Encoder) { e.Opaque(fh); e.Uint64(0); e.Uint32(4096) }, nil, checkOK)
		} else {
			err = c.Call(context.Background(), Program, Version, ProcWrite, func(e *xdr.Encoder) {
				e.Opaque(fh)
				e.Uint64(0)
				e.Uint32(4096)
				e.Uint32(Unstable)
				e.Uint32(4096)
			}, data, checkOK)
		}
		if err != nil {
			b.Fatal(err)
		}
	}
}
