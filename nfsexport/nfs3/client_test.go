//go:build linux

package nfs3

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/blockrep/blockrep/internal/rpcclient"
	"github.com/blockrep/blockrep/internal/syncbuf"
	"github.com/blockrep/blockrep/internal/testfs"
	"github.com/blockrep/blockrep/nfsexport/export"
	"github.com/blockrep/blockrep/nfsexport/fh"
	"github.com/blockrep/blockrep/nfsexport/rpc"
	"github.com/blockrep/blockrep/nfsexport/xdr"
)

// server is a Handler over a fresh loop-mounted file system, served on a
// loopback port until the test ends.
type server struct {
	t    testing.TB
	dir  string // the export root on the host
	fs   *fh.FS
	h    *Handler
	addr string
	logs *syncbuf.Buffer
	root []byte
	stop func() // stops serving and closes the export (once)
}

func loopback() []netip.Prefix { return []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")} }

// newServer exports the root of a new file system of type fstype with
// opts (ID, Path and Networks filled in when zero).
func newServer(t *testing.T, fstype string, opts export.Options) *server {
	t.Helper()
	m := testfs.New(t, fstype)
	return serveDir(t, m.Dir, opts)
}

func serveDir(t testing.TB, dir string, opts export.Options) *server {
	t.Helper()
	if opts.ID == 0 {
		opts.ID = 7
	}
	if opts.Path == "" {
		opts.Path = "/export"
	}
	if opts.Networks == nil {
		opts.Networks = loopback()
	}
	if opts.AnonUID == 0 && opts.AnonGID == 0 {
		opts.AnonUID, opts.AnonGID = export.DefaultAnonID, export.DefaultAnonID
	}
	fs, err := fh.Open(dir, opts.ID)
	if err != nil {
		t.Fatal(err)
	}
	logs := &syncbuf.Buffer{}
	log := slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	h, err := NewHandler(Config{Exports: []Export{{FS: fs, Opts: &opts}}, Verifier: [8]byte{1, 2, 3, 4, 5, 6, 7, 8}, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	rs := rpc.NewServer(rpc.Config{Logger: log})
	rs.Register(Program, Version, h)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- rs.Serve(ctx, ln) }()
	srv := &server{t: t, dir: dir, fs: fs, h: h, addr: ln.Addr().String(), logs: logs, root: fs.RootBytes()}
	srv.stop = sync.OnceFunc(func() {
		cancel()
		select {
		case <-done:
		case <-time.After(20 * time.Second):
			t.Error("Serve did not return")
		}
		h.Close()
		fs.Close()
	})
	t.Cleanup(func() {
		srv.stop()
		if t.Failed() {
			t.Logf("server log:\n%s", logs.String())
		}
	})
	return srv
}

// client makes NFSv3 calls as one credential.
type client struct {
	t    testing.TB
	c    *rpcclient.Client
	cred rpcclient.Cred
}

func (s *server) client(cred rpcclient.Cred) *client {
	s.t.Helper()
	c, err := rpcclient.Dial(context.Background(), s.addr, rpcclient.Options{Cred: cred})
	if err != nil {
		s.t.Fatal(err)
	}
	s.t.Cleanup(c.Close)
	return &client{t: s.t, c: c, cred: cred}
}

// call makes a call and returns a decoder over its results, failing the
// test on an RPC-level error.
func (c *client) call(proc uint32, args func(e *xdr.Encoder)) *xdr.Decoder {
	c.t.Helper()
	d, err := c.callErr(proc, args)
	if err != nil {
		c.t.Fatalf("proc %d: %v", proc, err)
	}
	return d
}

func (c *client) callErr(proc uint32, args func(e *xdr.Encoder)) (*xdr.Decoder, error) {
	body, err := resultsOf(c.c, 0, proc, args)
	if err != nil {
		return nil, err
	}
	return xdr.NewDecoder(body), nil
}

// resultsOf makes an NFS call (with xid if not 0) and returns a copy of
// its results.
func resultsOf(c *rpcclient.Client, xid, proc uint32, args func(e *xdr.Encoder)) ([]byte, error) {
	var body []byte
	keep := func(d *xdr.Decoder) error { body = append([]byte(nil), d.Rest()...); return nil }
	var err error
	if xid != 0 {
		err = c.CallXID(context.Background(), xid, Program, Version, proc, args, nil, keep)
	} else {
		err = c.Call(context.Background(), Program, Version, proc, args, nil, keep)
	}
	return body, err
}

// attr is the part of a fattr3 the tests look at.
type attr struct {
	ftype, mode, nlink, uid, gid uint32
	size, used, fsid, fileid     uint64
	atime, mtime, ctime          unix3Time
}

type unix3Time struct{ sec, nsec uint32 }

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

func getFattr(d *xdr.Decoder) attr {
	var a attr
	a.ftype = must(d.Uint32("type"))
	a.mode = must(d.Uint32("mode"))
	a.nlink = must(d.Uint32("nlink"))
	a.uid = must(d.Uint32("uid"))
	a.gid = must(d.Uint32("gid"))
	a.size = must(d.Uint64("size"))
	a.used = must(d.Uint64("used"))
	must(d.Uint64("rdev"))
	a.fsid = must(d.Uint64("fsid"))
	a.fileid = must(d.Uint64("fileid"))
	for _, t := range []*unix3Time{&a.atime, &a.mtime, &a.ctime} {
		t.sec = must(d.Uint32("sec"))
		t.nsec = must(d.Uint32("nsec"))
	}
	return a
}

func getPostOp(d *xdr.Decoder) *attr {
	if !must(d.Bool("attributes_follow")) {
		return nil
	}
	a := getFattr(d)
	return &a
}

// getWcc decodes a wcc_data: the size before (if present) and the
// attributes after.
func getWcc(d *xdr.Decoder) (before *uint64, after *attr) {
	if must(d.Bool("before")) {
		size := must(d.Uint64("size"))
		before = &size
		must(d.Uint64("mtime"))
		must(d.Uint64("ctime"))
	}
	return before, getPostOp(d)
}

func status(d *xdr.Decoder) Status { return Status(must(d.Uint32("status"))) }

func (c *client) getattr(h []byte) (Status, attr) {
	c.t.Helper()
	d := c.call(ProcGetattr, func(e *xdr.Encoder) { e.Opaque(h) })
	if st := status(d); st != OK {
		return st, attr{}
	}
	return OK, getFattr(d)
}

func (c *client) lookup(dir []byte, name string) (Status, []byte) {
	c.t.Helper()
	d := c.call(ProcLookup, func(e *xdr.Encoder) { e.Opaque(dir); e.String(name) })
	st := status(d)
	if st != OK {
		return st, nil
	}
	return OK, must(d.Opaque("object", 64))
}

// sattrArgs encodes a sattr3 setting mode (if >= 0) and size (if >= 0).
func sattrArgs(e *xdr.Encoder, mode int64, size int64) {
	e.Bool(mode >= 0)
	if mode >= 0 {
		e.Uint32(uint32(mode))
	}
	e.Bool(false) // uid
	e.Bool(false) // gid
	e.Bool(size >= 0)
	if size >= 0 {
		e.Uint64(uint64(size))
	}
	e.Uint32(dontChange)
	e.Uint32(dontChange)
}

// created decodes a CREATE/MKDIR/SYMLINK/MKNOD result.
func createdResult(d *xdr.Decoder) (Status, []byte) {
	st := status(d)
	if st != OK {
		return st, nil
	}
	var h []byte
	if must(d.Bool("handle_follows")) {
		h = must(d.Opaque("object", 64))
	}
	return OK, h
}

func (c *client) create(dir []byte, name string, how uint32, mode int64, verf []byte) (Status, []byte) {
	c.t.Helper()
	return createdResult(c.call(ProcCreate, func(e *xdr.Encoder) {
		e.Opaque(dir)
		e.String(name)
		e.Uint32(how)
		if how == createExclusive {
			e.FixedOpaque(verf)
		} else {
			sattrArgs(e, mode, -1)
		}
	}))
}

func (c *client) mkdir(dir []byte, name string, mode int64) (Status, []byte) {
	c.t.Helper()
	return createdResult(c.call(ProcMkdir, func(e *xdr.Encoder) { e.Opaque(dir); e.String(name); sattrArgs(e, mode, -1) }))
}

func (c *client) symlink(dir []byte, name, target string) (Status, []byte) {
	c.t.Helper()
	return createdResult(c.call(ProcSymlink, func(e *xdr.Encoder) {
		e.Opaque(dir)
		e.String(name)
		sattrArgs(e, -1, -1)
		e.String(target)
	}))
}

type writeResult struct {
	status    Status
	count     uint32
	committed uint32
	verf      [8]byte
	after     *attr
}

func (c *client) write(h []byte, off uint64, data []byte, stable uint32) writeResult {
	c.t.Helper()
	d := c.call(ProcWrite, func(e *xdr.Encoder) {
		e.Opaque(h)
		e.Uint64(off)
		e.Uint32(uint32(len(data)))
		e.Uint32(stable)
		e.Opaque(data)
	})
	r := writeResult{status: status(d)}
	_, r.after = getWcc(d)
	if r.status == OK {
		r.count = must(d.Uint32("count"))
		r.committed = must(d.Uint32("committed"))
		copy(r.verf[:], must(d.FixedOpaque("verf", 8)))
	}
	return r
}

func (c *client) commit(h []byte) (Status, [8]byte) {
	c.t.Helper()
	d := c.call(ProcCommit, func(e *xdr.Encoder) { e.Opaque(h); e.Uint64(0); e.Uint32(0) })
	st := status(d)
	getWcc(d)
	var v [8]byte
	if st == OK {
		copy(v[:], must(d.FixedOpaque("verf", 8)))
	}
	return st, v
}

func (c *client) read(h []byte, off uint64, count uint32) (Status, []byte, bool) {
	c.t.Helper()
	d := c.call(ProcRead, func(e *xdr.Encoder) { e.Opaque(h); e.Uint64(off); e.Uint32(count) })
	st := status(d)
	getPostOp(d)
	if st != OK {
		return st, nil, false
	}
	n := must(d.Uint32("count"))
	eof := must(d.Bool("eof"))
	data := must(d.Opaque("data", 1<<21))
	if uint32(len(data)) != n {
		c.t.Fatalf("READ count %d, data %d bytes", n, len(data))
	}
	return OK, data, eof
}

func (c *client) setattr(h []byte, mode int64, size int64) (Status, *attr) {
	c.t.Helper()
	d := c.call(ProcSetattr, func(e *xdr.Encoder) { e.Opaque(h); sattrArgs(e, mode, size); e.Bool(false) })
	st := status(d)
	_, after := getWcc(d)
	return st, after
}

func (c *client) dirop(proc uint32, dir []byte, name string) Status {
	c.t.Helper()
	d := c.call(proc, func(e *xdr.Encoder) { e.Opaque(dir); e.String(name) })
	st := status(d)
	getWcc(d)
	return st
}

func (c *client) rename(fromDir []byte, from string, toDir []byte, to string) Status {
	c.t.Helper()
	d := c.call(ProcRename, func(e *xdr.Encoder) { e.Opaque(fromDir); e.String(from); e.Opaque(toDir); e.String(to) })
	st := status(d)
	getWcc(d)
	getWcc(d)
	return st
}

func (c *client) link(file, dir []byte, name string) (Status, *attr) {
	c.t.Helper()
	d := c.call(ProcLink, func(e *xdr.Encoder) { e.Opaque(file); e.Opaque(dir); e.String(name) })
	st := status(d)
	a := getPostOp(d)
	getWcc(d)
	return st, a
}

func (c *client) readlink(h []byte) (Status, string) {
	c.t.Helper()
	d := c.call(ProcReadlink, func(e *xdr.Encoder) { e.Opaque(h) })
	st := status(d)
	getPostOp(d)
	if st != OK {
		return st, ""
	}
	return OK, must(d.String("data", 4096))
}

func (c *client) access(h []byte, want uint32) (Status, uint32) {
	c.t.Helper()
	d := c.call(ProcAccess, func(e *xdr.Encoder) { e.Opaque(h); e.Uint32(want) })
	st := status(d)
	getPostOp(d)
	if st != OK {
		return st, 0
	}
	return OK, must(d.Uint32("access"))
}

type dirEntry struct {
	fileid uint64
	name   string
	cookie uint64
	attr   *attr
	fh     []byte
}

// readdir lists dir from cookie with count (and maxcount for plus).
func (c *client) readdir(dir []byte, cookie uint64, count uint32, plus bool) (Status, []dirEntry, bool) {
	c.t.Helper()
	proc := uint32(ProcReaddir)
	if plus {
		proc = ProcReaddirplus
	}
	d := c.call(proc, func(e *xdr.Encoder) {
		e.Opaque(dir)
		e.Uint64(cookie)
		e.FixedOpaque(make([]byte, 8))
		e.Uint32(count)
		if plus {
			e.Uint32(count * 8)
		}
	})
	st := status(d)
	getPostOp(d)
	if st != OK {
		return st, nil, false
	}
	must(d.FixedOpaque("cookieverf", 8))
	var ents []dirEntry
	for must(d.Bool("value_follows")) {
		var en dirEntry
		en.fileid = must(d.Uint64("fileid"))
		en.name = must(d.String("name", 255))
		en.cookie = must(d.Uint64("cookie"))
		if plus {
			en.attr = getPostOp(d)
			if must(d.Bool("handle_follows")) {
				en.fh = must(d.Opaque("fh", 64))
			}
		}
		ents = append(ents, en)
	}
	return OK, ents, must(d.Bool("eof"))
}

// readdirAll lists a whole directory, following cookies.
func (c *client) readdirAll(dir []byte, count uint32, plus bool) []dirEntry {
	c.t.Helper()
	var all []dirEntry
	cookie := uint64(0)
	for i := 0; ; i++ {
		st, ents, eof := c.readdir(dir, cookie, count, plus)
		if st != OK {
			c.t.Fatalf("readdir at cookie %d: %v", cookie, st)
		}
		all = append(all, ents...)
		if eof {
			return all
		}
		if len(ents) == 0 || i > 100000 {
			c.t.Fatalf("readdir made no progress at cookie %d", cookie)
		}
		cookie = ents[len(ents)-1].cookie
	}
}

func isReplyErr(err error, denied bool, stat uint32) bool {
	if denied {
		var ae *rpcclient.AuthError
		return errors.As(err, &ae) && uint32(ae.Stat) == stat
	}
	want := map[rpc.AcceptStat]error{rpc.ProcUnavail: rpcclient.ErrProcUnavail, rpc.GarbageArgs: rpcclient.ErrGarbageArgs, rpc.SystemErr: rpcclient.ErrSystemErr}[rpc.AcceptStat(stat)]
	return want != nil && errors.Is(err, want)
}

func benchServer(b *testing.B, dir string) *server {
	return serveDir(b, dir, export.Options{Squash: export.NoRootSquash})
}
