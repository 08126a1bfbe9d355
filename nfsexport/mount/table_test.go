package mount

import (
	"net/netip"
	"reflect"
	"testing"
	"time"
)

func TestTable(t *testing.T) {
	a, b, c := netip.MustParseAddr("10.0.0.1"), netip.MustParseAddr("10.0.0.2"), netip.MustParseAddr("fd00::3")
	t0 := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	at := func(s int) time.Time { return t0.Add(time.Duration(s) * time.Second) }
	e := func(client netip.Addr, path string, s int) Entry {
		return Entry{Client: client, Path: path, Export: uint32(len(path)), Time: at(s)}
	}
	type op struct {
		do          string // add, remove, removeClient
		entry       Entry  // add; Client and Path for remove
		wantDropped []Entry
		wantRemoved []Entry
	}
	for _, tt := range []struct {
		name string
		max  int
		ops  []op
		want []Entry
	}{
		{"empty", 4, nil, []Entry{}},
		{"in mount order", 4, []op{
			{do: "add", entry: e(a, "/web", 1)},
			{do: "add", entry: e(b, "/web", 2)},
			{do: "add", entry: e(a, "/db", 3)},
		}, []Entry{e(a, "/web", 1), e(b, "/web", 2), e(a, "/db", 3)}},
		{"mounting again refreshes and moves to the end", 4, []op{
			{do: "add", entry: e(a, "/web", 1)},
			{do: "add", entry: e(b, "/web", 2)},
			{do: "add", entry: e(a, "/web", 3)},
		}, []Entry{e(b, "/web", 2), e(a, "/web", 3)}},
		{"full: the least recently mounted is dropped", 2, []op{
			{do: "add", entry: e(a, "/web", 1)},
			{do: "add", entry: e(b, "/web", 2)},
			{do: "add", entry: e(a, "/web", 3)}, // refresh: no drop
			{do: "add", entry: e(c, "/web", 4), wantDropped: []Entry{e(b, "/web", 2)}},
		}, []Entry{e(a, "/web", 3), e(c, "/web", 4)}},
		{"remove one", 4, []op{
			{do: "add", entry: e(a, "/web", 1)},
			{do: "add", entry: e(a, "/db", 2)},
			{do: "remove", entry: e(a, "/web", 0), wantRemoved: []Entry{e(a, "/web", 1)}},
			{do: "remove", entry: e(b, "/db", 0)},  // another client's: nothing
			{do: "remove", entry: e(a, "/web", 0)}, // again: nothing
		}, []Entry{e(a, "/db", 2)}},
		{"remove a client's entries", 4, []op{
			{do: "add", entry: e(a, "/web", 1)},
			{do: "add", entry: e(b, "/web", 2)},
			{do: "add", entry: e(a, "/db", 3)},
			{do: "removeClient", entry: e(a, "", 0), wantRemoved: []Entry{e(a, "/web", 1), e(a, "/db", 3)}},
			{do: "removeClient", entry: e(c, "", 0)},
		}, []Entry{e(b, "/web", 2)}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			tb := newTable(tt.max)
			for i, o := range tt.ops {
				var dropped, removed []Entry
				switch o.do {
				case "add":
					dropped = tb.add(o.entry)
				case "remove":
					if r, ok := tb.remove(o.entry.Client, o.entry.Path); ok {
						removed = []Entry{r}
					}
				case "removeClient":
					removed = tb.removeClient(o.entry.Client)
				}
				if !reflect.DeepEqual(dropped, o.wantDropped) {
					t.Errorf("op %d (%s %v): dropped %v, want %v", i, o.do, o.entry, dropped, o.wantDropped)
				}
				if !reflect.DeepEqual(removed, o.wantRemoved) {
					t.Errorf("op %d (%s %v): removed %v, want %v", i, o.do, o.entry, removed, o.wantRemoved)
				}
			}
			if got := tb.list(); !reflect.DeepEqual(got, tt.want) {
				t.Errorf("list = %v\nwant   %v", got, tt.want)
			}
			if len(tb.byKey) != tb.order.Len() {
				t.Errorf("index has %d entries, list %d", len(tb.byKey), tb.order.Len())
			}
		})
	}
}

func TestCleanPath(t *testing.T) {
	for in, want := range map[string]string{"/": "/", "//": "/", "/web": "/web", "/web/": "/web", "/web//": "/web", "/a/b/": "/a/b", "": ""} {
		if got := cleanPath(in); got != want {
			t.Errorf("cleanPath(%q) = %q, want %q", in, got, want)
		}
	}
}
