package nbdclient

import (
	"bytes"
	"context"
	"errors"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/blockrep/blockrep/block/blocktest"
	"github.com/blockrep/blockrep/nbd"
)

// serve runs the project's NBD server on loopback with the given exports.
func serve(t *testing.T, exports ...*nbd.Export) string {
	t.Helper()
	s := nbd.NewServer(nbd.Config{})
	for _, e := range exports {
		if err := s.AddExport(e); err != nil {
			t.Fatal(err)
		}
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = s.Serve(l)
	}()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = s.Shutdown(ctx)
		<-done
	})
	return l.Addr().String()
}

func dial(t *testing.T, addr, export string) *Client {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := Dial(ctx, addr, export)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// TestPipelined writes from many goroutines at once on one connection and
// reads everything back.
func TestPipelined(t *testing.T) {
	mem := blocktest.NewMem(1 << 20)
	addr := serve(t, &nbd.Export{Name: "m", Device: mem})
	c := dial(t, addr, "m")
	if c.Size != 1<<20 || c.ReadOnly() {
		t.Fatalf("size %d read-only %v, want 1 MiB writable", c.Size, c.ReadOnly())
	}
	var wg sync.WaitGroup
	for i := 0; i < 64; i++ {
		wg.Go(func() {
			b := bytes.Repeat([]byte{byte(i + 1)}, 4096)
			if err := c.WriteAt(b, int64(i)*16384, i%2 == 0); err != nil {
				t.Errorf("write %d: %v", i, err)
			}
		})
	}
	wg.Wait()
	if err := c.Flush(); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 64; i++ {
		b := make([]byte, 4096)
		if err := c.ReadAt(b, int64(i)*16384); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(b, bytes.Repeat([]byte{byte(i + 1)}, 4096)) {
			t.Fatalf("block %d reads back wrong", i)
		}
	}
}

// TestErrors: an error reply is an Errno and keeps the connection; a
// refused export fails Dial; a closed connection fails requests with
// ErrClosed.
func TestErrors(t *testing.T) {
	addr := serve(t,
		&nbd.Export{Name: "ro", Device: blocktest.NewMem(65536), ReadOnly: true},
		&nbd.Export{Name: "no", Device: blocktest.NewMem(65536), Access: func() (bool, error) { return false, errors.New("go away") }},
	)
	c := dial(t, addr, "ro")
	if !c.ReadOnly() {
		t.Error("read-only export not advertised read-only")
	}
	if err := c.WriteAt(make([]byte, 512), 0, false); err != Errno(1) {
		t.Errorf("write to a read-only export: %v, want EPERM", err)
	}
	if err := c.ReadAt(make([]byte, 512), 65536); !errors.As(err, new(Errno)) {
		t.Errorf("read past the end: %v, want an errno", err)
	}
	if err := c.ReadAt(make([]byte, 512), 0); err != nil {
		t.Errorf("read after error replies: %v", err)
	}
	c.Close()
	if err := c.ReadAt(make([]byte, 512), 0); !errors.Is(err, ErrClosed) {
		t.Errorf("read after Close: %v, want ErrClosed", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := Dial(ctx, addr, "no"); err == nil {
		t.Error("Dial of a refused export succeeded")
	}
}
