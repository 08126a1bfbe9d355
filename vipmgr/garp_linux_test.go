package vipmgr

import (
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"

	"github.com/blockrep/blockrep/internal/testtool"
)

// inNetns runs fn on a thread in the network namespace ns (sockets it
// opens stay in ns).
func inNetns(t *testing.T, ns netns.NsHandle, fn func()) {
	t.Helper()
	done := make(chan struct{})
	go func() {
		defer close(done)
		runtime.LockOSThread()
		// The thread is not unlocked: it leaves with the goroutine rather
		// than serve another one from the wrong namespace.
		if err := netns.Set(ns); err != nil {
			t.Errorf("setns: %v", err)
			return
		}
		fn()
	}()
	<-done
}

// TestGratuitousARP: a client whose neighbour entry for the VIP names the
// old primary's MAC — just set, so within its locktime — has this node's
// MAC in it once the VIP is announced.
func TestGratuitousARP(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: network namespaces and packet sockets")
	}
	ipTool := testtool.Need(t, "ip", "iproute2")
	ip := func(args ...string) string {
		t.Helper()
		out, err := exec.Command(ipTool, args...).CombinedOutput()
		if err != nil {
			t.Fatalf("ip %s: %v: %s", strings.Join(args, " "), err, out)
		}
		return string(out)
	}
	srv, cli := fmt.Sprintf("brgarp-s-%d", os.Getpid()), fmt.Sprintf("brgarp-c-%d", os.Getpid())
	for _, n := range []string{srv, cli} {
		ip("netns", "add", n)
		t.Cleanup(func() { exec.Command(ipTool, "netns", "del", n).Run() })
	}
	ip("-n", srv, "link", "add", "s0", "type", "veth", "peer", "name", "c0", "netns", cli)
	ip("-n", srv, "link", "set", "s0", "up")
	ip("-n", cli, "addr", "add", "198.18.0.2/24", "dev", "c0")
	ip("-n", cli, "link", "set", "c0", "up")
	const oldMAC = "02:00:00:00:00:99"
	ip("-n", cli, "neigh", "replace", "198.18.0.10", "lladdr", oldMAC, "dev", "c0", "nud", "reachable")

	ns, err := netns.GetFromName(srv)
	if err != nil {
		t.Fatal(err)
	}
	defer ns.Close()
	h, err := netlink.NewHandleAt(ns)
	if err != nil {
		t.Fatal(err)
	}
	addrs := newAddrsAt(h)
	defer addrs.Close()
	v, _ := ParseVIP("198.18.0.10/24", "s0")
	if err := addrs.Add(v); err != nil {
		t.Fatal(err)
	}
	var a *ARPAnnouncer
	inNetns(t, ns, func() { a, err = NewARPAnnouncer("s0") })
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	mac := a.ifi.HardwareAddr.String()
	if err := a.Announce(v, DefaultAnnounce.Repeat); err != nil {
		t.Fatal(err)
	}
	var out string
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		out = ip("-n", cli, "neigh", "show", "198.18.0.10", "dev", "c0")
		if strings.Contains(out, mac) {
			return
		}
	}
	t.Fatalf("the client's entry for the VIP after the announcement: %q, want %s (was %s)", strings.TrimSpace(out), mac, oldMAC)
}

// TestNeighbourAdvertisement: as TestGratuitousARP, for an IPv6 VIP.
func TestNeighbourAdvertisement(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: network namespaces")
	}
	ipTool := testtool.Need(t, "ip", "iproute2")
	ip := func(args ...string) string {
		t.Helper()
		out, err := exec.Command(ipTool, args...).CombinedOutput()
		if err != nil {
			t.Fatalf("ip %s: %v: %s", strings.Join(args, " "), err, out)
		}
		return string(out)
	}
	srv, cli := fmt.Sprintf("brna-s-%d", os.Getpid()), fmt.Sprintf("brna-c-%d", os.Getpid())
	for _, n := range []string{srv, cli} {
		ip("netns", "add", n)
		t.Cleanup(func() { exec.Command(ipTool, "netns", "del", n).Run() })
	}
	ip("-n", srv, "link", "add", "s0", "type", "veth", "peer", "name", "c0", "netns", cli)
	ip("-n", srv, "link", "set", "s0", "up")
	ip("-n", cli, "addr", "add", "2001:2::2/64", "dev", "c0", "nodad")
	ip("-n", cli, "link", "set", "c0", "up")
	// A client receives multicast (ff02::1) only once its interface's
	// link-local address passed duplicate address detection (the kernel
	// adds the ff00::/8 route then); web hosts are long up.
	for deadline := time.Now().Add(20 * time.Second); !strings.Contains(ip("-n", cli, "-6", "route", "show", "table", "local"), "multicast ff00::/8 dev c0"); time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the client's interface never got its multicast route")
		}
	}
	const oldMAC = "02:00:00:00:00:99"
	ip("-n", cli, "-6", "neigh", "replace", "2001:2::10", "lladdr", oldMAC, "dev", "c0", "nud", "reachable")

	ns, err := netns.GetFromName(srv)
	if err != nil {
		t.Fatal(err)
	}
	defer ns.Close()
	h, err := netlink.NewHandleAt(ns)
	if err != nil {
		t.Fatal(err)
	}
	addrs := newAddrsAt(h)
	defer addrs.Close()
	v, _ := ParseVIP("2001:2::10/64", "s0")
	if err := addrs.Add(v); err != nil {
		t.Fatal(err)
	}
	var a *NAAnnouncer
	inNetns(t, ns, func() { a, err = NewNAAnnouncer(v) })
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	mac := a.mac.String()
	if err := a.Announce(DefaultAnnounce.Repeat); err != nil {
		t.Fatal(err)
	}
	var out string
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		out = ip("-n", cli, "-6", "neigh", "show", "2001:2::10", "dev", "c0")
		if strings.Contains(out, mac) {
			return
		}
	}
	t.Fatalf("the client's entry for the VIP after the advertisement: %q, want %s (was %s)", strings.TrimSpace(out), mac, oldMAC)
}

// TestARPProbe: a host that already has the VIP answers the probe and is
// named by its MAC; once it gave the VIP up, nobody answers.
func TestARPProbe(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: network namespaces and packet sockets")
	}
	ipTool := testtool.Need(t, "ip", "iproute2")
	ip := func(args ...string) string {
		t.Helper()
		out, err := exec.Command(ipTool, args...).CombinedOutput()
		if err != nil {
			t.Fatalf("ip %s: %v: %s", strings.Join(args, " "), err, out)
		}
		return string(out)
	}
	srv, other := fmt.Sprintf("brprobe-s-%d", os.Getpid()), fmt.Sprintf("brprobe-o-%d", os.Getpid())
	for _, n := range []string{srv, other} {
		ip("netns", "add", n)
		t.Cleanup(func() { exec.Command(ipTool, "netns", "del", n).Run() })
	}
	ip("-n", srv, "link", "add", "s0", "type", "veth", "peer", "name", "o0", "netns", other)
	ip("-n", srv, "addr", "add", "198.18.0.1/24", "dev", "s0") // the node's own address
	ip("-n", srv, "link", "set", "s0", "up")
	ip("-n", other, "addr", "add", "198.18.0.10/24", "dev", "o0") // the VIP, taken by another host
	ip("-n", other, "link", "set", "o0", "up")
	otherMAC := strings.Fields(ip("-n", other, "-br", "link", "show", "o0"))[2]

	ns, err := netns.GetFromName(srv)
	if err != nil {
		t.Fatal(err)
	}
	defer ns.Close()
	var a *ARPAnnouncer
	inNetns(t, ns, func() { a, err = NewARPAnnouncer("s0") })
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	v, _ := ParseVIP("198.18.0.10/24", "s0")
	// The window bounds the wait for an answer that comes in milliseconds.
	got, err := a.Probe(v, 3, 10*time.Second)
	if err != nil || got.String() != otherMAC {
		t.Fatalf("Probe with another host holding the VIP: %v, %v; want its MAC %s", got, err, otherMAC)
	}
	ip("-n", other, "addr", "del", "198.18.0.10/24", "dev", "o0")
	if got, err := a.Probe(v, 3, 300*time.Millisecond); err != nil || got != nil {
		t.Fatalf("Probe with nobody holding the VIP: %v, %v; want none", got, err)
	}
}
