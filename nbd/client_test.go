package nbd

import (
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"testing"
	"time"
)

// testClient speaks the client side of the protocol byte by byte, so that
// tests can send what real clients never would.
type testClient struct {
	t          *testing.T
	c          net.Conn
	structured bool
}

func dialTest(t *testing.T, addr string) *testClient {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	return greet(t, c)
}

// greet reads the server's greeting on c and sends the client flags.
func greet(t *testing.T, c net.Conn) *testClient {
	t.Helper()
	t.Cleanup(func() { c.Close() })
	_ = c.SetDeadline(time.Now().Add(20 * time.Second))
	tc := &testClient{t: t, c: c}
	var greet [18]byte
	tc.readFull(greet[:])
	if binary.BigEndian.Uint64(greet[0:]) != nbdMagic || binary.BigEndian.Uint64(greet[8:]) != optMagic {
		t.Fatalf("bad greeting %x", greet)
	}
	if f := binary.BigEndian.Uint16(greet[16:]); f != flagFixedNewstyle|flagNoZeroes {
		t.Fatalf("handshake flags %#x", f)
	}
	tc.write(be32(clientFixedNewstyle | clientNoZeroes))
	return tc
}

func (c *testClient) readFull(p []byte) {
	c.t.Helper()
	if _, err := io.ReadFull(c.c, p); err != nil {
		c.t.Fatalf("read: %v", err)
	}
}

func (c *testClient) write(p []byte) {
	c.t.Helper()
	if _, err := c.c.Write(p); err != nil {
		c.t.Fatalf("write: %v", err)
	}
}

func be16(v uint16) []byte { return binary.BigEndian.AppendUint16(nil, v) }
func be32(v uint32) []byte { return binary.BigEndian.AppendUint32(nil, v) }
func be64(v uint64) []byte { return binary.BigEndian.AppendUint64(nil, v) }

func cat(parts ...[]byte) []byte {
	var out []byte
	for _, p := range parts {
		out = append(out, p...)
	}
	return out
}

// sendOpt sends an option request.
func (c *testClient) sendOpt(opt uint32, data []byte) {
	c.t.Helper()
	c.write(cat(be64(optMagic), be32(opt), be32(uint32(len(data))), data))
}

type optReply struct {
	opt, typ uint32
	data     []byte
}

func (c *testClient) readOptReply() optReply {
	c.t.Helper()
	var h [20]byte
	c.readFull(h[:])
	if m := binary.BigEndian.Uint64(h[0:]); m != optReplyMagic {
		c.t.Fatalf("option reply magic %#x", m)
	}
	r := optReply{opt: binary.BigEndian.Uint32(h[8:]), typ: binary.BigEndian.Uint32(h[12:])}
	r.data = make([]byte, binary.BigEndian.Uint32(h[16:]))
	c.readFull(r.data)
	return r
}

// opt sends an option and collects replies up to the final one.
func (c *testClient) opt(opt uint32, data []byte) []optReply {
	c.t.Helper()
	c.sendOpt(opt, data)
	var out []optReply
	for {
		r := c.readOptReply()
		if r.opt != opt {
			c.t.Fatalf("reply for option %d, want %d", r.opt, opt)
		}
		out = append(out, r)
		if r.typ == repAck || r.typ&repFlagError != 0 {
			return out
		}
	}
}

func goData(name string, infos ...uint16) []byte {
	d := cat(be32(uint32(len(name))), []byte(name), be16(uint16(len(infos))))
	for _, i := range infos {
		d = append(d, be16(i)...)
	}
	return d
}

func metaData(name string, queries ...string) []byte {
	d := cat(be32(uint32(len(name))), []byte(name), be32(uint32(len(queries))))
	for _, q := range queries {
		d = append(d, cat(be32(uint32(len(q))), []byte(q))...)
	}
	return d
}

// negotiateGo does STRUCTURED_REPLY (if asked), SET_META_CONTEXT and GO and
// returns the export size and transmission flags.
func (c *testClient) negotiateGo(name string, structured bool, infos ...uint16) (uint64, uint16) {
	c.t.Helper()
	if structured {
		if r := c.opt(optStructuredReply, nil); r[len(r)-1].typ != repAck {
			c.t.Fatalf("structured reply refused: %+v", r)
		}
		c.structured = true
		if r := c.opt(optSetMetaContext, metaData(name, metaContextAllocation)); r[len(r)-1].typ != repAck || len(r) != 2 {
			c.t.Fatalf("set meta context: %+v", r)
		}
	}
	rs := c.opt(optGo, goData(name, infos...))
	last := rs[len(rs)-1]
	if last.typ != repAck {
		c.t.Fatalf("GO refused: type %#x %q", last.typ, last.data)
	}
	for _, r := range rs {
		if r.typ == repInfo && binary.BigEndian.Uint16(r.data) == infoExport {
			return binary.BigEndian.Uint64(r.data[2:]), binary.BigEndian.Uint16(r.data[10:])
		}
	}
	c.t.Fatal("no NBD_INFO_EXPORT")
	return 0, 0
}

// send queues a request.
func (c *testClient) send(cmd, flags uint16, cookie, off uint64, length uint32, payload []byte) {
	c.t.Helper()
	c.write(cat(be32(requestMagic), be16(flags), be16(cmd), be64(cookie), be64(off), be32(length), payload))
}

// reply is one reply as the client sees it.
type reply struct {
	cookie  uint64
	errno   uint32
	data    []byte   // READ data
	extents []uint32 // BLOCK_STATUS descriptors (length, flags)...
}

// readReply reads one complete reply. readLen tells how much data a simple
// reply to a READ carries (the client must remember it per cookie).
func (c *testClient) readReply(readLen func(cookie uint64) int) reply {
	c.t.Helper()
	var m [4]byte
	c.readFull(m[:])
	switch binary.BigEndian.Uint32(m[:]) {
	case simpleMagic:
		var h [12]byte
		c.readFull(h[:])
		r := reply{errno: binary.BigEndian.Uint32(h[0:]), cookie: binary.BigEndian.Uint64(h[4:])}
		if r.errno == 0 && readLen != nil {
			if n := readLen(r.cookie); n > 0 {
				r.data = make([]byte, n)
				c.readFull(r.data)
			}
		}
		return r
	case structMagic:
		var h [16]byte
		c.readFull(h[:])
		flags := binary.BigEndian.Uint16(h[0:])
		typ := binary.BigEndian.Uint16(h[2:])
		r := reply{cookie: binary.BigEndian.Uint64(h[4:])}
		payload := make([]byte, binary.BigEndian.Uint32(h[12:]))
		c.readFull(payload)
		if flags&replyFlagDone == 0 {
			c.t.Fatalf("multi-chunk reply not expected from this server")
		}
		switch typ {
		case replyTypeOffsetData:
			r.data = payload[8:]
		case replyTypeBlockStatus:
			for i := 4; i+8 <= len(payload); i += 8 {
				r.extents = append(r.extents, binary.BigEndian.Uint32(payload[i:]), binary.BigEndian.Uint32(payload[i+4:]))
			}
		case replyTypeError:
			r.errno = binary.BigEndian.Uint32(payload)
		case replyTypeNone:
		default:
			c.t.Fatalf("unexpected chunk type %d", typ)
		}
		return r
	}
	c.t.Fatalf("bad reply magic %x", m)
	return reply{}
}

// do sends one request and waits for its reply.
func (c *testClient) do(cmd, flags uint16, off uint64, length uint32, payload []byte) reply {
	c.t.Helper()
	cookie := uint64(time.Now().UnixNano())
	c.send(cmd, flags, cookie, off, length, payload)
	r := c.readReply(func(uint64) int {
		if cmd == cmdRead {
			return int(length)
		}
		return 0
	})
	if r.cookie != cookie {
		c.t.Fatalf("reply cookie %d, want %d", r.cookie, cookie)
	}
	return r
}

func (r reply) String() string {
	return fmt.Sprintf("cookie=%d errno=%d len=%d", r.cookie, r.errno, len(r.data))
}

func ioReadFull(c net.Conn, p []byte) (int, error) { return io.ReadFull(c, p) }
