package vipmgr

import (
	"strings"
	"testing"
	"time"
)

func TestParseVIP(t *testing.T) {
	for _, tc := range []struct{ addr, iface, err string }{
		{"198.18.0.10/24", "eth0", ""},
		{"2001:2::10/64", "br0", ""},
		{"10.1.2.3/32", "lo", ""},
		{"198.18.0.10", "eth0", "give the prefix length"},
		{"198.18.0.0/24", "eth0", "the network's own address"},
		{"::ffff:198.18.0.10/120", "eth0", "IPv4-mapped"},
		{"224.0.0.5/24", "eth0", "not a unicast host address"},
		{"127.0.0.1/8", "eth0", "not a unicast host address"},
		{"fe80::1/64", "eth0", "not a unicast host address"},
		{"198.18.0.10/33", "eth0", "not ADDRESS/PREFIX"},
		{"198.18.0.10/24", "", "interface"},
		{"198.18.0.10/24", "a/b", "interface"},
		{"198.18.0.10/24", "an-interface-name-too-long", "interface"},
	} {
		v, err := ParseVIP(tc.addr, tc.iface)
		switch {
		case tc.err == "" && err != nil:
			t.Errorf("ParseVIP(%q, %q): %v", tc.addr, tc.iface, err)
		case tc.err == "" && v.String() != tc.addr+" dev "+tc.iface:
			t.Errorf("ParseVIP(%q, %q) = %v", tc.addr, tc.iface, v)
		case tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)):
			t.Errorf("ParseVIP(%q, %q): %v, want an error saying %q", tc.addr, tc.iface, err, tc.err)
		}
	}
}

// TestAnnounceSchedule: keepalived's defaults send 5 at once and 5 after
// 5 s, then nothing; with a refresh, one every refresh after that.
func TestAnnounceSchedule(t *testing.T) {
	for _, tc := range []struct {
		name string
		a    Announce
		want []Burst
	}{
		{"default", DefaultAnnounce, []Burst{{0, 5}, {5 * time.Second, 5}}},
		{"refresh", Announce{Repeat: 3, Delay: 2 * time.Second, Refresh: time.Minute, RefreshRepeat: 1},
			[]Burst{{0, 3}, {2 * time.Second, 3}, {62 * time.Second, 1}, {122 * time.Second, 1}, {182 * time.Second, 1}}},
		{"no second burst", Announce{Repeat: 2, Refresh: 10 * time.Second, RefreshRepeat: 2},
			[]Burst{{0, 2}, {10 * time.Second, 2}, {20 * time.Second, 2}, {30 * time.Second, 2}, {40 * time.Second, 2}}},
		{"once", Announce{Repeat: 1}, []Burst{{0, 1}}},
	} {
		var got []Burst
		for done := 0; done < 5; done++ {
			b, ok := tc.a.Next(done)
			if !ok {
				break
			}
			got = append(got, b)
		}
		if len(got) != len(tc.want) {
			t.Errorf("%s: bursts %v, want %v", tc.name, got, tc.want)
			continue
		}
		for i := range got {
			if got[i] != tc.want[i] {
				t.Errorf("%s: bursts %v, want %v", tc.name, got, tc.want)
				break
			}
		}
	}
}

func TestAnnounceValidate(t *testing.T) {
	if err := DefaultAnnounce.Validate(); err != nil {
		t.Fatalf("the default: %v", err)
	}
	for _, tc := range []struct {
		a    Announce
		want string
	}{
		{Announce{Repeat: 0}, "garp_master_repeat 0"},
		{Announce{Repeat: 5, Delay: -time.Second}, "garp_master_delay"},
		{Announce{Repeat: 5, Refresh: 100 * time.Millisecond, RefreshRepeat: 1}, "at least 1s"},
		{Announce{Repeat: 5, Refresh: time.Minute}, "garp_master_refresh_repeat 0"},
	} {
		if err := tc.a.Validate(); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Validate(%+v): %v, want %q", tc.a, err, tc.want)
		}
	}
}
