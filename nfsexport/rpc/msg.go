package rpc

import (
	"fmt"
	"net"
	"net/netip"

	"github.com/blockrep/blockrep/nfsexport/xdr"
)

// Message types (RFC 5531 section 9, msg_type).
const (
	msgCall  = 0
	msgReply = 1
)

// Reply status (reply_stat).
const (
	msgAccepted = 0
	msgDenied   = 1
)

// AcceptStat is the status of an accepted call (accept_stat).
type AcceptStat uint32

// The accept_stat values of RFC 5531 section 9.
const (
	Success      AcceptStat = 0 // executed successfully
	ProgUnavail  AcceptStat = 1 // remote has not exported the program
	ProgMismatch AcceptStat = 2 // remote cannot support the version
	ProcUnavail  AcceptStat = 3 // program cannot support the procedure
	GarbageArgs  AcceptStat = 4 // procedure cannot decode the arguments
	SystemErr    AcceptStat = 5 // e.g. memory allocation failure
)

// Reject status (reject_stat).
const (
	rpcMismatch = 0
	authError   = 1
)

// AuthStat is why the server rejected a call's authentication (auth_stat).
type AuthStat uint32

// The auth_stat values of RFC 5531 section 9 used by this server.
const (
	AuthOK           AuthStat = 0
	AuthBadCred      AuthStat = 1 // bad credential (seal broken)
	AuthRejectedCred AuthStat = 2 // client must begin new session
	AuthBadVerf      AuthStat = 3 // bad verifier (seal broken)
	AuthRejectedVerf AuthStat = 4 // verifier expired or replayed
	AuthTooWeak      AuthStat = 5 // rejected for security reasons
)

// Authentication flavors (RFC 5531 section 8.2 and appendix A).
const (
	AuthNone uint32 = 0 // AUTH_NONE
	AuthSys  uint32 = 1 // AUTH_SYS (AUTH_UNIX)
)

// Limits of RFC 5531.
const (
	rpcVersion      = 2
	maxAuthBytes    = 400 // MAX_AUTH_BYTES: body of a credential or verifier
	maxMachineName  = 255
	maxAuthSysGroup = 16
)

// SysCred is an AUTH_SYS credential (RFC 5531 appendix A, authsys_parms).
type SysCred struct {
	Stamp       uint32
	MachineName string
	UID         uint32
	GID         uint32
	GIDs        []uint32 // supplementary groups, at most 16
}

// Cred is the credential of a call: its flavor and, for AUTH_SYS, the decoded
// parameters.
type Cred struct {
	Flavor uint32  // AuthNone or AuthSys (other flavors are refused)
	Sys    SysCred // valid when Flavor is AuthSys
}

// Call is a decoded call header. Args decodes the procedure's arguments; it
// reads the record buffer, which is valid only until the handler returns.
type Call struct {
	XID  uint32
	Prog uint32
	Vers uint32
	Proc uint32
	Cred Cred
	Args xdr.Decoder

	// Local and Remote are the connection's addresses (for access checks by
	// client network, or to tell a client where a service listens).
	Local, Remote net.Addr

	gids [maxAuthSysGroup]uint32 // backing store of Cred.Sys.GIDs
}

// Client returns the address of the call's client, an IPv4-mapped IPv6
// address as IPv4 (as export networks are written), or the zero Addr,
// which no network contains, if the connection has none.
func (c *Call) Client() netip.Addr {
	if t, ok := c.Remote.(*net.TCPAddr); ok {
		if ip, ok := netip.AddrFromSlice(t.IP); ok {
			return ip.Unmap()
		}
	}
	return netip.Addr{}
}

// headerVerdict says what to do with a record after its header is decoded.
type headerVerdict int

const (
	verdictServe    headerVerdict = iota // header fine: dispatch the call
	verdictDrop                          // cannot even be answered: drop it
	verdictMismatch                      // rpcvers not 2: RPC_MISMATCH
	verdictAuth                          // credential refused: AUTH_ERROR with the AuthStat
)

// parseCall decodes the call header at the start of rec into c. It is a pure
// function: the verdict says how the server answers. err explains a verdict
// other than verdictServe.
func parseCall(rec []byte, c *Call) (headerVerdict, AuthStat, error) {
	d := &c.Args
	d.Reset(rec)
	var err error
	if c.XID, err = d.Uint32("xid"); err != nil {
		return verdictDrop, 0, err
	}
	mt, err := d.Uint32("msg_type")
	if err != nil {
		return verdictDrop, 0, err
	}
	if mt != msgCall {
		return verdictDrop, 0, fmt.Errorf("rpc: msg_type %d, want CALL (0)", mt)
	}
	vers, err := d.Uint32("rpcvers")
	if err != nil {
		return verdictDrop, 0, err
	}
	if vers != rpcVersion {
		return verdictMismatch, 0, fmt.Errorf("rpc: rpcvers %d, want 2", vers)
	}
	for _, f := range []struct {
		p    *uint32
		name string
	}{{&c.Prog, "prog"}, {&c.Vers, "vers"}, {&c.Proc, "proc"}} {
		if *f.p, err = d.Uint32(f.name); err != nil {
			return verdictDrop, 0, err
		}
	}
	flavor, err := d.Uint32("cred flavor")
	if err != nil {
		return verdictAuth, AuthBadCred, err
	}
	body, err := d.Opaque("cred body", maxAuthBytes)
	if err != nil {
		return verdictAuth, AuthBadCred, err
	}
	c.Cred = Cred{Flavor: flavor}
	switch flavor {
	case AuthNone:
	case AuthSys:
		if err := parseSysCred(body, &c.Cred.Sys, c.gids[:0]); err != nil {
			return verdictAuth, AuthBadCred, err
		}
	default:
		// As knfsd: an unknown flavor is a bad credential.
		return verdictAuth, AuthBadCred, fmt.Errorf("rpc: credential flavor %d not supported", flavor)
	}
	vf, err := d.Uint32("verf flavor")
	if err != nil {
		return verdictAuth, AuthBadVerf, err
	}
	if _, err := d.Opaque("verf body", maxAuthBytes); err != nil {
		return verdictAuth, AuthBadVerf, err
	}
	if vf != AuthNone {
		return verdictAuth, AuthBadVerf, fmt.Errorf("rpc: verifier flavor %d, want AUTH_NONE", vf)
	}
	return verdictServe, 0, nil
}

// parseSysCred decodes authsys_parms; gids is the (empty) backing store for
// the supplementary groups.
func parseSysCred(body []byte, s *SysCred, gids []uint32) error {
	d := xdr.NewDecoder(body)
	var err error
	if s.Stamp, err = d.Uint32("auth_sys stamp"); err != nil {
		return err
	}
	if s.MachineName, err = d.String("auth_sys machinename", maxMachineName); err != nil {
		return err
	}
	if s.UID, err = d.Uint32("auth_sys uid"); err != nil {
		return err
	}
	if s.GID, err = d.Uint32("auth_sys gid"); err != nil {
		return err
	}
	n, err := d.Uint32("auth_sys gids count")
	if err != nil {
		return err
	}
	if n > maxAuthSysGroup {
		return fmt.Errorf("rpc: auth_sys has %d groups, maximum %d", n, maxAuthSysGroup)
	}
	for i := uint32(0); i < n; i++ {
		g, err := d.Uint32("auth_sys gid")
		if err != nil {
			return err
		}
		gids = append(gids, g)
	}
	s.GIDs = gids
	if d.Remaining() != 0 {
		return fmt.Errorf("rpc: auth_sys credential has %d bytes after the groups", d.Remaining())
	}
	return nil
}

// appendReplyHeader appends an accepted reply's header up to and including
// accept_stat, with an AUTH_NONE verifier.
func appendAccepted(e *xdr.Encoder, xid uint32, stat AcceptStat) {
	e.Uint32(xid)
	e.Uint32(msgReply)
	e.Uint32(msgAccepted)
	e.Uint32(AuthNone) // verifier flavor
	e.Uint32(0)        // verifier body length
	e.Uint32(uint32(stat))
}

// appendProgMismatch appends a PROG_MISMATCH reply with the supported range.
func appendProgMismatch(e *xdr.Encoder, xid, low, high uint32) {
	appendAccepted(e, xid, ProgMismatch)
	e.Uint32(low)
	e.Uint32(high)
}

// appendRPCMismatch appends a MSG_DENIED RPC_MISMATCH reply (versions 2..2).
func appendRPCMismatch(e *xdr.Encoder, xid uint32) {
	e.Uint32(xid)
	e.Uint32(msgReply)
	e.Uint32(msgDenied)
	e.Uint32(rpcMismatch)
	e.Uint32(rpcVersion)
	e.Uint32(rpcVersion)
}

// appendAuthError appends a MSG_DENIED AUTH_ERROR reply.
func appendAuthError(e *xdr.Encoder, xid uint32, stat AuthStat) {
	e.Uint32(xid)
	e.Uint32(msgReply)
	e.Uint32(msgDenied)
	e.Uint32(authError)
	e.Uint32(uint32(stat))
}
