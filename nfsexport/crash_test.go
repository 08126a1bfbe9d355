//go:build linux

package nfsexport_test

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/blockrep/blockrep/internal/rpcclient"
	"github.com/blockrep/blockrep/internal/testfs"
	"github.com/blockrep/blockrep/nfsexport"
	"github.com/blockrep/blockrep/nfsexport/export"
	"github.com/blockrep/blockrep/nfsexport/nfs3"
	"github.com/blockrep/blockrep/nfsexport/xdr"
)

// serveEnv, when set in the environment, makes the test binary a server
// process (dir and the file to write its address to, separated by a
// newline) instead of running tests: the crash test kills it with SIGKILL.
const serveEnv = "BLOCKREP_TEST_NFS_SERVE"

func TestMain(m *testing.M) {
	if spec := os.Getenv(serveEnv); spec != "" {
		os.Exit(serveForTest(spec))
	}
	os.Exit(m.Run())
}

func serveForTest(spec string) int {
	dir, addrFile, _ := strings.Cut(spec, "\n")
	srv, err := nfsexport.New(nfsexport.Config{Exports: []nfsexport.ExportConfig{{Dir: dir, Options: export.Options{
		ID: 1, Path: "/export", Networks: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")},
		Squash: export.NoRootSquash, AnonUID: export.DefaultAnonID, AnonGID: export.DefaultAnonID}}}})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	if err := os.WriteFile(addrFile+".tmp", []byte(ln.Addr().String()), 0o644); err != nil || os.Rename(addrFile+".tmp", addrFile) != nil {
		fmt.Fprintln(os.Stderr, "writing the address:", err)
		return 1
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM)
	defer stop()
	if err := srv.Serve(ctx, ln); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return 0
}

// serverProcess runs the export of dir in a child process.
type serverProcess struct {
	cmd  *exec.Cmd
	addr string
}

func startServerProcess(t *testing.T, dir string) *serverProcess {
	t.Helper()
	addrFile := filepath.Join(t.TempDir(), "addr")
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), serveEnv+"="+dir+"\n"+addrFile)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &serverProcess{cmd: cmd}
	t.Cleanup(func() { p.kill() })
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		if b, err := os.ReadFile(addrFile); err == nil {
			p.addr = string(b)
			return p
		}
		if time.Now().After(deadline) {
			t.Fatalf("the server process did not start: %s", stderr.String())
		}
	}
}

func (p *serverProcess) kill() {
	if p.cmd.ProcessState == nil {
		p.cmd.Process.Kill()
		p.cmd.Wait()
	}
}

// rawNFS is an NFSv3 client making the calls go-nfs-client cannot
// (UNSTABLE writes, COMMIT).
type rawNFS struct {
	t *testing.T
	c *rpcclient.Client
}

func dialNFS(t *testing.T, addr string) *rawNFS {
	t.Helper()
	c, err := rpcclient.Dial(context.Background(), addr, rpcclient.Options{Cred: rpcclient.Root})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return &rawNFS{t: t, c: c}
}

func (r *rawNFS) call(prog, vers, proc uint32, args func(e *xdr.Encoder)) *xdr.Decoder {
	r.t.Helper()
	var body []byte
	err := r.c.Call(context.Background(), prog, vers, proc, args, nil, func(d *xdr.Decoder) error {
		body = append([]byte(nil), d.Rest()...)
		return nil
	})
	if err != nil {
		r.t.Fatalf("call %d/%d/%d: %v", prog, vers, proc, err)
	}
	return xdr.NewDecoder(body)
}

func mustU32(t *testing.T, d *xdr.Decoder, field string) uint32 {
	t.Helper()
	v, err := d.Uint32(field)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// mount asks MOUNT MNT for the export's root handle.
func (r *rawNFS) mount(path string) []byte {
	r.t.Helper()
	d := r.call(100005, 3, 1, func(e *xdr.Encoder) { e.String(path) })
	if st := mustU32(r.t, d, "status"); st != 0 {
		r.t.Fatalf("MNT %s: status %d", path, st)
	}
	fh, err := d.Opaque("fhandle", 64)
	if err != nil {
		r.t.Fatal(err)
	}
	return append([]byte(nil), fh...)
}

func (r *rawNFS) create(dir []byte, name string) []byte {
	r.t.Helper()
	d := r.call(nfs3.Program, nfs3.Version, nfs3.ProcCreate, func(e *xdr.Encoder) {
		e.Opaque(dir)
		e.String(name)
		e.Uint32(1) // GUARDED
		e.Bool(true)
		e.Uint32(0o644)
		for range 3 {
			e.Bool(false)
		}
		e.Uint32(0)
		e.Uint32(0)
	})
	if st := mustU32(r.t, d, "status"); st != 0 {
		r.t.Fatalf("CREATE %s: status %d", name, st)
	}
	if follows, _ := d.Bool("handle_follows"); !follows {
		r.t.Fatalf("CREATE %s: no handle", name)
	}
	fh, _ := d.Opaque("fh", 64)
	return append([]byte(nil), fh...)
}

// skipWcc skips a wcc_data.
func skipWcc(t *testing.T, d *xdr.Decoder) {
	t.Helper()
	if ok, _ := d.Bool("before"); ok {
		d.FixedOpaque("wcc_attr", 24)
	}
	if ok, _ := d.Bool("after"); ok {
		d.FixedOpaque("fattr", 84)
	}
}

// write sends a WRITE and returns what the server committed and its verifier.
func (r *rawNFS) write(fh []byte, off uint64, data []byte, stable uint32) (uint32, []byte) {
	r.t.Helper()
	d := r.call(nfs3.Program, nfs3.Version, nfs3.ProcWrite, func(e *xdr.Encoder) {
		e.Opaque(fh)
		e.Uint64(off)
		e.Uint32(uint32(len(data)))
		e.Uint32(stable)
		e.Opaque(data)
	})
	if st := mustU32(r.t, d, "status"); st != 0 {
		r.t.Fatalf("WRITE: status %d", st)
	}
	skipWcc(r.t, d)
	mustU32(r.t, d, "count")
	committed := mustU32(r.t, d, "committed")
	v, _ := d.FixedOpaque("verf", 8)
	return committed, append([]byte(nil), v...)
}

func (r *rawNFS) commit(fh []byte) []byte {
	r.t.Helper()
	d := r.call(nfs3.Program, nfs3.Version, nfs3.ProcCommit, func(e *xdr.Encoder) { e.Opaque(fh); e.Uint64(0); e.Uint32(0) })
	if st := mustU32(r.t, d, "status"); st != 0 {
		r.t.Fatalf("COMMIT: status %d", st)
	}
	skipWcc(r.t, d)
	v, _ := d.FixedOpaque("verf", 8)
	return append([]byte(nil), v...)
}

func (r *rawNFS) read(fh []byte) (uint32, []byte) {
	r.t.Helper()
	d := r.call(nfs3.Program, nfs3.Version, nfs3.ProcRead, func(e *xdr.Encoder) { e.Opaque(fh); e.Uint64(0); e.Uint32(1 << 20) })
	st := mustU32(r.t, d, "status")
	if st != 0 {
		return st, nil
	}
	if ok, _ := d.Bool("attrs"); ok {
		d.FixedOpaque("fattr", 84)
	}
	mustU32(r.t, d, "count")
	d.Bool("eof")
	data, _ := d.Opaque("data", 1<<20)
	return 0, append([]byte(nil), data...)
}

// TestCrashDurability: what the server answered FILE_SYNC, or covered by a
// COMMIT whose verifier matched, is on the disk when the server is killed
// with SIGKILL and the machine loses power (the image is copied after the
// kill, without a sync: what the copy holds is what reached the device).
// UNSTABLE writes are answered UNSTABLE; the verifier is the same for every
// WRITE and COMMIT of one server instance and new after a restart, and
// handles from before the kill keep working.
func TestCrashDurability(t *testing.T) {
	for _, fstype := range testfs.Types {
		t.Run(fstype, func(t *testing.T) {
			testfs.NeedRoot(t)
			img := testfs.MakeImage(t, fstype, "")
			m := testfs.MountDev(t, testfs.Attach(t, img), fstype)
			srv := startServerProcess(t, m.Dir)
			c := dialNFS(t, srv.addr)
			root := c.mount("/export")

			stable := map[string][]byte{}
			var handles [][]byte
			var verf []byte
			for i := range 8 {
				name := fmt.Sprintf("sync-%d", i)
				fh := c.create(root, name)
				data := bytes.Repeat([]byte(name+" "), 1000+i*500)
				how := uint32(nfs3.FileSync)
				if i%2 == 1 {
					how = nfs3.DataSync
				}
				committed, v := c.write(fh, 0, data, how)
				if committed < how {
					t.Fatalf("WRITE %s asked %d, committed %d", name, how, committed)
				}
				if verf == nil {
					verf = v
				} else if !bytes.Equal(v, verf) {
					t.Fatalf("verifier changed within one instance: %x then %x", verf, v)
				}
				stable[name] = data
				handles = append(handles, fh)
			}
			fh := c.create(root, "committed")
			data := bytes.Repeat([]byte("unstable then committed "), 4000)
			for off := 0; off < len(data); off += 32 << 10 {
				end := min(off+32<<10, len(data))
				committed, v := c.write(fh, uint64(off), data[off:end], nfs3.Unstable)
				if committed != nfs3.Unstable {
					t.Fatalf("UNSTABLE WRITE answered committed=%d, want UNSTABLE (0)", committed)
				}
				if !bytes.Equal(v, verf) {
					t.Fatalf("UNSTABLE WRITE verifier %x, FILE_SYNC's %x", v, verf)
				}
			}
			if v := c.commit(fh); !bytes.Equal(v, verf) {
				t.Fatalf("COMMIT verifier %x, WRITEs' %x: the client would resend", v, verf)
			}
			if v := c.commit(fh); !bytes.Equal(v, verf) {
				t.Fatalf("second COMMIT verifier %x, want %x", v, verf)
			}
			stable["committed"] = data

			srv.kill()
			powerCut := filepath.Join(t.TempDir(), "power-cut.img")
			testfs.Run(t, "cp", "--sparse=always", img, powerCut)

			// A new instance on the same file system: old handles work, the
			// verifier is new.
			srv2 := startServerProcess(t, m.Dir)
			c2 := dialNFS(t, srv2.addr)
			for i, fh := range handles {
				name := fmt.Sprintf("sync-%d", i)
				if st, got := c2.read(fh); st != 0 || !bytes.Equal(got, stable[name]) {
					t.Fatalf("after restart, READ %s by its old handle: status %d, %d bytes", name, st, len(got))
				}
			}
			if v := c2.commit(fh); bytes.Equal(v, verf) {
				t.Fatalf("the restarted server kept the verifier %x: clients would not resend unstable writes", v)
			}
			srv2.kill()

			// The power-cut copy (journal replayed at mount) holds every
			// stable write.
			cm := testfs.MountDevData(t, testfs.Attach(t, powerCut), fstype, testfs.CopyOptions[fstype])
			for name, want := range stable {
				got, err := os.ReadFile(filepath.Join(cm.Dir, name))
				if err != nil || !bytes.Equal(got, want) {
					t.Errorf("power-cut copy: %s: %v, %d bytes, want %d", name, err, len(got), len(want))
				}
			}
		})
	}
}
