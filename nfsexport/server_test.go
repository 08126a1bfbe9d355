package nfsexport

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	nfsrpc "github.com/willscott/go-nfs-client/nfs/rpc"
	nfsxdr "github.com/willscott/go-nfs-client/nfs/xdr"
	"golang.org/x/sys/unix"

	"github.com/blockrep/blockrep/internal/gonfsdial"
	"github.com/blockrep/blockrep/internal/syncbuf"
	"github.com/blockrep/blockrep/internal/testfs"
	"github.com/blockrep/blockrep/internal/testtool"
	"github.com/blockrep/blockrep/nfsexport/export"
	"github.com/blockrep/blockrep/nfsexport/fh"
	"github.com/blockrep/blockrep/nfsexport/mount"
	"github.com/blockrep/blockrep/nfsexport/nfs3"
	"github.com/blockrep/blockrep/nfsexport/portmap"
	"github.com/blockrep/blockrep/nfsexport/xdr"
)

// failBound bounds the waits of these tests so that a broken server fails
// them instead of hanging; it is not a performance threshold.
const failBound = 20 * time.Second

func prefixes(s ...string) []netip.Prefix {
	out := make([]netip.Prefix, len(s))
	for i, p := range s {
		out[i] = netip.MustParsePrefix(p)
	}
	return out
}

// mkdirs creates the directories under root, with a file in each.
func mkdirs(t *testing.T, root string, dirs ...string) {
	t.Helper()
	for _, d := range dirs {
		p := filepath.Join(root, d)
		if err := os.MkdirAll(p, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(p, "hello-"+filepath.Base(p)+".txt"), []byte("hello\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// recorder collects a server's events.
type recorder struct {
	mu     sync.Mutex
	events []Event
}

func (r *recorder) add(e Event) { r.mu.Lock(); r.events = append(r.events, e); r.mu.Unlock() }

// kinds returns the events of kind, rendered without their time.
func (r *recorder) kinds(kind string) []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []string
	for _, e := range r.events {
		if e.Kind == kind {
			if e.Time.IsZero() {
				out = append(out, "NO TIME")
			}
			out = append(out, strings.TrimSpace(strings.TrimPrefix(e.String(), e.Time.UTC().Format(time.RFC3339Nano))))
		}
	}
	return out
}

// testServer is a Server serving on a loopback listener until the test ends.
type testServer struct {
	*Server
	addr   string
	port   int
	events *recorder
	logs   *syncbuf.Buffer
	done   chan error
}

func newServer(t *testing.T, cfg Config) *testServer {
	t.Helper()
	ts := &testServer{events: &recorder{}, logs: &syncbuf.Buffer{}, done: make(chan error, 1)}
	cfg.OnEvent = ts.events.add
	cfg.Logger = slog.New(slog.NewTextHandler(ts.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ts.Server = s
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ts.addr, ts.port = ln.Addr().String(), ln.Addr().(*net.TCPAddr).Port
	go func() { ts.done <- s.Serve(context.Background(), ln) }()
	t.Cleanup(func() {
		closeWithin(t, s)
		select {
		case err := <-ts.done:
			if err != nil {
				t.Errorf("Serve: %v", err)
			}
		case <-time.After(failBound):
			t.Errorf("Serve did not return after Close")
		}
	})
	return ts
}

// client is go-nfs-client's RPC client on one connection.
type client struct {
	t *testing.T
	c *nfsrpc.Client
}

func dial(t *testing.T, addr string) *client {
	t.Helper()
	return &client{t, gonfsdial.Dial(t, addr)}
}

var authSys = nfsrpc.NewAuthUnix("client", 1000, 1000).Auth()

func header(prog, vers, proc uint32) nfsrpc.Header {
	return nfsrpc.Header{Rpcvers: 2, Prog: prog, Vers: vers, Proc: proc, Cred: authSys, Verf: nfsrpc.AuthNull}
}

// call makes a call and returns its whole result (go-nfs-client's own xdr
// readers do not skip the padding of opaque data, so results are decoded
// with ours).
func (c *client) call(body any) ([]byte, error) {
	res, err := c.c.Call(body)
	if err != nil {
		return nil, err
	}
	return io.ReadAll(res)
}

type dirArgs struct {
	nfsrpc.Header
	Dirpath string
}

// mnt calls MOUNT MNT and returns the status and the handle.
func (c *client) mnt(path string) (mount.Status, []byte) {
	c.t.Helper()
	b, err := c.call(&dirArgs{header(mount.Program, mount.Version, mount.ProcMnt), path})
	if err != nil {
		c.t.Fatalf("MNT %s: %v", path, err)
	}
	d := xdr.NewDecoder(b)
	st, err := d.Uint32("status")
	if err != nil {
		c.t.Fatal(err)
	}
	if mount.Status(st) != mount.OK {
		return mount.Status(st), nil
	}
	h, err := d.Opaque("fhandle", fh.MaxSize)
	if err != nil {
		c.t.Fatal(err)
	}
	return mount.OK, append([]byte(nil), h...)
}

func (c *client) umnt(path string) {
	c.t.Helper()
	if _, err := c.call(&dirArgs{header(mount.Program, mount.Version, mount.ProcUmnt), path}); err != nil {
		c.t.Fatalf("UMNT %s: %v", path, err)
	}
}

// list calls DUMP or EXPORT and returns its items: "host dir" for DUMP,
// "dir group,group" for EXPORT.
func (c *client) list(proc uint32) []string {
	c.t.Helper()
	b, err := c.call(&struct{ nfsrpc.Header }{header(mount.Program, mount.Version, proc)})
	if err != nil {
		c.t.Fatalf("MOUNT proc %d: %v", proc, err)
	}
	d := xdr.NewDecoder(b)
	var out []string
	str := func() string {
		s, err := d.String("string", mount.MaxPath)
		if err != nil {
			c.t.Fatal(err)
		}
		return s
	}
	more := func() bool {
		ok, err := d.Optional("more")
		if err != nil {
			c.t.Fatal(err)
		}
		return ok
	}
	for more() {
		if proc == mount.ProcDump {
			out = append(out, str()+" "+str())
			continue
		}
		dir := str()
		var groups []string
		for more() {
			groups = append(groups, str())
		}
		out = append(out, dir+" "+strings.Join(groups, ","))
	}
	return out
}

// getport asks the portmapper (PMAP v2 GETPORT) for prog version 3 on TCP.
func (c *client) getport(prog uint32) int {
	c.t.Helper()
	pm := &nfsrpc.Portmapper{Client: c.c}
	port, err := pm.Getport(nfsrpc.Mapping{Prog: prog, Vers: 3, Prot: nfsrpc.IPProtoTCP})
	if err != nil {
		c.t.Fatalf("GETPORT %d: %v", prog, err)
	}
	return port
}

// getattr calls NFS GETATTR on h and returns the nfsstat3, or the RPC
// error (PROC_UNAVAIL while the procedures are not written).
func (c *client) getattr(h []byte) (nfs3.Status, error) {
	b, err := c.call(&struct {
		nfsrpc.Header
		FH []byte
	}{header(nfs3.Program, nfs3.Version, nfs3.ProcGetattr), h})
	if err != nil {
		return 0, err
	}
	st, err := nfsxdr.ReadUint32(strings.NewReader(string(b)))
	return nfs3.Status(st), err
}

func TestServer(t *testing.T) {
	root := testfs.New(t, "ext4").Dir
	mkdirs(t, root, "web", "db")
	s := newServer(t, Config{
		Exports: []ExportConfig{
			{Dir: filepath.Join(root, "web"), Options: export.Options{ID: 7, Path: "/web", Networks: prefixes("127.0.0.0/8", "fd00::/8"), AnonUID: 65534, AnonGID: 65534}},
			{Dir: filepath.Join(root, "db"), Options: export.Options{ID: 8, Path: "/db", Networks: prefixes("10.0.0.0/8"), ReadOnly: true, Squash: export.AllSquash}},
		},
		Portmap: true,
	})
	c := dial(t, s.addr)

	verf := s.Verifier()
	if verf == ([8]byte{}) {
		t.Errorf("Verifier() is all zeros")
	}
	st, h := c.mnt("/web")
	if st != mount.OK {
		t.Fatalf("MNT /web = %v", st)
	}
	// Serve reported serving before it answered the MNT.
	if got, want := s.events.kinds(KindServing), []string{fmt.Sprintf("nfs-serving detail=\"listening on %s, write verifier %x\"", s.addr, verf)}; !reflect.DeepEqual(got, want) {
		t.Errorf("serving events %q, want %q", got, want)
	}
	hd, err := fh.Decode(h)
	status := s.Status()
	if err != nil || hd.Export != 7 || hd.FS.String() != status.Exports[0].FSUUID {
		t.Errorf("MNT /web handle %+v (%v); want export 7 on file system %s", hd, err, status.Exports[0].FSUUID)
	}
	if st, _ := c.mnt("/web/"); st != mount.OK {
		t.Errorf("MNT /web/ = %v, want MNT3_OK", st)
	}
	// 127.0.0.1 is outside /db's networks; the scanner's repeats are
	// reported once.
	for range 20 {
		if st, _ := c.mnt("/db"); st != mount.ErrAcces {
			t.Fatalf("MNT /db from 127.0.0.1 = %v, want MNT3ERR_ACCES", st)
		}
		if st, _ := c.mnt("/nope"); st != mount.ErrNoEnt {
			t.Fatalf("MNT /nope = %v, want MNT3ERR_NOENT", st)
		}
	}
	if got := s.events.kinds(KindRefused); len(got) != 1 || !strings.HasPrefix(got[0], `nfs-refused export=/db client=127.0.0.1 detail="MNT3ERR_ACCES: export /db: client not in the export's networks`) {
		t.Errorf("refused events %q, want one for /db", got)
	}
	if !strings.Contains(s.logs.String(), `msg="mount: client refused" client=127.0.0.1 path=/db status=MNT3ERR_ACCES`) {
		t.Errorf("no log line of the refusal:\n%s", s.logs)
	}

	// EXPORT lists what this client may mount; DUMP its mounts.
	if got, want := c.list(mount.ProcExport), []string{"/web 127.0.0.0/8,fd00::/8"}; !reflect.DeepEqual(got, want) {
		t.Errorf("EXPORT = %q, want %q", got, want)
	}
	if got, want := c.list(mount.ProcDump), []string{"127.0.0.1 /web"}; !reflect.DeepEqual(got, want) {
		t.Errorf("DUMP = %q, want %q", got, want)
	}

	// The portmapper names the listener's port for NFS and MOUNT.
	for _, prog := range []uint32{nfs3.Program, mount.Program} {
		if got := c.getport(prog); got != s.port {
			t.Errorf("GETPORT %d = %d, want the listener's port %d", prog, got, s.port)
		}
	}
	if got := c.getport(100021); got != 0 { // NLM: not served
		t.Errorf("GETPORT NLM = %d, want 0", got)
	}

	// NFS is served on the same port (NULL; GETATTR once it is written).
	if _, err := c.call(&struct{ nfsrpc.Header }{header(nfs3.Program, nfs3.Version, nfs3.ProcNull)}); err != nil {
		t.Errorf("NFS NULL: %v", err)
	}
	nfsWorks := false
	if st, err := c.getattr(h); err == nil {
		nfsWorks = true
		if st != nfs3.OK {
			t.Errorf("GETATTR of the root handle = %d", st)
		}
	} else if !strings.Contains(err.Error(), "PROC_UNAVAIL") {
		t.Errorf("GETATTR: %v", err)
	}

	status = s.Status()
	if status.Verifier != fmt.Sprintf("%x", verf) || len(status.Exports) != 2 {
		t.Fatalf("Status() = %+v", status)
	}
	web, db := status.Exports[0], status.Exports[1]
	if web.ID != 7 || web.Path != "/web" || web.Dir != filepath.Join(root, "web") || web.ReadOnly || web.Squash != "root_squash" ||
		!reflect.DeepEqual(web.Networks, []string{"127.0.0.0/8", "fd00::/8"}) || web.AnonUID != 65534 || web.FSUUID == "" {
		t.Errorf("Status of /web: %+v", web)
	}
	if db.ID != 8 || !db.ReadOnly || db.Squash != "all_squash" || db.FSUUID != web.FSUUID || len(db.Clients) != 0 {
		t.Errorf("Status of /db: %+v", db)
	}
	if len(web.Clients) != 1 || web.Clients[0].Address != netip.MustParseAddr("127.0.0.1") || web.Clients[0].Mounted.IsZero() {
		t.Fatalf("clients of /web: %+v", web.Clients)
	}
	if cl := web.Clients[0]; nfsWorks && (cl.Calls == 0 || cl.LastSeen.IsZero()) {
		t.Errorf("after an NFS call, client %+v has no calls", cl)
	}

	c.umnt("/web")
	if got := c.list(mount.ProcDump); len(got) != 0 {
		t.Errorf("DUMP after UMNT = %q", got)
	}
	if got, want := s.events.kinds(KindMount), []string{"nfs-mount export=/web client=127.0.0.1", "nfs-mount export=/web client=127.0.0.1"}; !reflect.DeepEqual(got, want) {
		t.Errorf("mount events %q, want %q", got, want)
	}
	if got, want := s.events.kinds(KindUnmount), []string{"nfs-unmount export=/web client=127.0.0.1"}; !reflect.DeepEqual(got, want) {
		t.Errorf("unmount events %q, want %q", got, want)
	}

	// Close ends Serve; a later Serve fails at once.
	closeWithin(t, s.Server)
	select {
	case err := <-s.done:
		s.done <- err // for the cleanup
	case <-time.After(failBound):
		t.Fatal("Serve did not return after Close")
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	if err := s.Serve(context.Background(), ln); !errors.Is(err, ErrClosed) {
		t.Errorf("Serve after Close = %v, want ErrClosed", err)
	}
	if st := s.Status(); st.Exports[0].FSUUID != web.FSUUID {
		t.Errorf("Status after Close: %+v", st.Exports[0])
	}
}

// closeWithin closes s, failing the test if Close does not return (it
// waits for the Serve calls to stop).
func closeWithin(t *testing.T, s *Server) {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- s.Close() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Close: %v", err)
		}
	case <-time.After(failBound):
		t.Fatal("Close did not return: a Serve call did not stop")
	}
}

// TestTwoListeners serves the portmapper's listener and the NFS listener at
// once, as a node does with port 111 and 2049.
func TestTwoListeners(t *testing.T) {
	root := testfs.New(t, "ext4").Dir
	lns := make([]net.Listener, 2)
	for i := range lns {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		lns[i] = ln
	}
	pmap, nfs := lns[0], lns[1]
	nfsPort := nfs.Addr().(*net.TCPAddr).Port
	ev := &recorder{}
	s, err := New(Config{
		Exports: []ExportConfig{{Dir: root, Options: export.Options{ID: 1, Path: "/", Networks: prefixes("127.0.0.1/32")}}},
		Portmap: true, NFSPort: nfsPort, OnEvent: ev.add,
		Logger: slog.New(slog.DiscardHandler),
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 2)
	for _, ln := range lns {
		go func() { done <- s.Serve(ctx, ln) }()
	}

	pc := dial(t, pmap.Addr().String())
	for _, prog := range []uint32{nfs3.Program, mount.Program} {
		if got := pc.getport(prog); got != nfsPort {
			t.Errorf("GETPORT %d on the portmapper's listener = %d, want NFSPort %d", prog, got, nfsPort)
		}
	}
	// rpcbind v3 GETADDR gives the universal address of the NFS port.
	b, err := pc.call(&struct {
		nfsrpc.Header
		Prog, Vers         uint32
		Netid, Addr, Owner string
	}{Header: header(portmap.Program, 3, 3), Prog: nfs3.Program, Vers: 3, Netid: "tcp"})
	if err != nil {
		t.Fatal(err)
	}
	if got, err := xdr.NewDecoder(b).String("uaddr", 64); err != nil || got != portmap.UniversalAddr(net.IPv4(127, 0, 0, 1), uint32(nfsPort)) {
		t.Errorf("GETADDR = %q (%v), want 127.0.0.1 port %d", got, err, nfsPort)
	}
	// Both listeners serve MOUNT, and share its list.
	if st, _ := pc.mnt("/"); st != mount.OK {
		t.Errorf("MNT on the portmapper's listener = %v", st)
	}
	nc := dial(t, nfs.Addr().String())
	if st, _ := nc.mnt("/"); st != mount.OK {
		t.Errorf("MNT on the NFS listener = %v", st)
	}
	if got := nc.list(mount.ProcDump); !reflect.DeepEqual(got, []string{"127.0.0.1 /"}) {
		t.Errorf("DUMP = %q", got)
	}
	if got := ev.kinds(KindServing); len(got) != 2 {
		t.Errorf("serving events %q, want one per listener", got)
	}

	// Close stops both.
	closeWithin(t, s)
	for range lns {
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Serve: %v", err)
			}
		case <-time.After(failBound):
			t.Fatal("Serve did not return after Close")
		}
	}
	if err := s.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
}

func TestVerifierPerServer(t *testing.T) {
	root := testfs.New(t, "ext4").Dir
	cfg := Config{Exports: []ExportConfig{{Dir: root, Options: export.Options{ID: 1, Path: "/", Networks: prefixes("127.0.0.0/8")}}}}
	seen := map[[8]byte]bool{}
	for range 3 {
		s, err := New(cfg)
		if err != nil {
			t.Fatal(err)
		}
		v := s.Verifier()
		if seen[v] {
			t.Errorf("verifier %x drawn twice", v)
		}
		seen[v] = true
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
	}
}

// openFDs counts the process's open file descriptors.
func openFDs(t *testing.T) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(ents)
}

func TestNewErrors(t *testing.T) {
	root := testfs.New(t, "ext4").Dir
	mkdirs(t, root, "a", "b")
	a, b := filepath.Join(root, "a"), filepath.Join(root, "b")
	opts := func(id uint32, path string) export.Options {
		return export.Options{ID: id, Path: path, Networks: prefixes("127.0.0.0/8")}
	}
	for _, tt := range []struct {
		name    string
		exports []ExportConfig
		want    string
	}{
		{"none", nil, "nfsexport: no exports"},
		{"no networks", []ExportConfig{{Dir: a, Options: export.Options{ID: 1, Path: "/a"}}}, "nfsexport: export /a: networks: at least one"},
		{"relative path", []ExportConfig{{Dir: a, Options: export.Options{ID: 1, Path: "a", Networks: prefixes("::/0")}}}, `nfsexport: export a: path "a": must start with /`},
		{"no dir", []ExportConfig{{Options: opts(1, "/a")}}, "nfsexport: export /a: dir is required"},
		{"relative dir", []ExportConfig{{Dir: "a", Options: opts(1, "/a")}}, `nfsexport: export /a: dir "a" is not an absolute path`},
		{"same id", []ExportConfig{{Dir: a, Options: opts(1, "/a")}, {Dir: b, Options: opts(1, "/b")}}, "nfsexport: export /b: id 1 is also the id of export /a"},
		{"same path", []ExportConfig{{Dir: a, Options: opts(1, "/a")}, {Dir: b, Options: opts(2, "/a/")}}, "nfsexport: export /a/: path is also the path of another export (/a)"},
		{"missing dir", []ExportConfig{{Dir: a, Options: opts(1, "/a")}, {Dir: filepath.Join(root, "nope"), Options: opts(2, "/b")}},
			"nfsexport: export /b: dir " + filepath.Join(root, "nope") + ": "},
		{"bad port", []ExportConfig{{Dir: a, Options: opts(1, "/a")}}, "nfsexport: NFSPort 70000 is not a port number"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			cfg := Config{Exports: tt.exports}
			if tt.name == "bad port" {
				cfg.NFSPort = 70000
			}
			before := openFDs(t)
			s, err := New(cfg)
			if err == nil {
				s.Close()
				t.Fatalf("New succeeded, want %q", tt.want)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("New: %v\nwant %q", err, tt.want)
			}
			// What New opened before it failed is closed.
			if after := openFDs(t); after != before {
				t.Errorf("%d fds open after a failed New, %d before", after, before)
			}
		})
	}
}

func TestClientTable(t *testing.T) {
	t0 := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	at := func(s int) time.Time { return t0.Add(time.Duration(s) * time.Second) }
	a, b, c := netip.MustParseAddr("10.0.0.1"), netip.MustParseAddr("10.0.0.2"), netip.MustParseAddr("fd00::3")
	tb := newClientTable(3)
	tb.see(1, a, at(1))
	tb.see(1, a, at(5))
	tb.see(2, a, at(2)) // another export: its own entry
	tb.see(1, b, at(3))
	tb.see(1, c, at(6)) // full: forgets (2, a), seen least recently
	tb.see(1, b, at(7))
	got := map[string]string{}
	for _, e := range tb.list() {
		got[fmt.Sprintf("%d %s", e.export, e.client)] = fmt.Sprintf("%s..%s %d", e.first.Format("05"), e.last.Format("05"), e.calls)
	}
	want := map[string]string{"1 10.0.0.1": "06..10 2", "1 10.0.0.2": "08..12 2", "1 fd00::3": "11..11 1"}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("clients %v, want %v", got, want)
	}
}

// TestLibnfs lists exports with libnfs's nfs-ls, which mounts with MOUNT
// MNT, then (auto-traverse-mounts, its default) asks EXPORT and mounts every
// export nested below the one asked for, then talks NFS (FSINFO, GETATTR,
// READDIRPLUS). Until the NFS procedures exist it checks the MOUNT part
// and skips the listing.
func TestLibnfs(t *testing.T) {
	nfsLs := testtool.Need(t, "nfs-ls", "libnfs-utils")
	root := testfs.New(t, "ext4").Dir
	mkdirs(t, root, "web", "private")
	if err := os.WriteFile(filepath.Join(root, "top.txt"), []byte("top\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	s := newServer(t, Config{Exports: []ExportConfig{
		{Dir: root, Options: export.Options{ID: 1, Path: "/", Networks: prefixes("127.0.0.0/8")}},
		{Dir: filepath.Join(root, "web"), Options: export.Options{ID: 2, Path: "/web", Networks: prefixes("127.0.0.0/8")}},
		// Nested below "/" but not for this client: EXPORT must not list
		// it, or libnfs mounts it, is refused and fails the whole mount.
		{Dir: filepath.Join(root, "private"), Options: export.Options{ID: 3, Path: "/private", Networks: prefixes("10.0.0.0/8")}},
	}})
	ls := func(path string) (string, error) {
		ctx, cancel := context.WithTimeout(context.Background(), failBound)
		defer cancel()
		url := fmt.Sprintf("nfs://127.0.0.1%s?nfsport=%d&mountport=%d", path, s.port, s.port)
		out, err := exec.CommandContext(ctx, nfsLs, url).CombinedOutput()
		return string(out), err
	}
	out, err := ls("/")
	// The mount events, not the mount list: libnfs may UMNT when done.
	// (libnfs 4.0 mounts "/" twice: it counts an export as nested below
	// "/" when it starts with "/", itself included.)
	mounted := map[string]bool{}
	for _, e := range s.events.kinds(KindMount) {
		mounted[e] = true
	}
	got := slices.Sorted(maps.Keys(mounted))
	if want := []string{"nfs-mount export=/ client=127.0.0.1", "nfs-mount export=/web client=127.0.0.1"}; !reflect.DeepEqual(got, want) {
		t.Errorf("nfs-ls nfs://127.0.0.1/ mounted %q, want / and the nested /web (found through EXPORT), not /private\n%s", got, out)
	}
	if got := s.events.kinds(KindRefused); len(got) != 0 {
		t.Errorf("refusals %q: libnfs was told of an export it may not mount", got)
	}
	if err != nil {
		t.Fatalf("nfs-ls nfs://127.0.0.1/: %v\n%s", err, out)
	}
	for _, want := range []string{"top.txt", "web", "private"} {
		if !strings.Contains(out, want) {
			t.Errorf("nfs-ls / lacks %q:\n%s", want, out)
		}
	}
	out, err = ls("/web")
	if err != nil || !strings.Contains(out, "hello-web.txt") {
		t.Errorf("nfs-ls /web: %v\n%s", err, out)
	}
}

// TestRaiseOpenFileLimit: with CAP_SYS_RESOURCE the limit rises to
// fs.nr_open, without it to the hard limit; calling again changes nothing.
func TestRaiseOpenFileLimit(t *testing.T) {
	var before unix.Rlimit
	unix.Getrlimit(unix.RLIMIT_NOFILE, &before)
	t.Cleanup(func() { unix.Setrlimit(unix.RLIMIT_NOFILE, &before) })
	// Start below the hard limit (allowed without privileges), so that a
	// RaiseOpenFileLimit that did nothing fails.
	low := unix.Rlimit{Cur: before.Max / 2, Max: before.Max}
	if err := unix.Setrlimit(unix.RLIMIT_NOFILE, &low); err != nil {
		t.Fatal(err)
	}
	got, err := RaiseOpenFileLimit()
	if err != nil {
		t.Fatal(err)
	}
	want := before.Max
	if hasCapability(t, unix.CAP_SYS_RESOURCE) {
		b, _ := os.ReadFile("/proc/sys/fs/nr_open")
		want, _ = strconv.ParseUint(strings.TrimSpace(string(b)), 10, 64)
	}
	var now unix.Rlimit
	unix.Getrlimit(unix.RLIMIT_NOFILE, &now)
	if got != want || now.Cur != want {
		t.Fatalf("limit %d (rlimit %d/%d), want %d", got, now.Cur, now.Max, want)
	}
	if again, err := RaiseOpenFileLimit(); err != nil || again != want {
		t.Fatalf("again: %d, %v", again, err)
	}
}

// hasCapability reports whether the process has capability c in its
// effective set (/proc/self/status CapEff).
func hasCapability(t *testing.T, c int) bool {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "CapEff:"); ok {
			mask, err := strconv.ParseUint(strings.TrimSpace(v), 16, 64)
			if err != nil {
				t.Fatal(err)
			}
			return mask&(1<<c) != 0
		}
	}
	t.Fatal("no CapEff in /proc/self/status")
	return false
}
