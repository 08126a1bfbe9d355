// Package export holds the access policy of one NFS export, as pure
// decisions: which clients may use it (by network), whether they may write,
// and which identity a request runs as once its AUTH_SYS credential has been
// squashed. The NFS and MOUNT programs call these functions and carry out
// the answer; nothing here touches a file or a socket.
//
// The rules follow knfsd's exports(5), which is what operators know:
//
//  1. A client whose address is in none of the export's networks is refused,
//     at MOUNT and at every NFS call (an export lists at least one network;
//     0.0.0.0/0 and ::/0 admit everyone).
//  2. An AUTH_NONE call is refused (AUTH_TOOWEAK) unless the export allows
//     it; when allowed it runs as the anonymous identity.
//  3. all_squash: every AUTH_SYS call runs as anonuid/anongid with no
//     supplementary groups.
//  4. root_squash (the default): uid 0 runs as anonuid and gid 0 as anongid;
//     a supplementary group 0 is replaced by anongid. Other ids pass.
//  5. no_root_squash: the credential's uid, gid and groups pass unchanged.
//
// The anonymous identity defaults to 65534/65534 (nobody/nogroup).
package export

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"

	"github.com/blockrep/blockrep/nfsexport/rpc"
)

// Squash says how credentials are mapped (exports(5) root_squash,
// no_root_squash, all_squash).
type Squash int

// The squash modes; the zero value is RootSquash, knfsd's default.
const (
	RootSquash Squash = iota
	NoRootSquash
	AllSquash
)

var squashNames = map[Squash]string{RootSquash: "root_squash", NoRootSquash: "no_root_squash", AllSquash: "all_squash"}

// String returns the exports(5) name of s.
func (s Squash) String() string {
	if n, ok := squashNames[s]; ok {
		return n
	}
	return fmt.Sprintf("Squash(%d)", int(s))
}

// ParseSquash parses an exports(5) squash name.
func ParseSquash(s string) (Squash, error) {
	for k, n := range squashNames {
		if n == s {
			return k, nil
		}
	}
	return 0, fmt.Errorf("squash %q: want root_squash, no_root_squash or all_squash", s)
}

// DefaultAnonID is the uid and gid squashed requests run as unless the
// export names others (nobody and nogroup on Debian).
const DefaultAnonID = 65534

// Options is one export's policy.
type Options struct {
	// ID is the export id written in every file handle of the export; it
	// must be unique among the server's exports and stay the same on every
	// node and across restarts, or clients' handles go stale.
	ID uint32
	// Path is the MOUNT path clients ask for (e.g. "/web").
	Path string
	// Networks are the client networks admitted (at least one).
	Networks []netip.Prefix
	// ReadOnly refuses every call that would change the file system
	// (NFS3ERR_ROFS).
	ReadOnly bool
	// Squash maps credentials (Rules 3–5).
	Squash Squash
	// AnonUID and AnonGID are the anonymous identity.
	AnonUID, AnonGID uint32
	// AllowAuthNone admits AUTH_NONE calls as the anonymous identity.
	AllowAuthNone bool
}

// Validate checks o, naming the field that is wrong.
func (o *Options) Validate() error {
	if !strings.HasPrefix(o.Path, "/") {
		return fmt.Errorf("path %q: must start with /", o.Path)
	}
	if len(o.Networks) == 0 {
		return errors.New("networks: at least one client network is needed (0.0.0.0/0 and ::/0 admit everyone)")
	}
	for _, n := range o.Networks {
		if !n.IsValid() {
			return fmt.Errorf("networks: %v is not a valid prefix", n)
		}
	}
	if _, ok := squashNames[o.Squash]; !ok {
		return fmt.Errorf("squash: %v is not a squash mode", o.Squash)
	}
	return nil
}

// ErrClientRefused is wrapped by Admit's error: the client's address is in
// none of the export's networks.
var ErrClientRefused = errors.New("client not in the export's networks")

// ErrAuthTooWeak is wrapped by Identity's error for an AUTH_NONE call to an
// export that does not allow it.
var ErrAuthTooWeak = errors.New("AUTH_NONE is not allowed on this export")

// Admit reports whether the client at addr may use the export (Rule 1).
// IPv4-mapped IPv6 addresses are matched as IPv4.
func (o *Options) Admit(addr netip.Addr) error {
	addr = addr.Unmap()
	for _, n := range o.Networks {
		if n.Contains(addr) {
			return nil
		}
	}
	return fmt.Errorf("export %s: %w: %v", o.Path, ErrClientRefused, addr)
}

// Identity is the file-system identity a request runs as (fsuid, fsgid and
// supplementary groups).
type Identity struct {
	UID, GID uint32
	Groups   []uint32
}

// IsRoot reports whether id is uid 0 (then the server runs the request
// with its own credentials, unchanged).
func (id Identity) IsRoot() bool { return id.UID == 0 }

// Identity maps a call's credential to the identity its request runs as
// (Rules 2–5). The returned Groups never alias cred's.
func (o *Options) Identity(cred rpc.Cred) (Identity, error) {
	anon := Identity{UID: o.AnonUID, GID: o.AnonGID}
	switch cred.Flavor {
	case rpc.AuthSys:
	case rpc.AuthNone:
		if !o.AllowAuthNone {
			return Identity{}, fmt.Errorf("export %s: %w", o.Path, ErrAuthTooWeak)
		}
		return anon, nil // Rule 2
	default:
		return Identity{}, fmt.Errorf("export %s: credential flavor %d: %w", o.Path, cred.Flavor, ErrAuthTooWeak)
	}
	sys := cred.Sys
	switch o.Squash {
	case AllSquash: // Rule 3
		return anon, nil
	case NoRootSquash: // Rule 5
		return Identity{UID: sys.UID, GID: sys.GID, Groups: append([]uint32(nil), sys.GIDs...)}, nil
	}
	id := Identity{UID: sys.UID, GID: sys.GID, Groups: make([]uint32, len(sys.GIDs))} // Rule 4
	if id.UID == 0 {
		id.UID = o.AnonUID
	}
	if id.GID == 0 {
		id.GID = o.AnonGID
	}
	for i, g := range sys.GIDs {
		if g == 0 {
			g = o.AnonGID
		}
		id.Groups[i] = g
	}
	return id, nil
}
