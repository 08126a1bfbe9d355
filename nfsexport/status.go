package nfsexport

import (
	"fmt"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/blockrep/blockrep/nfsexport/mount"
)

// Bounds of the status lists.
const (
	// DefaultMaxMounts bounds the MOUNT list (mount.DefaultMaxMounts).
	DefaultMaxMounts = mount.DefaultMaxMounts
	// DefaultMaxClients bounds the clients seen by NFS calls that are
	// remembered, over all exports; past it the one seen least recently
	// is forgotten.
	DefaultMaxClients = 4096
)

// Status is what a Server serves and to whom.
type Status struct {
	// Verifier is the write verifier, in hex.
	Verifier string `json:"verifier"`
	// Exports are the exports in configuration order.
	Exports []ExportStatus `json:"exports"`
}

// ExportStatus is one export and its clients.
type ExportStatus struct {
	ID            uint32   `json:"id"`
	Path          string   `json:"path"`
	Dir           string   `json:"dir"`
	FSUUID        string   `json:"fs_uuid"`
	ReadOnly      bool     `json:"read_only"`
	Squash        string   `json:"squash"`
	AnonUID       uint32   `json:"anonuid"`
	AnonGID       uint32   `json:"anongid"`
	AllowAuthNone bool     `json:"allow_auth_none"`
	Networks      []string `json:"networks"`
	// Clients are the clients in the MOUNT list or seen by NFS calls,
	// ordered by address.
	Clients []ClientStatus `json:"clients"`
}

// ClientStatus is one client of an export.
type ClientStatus struct {
	Address netip.Addr `json:"address"`
	// Mounted is when the client last mounted the export; zero when it is
	// not in the MOUNT list (it unmounted, or mounted from another
	// instance before a restart or a failover and kept its handles).
	Mounted time.Time `json:"mounted,omitzero"`
	// FirstSeen and LastSeen are the first and last NFS call admitted
	// from it; zero when it made none.
	FirstSeen time.Time `json:"first_seen,omitzero"`
	LastSeen  time.Time `json:"last_seen,omitzero"`
	// Calls counts its admitted NFS calls.
	Calls uint64 `json:"calls"`
}

// Status returns the exports and their clients.
func (s *Server) Status() Status {
	st := Status{Verifier: fmt.Sprintf("%x", s.Verifier()), Exports: make([]ExportStatus, len(s.exports))}
	clients := make(map[uint32]map[netip.Addr]*ClientStatus)
	get := func(id uint32, a netip.Addr) *ClientStatus {
		m := clients[id]
		if m == nil {
			m = make(map[netip.Addr]*ClientStatus)
			clients[id] = m
		}
		c := m[a]
		if c == nil {
			c = &ClientStatus{Address: a}
			m[a] = c
		}
		return c
	}
	for _, m := range s.mount.Mounts() {
		get(m.Export, m.Client).Mounted = m.Time
	}
	for _, c := range s.clients.list() {
		cs := get(c.export, c.client)
		cs.FirstSeen, cs.LastSeen, cs.Calls = c.first, c.last, c.calls
	}
	for i := range s.exports {
		e := &s.exports[i]
		es := ExportStatus{
			ID: e.opts.ID, Path: e.opts.Path, Dir: e.dir, ReadOnly: e.opts.ReadOnly, Squash: e.opts.Squash.String(),
			AnonUID: e.opts.AnonUID, AnonGID: e.opts.AnonGID, AllowAuthNone: e.opts.AllowAuthNone,
			Networks: make([]string, len(e.opts.Networks)), Clients: []ClientStatus{}, FSUUID: e.uuid,
		}
		for j, n := range e.opts.Networks {
			es.Networks[j] = n.String()
		}
		for _, c := range clients[e.opts.ID] {
			es.Clients = append(es.Clients, *c)
		}
		slices.SortFunc(es.Clients, func(a, b ClientStatus) int { return a.Address.Compare(b.Address) })
		st.Exports[i] = es
	}
	return st
}

// clientTable counts the admitted NFS calls per export and client. see is
// on the path of every call, so a known client costs a map lookup and two
// atomic operations; only a new client takes the lock.
type clientTable struct {
	limit int
	m     sync.Map // clientKey -> *clientStats

	mu sync.Mutex // serializes adding and forgetting clients
	n  int        // entries in m; guarded by mu
}

type clientKey struct {
	export uint32
	client netip.Addr
}

type clientStats struct {
	first time.Time
	last  atomic.Int64 // UnixNano
	calls atomic.Uint64
}

// clientSeen is one entry of clientTable.list.
type clientSeen struct {
	export      uint32
	client      netip.Addr
	first, last time.Time
	calls       uint64
}

func newClientTable(limit int) *clientTable { return &clientTable{limit: limit} }

// see records a call of client to export at now.
func (t *clientTable) see(export uint32, client netip.Addr, now time.Time) {
	k := clientKey{export, client}
	if v, ok := t.m.Load(k); ok {
		v.(*clientStats).record(now)
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if v, ok := t.m.Load(k); ok {
		v.(*clientStats).record(now)
		return
	}
	if t.n >= t.limit {
		t.forgetOldest()
	}
	c := &clientStats{first: now}
	c.record(now)
	t.m.Store(k, c)
	t.n++
}

func (c *clientStats) record(now time.Time) {
	c.calls.Add(1)
	c.last.Store(now.UnixNano())
}

// forgetOldest drops the client seen least recently. It is linear in the
// table's size, and runs only when a new client arrives at a full table.
func (t *clientTable) forgetOldest() {
	var oldest any
	var when int64
	t.m.Range(func(k, v any) bool {
		if l := v.(*clientStats).last.Load(); oldest == nil || l < when {
			oldest, when = k, l
		}
		return true
	})
	if oldest != nil {
		t.m.Delete(oldest)
		t.n--
	}
}

// list returns the clients, in no particular order.
func (t *clientTable) list() []clientSeen {
	var out []clientSeen
	t.m.Range(func(k, v any) bool {
		key, c := k.(clientKey), v.(*clientStats)
		out = append(out, clientSeen{export: key.export, client: key.client, first: c.first,
			last: time.Unix(0, c.last.Load()), calls: c.calls.Load()})
		return true
	})
	return out
}
