package vipmgr

import (
	"strings"
	"testing"
)

// TestAddrs: Add is idempotent and verified, Remove of a missing address
// is not an error, IPv6 VIPs skip duplicate address detection, and an
// interface that does not exist is named.
func TestAddrs(t *testing.T) {
	h := newHosts(t, "addr")
	a := h.addrs
	ip := func(args ...string) string { return h.ip(append([]string{"-n", h.srv}, args...)...) }
	for _, addr := range []string{"198.18.0.10/24", "2001:2::10/64"} {
		v, err := ParseVIP(addr, "s0")
		if err != nil {
			t.Fatal(err)
		}
		for i := range 2 {
			if err := a.Add(v); err != nil {
				t.Fatalf("Add %v (%d): %v", v, i+1, err)
			}
		}
		out := ip("addr", "show", "dev", "s0")
		if !strings.Contains(out, addr) {
			t.Fatalf("after Add, ip addr lacks %s:\n%s", addr, out)
		}
		if v.Prefix.Addr().Is6() {
			for _, line := range strings.Split(out, "\n") {
				if strings.Contains(line, addr) && (strings.Contains(line, "tentative") || !strings.Contains(line, "nodad")) {
					t.Fatalf("the IPv6 VIP waits for duplicate address detection: %s", line)
				}
			}
		}
		if ok, err := a.Present(v); err != nil || !ok {
			t.Fatalf("Present after Add: %v %v", ok, err)
		}
		for i := range 2 {
			if err := a.Remove(v); err != nil {
				t.Fatalf("Remove %v (%d): %v", v, i+1, err)
			}
		}
		if out := ip("addr", "show", "dev", "s0"); strings.Contains(out, addr) {
			t.Fatalf("after Remove, ip addr still has %s:\n%s", addr, out)
		}
		if ok, err := a.Present(v); err != nil || ok {
			t.Fatalf("Present after Remove: %v %v", ok, err)
		}
	}
	missing, _ := ParseVIP("198.18.0.11/24", "nosuch0")
	if err := a.Add(missing); err == nil || !strings.Contains(err.Error(), `"nosuch0"`) {
		t.Fatalf("Add on a missing interface: %v", err)
	}
	if err := a.Remove(missing); err != nil {
		t.Fatalf("Remove on a missing interface: %v", err)
	}
}
