// Package portmap is a small portmapper: PMAP version 2 (RFC 1833 section 3:
// NULL, GETPORT, DUMP) and rpcbind versions 3 and 4 (RFC 1833 section 2:
// NULL, GETADDR for TCP), answering for a fixed list of programs. It runs as
// an rpc.Handler on the same rpc.Server as the programs it describes, so that
// a client can find them with ordinary mount options.
//
// SET and UNSET are answered false: the list is given at construction and
// does not change through the protocol.
package portmap

import (
	"context"
	"net"
	"strconv"

	"github.com/blockrep/blockrep/nfsexport/rpc"
	"github.com/blockrep/blockrep/nfsexport/xdr"
)

// Program is the portmapper's program number.
const Program = 100000

// Transport protocol numbers of a PMAP mapping.
const (
	ProtoTCP = 6
	ProtoUDP = 17
)

// Procedures.
const (
	procNull    = 0
	procSet     = 1
	procUnset   = 2
	procGetport = 3 // v2 GETPORT; v3/v4 GETADDR
	procDump    = 4
)

// Mapping says that version Vers of program Prog listens on Port over
// protocol Prot (ProtoTCP).
type Mapping struct {
	Prog, Vers, Prot, Port uint32
}

// Portmapper answers for a fixed list of mappings.
type Portmapper struct {
	mappings []Mapping
}

// New returns a Portmapper answering for mappings (copied). It does not
// list itself: include Mapping{Program, 2, ProtoTCP, port} (and 3, 4) to have
// DUMP show it.
func New(mappings []Mapping) *Portmapper {
	return &Portmapper{mappings: append([]Mapping(nil), mappings...)}
}

// Register makes p serve PMAP v2 and rpcbind v3 and v4 on s.
func (p *Portmapper) Register(s *rpc.Server) {
	for v := uint32(2); v <= 4; v++ {
		s.Register(Program, v, p)
	}
}

// maxString bounds the strings of an rpcb argument.
const maxString = 1024

// ServeRPC implements rpc.Handler.
func (p *Portmapper) ServeRPC(ctx context.Context, call *rpc.Call, reply *xdr.Encoder) error {
	if call.Proc == procNull {
		return nil
	}
	if call.Vers == 2 {
		return p.serveV2(call, reply)
	}
	return p.serveRPCB(call, reply)
}

func (p *Portmapper) serveV2(call *rpc.Call, reply *xdr.Encoder) error {
	switch call.Proc {
	case procSet, procUnset:
		if _, err := decodeMapping(&call.Args); err != nil {
			return err
		}
		reply.Bool(false)
	case procGetport:
		m, err := decodeMapping(&call.Args)
		if err != nil {
			return err
		}
		reply.Uint32(p.port(m.Prog, m.Vers, m.Prot))
	case procDump:
		for _, m := range p.mappings {
			reply.Optional(true)
			reply.Uint32(m.Prog)
			reply.Uint32(m.Vers)
			reply.Uint32(m.Prot)
			reply.Uint32(m.Port)
		}
		reply.Optional(false)
	default:
		return rpc.ErrProcUnavail
	}
	return nil
}

func (p *Portmapper) serveRPCB(call *rpc.Call, reply *xdr.Encoder) error {
	switch call.Proc {
	case procSet, procUnset:
		if _, err := decodeRPCB(&call.Args); err != nil {
			return err
		}
		reply.Bool(false)
	case procGetport: // GETADDR
		b, err := decodeRPCB(&call.Args)
		if err != nil {
			return err
		}
		reply.String(p.getaddr(b, call.Local))
	default:
		return rpc.ErrProcUnavail
	}
	return nil
}

func (p *Portmapper) port(prog, vers, prot uint32) uint32 {
	for _, m := range p.mappings {
		if m.Prog == prog && m.Vers == vers && m.Prot == prot {
			return m.Port
		}
	}
	return 0
}

// getaddr answers GETADDR: the universal address of the program on the
// address the client reached (local), or "" when it is not served over the
// asked netid.
func (p *Portmapper) getaddr(b rpcb, local net.Addr) string {
	ta, ok := local.(*net.TCPAddr)
	if !ok {
		return ""
	}
	ip4 := ta.IP.To4()
	switch {
	case b.netid == "tcp" && ip4 != nil:
	case b.netid == "tcp6" && ip4 == nil:
	default:
		return ""
	}
	port := p.port(b.prog, b.vers, ProtoTCP)
	if port == 0 {
		return ""
	}
	return UniversalAddr(ta.IP, port)
}

// UniversalAddr formats ip and port as an RFC 5665 universal address:
// "h1.h2.h3.h4.p1.p2" for IPv4, "x:x::x.p1.p2" for IPv6.
func UniversalAddr(ip net.IP, port uint32) string {
	s := ip.String()
	if ip4 := ip.To4(); ip4 != nil {
		s = ip4.String()
	}
	return s + "." + strconv.Itoa(int(port>>8&0xff)) + "." + strconv.Itoa(int(port&0xff))
}

func decodeMapping(d *xdr.Decoder) (Mapping, error) {
	var m Mapping
	for _, f := range []*uint32{&m.Prog, &m.Vers, &m.Prot, &m.Port} {
		v, err := d.Uint32("pmap mapping")
		if err != nil {
			return m, garbage(err)
		}
		*f = v
	}
	return m, nil
}

// rpcb is the argument of rpcbind v3/v4 (RFC 1833 section 2.1).
type rpcb struct {
	prog, vers         uint32
	netid, addr, owner string
}

func decodeRPCB(d *xdr.Decoder) (rpcb, error) {
	var b rpcb
	var err error
	if b.prog, err = d.Uint32("rpcb r_prog"); err != nil {
		return b, garbage(err)
	}
	if b.vers, err = d.Uint32("rpcb r_vers"); err != nil {
		return b, garbage(err)
	}
	if b.netid, err = d.String("rpcb r_netid", maxString); err != nil {
		return b, garbage(err)
	}
	if b.addr, err = d.String("rpcb r_addr", maxString); err != nil {
		return b, garbage(err)
	}
	if b.owner, err = d.String("rpcb r_owner", maxString); err != nil {
		return b, garbage(err)
	}
	return b, nil
}

type garbageErr struct{ err error }

func (g garbageErr) Error() string   { return g.err.Error() }
func (g garbageErr) Unwrap() []error { return []error{rpc.ErrGarbageArgs, g.err} }

// garbage marks a decoding error as GARBAGE_ARGS.
func garbage(err error) error { return garbageErr{err} }
