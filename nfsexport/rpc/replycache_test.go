package rpc

import (
	"bytes"
	"context"
	"encoding/binary"
	"sync/atomic"
	"testing"

	"github.com/blockrep/blockrep/nfsexport/xdr"
)

// countingHandler answers every call with how many times it ran a call of
// that procedure; procedure 1 is cached.
type countingHandler struct{ runs [4]atomic.Uint32 }

func (h *countingHandler) ServeRPC(_ context.Context, call *Call, reply *xdr.Encoder) error {
	if call.Proc >= uint32(len(h.runs)) {
		return ErrProcUnavail
	}
	reply.Uint32(h.runs[call.Proc].Add(1))
	return nil
}

func (h *countingHandler) CacheReply(proc uint32) bool { return proc == 1 }

// TestReplyCache: a retransmitted call of a cached procedure, sent on a
// new connection as a client does after losing one, gets the first reply
// without running again; a call of another procedure, or with other
// arguments, runs again.
func TestReplyCache(t *testing.T) {
	h := &countingHandler{}
	addr, _ := startServer(t, Config{ReplyCacheEntries: 2}, func(s *Server) { s.Register(testProg, 1, h) })
	exchange := func(xid, proc uint32, args []byte) uint32 {
		t.Helper()
		c := dialRaw(t, addr) // a new connection every time
		c.send(withArgs(defaultCall(xid, testProg, 1, proc), args).record())
		rec := c.recv()
		if len(rec) != 28 || binary.BigEndian.Uint32(rec) != xid {
			t.Fatalf("reply %x", rec)
		}
		return binary.BigEndian.Uint32(rec[24:])
	}
	if n := exchange(10, 1, []byte{0, 0, 0, 1}); n != 1 {
		t.Fatalf("first call ran %d times", n)
	}
	if n := exchange(10, 1, []byte{0, 0, 0, 1}); n != 1 {
		t.Fatalf("retransmission answered %d: it ran again", n)
	}
	if n := exchange(10, 1, []byte{0, 0, 0, 2}); n != 2 {
		t.Fatalf("same xid, other arguments: answered %d, want a second run", n)
	}
	if n := exchange(11, 1, []byte{0, 0, 0, 1}); n != 3 {
		t.Fatalf("other xid: answered %d, want a third run", n)
	}
	if n := exchange(10, 2, nil); n != 1 {
		t.Fatalf("uncached procedure: %d", n)
	}
	if n := exchange(10, 2, nil); n != 2 {
		t.Fatalf("uncached procedure retransmitted: %d, want it run again", n)
	}
	// The cache holds 2 entries: xid 10 with args 1 is gone by now.
	exchange(12, 1, nil)
	if n := exchange(10, 1, []byte{0, 0, 0, 1}); n != 5 {
		t.Fatalf("evicted entry: %d, want a fifth run", n)
	}
}

func TestReplyCacheBusy(t *testing.T) {
	c := newReplyCache(10)
	k := replyKey{xid: 1}
	if _, found, busy := c.begin(k); found || busy {
		t.Fatal("new key found")
	}
	if _, found, busy := c.begin(k); found || !busy {
		t.Fatal("a call in progress is not busy")
	}
	c.finish(k, []byte{1, 2, 3, 4})
	if r, found, _ := c.begin(k); !found || !bytes.Equal(r, []byte{1, 2, 3, 4}) {
		t.Fatalf("finished reply %x %v", r, found)
	}
}
