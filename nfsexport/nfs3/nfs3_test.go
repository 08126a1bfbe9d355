//go:build linux

package nfs3

import (
	"bytes"
	"context"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/blockrep/blockrep/internal/rpcclient"
	"github.com/blockrep/blockrep/internal/testfs"
	"github.com/blockrep/blockrep/nfsexport/export"
	"github.com/blockrep/blockrep/nfsexport/rpc"
	"github.com/blockrep/blockrep/nfsexport/xdr"
)

func forEachFS(t *testing.T, fn func(t *testing.T, fstype string)) {
	for _, fstype := range testfs.Types {
		t.Run(fstype, func(t *testing.T) { fn(t, fstype) })
	}
}

func wantStatus(t *testing.T, what string, got, want Status) {
	t.Helper()
	if got != want {
		t.Fatalf("%s: status %d, want %d", what, got, want)
	}
}

// TestProcedures runs every procedure once as an unsquashed root client and
// checks the results against the file system underneath.
func TestProcedures(t *testing.T) {
	forEachFS(t, func(t *testing.T, fstype string) {
		s := newServer(t, fstype, export.Options{Squash: export.NoRootSquash})
		c := s.client(rpcclient.Root)

		wantStatus(t, "NULL", func() Status { c.call(ProcNull, nil); return OK }(), OK)
		st, rootAttr := c.getattr(s.root)
		wantStatus(t, "GETATTR root", st, OK)
		if rootAttr.ftype != typeDir || rootAttr.fsid != fsidOf(s.fs.UUID()) {
			t.Fatalf("root attributes %+v", rootAttr)
		}

		st, dir := c.mkdir(s.root, "dir", 0o750)
		wantStatus(t, "MKDIR", st, OK)
		if fi, err := os.Stat(filepath.Join(s.dir, "dir")); err != nil || fi.Mode().Perm() != 0o750 || !fi.IsDir() {
			t.Fatalf("mkdir made %v, %v (want a directory of mode 0750 whatever the umask)", fi, err)
		}
		st, file := c.create(dir, "f", createUnchecked, 0o640, nil)
		wantStatus(t, "CREATE", st, OK)
		if fi, _ := os.Stat(filepath.Join(s.dir, "dir/f")); fi == nil || fi.Mode().Perm() != 0o640 {
			t.Fatalf("create made %v, want mode 0640", fi)
		}

		w := c.write(file, 0, []byte("hello, world"), FileSync)
		if w.status != OK || w.count != 12 || w.committed != FileSync || w.verf != s.h.Verifier() {
			t.Fatalf("WRITE FILE_SYNC: %+v", w)
		}
		if w.after == nil || w.after.size != 12 || w.after.used == 0 {
			t.Fatalf("WRITE wcc after %+v: want size 12 and blocks used", w.after)
		}
		w = c.write(file, 12, []byte("!"), Unstable)
		if w.status != OK || w.committed != Unstable {
			t.Fatalf("WRITE UNSTABLE answered %+v, want UNSTABLE", w)
		}
		st, verf := c.commit(file)
		if st != OK || verf != w.verf {
			t.Fatalf("COMMIT: %v verifier %x, WRITE's %x", st, verf, w.verf)
		}
		st, data, eof := c.read(file, 0, 100)
		if st != OK || string(data) != "hello, world!" || !eof {
			t.Fatalf("READ: %v %q eof=%v", st, data, eof)
		}
		st, data, eof = c.read(file, 7, 5)
		if st != OK || string(data) != "world" || eof {
			t.Fatalf("READ at 7: %v %q eof=%v", st, data, eof)
		}
		st, data, eof = c.read(file, 100, 5)
		if st != OK || len(data) != 0 || !eof {
			t.Fatalf("READ past the end: %v %q eof=%v", st, data, eof)
		}

		st, got := c.lookup(dir, "f")
		wantStatus(t, "LOOKUP f", st, OK)
		if !bytes.Equal(got, file) {
			t.Fatalf("LOOKUP handle %x, CREATE's %x", got, file)
		}
		st, _ = c.lookup(dir, "missing")
		wantStatus(t, "LOOKUP missing", st, ErrNoEnt)
		st, got = c.lookup(dir, "..")
		if st != OK || !bytes.Equal(got, s.root) {
			t.Fatalf("LOOKUP dir/..: %v %x, want the root %x", st, got, s.root)
		}
		st, got = c.lookup(s.root, "..")
		if st != OK || !bytes.Equal(got, s.root) {
			t.Fatalf("LOOKUP root/..: %v %x, want the root itself", st, got)
		}
		st, got = c.lookup(dir, ".")
		if st != OK || !bytes.Equal(got, dir) {
			t.Fatalf("LOOKUP dir/.: %v", st)
		}
		st, _ = c.lookup(file, "x")
		wantStatus(t, "LOOKUP in a file", st, ErrNotDir)

		st, after := c.setattr(file, 0o600, 5)
		if st != OK || after == nil || after.mode != 0o600 || after.size != 5 {
			t.Fatalf("SETATTR mode 0600 size 5: %v %+v", st, after)
		}
		if b, _ := os.ReadFile(filepath.Join(s.dir, "dir/f")); string(b) != "hello" {
			t.Fatalf("after truncation the file holds %q", b)
		}
		st, _ = c.setattr(dir, -1, 0)
		wantStatus(t, "SETATTR size of a directory", st, ErrIsDir)

		st, link := c.symlink(dir, "l", "../../etc/passwd")
		wantStatus(t, "SYMLINK", st, OK)
		st, target := c.readlink(link)
		if st != OK || target != "../../etc/passwd" {
			t.Fatalf("READLINK: %v %q", st, target)
		}
		st, _ = c.readlink(file)
		wantStatus(t, "READLINK of a file", st, ErrInval)

		st, a := c.link(file, s.root, "hard")
		if st != OK || a == nil || a.nlink != 2 {
			t.Fatalf("LINK: %v %+v", st, a)
		}
		st, _ = c.link(dir, s.root, "dirlink")
		wantStatus(t, "LINK of a directory", st, ErrPerm)

		// Root may read and write any file but execute only one with an x
		// bit: the file's mode is 0600.
		if st, granted := c.access(file, accessRead|accessModify|accessExecute); st != OK || granted != accessRead|accessModify {
			t.Fatalf("ACCESS as root on a 0600 file: %v %#x, want read and modify", st, granted)
		}

		d := c.call(ProcMknod, func(e *xdr.Encoder) {
			e.Opaque(dir)
			e.String("fifo")
			e.Uint32(typeFifo)
			sattrArgs(e, 0o600, -1)
		})
		st, _ = createdResult(d)
		wantStatus(t, "MKNOD fifo", st, OK)
		if fi, err := os.Lstat(filepath.Join(s.dir, "dir/fifo")); err != nil || fi.Mode()&os.ModeNamedPipe == 0 {
			t.Fatalf("mknod made %v, %v", fi, err)
		}

		ents := c.readdirAll(dir, 4096, false)
		names := entryNames(ents)
		if want := []string{".", "..", "f", "fifo", "l"}; !slices.Equal(names, want) {
			t.Fatalf("READDIR: %v, want %v", names, want)
		}
		plus := c.readdirAll(dir, 4096, true)
		for _, en := range plus {
			if en.attr == nil || en.fh == nil {
				t.Fatalf("READDIRPLUS entry %q without attributes or handle", en.name)
			}
			if en.name == "l" && en.attr.ftype != typeLnk {
				t.Fatalf("READDIRPLUS followed the symlink: type %d", en.attr.ftype)
			}
			if en.name == ".." && !bytes.Equal(en.fh, s.root) {
				t.Fatalf("READDIRPLUS .. handle %x, want the root", en.fh)
			}
		}

		wantStatus(t, "RENAME", c.rename(dir, "f", s.root, "g"), OK)
		st, got = c.lookup(s.root, "g")
		if st != OK || !bytes.Equal(got, file) {
			t.Fatalf("after RENAME the file's handle %x, want %x", got, file)
		}
		wantStatus(t, "RMDIR non-empty", c.dirop(ProcRmdir, s.root, "dir"), ErrNotEmpty)
		wantStatus(t, "REMOVE a directory", c.dirop(ProcRemove, s.root, "dir"), ErrIsDir)
		wantStatus(t, "REMOVE", c.dirop(ProcRemove, dir, "l"), OK)
		wantStatus(t, "REMOVE", c.dirop(ProcRemove, dir, "fifo"), OK)
		wantStatus(t, "RMDIR", c.dirop(ProcRmdir, s.root, "dir"), OK)
		wantStatus(t, "REMOVE ..", c.dirop(ProcRemove, s.root, ".."), ErrInval)
		st, _ = c.getattr(dir)
		wantStatus(t, "GETATTR of a removed directory", st, ErrStale)
		wantStatus(t, "REMOVE g", c.dirop(ProcRemove, s.root, "g"), OK)
		st, a2 := c.getattr(file)
		if st != OK || a2.nlink != 1 {
			t.Fatalf("GETATTR of a file with one name left: %v nlink %d", st, a2.nlink)
		}
		wantStatus(t, "REMOVE hard", c.dirop(ProcRemove, s.root, "hard"), OK)
		st, _ = c.getattr(file)
		wantStatus(t, "GETATTR of a removed file", st, ErrStale)

		d = c.call(ProcFsstat, func(e *xdr.Encoder) { e.Opaque(s.root) })
		wantStatus(t, "FSSTAT", status(d), OK)
		getPostOp(d)
		var sfs unix.Statfs_t
		unix.Statfs(s.dir, &sfs)
		if tbytes := must(d.Uint64("tbytes")); tbytes != sfs.Blocks*uint64(sfs.Bsize) {
			t.Fatalf("FSSTAT tbytes %d, statfs %d", tbytes, sfs.Blocks*uint64(sfs.Bsize))
		}
		d = c.call(ProcFsinfo, func(e *xdr.Encoder) { e.Opaque(s.root) })
		wantStatus(t, "FSINFO", status(d), OK)
		getPostOp(d)
		if rtmax := must(d.Uint32("rtmax")); rtmax != MaxData {
			t.Fatalf("FSINFO rtmax %d", rtmax)
		}
		d = c.call(ProcPathconf, func(e *xdr.Encoder) { e.Opaque(s.root) })
		wantStatus(t, "PATHCONF", status(d), OK)
		getPostOp(d)
		must(d.Uint32("linkmax"))
		if nm := must(d.Uint32("name_max")); nm != 255 {
			t.Fatalf("PATHCONF name_max %d", nm)
		}

		if _, err := c.callErr(22, nil); !isReplyErr(err, false, uint32(rpc.ProcUnavail)) {
			t.Fatalf("procedure 22: %v, want PROC_UNAVAIL", err)
		}
		if _, err := c.callErr(ProcGetattr, func(e *xdr.Encoder) { e.Uint32(100) }); !isReplyErr(err, false, uint32(rpc.GarbageArgs)) {
			t.Fatalf("GETATTR with a 100-byte handle length: %v, want GARBAGE_ARGS", err)
		}
		st, _ = c.getattr([]byte{1, 2, 3})
		wantStatus(t, "GETATTR of a short handle", st, ErrBadHandle)
	})
}

func entryNames(ents []dirEntry) []string {
	var names []string
	for _, e := range ents {
		names = append(names, e.name)
	}
	slices.Sort(names)
	return names
}

// TestReaddirPages lists a directory of many entries with a count that
// needs many calls: every entry comes exactly once.
func TestReaddirPages(t *testing.T) {
	forEachFS(t, func(t *testing.T, fstype string) {
		s := newServer(t, fstype, export.Options{Squash: export.NoRootSquash})
		want := []string{".", ".."}
		for i := range 500 {
			name := fmt.Sprintf("file-with-a-longish-name-%04d", i)
			want = append(want, name)
			if err := os.WriteFile(filepath.Join(s.dir, name), nil, 0o644); err != nil {
				t.Fatal(err)
			}
		}
		os.Mkdir(filepath.Join(s.dir, "lost+found"), 0o700)
		want = append(want, "lost+found")
		slices.Sort(want)
		c := s.client(rpcclient.Root)
		for _, plus := range []bool{false, true} {
			got := entryNames(c.readdirAll(s.root, 1024, plus))
			if !slices.Equal(got, want) {
				t.Fatalf("plus=%v: %d entries, want %d (first %v)", plus, len(got), len(want), got[:min(5, len(got))])
			}
		}
		st, _, _ := c.readdir(s.root, 0, 10, false)
		wantStatus(t, "READDIR count 10", st, ErrTooSmall)
	})
}

// TestCreateModes checks EXCLUSIVE (the verifier makes a retransmission
// succeed and another client's create fail), GUARDED and UNCHECKED (which
// never truncates).
func TestCreateModes(t *testing.T) {
	forEachFS(t, func(t *testing.T, fstype string) {
		s := newServer(t, fstype, export.Options{Squash: export.NoRootSquash})
		c := s.client(rpcclient.Root)
		verf := []byte("verifier")
		st, h1 := c.create(s.root, "x", createExclusive, 0, verf)
		wantStatus(t, "CREATE EXCLUSIVE", st, OK)
		st, h2 := c.create(s.root, "x", createExclusive, 0, verf)
		if st != OK || !bytes.Equal(h1, h2) {
			t.Fatalf("retransmitted CREATE EXCLUSIVE: %v, handle %x vs %x", st, h2, h1)
		}
		st, _ = c.create(s.root, "x", createExclusive, 0, []byte("another!"))
		wantStatus(t, "CREATE EXCLUSIVE with another verifier", st, ErrExist)
		st, _ = c.create(s.root, "x", createGuarded, 0o644, nil)
		wantStatus(t, "CREATE GUARDED of an existing file", st, ErrExist)

		if w := c.write(h1, 0, []byte("keep me"), FileSync); w.status != OK {
			t.Fatalf("WRITE: %v", w.status)
		}
		st, h3 := c.create(s.root, "x", createUnchecked, 0o644, nil)
		if st != OK || !bytes.Equal(h3, h1) {
			t.Fatalf("CREATE UNCHECKED of an existing file: %v", st)
		}
		if b, _ := os.ReadFile(filepath.Join(s.dir, "x")); string(b) != "keep me" {
			t.Fatalf("UNCHECKED create truncated the file: %q", b)
		}
		// With the data written, a retransmitted EXCLUSIVE create is no
		// longer taken for the first one.
		st, _ = c.create(s.root, "x", createExclusive, 0, verf)
		wantStatus(t, "CREATE EXCLUSIVE after data", st, ErrExist)
		st, _ = c.create(s.root, ".", createUnchecked, 0o644, nil)
		wantStatus(t, "CREATE .", st, ErrExist)
		st, _ = c.create(s.root, strings.Repeat("n", 256), createUnchecked, 0o644, nil)
		wantStatus(t, "CREATE of a 256-byte name", st, ErrNameTooLong)
		st, _ = c.create(s.root, "a/b", createUnchecked, 0o644, nil)
		wantStatus(t, "CREATE a/b", st, ErrAcces)
	})
}

// TestCredentials checks that calls run as the squashed identity, with
// its supplementary groups, as knfsd's fsuid/fsgid switching does.
func TestCredentials(t *testing.T) {
	m := testfs.New(t, "ext4")
	mk := func(name string, mode os.FileMode, uid, gid int) {
		t.Helper()
		p := filepath.Join(m.Dir, name)
		if err := os.WriteFile(p, []byte("secret"), mode); err != nil {
			t.Fatal(err)
		}
		os.Chmod(p, mode)
		if err := os.Chown(p, uid, gid); err != nil {
			t.Fatal(err)
		}
	}
	mk("root-only", 0o600, 0, 0)
	mk("group-read", 0o640, 0, 1234)
	mk("owned-1000", 0o000, 1000, 1000)
	os.Chmod(m.Dir, 0o777)

	t.Run("root_squash", func(t *testing.T) {
		s := serveDir(t, m.Dir, export.Options{})
		c := s.client(rpcclient.Root)
		st, h := c.lookup(s.root, "root-only")
		wantStatus(t, "LOOKUP", st, OK)
		st, _, _ = c.read(h, 0, 10)
		wantStatus(t, "READ of a 0600 root file as squashed root", st, ErrAcces)
		st, nf := c.create(s.root, "by-root", createUnchecked, 0o644, nil)
		wantStatus(t, "CREATE", st, OK)
		_, a := c.getattr(nf)
		if a.uid != export.DefaultAnonID || a.gid != export.DefaultAnonID {
			t.Fatalf("a file created by squashed root belongs to %d:%d, want nobody", a.uid, a.gid)
		}
		if w := c.write(h, 0, []byte("x"), FileSync); w.status != ErrAcces {
			t.Fatalf("WRITE of a root file as squashed root: %v", w.status)
		}
		st, _ = c.setattr(h, 0o666, -1)
		wantStatus(t, "SETATTR mode of a root file as squashed root", st, ErrPerm)
	})
	t.Run("no_root_squash", func(t *testing.T) {
		s := serveDir(t, m.Dir, export.Options{Squash: export.NoRootSquash})
		c := s.client(rpcclient.Root)
		_, h := c.lookup(s.root, "root-only")
		st, data, _ := c.read(h, 0, 10)
		if st != OK || string(data) != "secret" {
			t.Fatalf("READ as root: %v %q", st, data)
		}
	})
	t.Run("groups", func(t *testing.T) {
		s := serveDir(t, m.Dir, export.Options{})
		_, h := s.client(rpcclient.Root).lookup(s.root, "group-read")
		member := s.client(rpcclient.User(1000, 1000, 5, 1234))
		if st, data, _ := member.read(h, 0, 10); st != OK || string(data) != "secret" {
			t.Fatalf("READ by a member of the file's group: %v %q", st, data)
		}
		other := s.client(rpcclient.User(1000, 1000, 5))
		if st, _, _ := other.read(h, 0, 10); st != ErrAcces {
			t.Fatalf("READ by a non-member: %v, want ACCES", st)
		}
		_, owned := other.lookup(s.root, "owned-1000")
		if st, data, _ := other.read(owned, 0, 10); st != OK || string(data) != "secret" {
			t.Fatalf("READ by the owner of a mode-000 file (owner override): %v %q", st, data)
		}
		if st, granted := other.access(owned, accessRead); st != OK || granted != 0 {
			t.Fatalf("ACCESS of a mode-000 file: %v %#x, want nothing granted", st, granted)
		}
	})
	t.Run("all_squash", func(t *testing.T) {
		s := serveDir(t, m.Dir, export.Options{Squash: export.AllSquash, AnonUID: 4321, AnonGID: 4321})
		c := s.client(rpcclient.User(1000, 1000))
		st, nf := c.create(s.root, "by-1000", createUnchecked, 0o644, nil)
		wantStatus(t, "CREATE", st, OK)
		if _, a := c.getattr(nf); a.uid != 4321 || a.gid != 4321 {
			t.Fatalf("all_squash: file owned by %d:%d, want 4321:4321", a.uid, a.gid)
		}
	})
	t.Run("auth_none", func(t *testing.T) {
		s := serveDir(t, m.Dir, export.Options{})
		c := s.client(rpcclient.Cred{Flavor: rpc.AuthNone})
		if _, err := c.callErr(ProcGetattr, func(e *xdr.Encoder) { e.Opaque(s.root) }); !isReplyErr(err, true, uint32(rpc.AuthTooWeak)) {
			t.Fatalf("AUTH_NONE GETATTR: %v, want AUTH_TOOWEAK", err)
		}
		s2 := serveDir(t, m.Dir, export.Options{ID: 8, AllowAuthNone: true})
		if st, _ := s2.client(rpcclient.Cred{Flavor: rpc.AuthNone}).getattr(s2.root); st != OK {
			t.Fatalf("AUTH_NONE GETATTR on an export that allows it: %v", st)
		}
	})
}

// TestPolicy checks the client networks and read-only exports.
func TestPolicy(t *testing.T) {
	m := testfs.New(t, "ext4")
	os.WriteFile(filepath.Join(m.Dir, "f"), []byte("data"), 0o644)
	far := serveDir(t, m.Dir, export.Options{Networks: []netip.Prefix{netip.MustParsePrefix("198.18.0.0/15")}})
	c := far.client(rpcclient.Root)
	for _, proc := range []uint32{ProcGetattr, ProcAccess, ProcFsinfo, ProcReaddir} {
		d := c.call(proc, func(e *xdr.Encoder) {
			e.Opaque(far.root)
			switch proc {
			case ProcAccess:
				e.Uint32(1)
			case ProcReaddir:
				e.Uint64(0)
				e.FixedOpaque(make([]byte, 8))
				e.Uint32(4096)
			}
		})
		wantStatus(t, fmt.Sprintf("proc %d from outside the networks", proc), status(d), ErrAcces)
	}
	if n := strings.Count(far.logs.String(), "client refused"); n != 1 {
		t.Fatalf("%d log lines for 4 refused calls of one client, want 1 (rate-limited):\n%s", n, far.logs.String())
	}

	ro := serveDir(t, m.Dir, export.Options{ID: 9, ReadOnly: true, Squash: export.NoRootSquash})
	c = ro.client(rpcclient.Root)
	_, h := c.lookup(ro.root, "f")
	if w := c.write(h, 0, []byte("x"), FileSync); w.status != ErrROFS {
		t.Fatalf("WRITE on a read-only export: %v", w.status)
	}
	st, _ := c.create(ro.root, "new", createUnchecked, 0o644, nil)
	wantStatus(t, "CREATE on a read-only export", st, ErrROFS)
	wantStatus(t, "REMOVE on a read-only export", c.dirop(ProcRemove, ro.root, "f"), ErrROFS)
	if st, granted := c.access(h, accessRead|accessModify); st != OK || granted != accessRead {
		t.Fatalf("ACCESS on a read-only export: %v %#x, want read only", st, granted)
	}
	if st, data, _ := c.read(h, 0, 10); st != OK || string(data) != "data" {
		t.Fatalf("READ on a read-only export: %v %q", st, data)
	}
}

// TestSymlinksNotFollowed: a symlink pointing out of the export is
// served as a link, never followed by any procedure.
func TestSymlinksNotFollowed(t *testing.T) {
	forEachFS(t, func(t *testing.T, fstype string) {
		m := testfs.New(t, fstype)
		outside := t.TempDir()
		os.WriteFile(filepath.Join(outside, "secret"), []byte("outside"), 0o644)
		os.Mkdir(filepath.Join(m.Dir, "export"), 0o755)
		os.Symlink(filepath.Join(outside, "secret"), filepath.Join(m.Dir, "export/abs"))
		os.Symlink("../../..", filepath.Join(m.Dir, "export/up"))
		os.Symlink(outside, filepath.Join(m.Dir, "export/dirlink"))
		os.WriteFile(filepath.Join(m.Dir, "above"), []byte("above the export"), 0o644)
		s := serveDir(t, filepath.Join(m.Dir, "export"), export.Options{Squash: export.NoRootSquash})
		c := s.client(rpcclient.Root)
		for _, name := range []string{"abs", "up", "dirlink"} {
			st, h := c.lookup(s.root, name)
			wantStatus(t, "LOOKUP "+name, st, OK)
			if _, a := c.getattr(h); a.ftype != typeLnk {
				t.Fatalf("GETATTR %s: type %d, want a symlink", name, a.ftype)
			}
			if st, _, _ := c.read(h, 0, 100); st != ErrInval {
				t.Fatalf("READ of symlink %s: %v, want INVAL", name, st)
			}
			if w := c.write(h, 0, []byte("x"), FileSync); w.status != ErrInval {
				t.Fatalf("WRITE of symlink %s: %v, want INVAL", name, w.status)
			}
			if st, _ := c.lookup(h, "secret"); st != ErrNotDir {
				t.Fatalf("LOOKUP in symlink %s: %v, want NOTDIR", name, st)
			}
			if st, _ := c.create(h, "new", createUnchecked, 0o644, nil); st != ErrNotDir {
				t.Fatalf("CREATE in symlink %s: %v, want NOTDIR", name, st)
			}
			if st, _, _ := c.readdir(h, 0, 4096, true); st != ErrNotDir {
				t.Fatalf("READDIRPLUS of symlink %s: %v, want NOTDIR", name, st)
			}
			if st, _ := c.setattr(h, -1, 0); st == OK {
				t.Fatalf("SETATTR size through symlink %s succeeded", name)
			}
			if st, _ := c.setattr(h, 0o777, -1); st != ErrNotSupp {
				t.Fatalf("SETATTR mode of symlink %s: %v, want NOTSUPP", name, st)
			}
			if st, _ := c.link(h, s.root, name+"-hard"); st != OK {
				t.Fatalf("LINK of symlink %s: %v", name, st)
			}
			fi, err := os.Lstat(filepath.Join(s.dir, name+"-hard"))
			if err != nil || fi.Mode()&os.ModeSymlink == 0 {
				t.Fatalf("LINK of symlink %s made %v, %v: want a link to the symlink itself", name, fi, err)
			}
		}
		if b, _ := os.ReadFile(filepath.Join(outside, "secret")); string(b) != "outside" {
			t.Fatalf("the file outside the export changed: %q", b)
		}
		if _, err := os.Stat(filepath.Join(outside, "new")); err == nil {
			t.Fatal("a file was created outside the export")
		}
		if st, _ := c.lookup(s.root, "above"); st != ErrNoEnt {
			t.Fatalf("LOOKUP of a file above the export root: %v", st)
		}
	})
}

// TestRetransmittedRemove: a REMOVE resent with the same xid after a lost
// connection is answered from the reply cache (OK), not run again (NOENT).
func TestRetransmittedRemove(t *testing.T) {
	s := newServer(t, "ext4", export.Options{Squash: export.NoRootSquash})
	os.WriteFile(filepath.Join(s.dir, "f"), nil, 0o644)
	for i := range 2 {
		c, err := rpcclient.Dial(context.Background(), s.addr, rpcclient.Options{Cred: rpcclient.Root})
		if err != nil {
			t.Fatal(err)
		}
		body, err := resultsOf(c, 77, ProcRemove, func(e *xdr.Encoder) { e.Opaque(s.root); e.String("f") })
		c.Close()
		if err != nil {
			t.Fatal(err)
		}
		if st := status(xdr.NewDecoder(body)); st != OK {
			t.Fatalf("REMOVE, transmission %d: status %d, want OK", i+1, st)
		}
	}
	if _, err := os.Stat(filepath.Join(s.dir, "f")); !os.IsNotExist(err) {
		t.Fatalf("the file is still there: %v", err)
	}
}

// TestAttributes: atime, mtime and ctime are the file's own three times,
// SETATTR sets times as the client asks, and WRITE's wcc_data carries the
// size before and the attributes after.
func TestAttributes(t *testing.T) {
	s := newServer(t, "ext4", export.Options{Squash: export.NoRootSquash})
	c := s.client(rpcclient.Root)
	p := filepath.Join(s.dir, "f")
	os.WriteFile(p, []byte("12345"), 0o640)
	atime, mtime := time.Unix(1_000_000_000, 111), time.Unix(1_200_000_000, 222)
	if err := os.Chtimes(p, atime, mtime); err != nil {
		t.Fatal(err)
	}
	_, h := c.lookup(s.root, "f")
	st, a := c.getattr(h)
	if st != OK || a.atime != (unix3Time{1_000_000_000, 111}) || a.mtime != (unix3Time{1_200_000_000, 222}) {
		t.Fatalf("GETATTR times: atime %+v mtime %+v", a.atime, a.mtime)
	}
	if a.ctime.sec < uint32(time.Now().Unix())-60 || a.mode != 0o640 || a.ftype != typeReg || a.size != 5 {
		t.Fatalf("GETATTR: ctime %+v (want the change just made), mode %o, type %d, size %d", a.ctime, a.mode, a.ftype, a.size)
	}

	d := c.call(ProcSetattr, func(e *xdr.Encoder) {
		e.Opaque(h)
		for range 4 {
			e.Bool(false) // mode, uid, gid, size
		}
		e.Uint32(setToClientTime)
		e.Uint32(1_300_000_000)
		e.Uint32(5)
		e.Uint32(setToServerTime)
		e.Bool(false) // no guard
	})
	wantStatus(t, "SETATTR times", status(d), OK)
	var fi unix.Stat_t
	unix.Stat(p, &fi)
	if fi.Atim.Sec != 1_300_000_000 || fi.Atim.Nsec != 5 || fi.Mtim.Sec < time.Now().Unix()-60 {
		t.Fatalf("after SETATTR atime=client mtime=server: atime %v mtime %v", fi.Atim, fi.Mtim)
	}

	var e xdr.Encoder
	e.Opaque(h)
	e.Uint64(5)
	e.Uint32(3)
	e.Uint32(Unstable)
	e.Opaque([]byte("678"))
	d = c.call(ProcWrite, func(enc *xdr.Encoder) { enc.FixedOpaque(e.Bytes()) })
	wantStatus(t, "WRITE", status(d), OK)
	before, after := getWcc(d)
	if before == nil || *before != 5 || after == nil || after.size != 8 {
		t.Fatalf("WRITE wcc: before %v, after %+v; want size 5 before and 8 after", before, after)
	}

	// A guarded SETATTR whose ctime is not the file's is NOT_SYNC.
	d = c.call(ProcSetattr, func(e *xdr.Encoder) {
		e.Opaque(h)
		sattrArgs(e, 0o600, -1)
		e.Bool(true)
		e.Uint32(1)
		e.Uint32(2)
	})
	wantStatus(t, "guarded SETATTR with a stale ctime", status(d), ErrNotSync)
}
