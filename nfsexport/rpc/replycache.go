package rpc

import (
	"container/list"
	"hash/fnv"
	"net"
	"net/netip"
	"sync"
)

// ReplyCacher is implemented by a Handler whose program has procedures that
// must not run twice (NFSv3 REMOVE, RENAME, CREATE, ...). A client that
// lost its connection resends a call with the same xid on a new one; run
// again, a REMOVE that had succeeded would answer NOENT. For a procedure
// CacheReply reports true for, the Server keeps the reply (a duplicate
// request cache, as knfsd's) and answers a retransmission with it; a
// retransmission that arrives while the first call still runs is dropped,
// and the client resends it later.
//
// A call is the same call when it comes from the same client address (any
// port: the client reconnects from another), with the same xid, program,
// version and procedure, and arguments of the same length and checksum.
type ReplyCacher interface {
	CacheReply(proc uint32) bool
}

// DefaultReplyCacheEntries is how many replies the duplicate request cache
// keeps (the least recently used go first).
const DefaultReplyCacheEntries = 4096

type replyKey struct {
	client                netip.Addr
	xid, prog, vers, proc uint32
	argLen                int
	argSum                uint64
}

type replyEntry struct {
	key   replyKey
	reply []byte // nil while the call runs
}

// replyCache is a bounded LRU of replies. Safe for concurrent use.
type replyCache struct {
	mu      sync.Mutex
	max     int
	entries map[replyKey]*list.Element
	lru     list.List // front: most recent
}

func newReplyCache(max int) *replyCache {
	return &replyCache{max: max, entries: make(map[replyKey]*list.Element)}
}

func keyOf(remote net.Addr, call *Call, args []byte) (replyKey, bool) {
	t, ok := remote.(*net.TCPAddr)
	if !ok {
		return replyKey{}, false
	}
	ip, ok := netip.AddrFromSlice(t.IP)
	if !ok {
		return replyKey{}, false
	}
	h := fnv.New64a()
	h.Write(args)
	return replyKey{client: ip.Unmap(), xid: call.XID, prog: call.Prog, vers: call.Vers, proc: call.Proc,
		argLen: len(args), argSum: h.Sum64()}, true
}

// begin looks up k. It returns the cached reply of a completed call
// (found), or reports a call in progress (busy); otherwise it records k
// as in progress and the caller must call finish.
func (c *replyCache) begin(k replyKey) (reply []byte, found, busy bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if el, ok := c.entries[k]; ok {
		c.lru.MoveToFront(el)
		e := el.Value.(*replyEntry)
		if e.reply == nil {
			return nil, false, true
		}
		return e.reply, true, false
	}
	c.entries[k] = c.lru.PushFront(&replyEntry{key: k})
	for c.lru.Len() > c.max {
		old := c.lru.Back()
		if old.Value.(*replyEntry).reply == nil {
			// Never evict a call in progress; the bound is exceeded by at
			// most the calls running.
			break
		}
		c.lru.Remove(old)
		delete(c.entries, old.Value.(*replyEntry).key)
	}
	return nil, false, false
}

// finish stores the reply of k (copied).
func (c *replyCache) finish(k replyKey, reply []byte) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if el, ok := c.entries[k]; ok {
		el.Value.(*replyEntry).reply = append([]byte(nil), reply...)
	}
}
