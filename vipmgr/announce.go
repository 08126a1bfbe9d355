// Package vipmgr owns a volume's virtual IPs on the node that serves it:
// it adds them to their interfaces, announces them (gratuitous ARP for
// IPv4, unsolicited neighbour advertisements with the override flag for
// IPv6) so that clients' neighbour caches move to this node at once, and
// removes them when the node stops serving. What a VIP is and when
// announcements are due (as keepalived schedules them) are pure functions;
// Addrs adds and removes VIPs with netlink, verifying each change.
package vipmgr

import (
	"fmt"
	"net/netip"
	"strings"
	"time"
)

// VIP is one virtual address of a volume: the address with its prefix
// length (as on the interface) and the interface it goes on.
type VIP struct {
	Prefix    netip.Prefix
	Interface string
}

// String formats v as "198.18.0.10/24 dev eth0".
func (v VIP) String() string { return v.Prefix.String() + " dev " + v.Interface }

// ParseVIP parses "ADDRESS/PREFIX" and an interface name, naming what is
// wrong: the address must be a unicast host address with its network's
// prefix length (not the network address, nor a mapped IPv4 address).
func ParseVIP(address, iface string) (VIP, error) {
	p, err := netip.ParsePrefix(address)
	if err != nil {
		if _, aerr := netip.ParseAddr(address); aerr == nil {
			return VIP{}, fmt.Errorf("address %q: give the prefix length of its network too (%s/24, %s/64)", address, address, address)
		}
		return VIP{}, fmt.Errorf("address %q: not ADDRESS/PREFIX: %v", address, err)
	}
	a := p.Addr()
	switch {
	case a.Is4In6():
		return VIP{}, fmt.Errorf("address %q: an IPv4-mapped address; write it as IPv4 (%s)", address, netip.PrefixFrom(a.Unmap(), p.Bits()-96))
	case !a.IsGlobalUnicast():
		return VIP{}, fmt.Errorf("address %q: not a unicast host address", address)
	case p.Bits() < p.Addr().BitLen() && a == p.Masked().Addr():
		return VIP{}, fmt.Errorf("address %q: the network's own address, not a host's", address)
	}
	if iface == "" || len(iface) > 15 || strings.ContainsAny(iface, "/ \t\n") || iface == "." || iface == ".." {
		return VIP{}, fmt.Errorf("interface %q: not an interface name (1 to 15 characters, no '/' or blanks)", iface)
	}
	return VIP{Prefix: p, Interface: iface}, nil
}

// Announce is when a VIP is announced after this node took it, with
// keepalived's defaults and names: Repeat announcements at once, Repeat
// more after Delay (a switch that missed the first burst, an ARP table
// that was still locked: Linux ignores some updates within locktime), then,
// if Refresh is set, RefreshRepeat every Refresh while the node holds it.
type Announce struct {
	Repeat        int           // garp_master_repeat (default 5)
	Delay         time.Duration // garp_master_delay (default 5s; 0: no second burst)
	Refresh       time.Duration // garp_master_refresh (default 0: none)
	RefreshRepeat int           // garp_master_refresh_repeat (default 1)
}

// DefaultAnnounce is keepalived's schedule.
var DefaultAnnounce = Announce{Repeat: 5, Delay: 5 * time.Second, RefreshRepeat: 1}

// Validate checks a, naming the field.
func (a Announce) Validate() error {
	switch {
	case a.Repeat < 1 || a.Repeat > 100:
		return fmt.Errorf("garp_master_repeat %d: want 1 to 100", a.Repeat)
	case a.Delay < 0:
		return fmt.Errorf("garp_master_delay %v: negative", a.Delay)
	case a.Refresh < 0:
		return fmt.Errorf("garp_master_refresh %v: negative", a.Refresh)
	case a.Refresh > 0 && a.Refresh < time.Second:
		return fmt.Errorf("garp_master_refresh %v: at least 1s (or 0 for none)", a.Refresh)
	case a.Refresh > 0 && (a.RefreshRepeat < 1 || a.RefreshRepeat > 100):
		return fmt.Errorf("garp_master_refresh_repeat %d: want 1 to 100", a.RefreshRepeat)
	}
	return nil
}

// Burst is one round of announcements: Count packets per VIP, At after
// the VIP was taken.
type Burst struct {
	At    time.Duration
	Count int
}

// Next returns the burst that follows the first done bursts (done = 0
// for the first), and false when no burst follows: the first at once, the
// second after Delay, then one every Refresh after that.
func (a Announce) Next(done int) (Burst, bool) {
	switch {
	case done == 0:
		return Burst{At: 0, Count: a.Repeat}, true
	case done == 1 && a.Delay > 0:
		return Burst{At: a.Delay, Count: a.Repeat}, true
	case a.Refresh <= 0:
		return Burst{}, false
	}
	refreshed := done - 1 // refresh bursts done: all after the first...
	if a.Delay > 0 {
		refreshed = done - 2 // ...and after the second, if there is one
	}
	return Burst{At: a.Delay + time.Duration(refreshed+1)*a.Refresh, Count: a.RefreshRepeat}, true
}
