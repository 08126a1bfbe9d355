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

// hosts is two network namespaces joined by a veth pair: this node ("s",
// interface s0, up) and another host ("c", interface c0, down until the
// test configures it). Both go when the test ends.
type hosts struct {
	t        *testing.T
	ipTool   string
	srv, cli string
	ns       netns.NsHandle // the node's namespace
	addrs    *Addrs         // netlink in the node's namespace
}

func newHosts(t *testing.T, tag string) *hosts {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: network namespaces and packet sockets")
	}
	h := &hosts{t: t, ipTool: testtool.Need(t, "ip", "iproute2"),
		srv: fmt.Sprintf("br%s-s-%d", tag, os.Getpid()), cli: fmt.Sprintf("br%s-c-%d", tag, os.Getpid())}
	for _, n := range []string{h.srv, h.cli} {
		h.ip("netns", "add", n)
		t.Cleanup(func() { exec.Command(h.ipTool, "netns", "del", n).Run() })
	}
	h.ip("-n", h.srv, "link", "add", "s0", "type", "veth", "peer", "name", "c0", "netns", h.cli)
	h.ip("-n", h.srv, "link", "set", "s0", "up")
	ns, err := netns.GetFromName(h.srv)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ns.Close() })
	nh, err := netlink.NewHandleAt(ns)
	if err != nil {
		t.Fatal(err)
	}
	h.ns, h.addrs = ns, newAddrsAt(nh)
	t.Cleanup(h.addrs.Close)
	return h
}

func (h *hosts) ip(args ...string) string {
	h.t.Helper()
	out, err := exec.Command(h.ipTool, args...).CombinedOutput()
	if err != nil {
		h.t.Fatalf("ip %s: %v: %s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// waitNeigh waits until the other host's neighbour entry for addr names
// mac (the wait bounds a change that takes milliseconds).
func (h *hosts) waitNeigh(family, addr, mac, old string) {
	h.t.Helper()
	var out string
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		out = h.ip("-n", h.cli, family, "neigh", "show", addr, "dev", "c0")
		if strings.Contains(out, mac) {
			return
		}
	}
	h.t.Fatalf("the client's entry for the VIP after the announcement: %q, want %s (was %s)", strings.TrimSpace(out), mac, old)
}

// TestGratuitousARP: a client whose neighbour entry for the VIP names the
// old primary's MAC — just set, so within its locktime — has this node's
// MAC in it once the VIP is announced.
func TestGratuitousARP(t *testing.T) {
	h := newHosts(t, "garp")
	h.ip("-n", h.cli, "addr", "add", "198.18.0.2/24", "dev", "c0")
	h.ip("-n", h.cli, "link", "set", "c0", "up")
	const oldMAC = "02:00:00:00:00:99"
	h.ip("-n", h.cli, "neigh", "replace", "198.18.0.10", "lladdr", oldMAC, "dev", "c0", "nud", "reachable")

	v, _ := ParseVIP("198.18.0.10/24", "s0")
	if err := h.addrs.Add(v); err != nil {
		t.Fatal(err)
	}
	var a *ARPAnnouncer
	var err error
	inNetns(t, h.ns, func() { a, err = NewARPAnnouncer("s0") })
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	if err := a.Announce(v, DefaultAnnounce.Repeat); err != nil {
		t.Fatal(err)
	}
	h.waitNeigh("-4", "198.18.0.10", a.ifi.HardwareAddr.String(), oldMAC)
}

// TestNeighbourAdvertisement: as TestGratuitousARP, for an IPv6 VIP.
func TestNeighbourAdvertisement(t *testing.T) {
	h := newHosts(t, "na")
	h.ip("-n", h.cli, "addr", "add", "2001:2::2/64", "dev", "c0", "nodad")
	h.ip("-n", h.cli, "link", "set", "c0", "up")
	// A client receives multicast (ff02::1) only once its interface's
	// link-local address passed duplicate address detection (the kernel
	// adds the ff00::/8 route then); web hosts are long up.
	for deadline := time.Now().Add(20 * time.Second); !strings.Contains(h.ip("-n", h.cli, "-6", "route", "show", "table", "local"), "multicast ff00::/8 dev c0"); time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the client's interface never got its multicast route")
		}
	}
	const oldMAC = "02:00:00:00:00:99"
	h.ip("-n", h.cli, "-6", "neigh", "replace", "2001:2::10", "lladdr", oldMAC, "dev", "c0", "nud", "reachable")

	v, _ := ParseVIP("2001:2::10/64", "s0")
	if err := h.addrs.Add(v); err != nil {
		t.Fatal(err)
	}
	var a *NAAnnouncer
	var err error
	inNetns(t, h.ns, func() { a, err = NewNAAnnouncer(v) })
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	if err := a.Announce(DefaultAnnounce.Repeat); err != nil {
		t.Fatal(err)
	}
	h.waitNeigh("-6", "2001:2::10", a.mac.String(), oldMAC)
}

// TestARPProbe: a host that already has the VIP answers the probe and is
// named by its MAC; once it gave the VIP up, nobody answers.
func TestARPProbe(t *testing.T) {
	h := newHosts(t, "probe")
	h.ip("-n", h.srv, "addr", "add", "198.18.0.1/24", "dev", "s0")  // the node's own address
	h.ip("-n", h.cli, "addr", "add", "198.18.0.10/24", "dev", "c0") // the VIP, taken by another host
	h.ip("-n", h.cli, "link", "set", "c0", "up")
	otherMAC := strings.Fields(h.ip("-n", h.cli, "-br", "link", "show", "c0"))[2]

	var a *ARPAnnouncer
	var err error
	inNetns(t, h.ns, func() { a, err = NewARPAnnouncer("s0") })
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
	h.ip("-n", h.cli, "addr", "del", "198.18.0.10/24", "dev", "c0")
	if got, err := a.Probe(v, 3, 300*time.Millisecond); err != nil || got != nil {
		t.Fatalf("Probe with nobody holding the VIP: %v, %v; want none", got, err)
	}
}
