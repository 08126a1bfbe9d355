package vipmgr

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"time"

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

// ProbeWait is how long Probe waits for an answer after its last probe
// (RFC 5227's ANNOUNCE_WAIT is 2 s for all probes; a host that answers
// for the VIP answers within milliseconds).
const ProbeWait = time.Second

// Probe asks, before the VIP is taken, whether another host already
// answers for v (RFC 5227 address probes: ARP requests for v with the
// sender address 0.0.0.0, so that no client learns anything from them).
// It returns the hardware address of a host that answered, or nil if none
// did within wait after the last of probes probes. v must not be on a's
// interface yet.
func (a *ARPAnnouncer) Probe(v VIP, probes int, wait time.Duration) (net.HardwareAddr, error) {
	ip := v.Prefix.Addr()
	if !ip.Is4() {
		return nil, fmt.Errorf("vipmgr: ARP probe for %v: not an IPv4 address", v)
	}
	p, err := arp.NewPacket(arp.OperationRequest, a.ifi.HardwareAddr, netip.IPv4Unspecified(), ethernet.Broadcast, ip)
	if err != nil {
		return nil, fmt.Errorf("vipmgr: ARP probe for %v: %w", v, err)
	}
	// Answers to an earlier probe may still be queued: they are not about
	// now.
	// (A deadline already passed would fail the reads before they look.)
	a.c.SetReadDeadline(time.Now().Add(time.Millisecond))
	for {
		if _, _, err := a.c.Read(); err != nil {
			break
		}
	}
	for i := 0; i < probes; i++ {
		if err := a.c.WriteTo(p, ethernet.Broadcast); err != nil {
			return nil, fmt.Errorf("vipmgr: ARP probe for %v: %w", v, err)
		}
	}
	defer a.c.SetReadDeadline(time.Time{})
	if err := a.c.SetReadDeadline(time.Now().Add(wait)); err != nil {
		return nil, fmt.Errorf("vipmgr: ARP probe for %v: %w", v, err)
	}
	for {
		got, _, err := a.c.Read()
		if err != nil {
			var ne net.Error
			switch {
			case errors.As(err, &ne) && ne.Timeout():
				return nil, nil // nobody answered
			case errors.Is(err, arp.ErrInvalidHardwareAddr), errors.Is(err, arp.ErrInvalidIP):
				continue // some host's malformed ARP: not an answer
			}
			return nil, fmt.Errorf("vipmgr: ARP probe for %v: %w", v, err)
		}
		// An answer, or another host's own probe or announcement of v.
		if got.SenderIP == ip && !bytes.Equal(got.SenderHardwareAddr, a.ifi.HardwareAddr) {
			return got.SenderHardwareAddr, nil
		}
	}
}
