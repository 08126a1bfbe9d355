//go:build linux

package nfsexport

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	gonfs "github.com/willscott/go-nfs-client/nfs"
	nfsrpc "github.com/willscott/go-nfs-client/nfs/rpc"

	"github.com/blockrep/blockrep/internal/gonfsdial"
	"github.com/blockrep/blockrep/internal/testfs"
	"github.com/blockrep/blockrep/internal/testtool"
	"github.com/blockrep/blockrep/nfsexport/export"
)

// TestRealClients drives the server with the two real clients this machine
// has, on ext4 and xfs: go-nfs-client (MOUNT, then FSINFO, MKDIR, CREATE,
// WRITE, READ, LOOKUP, GETATTR, SETATTR, ACCESS, READDIRPLUS, SYMLINK,
// READLINK, RENAME, REMOVE, RMDIR, UMNT) and libnfs's nfs-cp, nfs-cat and
// nfs-ls. (The nfs3 package's tests cover every procedure and argument
// with a raw client; these check that real clients agree with them.)
func TestRealClients(t *testing.T) {
	for _, fstype := range testfs.Types {
		t.Run(fstype, func(t *testing.T) {
			root := testfs.New(t, fstype).Dir
			s := newServer(t, Config{Exports: []ExportConfig{{Dir: root, Options: export.Options{
				ID: 1, Path: "/srv", Networks: prefixes("127.0.0.0/8"), Squash: export.NoRootSquash}}}})
			t.Run("go-nfs-client", func(t *testing.T) { goNFSClient(t, s, root) })
			t.Run("libnfs", func(t *testing.T) { libnfsTools(t, s, root) })
		})
	}
}

func goNFSClient(t *testing.T, s *testServer, root string) {
	rc := gonfsdial.Dial(t, s.addr)
	m := &gonfs.Mount{Client: rc}
	target, err := m.Mount("/srv", nfsrpc.NewAuthUnix("web1", 0, 0).Auth())
	if err != nil {
		t.Fatalf("MNT /srv: %v", err)
	}
	defer target.Close()
	if _, err := m.Mount("/nope", nfsrpc.AuthNull); err == nil || !strings.Contains(err.Error(), "NOENT") {
		t.Fatalf("MNT of an unknown path: %v, want MNT3ERR_NOENT", err)
	}
	info, err := target.FSInfo()
	if err != nil || info.RTMax != 1<<20 || info.WTMax != 1<<20 {
		t.Fatalf("FSINFO: %+v, %v", info, err)
	}
	if _, err := target.Mkdir("www", 0o755); err != nil {
		t.Fatalf("MKDIR: %v", err)
	}
	if _, err := target.Create("www/index.html", 0o644); err != nil {
		t.Fatalf("CREATE: %v", err)
	}
	page := bytes.Repeat([]byte("<p>hello</p>\n"), 20000) // 260 KB: several WRITEs
	f, err := target.OpenFile("www/index.html", 0o644)
	if err != nil {
		t.Fatalf("open for writing: %v", err)
	}
	if n, err := f.Write(page); err != nil || n != len(page) {
		t.Fatalf("WRITE: %d, %v", n, err)
	}
	if err := f.Close(); err != nil {
		t.Fatalf("close: %v", err)
	}
	if got, err := os.ReadFile(filepath.Join(root, "www/index.html")); err != nil || !bytes.Equal(got, page) {
		t.Fatalf("on the server the file holds %d bytes (%v), want %d", len(got), err, len(page))
	}
	rf, err := target.Open("www/index.html")
	if err != nil {
		t.Fatalf("open for reading: %v", err)
	}
	got := make([]byte, len(page)+10)
	n, err := rf.ReadAt(got, 0)
	if n != len(page) || !bytes.Equal(got[:n], page) {
		t.Fatalf("READ: %d bytes (%v), want %d", n, err, len(page))
	}
	rf.Close()
	fi, _, err := target.Lookup("www/index.html")
	if err != nil || fi.Size() != int64(len(page)) || fi.Mode().Perm() != 0o644 {
		t.Fatalf("LOOKUP: %v %v", fi, err)
	}
	attr, err := target.Getattr("www/index.html")
	if err != nil || attr.Filesize != uint64(len(page)) {
		t.Fatalf("GETATTR: %+v %v", attr, err)
	}
	if err := target.Setattr("www/index.html", gonfs.Sattr3{Mode: gonfs.SetMode{SetIt: true, Mode: 0o600}}); err != nil {
		t.Fatalf("SETATTR: %v", err)
	}
	if st, err := os.Stat(filepath.Join(root, "www/index.html")); err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("after SETATTR mode 0600: %v %v", st, err)
	}
	if granted, err := target.Access("www/index.html", 0x3f); err != nil || granted&0x1 == 0 {
		t.Fatalf("ACCESS: %#x %v", granted, err)
	}
	if err := target.Symlink("index.html", "www/home.html"); err != nil {
		t.Fatalf("SYMLINK: %v", err)
	}
	if target, err := os.Readlink(filepath.Join(root, "www/home.html")); err != nil || target != "index.html" {
		t.Fatalf("the symlink points to %q (%v)", target, err)
	}
	lf, err := target.Open("www/home.html")
	if err != nil {
		t.Fatalf("open the symlink: %v", err)
	}
	if dest, err := lf.Readlink(); err != nil || dest != "index.html" {
		t.Fatalf("READLINK: %q %v", dest, err)
	}
	lf.Close()
	for i := range 300 {
		if _, err := target.Create(fmt.Sprintf("www/f%03d", i), 0o644); err != nil {
			t.Fatalf("CREATE f%03d: %v", i, err)
		}
	}
	ents, err := target.ReadDirPlus("www")
	if err != nil {
		t.Fatalf("READDIRPLUS: %v", err)
	}
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	if !slices.Contains(names, "index.html") || !slices.Contains(names, "home.html") || !slices.Contains(names, "f299") || len(names) < 302 {
		t.Fatalf("READDIRPLUS listed %d names: %v...", len(names), names[:min(10, len(names))])
	}
	if err := target.Rename("www/index.html", "www/moved.html"); err != nil {
		t.Fatalf("RENAME: %v", err)
	}
	if _, err := os.Stat(filepath.Join(root, "www/moved.html")); err != nil {
		t.Fatalf("after RENAME: %v", err)
	}
	if err := target.RmDir("www"); err == nil {
		t.Fatal("RMDIR of a non-empty directory succeeded")
	}
	if err := target.RemoveAll("www"); err != nil {
		t.Fatalf("REMOVE/RMDIR of the tree: %v", err)
	}
	if _, err := os.Stat(filepath.Join(root, "www")); !os.IsNotExist(err) {
		t.Fatalf("after RemoveAll: %v", err)
	}
	if err := m.Unmount(); err != nil {
		t.Fatalf("UMNT: %v", err)
	}
}

func libnfsTools(t *testing.T, s *testServer, root string) {
	nfsCp := testtool.Need(t, "nfs-cp", "libnfs-utils")
	nfsCat := testtool.Need(t, "nfs-cat", "libnfs-utils")
	nfsLs := testtool.Need(t, "nfs-ls", "libnfs-utils")
	url := func(path string) string {
		return fmt.Sprintf("nfs://127.0.0.1/srv%s?nfsport=%d&mountport=%d", path, s.port, s.port)
	}
	run := func(prog string, args ...string) string {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), failBound)
		defer cancel()
		out, err := exec.CommandContext(ctx, prog, args...).CombinedOutput()
		if err != nil {
			t.Fatalf("%s %s: %v\n%s", filepath.Base(prog), strings.Join(args, " "), err, out)
		}
		return string(out)
	}
	local := filepath.Join(t.TempDir(), "upload.bin")
	data := make([]byte, 3<<20+123)
	for i := range data {
		data[i] = byte(i * 7)
	}
	if err := os.WriteFile(local, data, 0o644); err != nil {
		t.Fatal(err)
	}
	run(nfsCp, local, url("/upload.bin"))
	if got, err := os.ReadFile(filepath.Join(root, "upload.bin")); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("nfs-cp upload: the server holds %d bytes (%v), want %d", len(got), err, len(data))
	}
	back := filepath.Join(t.TempDir(), "download.bin")
	run(nfsCp, url("/upload.bin"), back)
	if got, err := os.ReadFile(back); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("nfs-cp download: %d bytes (%v), want %d", len(got), err, len(data))
	}
	os.WriteFile(filepath.Join(root, "hello.txt"), []byte("hello over nfs\n"), 0o644)
	if out := run(nfsCat, url("/hello.txt")); out != "hello over nfs\n" {
		t.Fatalf("nfs-cat: %q", out)
	}
	os.Mkdir(filepath.Join(root, "sub"), 0o755)
	os.WriteFile(filepath.Join(root, "sub/deep.txt"), nil, 0o644)
	out := run(nfsLs, "-R", url("/"))
	for _, want := range []string{"upload.bin", "hello.txt", "sub", "deep.txt"} {
		if !strings.Contains(out, want) {
			t.Fatalf("nfs-ls -R lacks %q:\n%s", want, out)
		}
	}
}
