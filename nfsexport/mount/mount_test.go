package mount

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"

	nfsrpc "github.com/willscott/go-nfs-client/nfs/rpc"
	nfsxdr "github.com/willscott/go-nfs-client/nfs/xdr"

	"github.com/blockrep/blockrep/internal/gonfsdial"
	"github.com/blockrep/blockrep/internal/syncbuf"
	"github.com/blockrep/blockrep/internal/testfs"
	"github.com/blockrep/blockrep/nfsexport/export"
	"github.com/blockrep/blockrep/nfsexport/fh"
	"github.com/blockrep/blockrep/nfsexport/rpc"
	"github.com/blockrep/blockrep/nfsexport/xdr"
)

// fixture is a Handler over three exports of one ext4 file system:
//
//	/     the root, for 10.9.0.0/16 only
//	/web  for 10.0.0.0/8 and 127.0.0.0/8
//	/db   for 10.1.0.0/16, AUTH_NONE allowed
type fixture struct {
	h       *Handler
	fs      map[string]*fh.FS // by export path
	logs    *syncbuf.Buffer
	mu      sync.Mutex
	mounted []Entry
	unmount []Entry
	refused []Refusal
}

func prefixes(s ...string) []netip.Prefix {
	out := make([]netip.Prefix, len(s))
	for i, p := range s {
		out[i] = netip.MustParsePrefix(p)
	}
	return out
}

func newFixture(t *testing.T, maxMounts int) *fixture {
	t.Helper()
	root := testfs.New(t, "ext4").Dir
	f := &fixture{fs: map[string]*fh.FS{}, logs: &syncbuf.Buffer{}}
	opts := []*export.Options{
		{ID: 1, Path: "/", Networks: prefixes("10.9.0.0/16")},
		{ID: 2, Path: "/web", Networks: prefixes("10.0.0.0/8", "127.0.0.0/8")},
		{ID: 3, Path: "/db", Networks: prefixes("10.1.0.0/16"), AllowAuthNone: true},
	}
	var exports []Export
	for _, o := range opts {
		dir := filepath.Join(root, o.Path)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		fs, err := fh.Open(dir, o.ID)
		if err != nil {
			t.Fatalf("fh.Open(%s): %v", dir, err)
		}
		t.Cleanup(func() { fs.Close() })
		f.fs[o.Path] = fs
		exports = append(exports, Export{Opts: o, FS: fs})
	}
	h, err := NewHandler(Config{
		Exports:   exports,
		MaxMounts: maxMounts,
		Logger:    slog.New(slog.NewTextHandler(f.logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
		OnMount:   func(e Entry) { f.mu.Lock(); f.mounted = append(f.mounted, e); f.mu.Unlock() },
		OnUnmount: func(e Entry) { f.mu.Lock(); f.unmount = append(f.unmount, e); f.mu.Unlock() },
		OnRefuse:  func(r Refusal) { f.mu.Lock(); f.refused = append(f.refused, r); f.mu.Unlock() },
	})
	if err != nil {
		t.Fatal(err)
	}
	f.h = h
	return f
}

// call serves one call from client directly (no socket) and returns the
// result bytes.
func (f *fixture) call(t *testing.T, client string, proc uint32, args func(e *xdr.Encoder)) ([]byte, error) {
	t.Helper()
	e := xdr.NewEncoder(nil)
	if args != nil {
		args(e)
	}
	c := &rpc.Call{XID: 1, Prog: Program, Vers: Version, Proc: proc, Args: *xdr.NewDecoder(e.Bytes()),
		Local: &net.TCPAddr{IP: net.ParseIP("127.0.0.1"), Port: 2049}, Remote: &net.TCPAddr{IP: net.ParseIP(client), Port: 800}}
	reply := xdr.NewEncoder(nil)
	err := f.h.ServeRPC(context.Background(), c, reply)
	return reply.Bytes(), err
}

func dirpath(p string) func(e *xdr.Encoder) { return func(e *xdr.Encoder) { e.String(p) } }

// mntResult is a decoded mountres3.
type mntResult struct {
	status  Status
	handle  []byte
	flavors []uint32
}

func decodeMnt(t *testing.T, b []byte) mntResult {
	t.Helper()
	d := xdr.NewDecoder(b)
	st, err := d.Uint32("status")
	if err != nil {
		t.Fatal(err)
	}
	r := mntResult{status: Status(st)}
	if r.status == OK {
		h, err := d.Opaque("fhandle", fh.MaxSize)
		if err != nil {
			t.Fatal(err)
		}
		r.handle = append([]byte(nil), h...)
		n, err := d.Uint32("flavors")
		if err != nil {
			t.Fatal(err)
		}
		for range n {
			fl, err := d.Uint32("flavor")
			if err != nil {
				t.Fatal(err)
			}
			r.flavors = append(r.flavors, fl)
		}
	}
	if d.Remaining() != 0 {
		t.Fatalf("mountres3 has %d bytes left over: % x", d.Remaining(), b)
	}
	return r
}

// decodeList decodes a linked list of optional items, each of n strings
// (mountlist: hostname, directory); for exports, each item's groups are
// joined with "," as the last string.
func decodeList(t *testing.T, b []byte, n int, groups bool) [][]string {
	t.Helper()
	d := xdr.NewDecoder(b)
	var out [][]string
	for {
		more, err := d.Optional("next")
		if err != nil {
			t.Fatal(err)
		}
		if !more {
			break
		}
		var item []string
		for range n {
			s, err := d.String("item", MaxPath)
			if err != nil {
				t.Fatal(err)
			}
			item = append(item, s)
		}
		if groups {
			var g []string
			for {
				more, err := d.Optional("group")
				if err != nil {
					t.Fatal(err)
				}
				if !more {
					break
				}
				s, err := d.String("group", MaxName)
				if err != nil {
					t.Fatal(err)
				}
				g = append(g, s)
			}
			item = append(item, strings.Join(g, ","))
		}
		out = append(out, item)
	}
	if d.Remaining() != 0 {
		t.Fatalf("list has %d bytes left over", d.Remaining())
	}
	return out
}

func TestMnt(t *testing.T) {
	f := newFixture(t, 0)
	for _, tt := range []struct {
		client, path string
		want         Status
		export       string
		flavors      []uint32
	}{
		{"10.0.0.5", "/web", OK, "/web", []uint32{rpc.AuthSys}},
		{"10.0.0.5", "/web/", OK, "/web", []uint32{rpc.AuthSys}},
		{"10.0.0.5", "/web//", OK, "/web", []uint32{rpc.AuthSys}},
		{"127.0.0.1", "/web", OK, "/web", []uint32{rpc.AuthSys}},
		{"10.1.2.3", "/db", OK, "/db", []uint32{rpc.AuthSys, rpc.AuthNone}},
		{"::ffff:10.1.2.3", "/db", OK, "/db", []uint32{rpc.AuthSys, rpc.AuthNone}},
		{"10.9.1.1", "/", OK, "/", []uint32{rpc.AuthSys}},
		{"10.0.0.5", "/db", ErrAcces, "", nil},
		{"10.0.0.5", "/", ErrAcces, "", nil},
		{"fd00::1", "/web", ErrAcces, "", nil},
		{"10.0.0.5", "/web/sub", ErrNoEnt, "", nil},
		{"10.0.0.5", "web", ErrNoEnt, "", nil},
		{"10.0.0.5", "", ErrNoEnt, "", nil},
		{"10.0.0.5", "/" + strings.Repeat("x", MaxPath-1), ErrNoEnt, "", nil},
	} {
		b, err := f.call(t, tt.client, ProcMnt, dirpath(tt.path))
		if err != nil {
			t.Errorf("MNT %q from %s: %v", tt.path, tt.client, err)
			continue
		}
		r := decodeMnt(t, b)
		if r.status != tt.want {
			t.Errorf("MNT %.20q from %s = %v, want %v", tt.path, tt.client, r.status, tt.want)
			continue
		}
		if tt.want != OK {
			continue
		}
		if want := f.fs[tt.export].RootBytes(); !bytes.Equal(r.handle, want) {
			t.Errorf("MNT %q from %s: handle % x, want the root handle of %s % x", tt.path, tt.client, r.handle, tt.export, want)
		}
		if !reflect.DeepEqual(r.flavors, tt.flavors) {
			t.Errorf("MNT %q from %s: flavors %v, want %v", tt.path, tt.client, r.flavors, tt.flavors)
		}
	}
	// The mounts are listed once per client and export, the last one
	// (from "/web//") refreshing the first.
	var got []string
	for _, m := range f.h.Mounts() {
		if m.Time.IsZero() {
			t.Errorf("mount %v has no time", m)
		}
		got = append(got, fmt.Sprintf("%s %s %d", m.Client, m.Path, m.Export))
	}
	want := []string{"10.0.0.5 /web 2", "127.0.0.1 /web 2", "10.1.2.3 /db 3", "10.9.1.1 / 1"}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("Mounts() = %q, want %q", got, want)
	}
	if len(f.mounted) != 7 {
		t.Errorf("OnMount called %d times, want 7 (every MNT answered MNT3_OK)", len(f.mounted))
	}
}

func TestMntGarbage(t *testing.T) {
	f := newFixture(t, 0)
	for name, args := range map[string]func(e *xdr.Encoder){
		"no dirpath":          nil,
		"dirpath too long":    dirpath("/" + strings.Repeat("x", MaxPath)),
		"length past the end": func(e *xdr.Encoder) { e.Uint32(8); e.Uint32(0x2f776562) },
	} {
		for _, proc := range []uint32{ProcMnt, ProcUmnt} {
			if _, err := f.call(t, "10.0.0.5", proc, args); !errors.Is(err, rpc.ErrGarbageArgs) {
				t.Errorf("%s: proc %d = %v, want GARBAGE_ARGS", name, proc, err)
			}
		}
	}
	for _, proc := range []uint32{6, 7, 100, 1 << 31} {
		if _, err := f.call(t, "10.0.0.5", proc, nil); !errors.Is(err, rpc.ErrProcUnavail) {
			t.Errorf("proc %d = %v, want PROC_UNAVAIL", proc, err)
		}
	}
	if b, err := f.call(t, "10.0.0.5", ProcNull, nil); err != nil || len(b) != 0 {
		t.Errorf("NULL = % x, %v; want nothing", b, err)
	}
	if len(f.h.Mounts()) != 0 {
		t.Errorf("mount list %v after bad calls only", f.h.Mounts())
	}
}

func TestRefusalsLoggedOncePerClient(t *testing.T) {
	f := newFixture(t, 0)
	mnt := func(client, path string, want Status) {
		t.Helper()
		b, err := f.call(t, client, ProcMnt, dirpath(path))
		if err != nil {
			t.Fatal(err)
		}
		if r := decodeMnt(t, b); r.status != want {
			t.Fatalf("MNT %s from %s = %v, want %v", path, client, r.status, want)
		}
	}
	mnt("192.0.2.1", "/web", ErrAcces)
	for range 50 { // a scanner
		mnt("192.0.2.1", "/web", ErrAcces)
		mnt("192.0.2.1", "/etc", ErrNoEnt)
	}
	mnt("192.0.2.2", "/nope", ErrNoEnt)
	mnt("10.0.0.5", "/web", OK) // an admitted client's MNT is no refusal

	logs := f.logs.String()
	if n := strings.Count(logs, "mount: client refused"); n != 2 {
		t.Errorf("%d refusal log lines, want 2 (one per client per %s):\n%s", n, RefuseInterval, logs)
	}
	for _, want := range []string{
		"client=192.0.2.1 path=/web status=MNT3ERR_ACCES",
		"client=192.0.2.2 path=/nope status=MNT3ERR_NOENT reason=\"no such export\"",
	} {
		if !strings.Contains(logs, want) {
			t.Errorf("logs lack %q:\n%s", want, logs)
		}
	}
	if len(f.refused) != 2 {
		t.Fatalf("OnRefuse got %v, want 2 refusals", f.refused)
	}
	r := f.refused[0]
	if r.Client != netip.MustParseAddr("192.0.2.1") || r.Path != "/web" || r.Status != ErrAcces ||
		!errors.Is(r.Err, export.ErrClientRefused) || r.Time.IsZero() || r.Suppressed != 0 {
		t.Errorf("first refusal %+v", r)
	}
	if r := f.refused[1]; r.Client != netip.MustParseAddr("192.0.2.2") || r.Status != ErrNoEnt || !errors.Is(r.Err, errNoExport) {
		t.Errorf("second refusal %+v", r)
	}
	// The limiter counts what it held back, for the next line a minute on.
	if n := f.h.refused.Suppressed("192.0.2.1"); n != 100 {
		t.Errorf("suppressed %d refusals of 192.0.2.1, want 100", n)
	}
}

func TestDumpUmntExport(t *testing.T) {
	f := newFixture(t, 0)
	mnt := func(client, path string) {
		t.Helper()
		b, err := f.call(t, client, ProcMnt, dirpath(path))
		if err != nil {
			t.Fatal(err)
		}
		if r := decodeMnt(t, b); r.status != OK {
			t.Fatalf("MNT %s from %s = %v", path, client, r.status)
		}
	}
	dump := func(client string) [][]string {
		t.Helper()
		b, err := f.call(t, client, ProcDump, nil)
		if err != nil {
			t.Fatal(err)
		}
		return decodeList(t, b, 2, false)
	}
	noResult := func(client string, proc uint32, args func(e *xdr.Encoder)) {
		t.Helper()
		b, err := f.call(t, client, proc, args)
		if err != nil || len(b) != 0 {
			t.Fatalf("proc %d from %s = % x, %v; want a void result", proc, client, b, err)
		}
	}
	mnt("10.0.0.5", "/web")
	mnt("10.1.2.3", "/web")
	mnt("10.1.2.3", "/db")
	mnt("10.9.0.1", "/")

	// DUMP lists the mounts of the exports the asking client may mount.
	all := [][]string{{"10.0.0.5", "/web"}, {"10.1.2.3", "/web"}, {"10.1.2.3", "/db"}}
	for client, want := range map[string][][]string{
		"10.0.0.5":  all[:2],
		"10.1.2.3":  all,
		"10.9.0.1":  {{"10.0.0.5", "/web"}, {"10.1.2.3", "/web"}, {"10.9.0.1", "/"}}, // 10.9/16 is in 10/8
		"192.0.2.1": nil,
	} {
		if got := dump(client); !reflect.DeepEqual(got, want) {
			t.Errorf("DUMP from %s = %q, want %q", client, got, want)
		}
	}

	// EXPORT lists the exports the asking client may mount, with their
	// networks.
	for client, want := range map[string][][]string{
		"10.0.0.5":  {{"/web", "10.0.0.0/8,127.0.0.0/8"}},
		"127.0.0.1": {{"/web", "10.0.0.0/8,127.0.0.0/8"}},
		"10.1.2.3":  {{"/web", "10.0.0.0/8,127.0.0.0/8"}, {"/db", "10.1.0.0/16"}},
		"10.9.0.1":  {{"/", "10.9.0.0/16"}, {"/web", "10.0.0.0/8,127.0.0.0/8"}},
		"192.0.2.1": nil,
	} {
		b, err := f.call(t, client, ProcExport, nil)
		if err != nil {
			t.Fatal(err)
		}
		if got := decodeList(t, b, 1, true); !reflect.DeepEqual(got, want) {
			t.Errorf("EXPORT from %s = %q, want %q", client, got, want)
		}
	}

	// UMNT removes the client's entry of that export only (trailing slash
	// ignored); unknown paths and other clients' mounts are left alone.
	noResult("10.1.2.3", ProcUmnt, dirpath("/web/"))
	noResult("10.1.2.3", ProcUmnt, dirpath("/nope"))
	noResult("192.0.2.1", ProcUmnt, dirpath("/db"))
	if got, want := dump("10.1.2.3"), [][]string{{"10.0.0.5", "/web"}, {"10.1.2.3", "/db"}}; !reflect.DeepEqual(got, want) {
		t.Errorf("DUMP after UMNT = %q, want %q", got, want)
	}
	mnt("10.1.2.3", "/web")
	noResult("10.1.2.3", ProcUmntAll, nil)
	noResult("10.1.2.3", ProcUmntAll, nil) // nothing left to remove
	if got, want := dump("10.1.2.3"), [][]string{{"10.0.0.5", "/web"}}; !reflect.DeepEqual(got, want) {
		t.Errorf("DUMP after UMNTALL = %q, want %q", got, want)
	}
	var unmounted []string
	for _, e := range f.unmount {
		unmounted = append(unmounted, e.Client.String()+" "+e.Path)
	}
	if want := []string{"10.1.2.3 /web", "10.1.2.3 /db", "10.1.2.3 /web"}; !reflect.DeepEqual(unmounted, want) {
		t.Errorf("OnUnmount got %q, want %q", unmounted, want)
	}
}

func TestMountListBounded(t *testing.T) {
	const max = 64
	f := newFixture(t, max)
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := range 200 {
				client := fmt.Sprintf("10.%d.%d.%d", g, i/256, i%256)
				if _, err := f.call(t, client, ProcMnt, dirpath("/web")); err != nil {
					t.Error(err)
					return
				}
				if i%3 == 0 {
					f.call(t, client, ProcUmnt, dirpath("/web"))
				}
				if i%10 == 0 {
					f.call(t, client, ProcDump, nil)
				}
			}
		})
	}
	wg.Wait()
	got := f.h.Mounts()
	if len(got) != max {
		t.Fatalf("%d entries after 1600 mounts, want the bound %d", len(got), max)
	}
	for i := 1; i < len(got); i++ {
		if got[i].Time.Before(got[i-1].Time) {
			t.Errorf("entries out of mount order: %v before %v", got[i-1], got[i])
		}
	}
	if !strings.Contains(f.logs.String(), "mount list full") {
		t.Errorf("no log line for dropped entries")
	}
}

func TestNewHandlerErrors(t *testing.T) {
	f := newFixture(t, 0)
	fs := f.fs["/web"]
	for _, tt := range []struct {
		exports []Export
		want    string
	}{
		{[]Export{{Opts: &export.Options{Path: "/a"}}}, "export 0: Opts and FS are required"},
		{[]Export{{FS: fs}}, "export 0: Opts and FS are required"},
		{[]Export{{Opts: &export.Options{Path: "a"}, FS: fs}}, `path "a" must start with /`},
		{[]Export{{Opts: &export.Options{Path: "/a"}, FS: fs}, {Opts: &export.Options{Path: "/a/"}, FS: fs}}, "export /a/: path used twice"},
	} {
		_, err := NewHandler(Config{Exports: tt.exports})
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("NewHandler(%v) = %v, want %q", tt.exports, err, tt.want)
		}
	}
}

// TestOverTCP serves the handler on a loopback port and talks to it with
// go-nfs-client's RPC client, as the NFS clients do.
func TestOverTCP(t *testing.T) {
	f := newFixture(t, 0)
	s := rpc.NewServer(rpc.Config{Logger: slog.New(slog.NewTextHandler(f.logs, nil))})
	f.h.Register(s)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx, ln) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	c := gonfsdial.Dial(t, ln.Addr().String())
	auth := nfsrpc.NewAuthUnix("client", 0, 0).Auth()
	type dirArgs struct {
		nfsrpc.Header
		Dirpath string
	}
	hdr := func(vers, proc uint32) nfsrpc.Header {
		return nfsrpc.Header{Rpcvers: 2, Prog: Program, Vers: vers, Proc: proc, Cred: auth, Verf: nfsrpc.AuthNull}
	}

	res, err := c.Call(&dirArgs{hdr(Version, ProcMnt), "/web"})
	if err != nil {
		t.Fatal(err)
	}
	// go-nfs-client's xdr.ReadOpaque does not skip the padding of a handle
	// that is no multiple of 4 bytes (34 on ext4), so decode with ours.
	b, err := io.ReadAll(res)
	if err != nil {
		t.Fatal(err)
	}
	r := decodeMnt(t, b)
	if r.status != OK || !bytes.Equal(r.handle, f.fs["/web"].RootBytes()) || !reflect.DeepEqual(r.flavors, []uint32{rpc.AuthSys}) {
		t.Fatalf("MNT /web = %+v, want MNT3_OK, the root handle % x, [AUTH_SYS]", r, f.fs["/web"].RootBytes())
	}
	if m := f.h.Mounts(); len(m) != 1 || m[0].Client != netip.MustParseAddr("127.0.0.1") || m[0].Path != "/web" {
		t.Errorf("Mounts() = %v after MNT", m)
	}

	// 127.0.0.1 is not in /db's networks.
	res, err = c.Call(&dirArgs{hdr(Version, ProcMnt), "/db"})
	if err != nil {
		t.Fatal(err)
	}
	if st, _ := nfsxdr.ReadUint32(res); st != uint32(ErrAcces) {
		t.Errorf("MNT /db from 127.0.0.1 = %d, want MNT3ERR_ACCES", st)
	}
	if !strings.Contains(f.logs.String(), "client=127.0.0.1 path=/db status=MNT3ERR_ACCES") {
		t.Errorf("no refusal log line:\n%s", f.logs.String())
	}

	if _, err := c.Call(&dirArgs{hdr(Version, ProcUmnt), "/web"}); err != nil {
		t.Fatal(err)
	}
	if m := f.h.Mounts(); len(m) != 0 {
		t.Errorf("Mounts() = %v after UMNT", m)
	}

	// Version 1 is not served (its handles are 32 bytes).
	_, err = c.Call(&dirArgs{hdr(1, ProcMnt), "/web"})
	if err == nil || !strings.Contains(err.Error(), "PROG_MISMATCH") {
		t.Errorf("MOUNT v1 MNT: %v, want PROG_MISMATCH", err)
	}
}
