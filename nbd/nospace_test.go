package nbd

import (
	"fmt"
	"log/slog"
	"strings"
	"syscall"
	"testing"

	"github.com/blockrep/blockrep/block/blocktest"
	"github.com/blockrep/blockrep/internal/syncbuf"
)

// TestNoSpaceLogged: a full backing file system (ENOSPC) is answered with
// the NBD ENOSPC error and logged with the store's error, which names the
// path, rate-limited like EIO: a full disk fails every write.
func TestNoSpaceLogged(t *testing.T) {
	var logs syncbuf.Buffer
	mem := blocktest.NewMem(testSize)
	srv := NewServer(Config{Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	addr := serveTest(t, srv, &Export{Name: "disk", Device: mem})
	c := dialTest(t, addr)
	c.negotiateGo("disk", false)
	const path = "/srv/blockrep/vol0.img"
	mem.FailNext(blocktest.OpWrite, fmt.Errorf("raid: write %s at 0: %w", path, syscall.ENOSPC), 25)
	for range 25 {
		if r := c.do(cmdWrite, 0, 0, 4096, make([]byte, 4096)); r.errno != errNoSpc {
			t.Fatalf("write on a full file system: errno %d, want ENOSPC", r.errno)
		}
	}
	var lines []string
	for _, l := range strings.Split(logs.String(), "\n") {
		if strings.Contains(l, "no space") {
			lines = append(lines, l)
		}
	}
	if len(lines) != 10 {
		t.Fatalf("25 writes failing with ENOSPC logged %d lines about it, want the first 10:\n%s", len(lines), logs.String())
	}
	if !strings.Contains(lines[0], path) || !strings.Contains(lines[0], "cmd=WRITE") {
		t.Errorf("the log line does not name the path and the request: %s", lines[0])
	}
}
