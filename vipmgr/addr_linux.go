package vipmgr

import (
	"errors"
	"fmt"
	"net"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Addrs adds and removes VIPs on their interfaces with netlink, in the
// network namespace of its handle. Every method verifies what it did by
// reading the interface's addresses back.
type Addrs struct {
	h *netlink.Handle
}

// NewAddrs returns Addrs working in the caller's network namespace.
func NewAddrs() (*Addrs, error) {
	h, err := netlink.NewHandle(unix.NETLINK_ROUTE)
	if err != nil {
		return nil, fmt.Errorf("vipmgr: netlink: %w", err)
	}
	return &Addrs{h: h}, nil
}

// newAddrsAt returns Addrs working in the network namespace h was made in.
func newAddrsAt(h *netlink.Handle) *Addrs { return &Addrs{h: h} }

// Close releases the netlink socket.
func (a *Addrs) Close() { a.h.Close() }

func (a *Addrs) link(v VIP) (netlink.Link, error) {
	l, err := a.h.LinkByName(v.Interface)
	if err != nil {
		return nil, fmt.Errorf("vipmgr: %s: interface %q: %w", v.Prefix, v.Interface, err)
	}
	return l, nil
}

func addrOf(v VIP) *netlink.Addr {
	return &netlink.Addr{IPNet: &net.IPNet{IP: v.Prefix.Addr().AsSlice(), Mask: net.CIDRMask(v.Prefix.Bits(), v.Prefix.Addr().BitLen())}}
}

// Add puts v on its interface. It is idempotent (netlink's replace: a
// second add of the same address is not an error) and verifies that the
// address is there afterwards.
func (a *Addrs) Add(v VIP) error {
	l, err := a.link(v)
	if err != nil {
		return err
	}
	addr := addrOf(v)
	if v.Prefix.Addr().Is6() {
		// No duplicate address detection: the node that takes a VIP over
		// takes it at once (a host that already answers for it is found
		// by a probe before the VIP is taken).
		addr.Flags = unix.IFA_F_NODAD
	}
	if err := a.h.AddrReplace(l, addr); err != nil {
		return fmt.Errorf("vipmgr: add %v: %w", v, err)
	}
	ok, err := a.Present(v)
	if err != nil {
		return err
	}
	if !ok {
		return fmt.Errorf("vipmgr: add %v: the address is not on the interface afterwards", v)
	}
	return nil
}

// Remove takes v off its interface. A VIP that is not there (or an
// interface that is gone) is not an error: the result is what was asked.
func (a *Addrs) Remove(v VIP) error {
	l, err := a.link(v)
	if err != nil {
		var nf netlink.LinkNotFoundError
		if errors.As(err, &nf) {
			return nil
		}
		return err
	}
	if err := a.h.AddrDel(l, addrOf(v)); err != nil && !errors.Is(err, unix.EADDRNOTAVAIL) {
		return fmt.Errorf("vipmgr: remove %v: %w", v, err)
	}
	ok, err := a.Present(v)
	if err != nil {
		return err
	}
	if ok {
		return fmt.Errorf("vipmgr: remove %v: the address is still on the interface", v)
	}
	return nil
}

// Present reports whether v's address (with its prefix length) is on its
// interface.
func (a *Addrs) Present(v VIP) (bool, error) {
	l, err := a.link(v)
	if err != nil {
		return false, err
	}
	family := netlink.FAMILY_V4
	if v.Prefix.Addr().Is6() {
		family = netlink.FAMILY_V6
	}
	addrs, err := a.h.AddrList(l, family)
	if err != nil {
		return false, fmt.Errorf("vipmgr: list the addresses of %q: %w", v.Interface, err)
	}
	want := addrOf(v)
	for _, got := range addrs {
		if got.IPNet.IP.Equal(want.IP) && got.IPNet.Mask.String() == want.Mask.String() {
			return true, nil
		}
	}
	return false, nil
}
