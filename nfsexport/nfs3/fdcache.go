package nfs3

import (
	"container/list"
	"sync"

	"golang.org/x/sys/unix"
)

// DefaultOpenFiles is how many files the handler keeps open between calls
// (Config.OpenFiles), less if the process's limit of open files
// (RLIMIT_NOFILE) is lower: a web host's working set of small files should
// fit, or a scan of it evicts everything before its next round.
const DefaultOpenFiles = 65536

// fdCache keeps the files that calls opened by handle open for the next
// calls on the same handle, least recently used closed first, as
// nfs-ganesha and knfsd's file cache do. Besides saving an
// open_by_handle_at, a path walk of the export check and a close per
// call, it keeps a file's readahead state between READs: on a new open
// every READ would start a new readahead window, which a sequential
// reader needs and a random reader pays for.
//
// A cached file that was removed is still open here (its inode lives on),
// so every use checks its link count: 0 answers STALE, as a fresh open
// would, and closes it. REMOVE, RMDIR and RENAME over a name evict the
// handle they unlinked, so that the space is freed at once.
//
// Entries are reference-counted: an fd in use by a call is closed only
// when the call releases it, so that an eviction never closes an fd under
// a running call (which could then use a number reused for another file).
type fdCache struct {
	mu      sync.Mutex
	max     int
	entries map[fdKey]*list.Element
	lru     list.List // of *cachedFD, front most recent
	closed  bool
}

type fdKey struct {
	handle string // the wire handle
	flags  int    // open flags (O_PATH, O_RDONLY, O_RDWR, with O_DIRECTORY)
}

type cachedFD struct {
	key     fdKey
	fd      int
	refs    int
	evicted bool
}

func newFDCache(max int) *fdCache {
	return &fdCache{max: max, entries: make(map[fdKey]*list.Element)}
}

// usable lists, for a mode a call wants, the cached modes whose fd serves
// it, best first: any open file answers fstat and the *at calls, a
// read-write one reads. One fd per file then covers a LOOKUP, GETATTR and
// READ, so that a working set fits the cache once, not once per mode.
var usable = map[int][]int{
	unix.O_PATH:                    {unix.O_PATH, unix.O_RDONLY, unix.O_RDWR, unix.O_PATH | unix.O_DIRECTORY},
	unix.O_PATH | unix.O_DIRECTORY: {unix.O_PATH | unix.O_DIRECTORY, unix.O_PATH},
	unix.O_RDONLY:                  {unix.O_RDONLY, unix.O_RDWR},
	unix.O_RDWR:                    {unix.O_RDWR},
}

// superseded lists the cached modes an fd of a mode makes useless.
var superseded = map[int][]int{
	unix.O_RDONLY: {unix.O_PATH},
	unix.O_RDWR:   {unix.O_PATH, unix.O_RDONLY},
}

// get returns a cached fd of handle that serves flags (see usable), held
// for the caller. An O_PATH fd returned for O_PATH|O_DIRECTORY may be of a
// non-directory: the caller checks.
func (c *fdCache) get(handle string, flags int) (*cachedFD, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, f := range usable[flags] {
		el, ok := c.entries[fdKey{handle, f}]
		if !ok {
			continue
		}
		c.lru.MoveToFront(el)
		e := el.Value.(*cachedFD)
		e.refs++
		return e, true
	}
	return nil, false
}

// add caches fd as k and returns it held for the caller. If the handle
// has a cached fd that serves k's mode (another call cached it meanwhile,
// or it is open in a better mode), fd is closed and that entry returned.
func (c *fdCache) add(k fdKey, fd int) *cachedFD {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return &cachedFD{key: k, fd: fd, refs: 1, evicted: true}
	}
	for _, f := range usable[k.flags] {
		// Cached meanwhile, or already open in a mode that serves this
		// one (a LOOKUP of a file being read): one fd per file.
		if el, ok := c.entries[fdKey{k.handle, f}]; ok {
			unix.Close(fd)
			e := el.Value.(*cachedFD)
			e.refs++
			c.lru.MoveToFront(el)
			return e
		}
	}
	for _, f := range superseded[k.flags] {
		if el, ok := c.entries[fdKey{k.handle, f}]; ok {
			c.dropLocked(el)
		}
	}
	e := &cachedFD{key: k, fd: fd, refs: 1}
	c.entries[k] = c.lru.PushFront(e)
	for c.lru.Len() > c.max {
		c.dropLocked(c.lru.Back())
	}
	return e
}

// release gives back a held entry, closing it if it was evicted meanwhile.
func (c *fdCache) release(e *cachedFD) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e.refs--
	if e.refs == 0 && e.evicted {
		unix.Close(e.fd)
	}
}

// evict drops every cached fd of the wire handle ("" is none).
func (c *fdCache) evict(handle string) {
	if handle == "" {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, flags := range cachedFlags {
		if el, ok := c.entries[fdKey{handle, flags}]; ok {
			c.dropLocked(el)
		}
	}
}

// evictEntry drops e (its file is gone).
func (c *fdCache) evictEntry(e *cachedFD) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if el, ok := c.entries[e.key]; ok && el.Value.(*cachedFD) == e {
		c.dropLocked(el)
	}
}

func (c *fdCache) dropLocked(el *list.Element) {
	e := c.lru.Remove(el).(*cachedFD)
	delete(c.entries, e.key)
	e.evicted = true
	if e.refs == 0 {
		unix.Close(e.fd)
	}
}

// close closes every cached fd not in use (those in use close on
// release) and caches nothing more.
func (c *fdCache) close() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.closed = true
	for c.lru.Len() > 0 {
		c.dropLocked(c.lru.Back())
	}
}

// cachedFlags are the open modes the cache keeps. A directory opened for
// READDIR is not among them: its file offset is the listing's position,
// which concurrent READDIRs must not share.
var cachedFlags = []int{unix.O_PATH, unix.O_PATH | unix.O_DIRECTORY, unix.O_RDONLY, unix.O_RDWR}

func cacheable(flags int) bool { _, ok := usable[flags]; return ok }
