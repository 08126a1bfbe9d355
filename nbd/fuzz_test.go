package nbd

import (
	"io"
	"net"
	"os"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/blockrep/blockrep/block/blocktest"
)

// socketPair returns two connected unix stream sockets, so that the server
// end takes the same descriptor path as accepted connections.
func socketPair(t testing.TB) (server, client *net.UnixConn) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	conns := make([]*net.UnixConn, 2)
	for i, fd := range fds {
		f := os.NewFile(uintptr(fd), "socketpair")
		c, err := net.FileConn(f)
		f.Close()
		if err != nil {
			t.Fatal(err)
		}
		conns[i] = c.(*net.UnixConn)
	}
	return conns[0], conns[1]
}

// feed plays input as the whole client side of a connection and checks that
// the server neither panics nor hangs, whatever the bytes say.
func feed(t *testing.T, input []byte) {
	srv := NewServer(Config{DefaultExport: "disk"})
	for _, e := range []*Export{
		{Name: "disk", Device: blocktest.NewMem(1 << 20), MinBlockSize: 512, InlineMax: 64 << 10},
		{Name: "ro", Device: blocktest.NewMem(1 << 20), ReadOnly: true},
	} {
		if err := srv.AddExport(e); err != nil {
			t.Fatal(err)
		}
	}
	sc, cc := socketPair(t)
	defer cc.Close()
	done := make(chan struct{})
	go func() {
		srv.ServeConn(sc)
		close(done)
	}()
	drained := make(chan struct{})
	go func() {
		_, _ = io.Copy(io.Discard, cc)
		close(drained)
	}()
	_, _ = cc.Write(input)
	_ = cc.CloseWrite()
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		t.Fatalf("server still busy 20s after the input ended (input %x)", input)
	}
	<-drained
}

// transmissionPrefix negotiates structured replies, base:allocation and the
// export "disk" with block sizes, so that the fuzzed bytes are requests.
func transmissionPrefix() []byte {
	opt := func(o uint32, d []byte) []byte { return cat(be64(optMagic), be32(o), be32(uint32(len(d))), d) }
	return cat(
		be32(clientFixedNewstyle|clientNoZeroes),
		opt(optStructuredReply, nil),
		opt(optSetMetaContext, metaData("disk", metaContextAllocation)),
		opt(optGo, goData("disk", infoBlockSize)),
	)
}

func req(cmd, flags uint16, off uint64, length uint32) []byte {
	return cat(be32(requestMagic), be16(flags), be16(cmd), be64(7), be64(off), be32(length))
}

func FuzzHandshake(f *testing.F) {
	f.Add(transmissionPrefix())
	f.Add(cat(be32(clientFixedNewstyle), be64(optMagic), be32(optList), be32(0)))
	f.Add(cat(be32(clientFixedNewstyle), be64(optMagic), be32(optInfo), be32(6), be32(0), be16(0)))
	f.Add(cat(be32(clientFixedNewstyle), be64(optMagic), be32(optExportName), be32(4), []byte("disk")))
	f.Add(cat(be32(3), be64(optMagic), be32(optListMetaContext), be32(1<<20)))
	f.Fuzz(func(t *testing.T, input []byte) { feed(t, input) })
}

func FuzzRequests(f *testing.F) {
	f.Add(cat(req(cmdWrite, cmdFlagFUA, 0, 512), make([]byte, 512), req(cmdRead, 0, 0, 512)))
	f.Add(cat(req(cmdBlockStatus, cmdFlagReqOne, 0, 1<<20), req(cmdTrim, 0, 4096, 8192), req(cmdFlush, 0, 0, 0)))
	f.Add(cat(req(cmdWrite, 0, 1<<20, 1<<30), make([]byte, 100)))
	f.Add(cat(req(cmdWriteZeroes, cmdFlagFastZero|cmdFlagNoHole, 512, 512), req(cmdDisc, 0, 0, 0)))
	f.Add(cat(req(cmdRead, 0, 1<<63, 1<<31), req(99, 0xffff, 0, 0)))
	prefix := transmissionPrefix()
	f.Fuzz(func(t *testing.T, input []byte) { feed(t, cat(prefix, input)) })
}
