package vipmgr

import (
	"fmt"
	"net"
	"net/netip"

	"github.com/mdlayher/ndp"
)

// allNodes is where unsolicited neighbour advertisements go (RFC 4861
// section 7.2.6).
var allNodes = netip.MustParseAddr("ff02::1")

// NAAnnouncer sends unsolicited neighbour advertisements for one IPv6
// VIP: target the VIP, the override flag set (so that clients replace
// the old primary's link-layer address in their entries), the
// interface's hardware address as the target link-layer address, to all
// nodes, from the VIP itself (which needs no duplicate address detection:
// Addrs adds it without).
type NAAnnouncer struct {
	v   VIP
	mac net.HardwareAddr
	c   *ndp.Conn
}

// NewNAAnnouncer opens an ICMPv6 socket bound to v's address on its
// interface, in the caller's network namespace. v must be on the
// interface already.
func NewNAAnnouncer(v VIP) (*NAAnnouncer, error) {
	if !v.Prefix.Addr().Is6() {
		return nil, fmt.Errorf("vipmgr: neighbour advertisement for %v: not an IPv6 address", v)
	}
	ifi, err := net.InterfaceByName(v.Interface)
	if err != nil {
		return nil, fmt.Errorf("vipmgr: neighbour advertisement for %v: %w", v, err)
	}
	c, _, err := ndp.Listen(ifi, ndp.Addr(v.Prefix.Addr().String()))
	if err != nil {
		return nil, fmt.Errorf("vipmgr: neighbour advertisement for %v: %w", v, err)
	}
	return &NAAnnouncer{v: v, mac: ifi.HardwareAddr, c: c}, nil
}

// Close closes the socket.
func (a *NAAnnouncer) Close() error { return a.c.Close() }

// Announce sends count advertisements.
func (a *NAAnnouncer) Announce(count int) error {
	m := &ndp.NeighborAdvertisement{
		Override:      true,
		TargetAddress: a.v.Prefix.Addr(),
		Options:       []ndp.Option{&ndp.LinkLayerAddress{Direction: ndp.Target, Addr: a.mac}},
	}
	for i := 0; i < count; i++ {
		if err := a.c.WriteTo(m, nil, allNodes); err != nil {
			return fmt.Errorf("vipmgr: neighbour advertisement for %v (%d of %d): %w", a.v, i+1, count, err)
		}
	}
	return nil
}
