package authnet

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"

	"github.com/blockrep/blockrep/replica/wire"
)

// ErrTampered: a record of a protected connection failed its MAC: bytes
// were changed, replayed, reordered or dropped in transit. The connection
// is closed; it is wire.ErrTampered, the peer link's error.
var ErrTampered = wire.ErrTampered

// Record layer limits.
const (
	// maxRecord is the most data one record carries. Raft and HTTP write
	// through buffers of a few KiB, so most records are one Write; a
	// larger Write becomes several records in one writev.
	maxRecord = 64 << 10
	// recordHead is the record's length prefix.
	recordHead = 4
	// readBuffer is the reader's buffer: a small record costs one read
	// system call together with the ones around it.
	readBuffer = 32 << 10
)

// recordConn is the record layer of a connection with
// wire.ProtectMAC: Raft and HTTP are byte streams, so the stream is cut
// into records, each
//
//	length (4 bytes, big-endian, 1..maxRecord) | data | tag (wire.TagSize)
//
// whose tag is the session's MAC for that direction over the length (the
// head) and the data (the body), bound to the record's implicit number
// (see wire.MAC). A Write goes out as one writev of its records without
// copying the data; a Read delivers data only from records whose tag
// verified. After a failed tag, or a Write cut short, the connection is
// unusable: it is closed and every later call fails.
type recordConn struct {
	net.Conn // the authenticated TCP connection: deadlines, addresses, Close
	log      *slog.Logger

	wmu   sync.Mutex
	send  *wire.MAC
	arena []byte // the heads and tags of one Write
	segs  []recordSeg
	bufs  net.Buffers
	werr  error

	rmu   sync.Mutex
	recv  *wire.MAC
	br    *bufio.Reader
	head  [recordHead]byte
	tag   [wire.TagSize]byte
	data  []byte // the current record's data
	off   int    // how much of data Read has delivered
	rpart int    // the part of the record being read (partHead...)
	rgot  int    // how much of that part has arrived
	rerr  error
}

// recordSeg is one iovec of a Write: a piece of the arena (by position,
// since the arena may move while it grows) or of the caller's data.
type recordSeg struct {
	data   []byte
	off, n int
}

func newRecordConn(c net.Conn, peer wire.Peer, log *slog.Logger) *recordConn {
	return &recordConn{Conn: c, log: log, send: peer.Send, recv: peer.Recv, br: bufio.NewReaderSize(c, readBuffer)}
}

// Write sends p as records.
func (c *recordConn) Write(p []byte) (int, error) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if c.werr != nil {
		return 0, c.werr
	}
	c.arena, c.segs = c.arena[:0], c.segs[:0]
	for rest := p; len(rest) > 0; {
		chunk := rest[:min(len(rest), maxRecord)]
		rest = rest[len(chunk):]
		start := len(c.arena)
		c.arena = binary.BigEndian.AppendUint32(c.arena, uint32(len(chunk)))
		var err error
		if c.arena, err = c.send.Seal(c.arena, c.arena[start:start+recordHead], chunk); err != nil {
			c.werr = err
			return 0, err
		}
		c.segs = append(c.segs,
			recordSeg{off: start, n: recordHead},
			recordSeg{data: chunk},
			recordSeg{off: start + recordHead, n: wire.TagSize})
	}
	bufs := c.bufs[:0]
	for _, s := range c.segs {
		if s.data != nil {
			bufs = append(bufs, s.data)
		} else {
			bufs = append(bufs, c.arena[s.off:s.off+s.n])
		}
	}
	c.bufs = bufs
	_, err := c.bufs.WriteTo(c.Conn) // one writev; consumes c.bufs
	clear(bufs)
	c.bufs = bufs[:0]
	clear(c.segs)
	if err != nil {
		// Part of a record may be out: the stream is out of step.
		c.werr = err
		return 0, err
	}
	return len(p), nil
}

// Read delivers data of verified records. A read cut short by a deadline
// (net/http interrupts its background read with one) keeps what arrived of
// the record and resumes where it stopped; every other error is final.
func (c *recordConn) Read(p []byte) (int, error) {
	c.rmu.Lock()
	defer c.rmu.Unlock()
	if len(p) == 0 {
		return 0, nil
	}
	// Only a whole, checked record is delivered: while one is being read
	// (after a timeout), c.data holds unchecked bytes.
	for c.off == len(c.data) || c.rpart != partHead || c.rgot != 0 {
		if c.rerr != nil {
			return 0, c.rerr
		}
		if err := c.readRecord(); err != nil {
			if !isTimeout(err) {
				c.rerr = err
			}
			return 0, err
		}
	}
	n := copy(p, c.data[c.off:])
	c.off += n
	return n, nil
}

// The parts of a record, in the order readRecord reads them.
const (
	partHead = iota
	partData
	partTag
)

// readRecord reads (the rest of) the next record and checks it into
// c.data. c.rpart and c.rgot say how far it got, so that it can resume
// after a timeout.
func (c *recordConn) readRecord() error {
	fill := func(b []byte) error {
		n, err := io.ReadFull(c.br, b[c.rgot:])
		c.rgot += n
		if err != nil {
			if c.rpart == partHead && c.rgot == 0 && errors.Is(err, io.EOF) {
				return io.EOF // between records: a clean end
			}
			return unexpected(err)
		}
		c.rgot = 0
		return nil
	}
	if c.rpart == partHead {
		if c.rgot == 0 {
			c.data, c.off = c.data[:0], 0
		}
		if err := fill(c.head[:]); err != nil {
			return err
		}
		n := binary.BigEndian.Uint32(c.head[:])
		if n == 0 || n > maxRecord {
			return c.tampered(fmt.Errorf("%w: a record of %d bytes (1..%d)", ErrTampered, n, maxRecord))
		}
		if cap(c.data) < int(n) {
			c.data = make([]byte, n, max(int(n), min(2*cap(c.data), maxRecord)))
		}
		c.data = c.data[:n]
		c.rpart = partData
	}
	if c.rpart == partData {
		if err := fill(c.data); err != nil {
			return err
		}
		c.rpart = partTag
	}
	if err := fill(c.tag[:]); err != nil {
		return err
	}
	c.rpart = partHead
	if err := c.recv.Open(c.head[:], c.data, c.tag[:]); err != nil {
		c.data = c.data[:0]
		return c.tampered(fmt.Errorf("%w (record %d)", err, c.recv.Count()-1))
	}
	return nil
}

// tampered logs why the connection ends and closes it, so that the other
// end learns at once and the caller's next use fails.
func (c *recordConn) tampered(err error) error {
	c.log.Error("cluster connection tampered with: dropping it", "remote", c.RemoteAddr().String(), "err", err)
	_ = c.Conn.Close()
	return err
}

func unexpected(err error) error {
	if errors.Is(err, io.EOF) {
		return io.ErrUnexpectedEOF // inside a record
	}
	return err
}
