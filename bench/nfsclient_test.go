package bench

import (
	"bytes"
	"context"
	"errors"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/blockrep/blockrep/internal/rpcclient"
	"github.com/blockrep/blockrep/nfsexport/rpc"
	"github.com/blockrep/blockrep/nfsexport/xdr"
)

// testRPCServer serves h (NFS) and a MOUNT MNT that answers root on a
// loopback port, until the test ends.
func testRPCServer(t *testing.T, h rpc.HandlerFunc, root []byte) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := rpc.NewServer(rpc.Config{})
	s.Register(nfsProgram, nfsVersion, h)
	s.Register(mountProgram, mountVersion, rpc.HandlerFunc(func(ctx context.Context, c *rpc.Call, e *xdr.Encoder) error {
		if c.Proc != mountProcMnt {
			return rpc.ErrProcUnavail
		}
		e.Uint32(0)
		e.Opaque(root)
		e.Uint32(1)
		e.Uint32(rpc.AuthSys)
		return nil
	}))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx, ln) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("serve: %v", err)
		}
	})
	return ln.Addr().String()
}

// testAttr appends a regular file's fattr3 of size bytes.
func testAttr(e *xdr.Encoder, size uint64) {
	e.Uint32(1)     // NF3REG
	e.Uint32(0o644) // mode
	e.Uint32(1)     // nlink
	e.Uint32(0)     // uid
	e.Uint32(0)     // gid
	e.Uint64(size)  // size
	e.Uint64(size)  // used
	e.Uint64(0)     // rdev
	e.Uint64(7)     // fsid
	e.Uint64(42)    // fileid
	for range 3 {
		e.Uint64(0) // atime, mtime, ctime
	}
}

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// TestRPCConnPipelines: a call whose reply is held back does not hold up
// the calls after it on the same connection, each reply reaches its own
// caller, and a WRITE's payload (of a length that needs padding) arrives
// whole.
func TestRPCConnPipelines(t *testing.T) {
	release := make(chan struct{})
	var once sync.Once
	data := bytes.Repeat([]byte("0123456789abcdef"), 256)
	data = append(data, 'x') // 4097 bytes: three bytes of padding
	verf := [8]byte{1, 2, 3, 4, 5, 6, 7, 8}
	addr := testRPCServer(t, func(ctx context.Context, c *rpc.Call, e *xdr.Encoder) error {
		d := &c.Args
		fh, err := d.Opaque("fh", 64)
		if err != nil {
			return rpc.ErrGarbageArgs
		}
		switch c.Proc {
		case nfsProcRead: // held until the test releases it
			select {
			case <-release:
			case <-ctx.Done():
				return ctx.Err()
			}
			e.Uint32(0)
			e.Bool(false)
			e.Uint32(5)
			e.Bool(true)
			e.Opaque([]byte("hello"))
		case nfsProcGetattr:
			e.Uint32(0)
			testAttr(e, uint64(len(fh))*100)
		case nfsProcWrite:
			off, _ := d.Uint64("offset")
			count, _ := d.Uint32("count")
			stable, _ := d.Uint32("stable")
			got, err := d.Opaque("data", 1<<20)
			if err != nil || d.Remaining() != 0 || off != 8192 || stable != unstable || int(count) != len(data) || !bytes.Equal(got, data) {
				return rpc.ErrGarbageArgs
			}
			e.Uint32(0)
			e.Bool(false) // wcc: no pre_op_attr
			e.Bool(false) // no post_op_attr
			e.Uint32(count)
			e.Uint32(unstable)
			e.FixedOpaque(verf[:])
		default:
			return rpc.ErrProcUnavail
		}
		return nil
	}, []byte("root"))
	ctx := testCtx(t)
	c, err := dialRPC(ctx, addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.close()
	root, err := c.mount(ctx, "/x")
	if err != nil || string(root) != "root" {
		t.Fatalf("mount: %q, %v", root, err)
	}

	type readResult struct {
		data string
		eof  bool
		err  error
	}
	held := make(chan readResult, 1)
	go func() {
		var got string
		_, eof, err := c.read(ctx, []byte("f"), 0, 100, func(b []byte) error { got = string(b); return nil })
		held <- readResult{got, eof, err}
	}()
	// Calls issued while the READ waits must complete: with one call at a
	// time per connection they would wait for it, and the test would time
	// out below instead of releasing it.
	var wg sync.WaitGroup
	for i := 1; i <= 8; i++ {
		wg.Go(func() {
			a, err := c.getattr(ctx, bytes.Repeat([]byte{'h'}, i))
			if err != nil || a.Size != uint64(i*100) || a.Type != 1 || a.FileID != 42 {
				t.Errorf("GETATTR %d: %+v, %v", i, a, err)
			}
		})
	}
	n, committed, v, err := c.write(ctx, []byte("f"), 8192, data, unstable)
	if err != nil || int(n) != len(data) || committed != unstable || v != verf {
		t.Errorf("WRITE: count %d committed %d verf %x, %v", n, committed, v, err)
	}
	wg.Wait()
	select {
	case r := <-held:
		t.Fatalf("the held READ returned before it was released: %+v", r)
	default:
	}
	once.Do(func() { close(release) })
	if r := <-held; r.err != nil || r.data != "hello" || !r.eof {
		t.Errorf("READ: %+v", r)
	}
}

// TestRPCConnFailsClearly: a procedure the server does not have, an NFS
// error status, a cancelled call and a server that closes the connection
// each end the call at once with an error that says which.
func TestRPCConnFailsClearly(t *testing.T) {
	release := make(chan struct{})
	defer close(release)
	addr := testRPCServer(t, func(ctx context.Context, c *rpc.Call, e *xdr.Encoder) error {
		switch c.Proc {
		case nfsProcGetattr:
			e.Uint32(70) // NFS3ERR_STALE
			return nil
		case nfsProcRead:
			select {
			case <-release:
			case <-ctx.Done():
			}
			return rpc.ErrSystemErr
		}
		return rpc.ErrProcUnavail
	}, []byte("root"))
	ctx := testCtx(t)
	c, err := dialRPC(ctx, addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.close()

	_, _, err = c.lookup(ctx, []byte("root"), "big")
	if !errors.Is(err, rpcclient.ErrProcUnavail) || !strings.Contains(err.Error(), "NFS LOOKUP: PROC_UNAVAIL") {
		t.Errorf("LOOKUP: %v, want NFS LOOKUP: PROC_UNAVAIL", err)
	}
	_, err = c.getattr(ctx, []byte("root"))
	var st nfsStatus
	if !errors.As(err, &st) || st != 70 || !strings.Contains(err.Error(), "NFS GETATTR: NFS3ERR_STALE (70)") {
		t.Errorf("GETATTR: %v, want NFS3ERR_STALE", err)
	}

	cctx, cancel := context.WithCancel(ctx)
	errc := make(chan error, 1)
	go func() {
		_, _, err := c.read(cctx, []byte("f"), 0, 10, nil)
		errc <- err
	}()
	time.Sleep(50 * time.Millisecond) // let the READ be sent
	cancel()
	if err := <-errc; !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled READ: %v", err)
	}
	// The connection still serves calls after one was given up.
	if _, err := c.getattr(ctx, []byte("root")); !errors.As(err, &st) {
		t.Errorf("GETATTR after a cancelled call: %v", err)
	}

	// The whole bench's first steps against this server: mount works,
	// FSINFO is PROC_UNAVAIL, and connect says so.
	tg := &nfsTarget{name: "stub", nfsAddr: addr, mountAddr: addr, path: "/x"}
	defer tg.close()
	err = tg.connect(ctx, NFSOptions{Conns: 2, Depth: 1, Dirs: 1})
	if !errors.Is(err, rpcclient.ErrProcUnavail) || !strings.Contains(err.Error(), "stub: NFS FSINFO: PROC_UNAVAIL") {
		t.Errorf("connect: %v, want stub: NFS FSINFO: PROC_UNAVAIL", err)
	}
}

// TestRPCConnServerCloses: calls waiting when the server closes the
// connection fail (they do not wait for the call timeout), and so does
// every later call.
func TestRPCConnServerCloses(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		nc, err := ln.Accept()
		if err != nil {
			return
		}
		// Read the first call's record mark, then hang up.
		var hdr [4]byte
		nc.Read(hdr[:])
		nc.Close()
	}()
	ctx := testCtx(t)
	c, err := dialRPC(ctx, ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.close()
	start := time.Now()
	_, err = c.getattr(ctx, []byte("fh"))
	if err == nil || !strings.Contains(err.Error(), "NFS GETATTR") || !strings.Contains(err.Error(), "reading a reply") {
		t.Errorf("GETATTR on a closed connection: %v", err)
	}
	if d := time.Since(start); d >= nfsCallTimeout {
		t.Errorf("the call waited %s, the whole call timeout", d)
	}
	if _, err := c.getattr(ctx, []byte("fh")); err == nil || !strings.Contains(err.Error(), "connection failed before the call") {
		t.Errorf("a later call: %v", err)
	}
}
