package vipmgr

import (
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"

	"github.com/blockrep/blockrep/internal/testtool"
)

// testNetns makes a network namespace with an interface "vip0" that is
// up, and returns Addrs working in it; both go when the test ends.
func testNetns(t *testing.T) (*Addrs, func(args ...string) string) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: network namespaces")
	}
	ipTool := testtool.Need(t, "ip", "iproute2")
	name := fmt.Sprintf("brvip-%d", os.Getpid())
	ip := func(args ...string) string {
		t.Helper()
		out, err := exec.Command(ipTool, args...).CombinedOutput()
		if err != nil {
			t.Fatalf("ip %s: %v: %s", strings.Join(args, " "), err, out)
		}
		return string(out)
	}
	ip("netns", "add", name)
	t.Cleanup(func() { exec.Command(ipTool, "netns", "del", name).Run() })
	// A veth pair (this kernel has no dummy interfaces); vip1 is its
	// other end, up so that vip0 has a carrier.
	ip("-n", name, "link", "add", "vip0", "type", "veth", "peer", "name", "vip1")
	ip("-n", name, "link", "set", "vip1", "up")
	ip("-n", name, "link", "set", "vip0", "up")
	ns, err := netns.GetFromName(name)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ns.Close() })
	h, err := netlink.NewHandleAt(ns)
	if err != nil {
		t.Fatal(err)
	}
	a := newAddrsAt(h)
	t.Cleanup(a.Close)
	return a, func(args ...string) string { return ip(append([]string{"-n", name}, args...)...) }
}

// TestAddrs: Add is idempotent and verified, Remove of a missing address
// is not an error, IPv6 VIPs skip duplicate address detection, and an
// interface that does not exist is named.
func TestAddrs(t *testing.T) {
	a, ip := testNetns(t)
	for _, addr := range []string{"198.18.0.10/24", "2001:2::10/64"} {
		v, err := ParseVIP(addr, "vip0")
		if err != nil {
			t.Fatal(err)
		}
		for i := range 2 {
			if err := a.Add(v); err != nil {
				t.Fatalf("Add %v (%d): %v", v, i+1, err)
			}
		}
		out := ip("addr", "show", "dev", "vip0")
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
		if out := ip("addr", "show", "dev", "vip0"); strings.Contains(out, addr) {
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
