package rpc

import (
	"bytes"
	"encoding/binary"
	"slices"
	"strings"
	"testing"

	"github.com/blockrep/blockrep/nfsexport/xdr"
)

// callSpec describes a call record for tests.
type callSpec struct {
	xid, msgType, rpcvers, prog, vers, proc uint32
	credFlavor                              uint32
	credBody                                []byte
	verfFlavor                              uint32
	args                                    []byte
}

func defaultCall(xid, prog, vers, proc uint32) callSpec {
	return callSpec{xid: xid, rpcvers: 2, prog: prog, vers: vers, proc: proc}
}

// encode returns the call body (without a record marker).
func (c callSpec) encode() []byte {
	e := xdr.NewEncoder(nil)
	e.Uint32(c.xid)
	e.Uint32(c.msgType)
	e.Uint32(c.rpcvers)
	e.Uint32(c.prog)
	e.Uint32(c.vers)
	e.Uint32(c.proc)
	e.Uint32(c.credFlavor)
	e.Opaque(c.credBody)
	e.Uint32(c.verfFlavor)
	e.Opaque(nil)
	e.FixedOpaque(c.args)
	return e.Bytes()
}

// record returns the call as a single-fragment record.
func (c callSpec) record() []byte { return frag(true, c.encode()) }

func sysCredBody(stamp uint32, machine string, uid, gid uint32, gids ...uint32) []byte {
	e := xdr.NewEncoder(nil)
	e.Uint32(stamp)
	e.String(machine)
	e.Uint32(uid)
	e.Uint32(gid)
	e.Uint32(uint32(len(gids)))
	for _, g := range gids {
		e.Uint32(g)
	}
	return e.Bytes()
}

func words(ws ...uint32) []byte {
	var b []byte
	for _, w := range ws {
		b = binary.BigEndian.AppendUint32(b, w)
	}
	return b
}

func TestParseCall(t *testing.T) {
	sys := func(c callSpec, body []byte) callSpec { c.credFlavor, c.credBody = AuthSys, body; return c }
	base := defaultCall(7, 100003, 3, 1)
	cases := []struct {
		name     string
		rec      []byte
		verdict  headerVerdict
		authStat AuthStat
		errHas   string
	}{
		{"auth none", base.encode(), verdictServe, 0, ""},
		{"auth sys", sys(base, sysCredBody(1, "host", 1000, 100, 4, 5)).encode(), verdictServe, 0, ""},
		{"empty", nil, verdictDrop, 0, "xid"},
		{"reply not call", func() []byte { c := base; c.msgType = 1; return c.encode() }(), verdictDrop, 0, "msg_type"},
		{"truncated before proc", base.encode()[:20], verdictDrop, 0, "proc"},
		{"rpcvers 3", func() []byte { c := base; c.rpcvers = 3; return c.encode() }(), verdictMismatch, 0, "rpcvers 3"},
		{"unknown flavor", func() []byte { c := base; c.credFlavor = 6; return c.encode() }(), verdictAuth, AuthBadCred, "flavor 6"},
		{"cred body over 400", func() []byte { c := base; c.credFlavor, c.credBody = AuthSys, make([]byte, 404); return c.encode() }(), verdictAuth, AuthBadCred, "cred body"},
		{"machinename 256", sys(base, sysCredBody(1, strings.Repeat("m", 256), 0, 0)).encode(), verdictAuth, AuthBadCred, "machinename"},
		{"17 groups", sys(base, sysCredBody(1, "h", 0, 0, make([]uint32, 17)...)).encode(), verdictAuth, AuthBadCred, "17 groups"},
		{"auth sys truncated", sys(base, sysCredBody(1, "h", 0, 0)[:12]).encode(), verdictAuth, AuthBadCred, "auth_sys"},
		{"auth sys trailing", sys(base, append(sysCredBody(1, "h", 0, 0), 0, 0, 0, 0)).encode(), verdictAuth, AuthBadCred, "after the groups"},
		{"verifier not none", func() []byte { c := base; c.verfFlavor = 1; return c.encode() }(), verdictAuth, AuthBadVerf, "verifier flavor"},
		{"no verifier", base.encode()[:32], verdictAuth, AuthBadVerf, "verf"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var call Call
			v, as, err := parseCall(c.rec, &call)
			if v != c.verdict || as != c.authStat {
				t.Fatalf("verdict %d auth %d (err %v), want %d auth %d", v, as, err, c.verdict, c.authStat)
			}
			if c.errHas == "" && err != nil || c.errHas != "" && (err == nil || !strings.Contains(err.Error(), c.errHas)) {
				t.Fatalf("error %v, want one containing %q", err, c.errHas)
			}
		})
	}
}

func TestParseCallFields(t *testing.T) {
	c := defaultCall(0xabcdef01, 100005, 3, 2)
	c.credFlavor, c.credBody = AuthSys, sysCredBody(42, "web1", 1000, 33, 4, 27)
	c.args = words(9, 10)
	var call Call
	if v, _, err := parseCall(c.encode(), &call); v != verdictServe {
		t.Fatal(err)
	}
	want := SysCred{Stamp: 42, MachineName: "web1", UID: 1000, GID: 33, GIDs: []uint32{4, 27}}
	got := call.Cred.Sys
	if call.XID != 0xabcdef01 || call.Prog != 100005 || call.Vers != 3 || call.Proc != 2 || call.Cred.Flavor != AuthSys ||
		got.Stamp != want.Stamp || got.MachineName != want.MachineName || got.UID != want.UID || got.GID != want.GID || !slices.Equal(got.GIDs, want.GIDs) {
		t.Fatalf("call %+v", call)
	}
	if !bytes.Equal(call.Args.Rest(), words(9, 10)) {
		t.Fatalf("args % x", call.Args.Rest())
	}
}

// TestReplyWire pins every reply header, number by number (go-nfs has the
// accept_stat values off by one).
func TestReplyWire(t *testing.T) {
	const xid = 0x11223344
	acc := func(stat uint32, extra ...uint32) []byte {
		return words(append([]uint32{xid, 1, 0, 0, 0, stat}, extra...)...)
	}
	cases := []struct {
		name string
		enc  func(e *xdr.Encoder)
		want []byte
	}{
		{"SUCCESS", func(e *xdr.Encoder) { appendAccepted(e, xid, Success) }, acc(0)},
		{"PROG_UNAVAIL", func(e *xdr.Encoder) { appendAccepted(e, xid, ProgUnavail) }, acc(1)},
		{"PROG_MISMATCH", func(e *xdr.Encoder) { appendProgMismatch(e, xid, 2, 4) }, acc(2, 2, 4)},
		{"PROC_UNAVAIL", func(e *xdr.Encoder) { appendAccepted(e, xid, ProcUnavail) }, acc(3)},
		{"GARBAGE_ARGS", func(e *xdr.Encoder) { appendAccepted(e, xid, GarbageArgs) }, acc(4)},
		{"SYSTEM_ERR", func(e *xdr.Encoder) { appendAccepted(e, xid, SystemErr) }, acc(5)},
		{"RPC_MISMATCH", func(e *xdr.Encoder) { appendRPCMismatch(e, xid) }, words(xid, 1, 1, 0, 2, 2)},
		{"AUTH_BADCRED", func(e *xdr.Encoder) { appendAuthError(e, xid, AuthBadCred) }, words(xid, 1, 1, 1, 1)},
		{"AUTH_TOOWEAK", func(e *xdr.Encoder) { appendAuthError(e, xid, AuthTooWeak) }, words(xid, 1, 1, 1, 5)},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			e := xdr.NewEncoder(nil)
			c.enc(e)
			if !bytes.Equal(e.Bytes(), c.want) {
				t.Fatalf("reply % x, want % x", e.Bytes(), c.want)
			}
		})
	}
}
