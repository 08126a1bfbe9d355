package vipmgr

import (
	"fmt"
	"net"

	"github.com/mdlayher/arp"
	"github.com/mdlayher/ethernet"
)

// ARPAnnouncer sends gratuitous ARPs for IPv4 VIPs on one interface, in
// the form keepalived sends: an ARP request whose sender and target are
// both the VIP, with the interface's hardware address as the sender's,
// to the Ethernet broadcast address. Checked on Linux clients: this form
// (or a reply whose target hardware address is the sender's) replaces a
// client's neighbour entry at once, even within its locktime (1 s after
// the entry last changed), while a reply with a broadcast target is
// ignored then; no form creates an entry on a client that has none, which
// is right: that client resolves the VIP afresh.
type ARPAnnouncer struct {
	ifi *net.Interface
	c   *arp.Client
}

// NewARPAnnouncer opens a packet socket on the interface named iface, in
// the caller's network namespace. The interface must already have an IPv4
// address (add the VIP first): the arp package requires one.
func NewARPAnnouncer(iface string) (*ARPAnnouncer, error) {
	ifi, err := net.InterfaceByName(iface)
	if err != nil {
		return nil, fmt.Errorf("vipmgr: gratuitous ARP: interface %q: %w", iface, err)
	}
	c, err := arp.Dial(ifi)
	if err != nil {
		return nil, fmt.Errorf("vipmgr: gratuitous ARP on %q: %w", iface, err)
	}
	return &ARPAnnouncer{ifi: ifi, c: c}, nil
}

// Close closes the packet socket.
func (a *ARPAnnouncer) Close() error { return a.c.Close() }

// Announce sends count gratuitous ARPs for v, which must be an IPv4 VIP
// on a's interface.
func (a *ARPAnnouncer) Announce(v VIP, count int) error {
	ip := v.Prefix.Addr()
	if !ip.Is4() {
		return fmt.Errorf("vipmgr: gratuitous ARP for %v: not an IPv4 address", v)
	}
	if v.Interface != a.ifi.Name {
		return fmt.Errorf("vipmgr: gratuitous ARP for %v: the announcer is on %q", v, a.ifi.Name)
	}
	p, err := arp.NewPacket(arp.OperationRequest, a.ifi.HardwareAddr, ip, ethernet.Broadcast, ip)
	if err != nil {
		return fmt.Errorf("vipmgr: gratuitous ARP for %v: %w", v, err)
	}
	for i := 0; i < count; i++ {
		if err := a.c.WriteTo(p, ethernet.Broadcast); err != nil {
			return fmt.Errorf("vipmgr: gratuitous ARP for %v (%d of %d): %w", v, i+1, count, err)
		}
	}
	return nil
}
