package portmap

import (
	"bytes"
	"context"
	"encoding/binary"
	"log/slog"
	"net"
	"testing"
	"time"

	"github.com/blockrep/blockrep/nfsexport/rpc"
	"github.com/blockrep/blockrep/nfsexport/xdr"
)

func startPortmapper(t *testing.T, mappings []Mapping) net.Conn {
	t.Helper()
	s := rpc.NewServer(rpc.Config{Logger: slog.New(slog.DiscardHandler)})
	New(mappings).Register(s)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx, ln) }()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	c.SetDeadline(time.Now().Add(20 * time.Second))
	t.Cleanup(func() {
		c.Close()
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return c
}

// call sends one raw call and returns the result bytes after the accepted
// reply header, checking that header.
func call(t *testing.T, c net.Conn, xid, vers, proc uint32, args func(e *xdr.Encoder)) []byte {
	t.Helper()
	e := xdr.NewEncoder(rpc.AppendRecordMark(nil))
	for _, w := range []uint32{xid, 0, 2, Program, vers, proc, 0, 0, 0, 0} {
		e.Uint32(w)
	}
	if args != nil {
		args(e)
	}
	rec := e.Bytes()
	rpc.SetRecordMark(rec)
	if _, err := c.Write(rec); err != nil {
		t.Fatal(err)
	}
	rep, err := rpc.ReadRecord(c, nil, 1<<16)
	if err != nil {
		t.Fatal(err)
	}
	hdr := make([]byte, 0, 24)
	for _, w := range []uint32{xid, 1, 0, 0, 0, 0} {
		hdr = binary.BigEndian.AppendUint32(hdr, w)
	}
	if len(rep) < 24 || !bytes.Equal(rep[:24], hdr) {
		t.Fatalf("reply header % x, want % x", rep, hdr)
	}
	return rep[24:]
}

func u32s(b []byte) []uint32 {
	var out []uint32
	for len(b) >= 4 {
		out = append(out, binary.BigEndian.Uint32(b))
		b = b[4:]
	}
	return out
}

func TestPortmapper(t *testing.T) {
	mappings := []Mapping{
		{100003, 3, ProtoTCP, 2049},
		{100005, 3, ProtoTCP, 20048},
	}
	c := startPortmapper(t, mappings)
	mapping := func(m Mapping) func(e *xdr.Encoder) {
		return func(e *xdr.Encoder) { e.Uint32(m.Prog); e.Uint32(m.Vers); e.Uint32(m.Prot); e.Uint32(m.Port) }
	}
	if got := call(t, c, 1, 2, procNull, nil); len(got) != 0 {
		t.Fatalf("NULL result % x", got)
	}
	for _, tc := range []struct {
		m    Mapping
		want uint32
	}{
		{Mapping{100005, 3, ProtoTCP, 0}, 20048},
		{Mapping{100003, 3, ProtoTCP, 0}, 2049},
		{Mapping{100003, 3, ProtoUDP, 0}, 0},
		{Mapping{100003, 4, ProtoTCP, 0}, 0},
	} {
		got := u32s(call(t, c, 2, 2, procGetport, mapping(tc.m)))
		if len(got) != 1 || got[0] != tc.want {
			t.Errorf("GETPORT %+v = %v, want %d", tc.m, got, tc.want)
		}
	}
	dump := u32s(call(t, c, 3, 2, procDump, nil))
	want := []uint32{1, 100003, 3, 6, 2049, 1, 100005, 3, 6, 20048, 0}
	if len(dump) != len(want) {
		t.Fatalf("DUMP %v, want %v", dump, want)
	}
	for i := range want {
		if dump[i] != want[i] {
			t.Fatalf("DUMP %v, want %v", dump, want)
		}
	}
	if got := u32s(call(t, c, 4, 2, procSet, mapping(Mapping{7, 1, ProtoTCP, 9}))); len(got) != 1 || got[0] != 0 {
		t.Fatalf("SET = %v, want false", got)
	}

	getaddr := func(prog, vers uint32, netid string) func(e *xdr.Encoder) {
		return func(e *xdr.Encoder) { e.Uint32(prog); e.Uint32(vers); e.String(netid); e.String(""); e.String("") }
	}
	for _, v := range []uint32{3, 4} {
		for _, tc := range []struct {
			prog, vers uint32
			netid      string
			want       string
		}{
			{100003, 3, "tcp", "127.0.0.1.8.1"},
			{100005, 3, "tcp", "127.0.0.1.78.80"},
			{100003, 3, "udp", ""},
			{100003, 3, "tcp6", ""},
			{100003, 2, "tcp", ""},
		} {
			res := call(t, c, 5, v, procGetport, getaddr(tc.prog, tc.vers, tc.netid))
			got, err := xdr.NewDecoder(res).String("addr", 64)
			if err != nil || got != tc.want {
				t.Errorf("rpcbind v%d GETADDR %d/%d %s = %q (%v), want %q", v, tc.prog, tc.vers, tc.netid, got, err, tc.want)
			}
		}
	}
}

func TestPortmapperGarbage(t *testing.T) {
	c := startPortmapper(t, nil)
	e := xdr.NewEncoder(rpc.AppendRecordMark(nil))
	for _, w := range []uint32{9, 0, 2, Program, 2, procGetport, 0, 0, 0, 0, 100003} { // mapping cut short
		e.Uint32(w)
	}
	rec := e.Bytes()
	rpc.SetRecordMark(rec)
	c.Write(rec)
	rep, err := rpc.ReadRecord(c, nil, 1<<16)
	want := []uint32{9, 1, 0, 0, 0, 4} // GARBAGE_ARGS
	got := u32s(rep)
	if err != nil || len(got) != len(want) || got[5] != 4 {
		t.Fatalf("reply %v (%v), want %v", got, err, want)
	}
}

func TestUniversalAddr(t *testing.T) {
	for _, tc := range []struct {
		ip   string
		port uint32
		want string
	}{
		{"198.18.0.1", 2049, "198.18.0.1.8.1"},
		{"::1", 111, "::1.0.111"},
	} {
		if got := UniversalAddr(net.ParseIP(tc.ip), tc.port); got != tc.want {
			t.Errorf("UniversalAddr(%s, %d) = %q, want %q", tc.ip, tc.port, got, tc.want)
		}
	}
}
