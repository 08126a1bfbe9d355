//go:build linux

package nfs3

import (
	"context"
	"errors"
	"net"
	"os"
	"testing"

	"github.com/blockrep/blockrep/internal/testfs"
	"github.com/blockrep/blockrep/nfsexport/export"
	"github.com/blockrep/blockrep/nfsexport/fh"
	"github.com/blockrep/blockrep/nfsexport/rpc"
	"github.com/blockrep/blockrep/nfsexport/xdr"
)

// FuzzProcedures feeds arbitrary arguments to every procedure (the first
// byte picks it) on a real file system: the handler must answer with a
// status or an rpc error, never panic, and never leave the export. The
// seeds are well-formed calls with the export's real handles, so that the
// mutations reach past the handle checks. (The rpc package fuzzes the
// record and header layer.)
func FuzzProcedures(f *testing.F) {
	if os.Geteuid() != 0 {
		f.Skip("needs root: loop mount and open_by_handle_at")
	}
	m := testfs.New(f, "ext4")
	os.WriteFile(m.Dir+"/file", []byte("data"), 0o644)
	os.Mkdir(m.Dir+"/dir", 0o755)
	os.Symlink("/etc/passwd", m.Dir+"/link")
	fs, err := fh.Open(m.Dir, 7)
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { fs.Close() })
	opts := &export.Options{ID: 7, Path: "/x", Networks: loopback(), Squash: export.RootSquash, AnonUID: 65534, AnonGID: 65534}
	h, err := NewHandler(Config{Exports: []Export{{FS: fs, Opts: opts}}})
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(h.Close)
	root := fs.RootBytes()
	handleOf := func(name string) []byte {
		hd, err := fs.HandleAt(fs.RootFD(), name)
		if err != nil {
			f.Fatal(err)
		}
		b, _ := hd.Encode()
		return b
	}
	file, dir, link := handleOf("file"), handleOf("dir"), handleOf("link")
	seed := func(proc uint32, args func(e *xdr.Encoder)) {
		e := xdr.NewEncoder([]byte{byte(proc)})
		args(e)
		f.Add(e.Bytes())
	}
	for proc := uint32(0); proc < 22; proc++ {
		for _, hd := range [][]byte{root, file, dir, link} {
			seed(proc, func(e *xdr.Encoder) {
				e.Opaque(hd)
				switch proc {
				case ProcRead, ProcCommit:
					e.Uint64(0)
					e.Uint32(4096)
				case ProcWrite:
					e.Uint64(0)
					e.Uint32(4)
					e.Uint32(FileSync)
					e.Opaque([]byte("abcd"))
				case ProcLookup, ProcRemove, ProcRmdir, ProcCreate, ProcMkdir:
					e.String("name")
					e.Uint32(createGuarded)
					sattrArgs(e, 0o644, 0)
				case ProcRename:
					e.String("file")
					e.Opaque(dir)
					e.String("moved")
				case ProcLink:
					e.Opaque(dir)
					e.String("hard")
				case ProcSymlink:
					e.String("s")
					sattrArgs(e, -1, -1)
					e.String("../../x")
				case ProcReaddir, ProcReaddirplus:
					e.Uint64(0)
					e.FixedOpaque(make([]byte, 8))
					e.Uint32(512)
					e.Uint32(4096)
				case ProcSetattr:
					sattrArgs(e, 0o600, 1)
					e.Bool(false)
				case ProcAccess:
					e.Uint32(0x3f)
				}
			})
		}
	}
	remote := &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 800}
	f.Fuzz(func(t *testing.T, b []byte) {
		if len(b) == 0 {
			return
		}
		call := &rpc.Call{Prog: Program, Vers: Version, Proc: uint32(b[0]) % 23,
			Cred:   rpc.Cred{Flavor: rpc.AuthSys, Sys: rpc.SysCred{UID: uint32(b[0]) * 7, GID: 100}},
			Args:   *xdr.NewDecoder(b[1:]),
			Remote: remote}
		reply := xdr.NewEncoder(nil)
		err := h.ServeRPC(context.Background(), call, reply)
		switch {
		case err == nil:
			if reply.Len() < 4 && call.Proc != ProcNull {
				t.Fatalf("proc %d answered %d bytes, no status", call.Proc, reply.Len())
			}
		case errors.Is(err, rpc.ErrGarbageArgs), errors.Is(err, rpc.ErrProcUnavail):
		default:
			t.Fatalf("proc %d: unexpected error %v", call.Proc, err)
		}
	})
}
