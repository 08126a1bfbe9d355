package mount

import (
	"container/list"
	"net/netip"
	"time"
)

// Entry is one line of the mount list: a client that mounted an export
// and has not unmounted it.
type Entry struct {
	// Client is the client's address (IPv4-mapped addresses as IPv4).
	Client netip.Addr `json:"client"`
	// Path is the export's MOUNT path (export.Options.Path).
	Path string `json:"path"`
	// Export is the export's id.
	Export uint32 `json:"export"`
	// Time is when the client last mounted the export.
	Time time.Time `json:"time"`
}

type entryKey struct {
	client netip.Addr
	path   string
}

// table is the mount list: at most limit entries, the least recently
// mounted dropped first. It is not safe for concurrent use (the Handler
// holds a mutex around it).
type table struct {
	limit int
	order *list.List // of Entry, least recently mounted first
	byKey map[entryKey]*list.Element
}

func newTable(limit int) *table {
	return &table{limit: limit, order: list.New(), byKey: make(map[entryKey]*list.Element)}
}

// add records e; a client mounting the same export again refreshes its
// entry (and makes it the newest). It returns the entries dropped to stay
// within the bound.
func (t *table) add(e Entry) (dropped []Entry) {
	k := entryKey{e.Client, e.Path}
	if el, ok := t.byKey[k]; ok {
		el.Value = e
		t.order.MoveToBack(el)
		return nil
	}
	for t.order.Len() >= t.limit && t.order.Len() > 0 {
		front := t.order.Front()
		old := t.order.Remove(front).(Entry)
		delete(t.byKey, entryKey{old.Client, old.Path})
		dropped = append(dropped, old)
	}
	t.byKey[k] = t.order.PushBack(e)
	return dropped
}

// remove drops the entry of client for path, if there is one.
func (t *table) remove(client netip.Addr, path string) (Entry, bool) {
	k := entryKey{client, path}
	el, ok := t.byKey[k]
	if !ok {
		return Entry{}, false
	}
	delete(t.byKey, k)
	return t.order.Remove(el).(Entry), true
}

// removeClient drops every entry of client, oldest first.
func (t *table) removeClient(client netip.Addr) []Entry {
	var out []Entry
	for el := t.order.Front(); el != nil; {
		next := el.Next()
		if e := el.Value.(Entry); e.Client == client {
			t.order.Remove(el)
			delete(t.byKey, entryKey{e.Client, e.Path})
			out = append(out, e)
		}
		el = next
	}
	return out
}

// list returns the entries, least recently mounted first.
func (t *table) list() []Entry {
	out := make([]Entry, 0, t.order.Len())
	for el := t.order.Front(); el != nil; el = el.Next() {
		out = append(out, el.Value.(Entry))
	}
	return out
}
