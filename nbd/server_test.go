package nbd

import (
	"bytes"
	"context"
	"errors"
	"net"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/blockrep/blockrep/block/blocktest"
)

const testSize = 8 << 20

type fixture struct {
	srv  *Server
	addr string
	mem  *blocktest.Mem
	ro   *blocktest.Mem
}

// startServer serves a writable export "disk" (the default) and a
// read-only export "ro" on a loopback port.
func startServer(t *testing.T, inlineMax int) *fixture {
	t.Helper()
	f := &fixture{mem: blocktest.NewMem(testSize), ro: blocktest.NewMem(testSize)}
	f.srv = NewServer(Config{DefaultExport: "disk"})
	f.addr = serveTest(t, f.srv,
		&Export{Name: "disk", Description: "test disk", Device: f.mem, MinBlockSize: 512, MultiConn: true, InlineMax: inlineMax},
		&Export{Name: "ro", Device: f.ro, ReadOnly: true, InlineMax: inlineMax})
	return f
}

// serveTest adds the exports to srv, serves it on a loopback port and
// returns the address. Cleanup shuts the server down and checks that Serve
// ended as documented.
func serveTest(t *testing.T, srv *Server, exports ...*Export) string {
	t.Helper()
	for _, e := range exports {
		if err := srv.AddExport(e); err != nil {
			t.Fatal(err)
		}
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(l) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := srv.Shutdown(ctx); err != nil {
			t.Errorf("shutdown: %v", err)
		}
		if err := <-done; err != ErrServerClosed {
			t.Errorf("Serve returned %v, want ErrServerClosed", err)
		}
	})
	return l.Addr().String()
}

// Both dispatch modes must behave the same: inline in the reader and
// everything at workers.
var modes = []struct {
	name      string
	inlineMax int
}{{"inline", 128 << 10}, {"workers", 0}}

func TestHandshakeOptions(t *testing.T) {
	f := startServer(t, 128<<10)
	c := dialTest(t, f.addr)

	rs := c.opt(optList, nil)
	var names []string
	for _, r := range rs[:len(rs)-1] {
		if r.typ != repServer {
			t.Fatalf("LIST reply type %#x", r.typ)
		}
		names = append(names, string(r.data[4:4+int(be32len(r.data))]))
	}
	if got := len(names); got != 2 || names[0] != "disk" || names[1] != "ro" {
		t.Fatalf("LIST = %q", names)
	}
	if r := c.opt(optList, []byte{1}); r[0].typ != repErrInvalid {
		t.Fatalf("LIST with data: %#x", r[0].typ)
	}
	if r := c.opt(optInfo, goData("nope")); r[0].typ != repErrUnknown || !bytes.Contains(r[0].data, []byte("nope")) {
		t.Fatalf("INFO unknown export: %#x %q", r[0].typ, r[0].data)
	}
	if r := c.opt(optStartTLS, nil); r[0].typ != repErrUnsup {
		t.Fatalf("STARTTLS without certificate: %#x", r[0].typ)
	}
	if r := c.opt(99, []byte("junk")); r[0].typ != repErrUnsup {
		t.Fatalf("unknown option: %#x", r[0].typ)
	}
	if r := c.opt(optSetMetaContext, metaData("disk", metaContextAllocation)); r[0].typ != repErrInvalid {
		t.Fatalf("SET_META_CONTEXT before structured replies: %#x", r[0].typ)
	}
	if r := c.opt(optInfo, []byte{0, 0, 0, 9, 'x'}); r[0].typ != repErrInvalid {
		t.Fatalf("truncated INFO: %#x", r[0].typ)
	}
	// INFO with every info type: name, description and block sizes.
	rs = c.opt(optInfo, goData("", infoName, infoDescription, infoBlockSize))
	got := map[uint16][]byte{}
	for _, r := range rs {
		if r.typ == repInfo {
			got[be16val(r.data)] = r.data[2:]
		}
	}
	if string(got[infoName]) != "disk" || string(got[infoDescription]) != "test disk" {
		t.Fatalf("INFO name/description = %q/%q", got[infoName], got[infoDescription])
	}
	if bs := got[infoBlockSize]; len(bs) != 12 || be32len(bs) != 512 || be32len(bs[4:]) != 4096 || be32len(bs[8:]) != 32<<20 {
		t.Fatalf("INFO block size = %x", bs)
	}
	// The connection survived all of that: GO still works.
	size, flags := c.negotiateGo("disk", true)
	if size != testSize {
		t.Fatalf("size %d", size)
	}
	want := uint16(tflagHasFlags | tflagSendFlush | tflagSendFUA | tflagSendTrim | tflagSendWriteZeros | tflagSendFastZero | tflagCanMultiConn | tflagSendCache | tflagSendDF)
	if flags != want {
		t.Fatalf("transmission flags %#x, want %#x", flags, want)
	}
}

func be32len(p []byte) uint32 {
	return uint32(p[0])<<24 | uint32(p[1])<<16 | uint32(p[2])<<8 | uint32(p[3])
}
func be16val(p []byte) uint16 { return uint16(p[0])<<8 | uint16(p[1]) }

func TestExportNameOption(t *testing.T) {
	f := startServer(t, 128<<10)
	for _, noZeroes := range []bool{true, false} {
		c, err := net.Dial("tcp", f.addr)
		if err != nil {
			t.Fatal(err)
		}
		tc := &testClient{t: t, c: c}
		var greet [18]byte
		tc.readFull(greet[:])
		flags := uint32(clientFixedNewstyle)
		if noZeroes {
			flags |= clientNoZeroes
		}
		tc.write(be32(flags))
		tc.sendOpt(optExportName, []byte("ro"))
		n := 10
		if !noZeroes {
			n += 124
		}
		buf := make([]byte, n)
		tc.readFull(buf)
		if be32len(buf[4:]) != testSize || be16val(buf[8:])&tflagReadOnly == 0 {
			t.Fatalf("EXPORT_NAME reply %x", buf[:10])
		}
		if r := tc.do(cmdWrite, 0, 0, 512, make([]byte, 512)); r.errno != errPerm {
			t.Fatalf("write to read-only export: errno %d", r.errno)
		}
		c.Close()
	}
	// An unknown name has no error reply: the server closes.
	c := dialTest(t, f.addr)
	c.sendOpt(optExportName, []byte("nope"))
	var b [1]byte
	if _, err := c.c.Read(b[:]); err == nil {
		t.Fatal("connection stayed open after EXPORT_NAME of an unknown export")
	}
}

func TestReadWrite(t *testing.T) {
	for _, m := range modes {
		for _, structured := range []bool{false, true} {
			t.Run(m.name+map[bool]string{false: "/simple", true: "/structured"}[structured], func(t *testing.T) {
				f := startServer(t, m.inlineMax)
				c := dialTest(t, f.addr)
				c.negotiateGo("disk", structured, infoBlockSize)
				for _, n := range []int{512, 4096, 64 << 10, 1 << 20, 32 << 20} {
					data := bytes.Repeat([]byte{byte(n >> 9), 0xa5, byte(n)}, n/3+1)[:n]
					off := uint64(testSize - n)
					if n == 32<<20 {
						// Larger than the device: exercises the ENOSPC path
						// with a maximal payload that must be skipped.
						if r := c.do(cmdWrite, 0, 0, uint32(n), data); r.errno != errNoSpc {
							t.Fatalf("write past end: errno %d", r.errno)
						}
						continue
					}
					if r := c.do(cmdWrite, 0, off, uint32(n), data); r.errno != 0 {
						t.Fatalf("write %d: errno %d", n, r.errno)
					}
					r := c.do(cmdRead, 0, off, uint32(n), nil)
					if r.errno != 0 || !bytes.Equal(r.data, data) {
						t.Fatalf("read %d back: errno %d, equal %v", n, r.errno, bytes.Equal(r.data, data))
					}
					if !bytes.Equal(f.mem.Bytes()[off:off+uint64(n)], data) {
						t.Fatalf("device does not hold the %d bytes written", n)
					}
				}
			})
		}
	}
}

func TestRequestErrorsKeepConnection(t *testing.T) {
	for _, m := range modes {
		t.Run(m.name, func(t *testing.T) {
			f := startServer(t, m.inlineMax)
			c := dialTest(t, f.addr)
			c.negotiateGo("disk", true, infoBlockSize)
			cases := []struct {
				name    string
				cmd     uint16
				off     uint64
				length  uint32
				payload bool
				want    uint32
			}{
				{"read past end", cmdRead, testSize - 512, 1024, false, errInval},
				{"read offset overflow", cmdRead, 1<<64 - 512, 1024, false, errInval},
				{"write past end", cmdWrite, testSize, 4096, true, errNoSpc},
				{"trim past end", cmdTrim, testSize - 512, 4096, false, errInval},
				{"zero past end", cmdWriteZeroes, testSize - 512, 4096, false, errNoSpc},
				{"misaligned read", cmdRead, 100, 512, false, errInval},
				{"misaligned write", cmdWrite, 512, 100, true, errInval},
				{"read too large", cmdRead, 0, 64 << 20, false, errInval},
				{"zero-length read", cmdRead, 0, 0, false, errInval},
				{"unknown command", 42, 0, 512, false, errInval},
			}
			for _, tc := range cases {
				var payload []byte
				if tc.payload {
					payload = make([]byte, tc.length)
				}
				if r := c.do(tc.cmd, 0, tc.off, tc.length, payload); r.errno != tc.want {
					t.Errorf("%s: errno %d, want %d", tc.name, r.errno, tc.want)
				}
				// The connection still works after each error.
				if r := c.do(cmdRead, 0, 0, 512, nil); r.errno != 0 || len(r.data) != 512 {
					t.Fatalf("after %s: read failed: %v", tc.name, r)
				}
			}
			// Flags a command does not take are refused; for a WRITE the
			// payload is skipped and the stream stays in step.
			for _, tc := range []struct {
				cmd, flags uint16
			}{{cmdRead, cmdFlagNoHole}, {cmdWrite, cmdFlagFastZero}, {cmdCache, 1 << 9}, {cmdFlush, cmdFlagReqOne}, {cmdTrim, cmdFlagDF}} {
				var payload []byte
				if tc.cmd == cmdWrite {
					payload = make([]byte, 512)
				}
				if r := c.do(tc.cmd, tc.flags, 0, 512, payload); r.errno != errInval {
					t.Errorf("%s with flags %#x: errno %d, want EINVAL", cmdName(tc.cmd), tc.flags, r.errno)
				}
			}
			if r := c.do(cmdRead, cmdFlagFUA|cmdFlagDF, 0, 512, nil); r.errno != 0 {
				t.Fatalf("READ with FUA|DF: errno %d", r.errno)
			}
			// A failing device gives EIO, not a dropped connection.
			f.mem.FailNext(blocktest.OpRead, syscall.EIO, 1)
			if r := c.do(cmdRead, 0, 0, 4096, nil); r.errno != errIO {
				t.Fatalf("read with failing device: errno %d", r.errno)
			}
			f.mem.FailNext(blocktest.OpWrite, syscall.ENOSPC, 1)
			if r := c.do(cmdWrite, 0, 0, 4096, make([]byte, 4096)); r.errno != errNoSpc {
				t.Fatalf("write with full device: errno %d", r.errno)
			}
			if r := c.do(cmdRead, 0, 0, 4096, nil); r.errno != 0 {
				t.Fatalf("read after device errors: errno %d", r.errno)
			}
		})
	}
}

func TestAlignmentOnlyWhenNegotiated(t *testing.T) {
	f := startServer(t, 128<<10)
	c := dialTest(t, f.addr)
	c.negotiateGo("disk", false) // no NBD_INFO_BLOCK_SIZE request
	if r := c.do(cmdWrite, 0, 3, 5, []byte("hello")); r.errno != 0 {
		t.Fatalf("unaligned write from a client that did not ask for block sizes: errno %d", r.errno)
	}
	if got := string(f.mem.Bytes()[3:8]); got != "hello" {
		t.Fatalf("device holds %q", got)
	}
}

func TestFlushFUATrimZeroes(t *testing.T) {
	for _, m := range modes {
		t.Run(m.name, func(t *testing.T) {
			f := startServer(t, m.inlineMax)
			c := dialTest(t, f.addr)
			c.negotiateGo("disk", true, infoBlockSize)
			ones := bytes.Repeat([]byte{1}, 64<<10)
			c.do(cmdWrite, 0, 0, uint32(len(ones)), ones)
			flushes := f.mem.Flushes()
			if r := c.do(cmdFlush, 0, 0, 0, nil); r.errno != 0 || f.mem.Flushes() != flushes+1 {
				t.Fatalf("FLUSH: errno %d, device flushes %d -> %d", r.errno, flushes, f.mem.Flushes())
			}
			fua := f.mem.FUAWrites()
			if r := c.do(cmdWrite, cmdFlagFUA, 0, 4096, ones[:4096]); r.errno != 0 || f.mem.FUAWrites() != fua+1 {
				t.Fatalf("FUA write: errno %d, device FUA writes %d -> %d", r.errno, fua, f.mem.FUAWrites())
			}
			if r := c.do(cmdTrim, 0, 0, 8192, nil); r.errno != 0 {
				t.Fatalf("TRIM: errno %d", r.errno)
			}
			if r := c.do(cmdWriteZeroes, cmdFlagNoHole, 8192, 4096, nil); r.errno != 0 {
				t.Fatalf("WRITE_ZEROES: errno %d", r.errno)
			}
			flushes = f.mem.Flushes()
			if r := c.do(cmdWriteZeroes, cmdFlagFUA|cmdFlagFastZero, 12288, 4096, nil); r.errno != 0 || f.mem.Flushes() != flushes+1 {
				t.Fatalf("WRITE_ZEROES+FUA: errno %d, flushes %d -> %d", r.errno, flushes, f.mem.Flushes())
			}
			if !bytes.Equal(f.mem.Bytes()[:16384], make([]byte, 16384)) {
				t.Fatal("TRIM/WRITE_ZEROES left data behind")
			}
			if !bytes.Equal(f.mem.Bytes()[16384:65536], ones[16384:]) {
				t.Fatal("TRIM/WRITE_ZEROES touched data outside the range")
			}
			if r := c.do(cmdCache, 0, 0, 65536, nil); r.errno != 0 {
				t.Fatalf("CACHE: errno %d", r.errno)
			}
		})
	}
}

func TestBlockStatus(t *testing.T) {
	f := startServer(t, 128<<10)
	c := dialTest(t, f.addr)
	c.negotiateGo("disk", true, infoBlockSize)
	// Layout: data [0, 8K), hole [8K, 1M), data [1M, 1M+4K), hole after.
	c.do(cmdWrite, 0, 0, 8192, bytes.Repeat([]byte{7}, 8192))
	c.do(cmdWrite, 0, 1<<20, 4096, bytes.Repeat([]byte{7}, 4096))
	r := c.do(cmdBlockStatus, 0, 0, 2<<20, nil)
	want := []uint32{8192, 0, 1<<20 - 8192, stateHole | stateZero, 4096, 0, 1<<20 - 4096, stateHole | stateZero}
	if r.errno != 0 || !equalU32(r.extents, want) {
		t.Fatalf("BLOCK_STATUS = %v (errno %d), want %v", r.extents, r.errno, want)
	}
	r = c.do(cmdBlockStatus, cmdFlagReqOne, 4096, 1<<20, nil)
	if want := []uint32{4096, 0}; !equalU32(r.extents, want) {
		t.Fatalf("BLOCK_STATUS REQ_ONE = %v, want %v", r.extents, want)
	}
	// Without the context negotiated the command is invalid.
	c2 := dialTest(t, f.addr)
	c2.negotiateGo("disk", false)
	if r := c2.do(cmdBlockStatus, 0, 0, 4096, nil); r.errno != errInval {
		t.Fatalf("BLOCK_STATUS without context: errno %d", r.errno)
	}
}

func equalU32(a, b []uint32) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// TestPipelined sends many requests before reading any reply: each cookie
// must be answered exactly once, in any order, with the right data.
func TestPipelined(t *testing.T) {
	for _, m := range modes {
		t.Run(m.name, func(t *testing.T) {
			f := startServer(t, m.inlineMax)
			c := dialTest(t, f.addr)
			c.negotiateGo("disk", true, infoBlockSize)
			const n = 200
			sizes := map[uint64]int{}
			for i := 0; i < n; i++ {
				sizes[uint64(2*i+1)] = 4096 << (i % 9)
			}
			go func() {
				for i := 0; i < n; i++ {
					size := 4096 << (i % 9) // 4K .. 1M
					off := uint64(i%8) << 20
					c.send(cmdWrite, 0, uint64(2*i), off, uint32(size), bytes.Repeat([]byte{byte(i)}, size))
					c.send(cmdRead, 0, uint64(2*i+1), off, uint32(size), nil)
				}
			}()
			seen := map[uint64]bool{}
			for k := 0; k < 2*n; k++ {
				r := c.readReply(func(cookie uint64) int { return sizes[cookie] })
				if seen[r.cookie] {
					t.Fatalf("cookie %d answered twice", r.cookie)
				}
				seen[r.cookie] = true
				if r.errno != 0 {
					t.Fatalf("cookie %d: errno %d", r.cookie, r.errno)
				}
				if r.cookie%2 == 1 && len(r.data) != sizes[r.cookie] {
					t.Fatalf("cookie %d: %d bytes, want %d", r.cookie, len(r.data), sizes[r.cookie])
				}
			}
		})
	}
}

func TestBadMagicClosesConnection(t *testing.T) {
	f := startServer(t, 128<<10)
	c := dialTest(t, f.addr)
	c.negotiateGo("disk", false)
	c.write(make([]byte, requestHdrLen))
	var b [1]byte
	if _, err := c.c.Read(b[:]); err == nil {
		t.Fatal("server answered a request with a bad magic instead of closing")
	}
	// The server itself is fine.
	c2 := dialTest(t, f.addr)
	c2.negotiateGo("disk", false)
	if r := c2.do(cmdRead, 0, 0, 512, nil); r.errno != 0 {
		t.Fatalf("read on a new connection: errno %d", r.errno)
	}
}

// TestShutdownDrains sends writes and then shuts the server down: every
// write the server read is answered before the connection closes.
func TestShutdownDrains(t *testing.T) {
	f := startServer(t, 0)
	c := dialTest(t, f.addr)
	c.negotiateGo("disk", false)
	const n = 64
	for i := 0; i < n; i++ {
		c.send(cmdWrite, 0, uint64(i), uint64(i)*65536, 65536, bytes.Repeat([]byte{byte(i + 1)}, 65536))
	}
	// The first reply proves the server is reading; then shut down.
	first := c.readReply(nil)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	go f.srv.Shutdown(ctx)
	got := 1
	if first.errno != 0 {
		t.Fatalf("errno %d", first.errno)
	}
	for {
		var m [16]byte
		if _, err := ioReadFull(c.c, m[:]); err != nil {
			break
		}
		if be32len(m[4:]) != 0 {
			t.Fatalf("write failed during shutdown: errno %d", be32len(m[4:]))
		}
		got++
	}
	// Every acknowledged write is on the device.
	mem := f.mem.Bytes()
	acked := 0
	for i := 0; i < n; i++ {
		if mem[i*65536] == byte(i+1) {
			acked++
		}
	}
	if acked < got {
		t.Fatalf("%d writes acknowledged but only %d on the device", got, acked)
	}
}

// TestNoPerRequestBuffers checks that serving large requests reuses pooled
// buffers: a thousand 1 MiB writes and reads must not allocate anywhere near
// a thousand megabytes.
func TestNoPerRequestBuffers(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector makes sync.Pool drop buffers at random; allocation counts mean nothing")
	}
	for _, m := range modes {
		t.Run(m.name, func(t *testing.T) {
			f := startServer(t, m.inlineMax)
			c := dialTest(t, f.addr)
			c.negotiateGo("disk", true, infoBlockSize)
			const size, n = 1 << 20, 500
			write := cat(be32(requestMagic), be16(0), be16(cmdWrite), be64(1), be64(0), be32(size), bytes.Repeat([]byte{9}, size))
			read := cat(be32(requestMagic), be16(0), be16(cmdRead), be64(2), be64(0), be32(size))
			reply := make([]byte, size+structHdrLen+8)
			roundTrip := func() {
				c.write(write)
				c.readFull(reply[:simpleHdrLen])
				if be32len(reply[4:]) != 0 {
					t.Fatalf("write failed: errno %d", be32len(reply[4:]))
				}
				c.write(read)
				c.readFull(reply)
				if reply[len(reply)-1] != 9 {
					t.Fatal("read returned the wrong data")
				}
			}
			roundTrip() // warm the pool
			var before, after runtime.MemStats
			runtime.ReadMemStats(&before)
			for i := 0; i < n; i++ {
				roundTrip()
			}
			runtime.ReadMemStats(&after)
			perRequest := float64(after.TotalAlloc-before.TotalAlloc) / (2 * n)
			if perRequest > size/16 {
				t.Fatalf("%.0f bytes allocated per 1 MiB request: buffers are not reused", perRequest)
			}
			t.Logf("%.0f bytes allocated per 1 MiB request", perRequest)
		})
	}
}

func TestMaxConnections(t *testing.T) {
	srv := NewServer(Config{DefaultExport: "disk", MaxConnections: 1})
	addr := serveTest(t, srv, &Export{Name: "disk", Device: blocktest.NewMem(1 << 20), InlineMax: 64 << 10})

	first := dialTest(t, addr)
	first.negotiateGo("disk", false)
	// The second connection is closed before the greeting.
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	var b [1]byte
	if n, err := c.Read(b[:]); err == nil {
		t.Fatalf("second connection got %d bytes of greeting; want it closed", n)
	}
	// The first still works, and once it leaves a new client gets in.
	if r := first.do(cmdRead, 0, 0, 512, nil); r.errno != 0 {
		t.Fatalf("read on the first connection: errno %d", r.errno)
	}
	first.send(cmdDisc, 0, 0, 0, 0, nil)
	first.c.Close()
	deadline := time.Now().Add(10 * time.Second)
	open := func() int {
		srv.mu.Lock()
		defer srv.mu.Unlock()
		return len(srv.conns)
	}
	for open() > 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	again := dialTest(t, addr)
	again.negotiateGo("disk", false)
}

// gatedDevice holds every write until the gate opens, so that a test can
// have requests in flight at a moment of its choosing.
type gatedDevice struct {
	*blocktest.Mem
	gate    chan struct{}
	pending atomic.Int32
}

func (d *gatedDevice) WriteAt(p []byte, off int64, fua bool) error {
	d.pending.Add(1)
	<-d.gate
	return d.Mem.WriteAt(p, off, fua)
}

// TestShutdownAnswersInFlight shuts the server down while writes are in
// flight at the device: Shutdown waits for them, every one is answered with
// success, and only then is the connection closed.
func TestShutdownAnswersInFlight(t *testing.T) {
	dev := &gatedDevice{Mem: blocktest.NewMem(1 << 20), gate: make(chan struct{})}
	srv := NewServer(Config{DefaultExport: "disk"})
	c := dialTest(t, serveTest(t, srv, &Export{Name: "disk", Device: dev})) // InlineMax 0: writes at workers
	c.negotiateGo("disk", false)
	const n = 8
	for i := 0; i < n; i++ {
		c.send(cmdWrite, 0, uint64(i), uint64(i)*4096, 4096, bytes.Repeat([]byte{byte(i + 1)}, 4096))
	}
	for deadline := time.Now().Add(10 * time.Second); dev.pending.Load() < n; {
		if time.Now().After(deadline) {
			t.Fatalf("only %d of %d writes reached the device", dev.pending.Load(), n)
		}
		time.Sleep(5 * time.Millisecond)
	}
	done := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		done <- srv.Shutdown(ctx)
	}()
	select {
	case err := <-done:
		t.Fatalf("Shutdown returned (%v) while writes were still in flight", err)
	case <-time.After(100 * time.Millisecond):
	}
	close(dev.gate)
	if err := <-done; err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	seen := map[uint64]bool{}
	for i := 0; i < n; i++ {
		r := c.readReply(nil)
		if r.errno != 0 {
			t.Fatalf("write %d: errno %d", r.cookie, r.errno)
		}
		seen[r.cookie] = true
	}
	if len(seen) != n {
		t.Fatalf("answered %d distinct writes, want %d", len(seen), n)
	}
	var b [1]byte
	if _, err := c.c.Read(b[:]); err == nil {
		t.Fatal("connection still open after shutdown")
	}
	for i := 0; i < n; i++ {
		if got := dev.Bytes()[i*4096]; got != byte(i+1) {
			t.Fatalf("write %d not on the device", i)
		}
	}
}

// TestExportAccess checks that the Access hook decides per client: a
// refusal reaches the client as a policy error, a read-only answer makes
// that client's export read-only, and the next client is asked again.
func TestExportAccess(t *testing.T) {
	var mu sync.Mutex
	var ro bool
	var refuse error
	srv := NewServer(Config{})
	addr := serveTest(t, srv, &Export{Name: "vol", Device: blocktest.NewMem(testSize), Access: func() (bool, error) {
		mu.Lock()
		defer mu.Unlock()
		return ro, refuse
	}})
	set := func(r bool, e error) {
		mu.Lock()
		ro, refuse = r, e
		mu.Unlock()
	}

	c := dialTest(t, addr)
	if _, flags := c.negotiateGo("vol", false); flags&tflagReadOnly != 0 {
		t.Fatalf("writable export advertised read-only: %#x", flags)
	}
	if r := c.do(cmdWrite, 0, 0, 512, make([]byte, 512)); r.errno != 0 {
		t.Fatalf("write: errno %d", r.errno)
	}

	set(true, nil)
	c = dialTest(t, addr)
	if _, flags := c.negotiateGo("vol", false); flags&tflagReadOnly == 0 {
		t.Fatalf("read-only answer not advertised: %#x", flags)
	}
	if r := c.do(cmdWrite, 0, 0, 512, make([]byte, 512)); r.errno != errPerm {
		t.Fatalf("write to a read-only export: errno %d, want EPERM", r.errno)
	}

	set(false, errors.New("volume is secondary here"))
	c = dialTest(t, addr)
	rs := c.opt(optGo, goData("vol"))
	if last := rs[len(rs)-1]; last.typ != repErrPolicy || !bytes.Contains(last.data, []byte("secondary")) {
		t.Fatalf("refused export: reply %#x %q, want a policy error naming the reason", last.typ, last.data)
	}
}

// asyncDev is a block.AsyncWriter that completes writes from other
// goroutines in reverse order of arrival, one batch at a time, like a
// replicated volume whose peer acknowledges late.
type asyncDev struct {
	*blocktest.Mem
	mu      sync.Mutex
	pending []func()
	async   atomic.Int64
	unplugs atomic.Int64
}

func (d *asyncDev) WriteAtAsync(p []byte, off int64, fua bool, done func(error)) {
	d.async.Add(1)
	err := d.Mem.WriteAt(p, off, fua)
	d.mu.Lock()
	d.pending = append(d.pending, func() { done(err) })
	n := len(d.pending)
	d.mu.Unlock()
	if n == 4 {
		d.release()
	}
}

func (d *asyncDev) Unplug() { d.unplugs.Add(1) }

func (d *asyncDev) release() {
	d.mu.Lock()
	ps := d.pending
	d.pending = nil
	d.mu.Unlock()
	go func() {
		for i := len(ps) - 1; i >= 0; i-- {
			ps[i]()
		}
	}()
}

// TestAsyncWrites checks that writes to a block.AsyncWriter start from the
// reader and are answered by their completion, in whatever order it comes,
// with the right cookies.
func TestAsyncWrites(t *testing.T) {
	dev := &asyncDev{Mem: blocktest.NewMem(testSize)}
	srv := NewServer(Config{})
	addr := serveTest(t, srv, &Export{Name: "a", Device: dev, InlineMax: 32 << 20})
	c := dialTest(t, addr)
	c.negotiateGo("a", false)
	for i := range 8 {
		c.send(cmdWrite, 0, uint64(100+i), uint64(i)*4096, 4096, bytes.Repeat([]byte{byte(i + 1)}, 4096))
	}
	seen := map[uint64]bool{}
	for range 8 {
		r := c.readReply(func(uint64) int { return 0 })
		if r.errno != 0 || r.cookie < 100 || r.cookie >= 108 || seen[r.cookie] {
			t.Fatalf("reply cookie %d errno %d (seen %v)", r.cookie, r.errno, seen)
		}
		seen[r.cookie] = true
	}
	if n := dev.async.Load(); n != 8 {
		t.Fatalf("%d writes went through WriteAtAsync, want 8", n)
	}
	if dev.unplugs.Load() == 0 {
		t.Fatal("the reader never unplugged before waiting")
	}
	for i := range 8 {
		if r := c.do(cmdRead, 0, uint64(i)*4096, 4096, nil); r.errno != 0 || r.data[0] != byte(i+1) {
			t.Fatalf("read back block %d: errno %d data %d", i, r.errno, r.data[0])
		}
	}
}
