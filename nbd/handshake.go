package nbd

import (
	"context"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
)

// errAbort ends the handshake without error: the client sent NBD_OPT_ABORT
// or closed the connection.
var errAbort = errors.New("nbd: client ended the handshake")

// negotiation is what the option phase settled on.
type negotiation struct {
	conn       net.Conn // the stream: raw socket or TLS session
	tls        bool
	export     *Export
	structured bool
	metaAlloc  bool
	// metaExport is the export SET_META_CONTEXT named; the selection only
	// applies to that export.
	metaExport string
	// blockSizes is set when the client asked for NBD_INFO_BLOCK_SIZE and
	// so promised to honour the advertised constraints.
	blockSizes bool
}

// negotiate runs the fixed-newstyle handshake on raw. It returns the export
// the client chose with NBD_OPT_GO or NBD_OPT_EXPORT_NAME.
func (s *Server) negotiate(ctx context.Context, raw net.Conn) (*negotiation, error) {
	n := &negotiation{conn: raw}
	var greet [18]byte
	binary.BigEndian.PutUint64(greet[0:], nbdMagic)
	binary.BigEndian.PutUint64(greet[8:], optMagic)
	binary.BigEndian.PutUint16(greet[16:], flagFixedNewstyle|flagNoZeroes)
	if _, err := raw.Write(greet[:]); err != nil {
		return nil, err
	}
	var cf [4]byte
	if _, err := io.ReadFull(raw, cf[:]); err != nil {
		return nil, err
	}
	clientFlags := binary.BigEndian.Uint32(cf[:])
	if clientFlags&^(clientFixedNewstyle|clientNoZeroes) != 0 {
		return nil, fmt.Errorf("nbd: unknown client flags %#x", clientFlags)
	}
	if clientFlags&clientFixedNewstyle == 0 {
		return nil, errors.New("nbd: client does not speak fixed newstyle")
	}
	noZeroes := clientFlags&clientNoZeroes != 0

	var hdr [16]byte
	for {
		if _, err := io.ReadFull(n.conn, hdr[:]); err != nil {
			if err == io.EOF {
				return nil, errAbort
			}
			return nil, err
		}
		if binary.BigEndian.Uint64(hdr[0:]) != optMagic {
			return nil, errors.New("nbd: bad option magic")
		}
		opt := binary.BigEndian.Uint32(hdr[8:])
		length := binary.BigEndian.Uint32(hdr[12:])
		if length > maxOptionLen {
			if length > 1<<20 {
				return nil, fmt.Errorf("nbd: option %d too long (%d bytes)", opt, length)
			}
			if _, err := io.CopyN(io.Discard, n.conn, int64(length)); err != nil {
				return nil, err
			}
			if err := n.replyErr(opt, repErrTooBig, "option too long"); err != nil {
				return nil, err
			}
			continue
		}
		data := make([]byte, length)
		if _, err := io.ReadFull(n.conn, data); err != nil {
			return nil, err
		}
		if s.isClosing() {
			_ = n.replyErr(opt, repErrShutdown, "server is shutting down")
			return nil, errAbort
		}
		done, err := s.option(ctx, n, raw, opt, data, noZeroes)
		if err != nil || done {
			return n, err
		}
	}
}

// option handles one option; done reports that transmission begins.
func (s *Server) option(ctx context.Context, n *negotiation, raw net.Conn, opt uint32, data []byte, noZeroes bool) (done bool, err error) {
	switch opt {
	case optExportName:
		e, ok, refused := s.resolve(string(data))
		if !ok || refused != nil || (e.RequireTLS && !n.tls) {
			// This option has no error reply: the spec says to close.
			return false, fmt.Errorf("nbd: NBD_OPT_EXPORT_NAME %q refused", data)
		}
		n.export = e
		n.metaAlloc = n.metaAlloc && n.metaExport == e.Name
		buf := make([]byte, 10, 10+124)
		binary.BigEndian.PutUint64(buf[0:], uint64(e.Device.Size()))
		binary.BigEndian.PutUint16(buf[8:], transmissionFlags(e, n.structured))
		if !noZeroes {
			buf = buf[:10+124]
		}
		_, err := n.conn.Write(buf)
		return err == nil, err

	case optAbort:
		_ = n.reply(opt, repAck, nil)
		return false, errAbort

	case optList:
		if len(data) != 0 {
			return false, n.replyErr(opt, repErrInvalid, "NBD_OPT_LIST takes no data")
		}
		listed := 0
		for _, e := range s.exportList() {
			if e.RequireTLS && !n.tls {
				continue
			}
			p := make([]byte, 4, 4+len(e.Name)+len(e.Description))
			binary.BigEndian.PutUint32(p, uint32(len(e.Name)))
			p = append(append(p, e.Name...), e.Description...)
			if err := n.reply(opt, repServer, p); err != nil {
				return false, err
			}
			listed++
		}
		if listed == 0 && !n.tls && s.cfg.TLS != nil {
			return false, n.replyErr(opt, repErrTLSReqd, "exports are available only over TLS")
		}
		return false, n.reply(opt, repAck, nil)

	case optStartTLS:
		switch {
		case len(data) != 0:
			return false, n.replyErr(opt, repErrInvalid, "NBD_OPT_STARTTLS takes no data")
		case n.tls:
			return false, n.replyErr(opt, repErrInvalid, "TLS is already active")
		case s.cfg.TLS == nil:
			return false, n.replyErr(opt, repErrUnsup, "this server has no TLS certificate")
		}
		if err := n.reply(opt, repAck, nil); err != nil {
			return false, err
		}
		tc := tls.Server(raw, s.cfg.TLS)
		hctx, cancel := context.WithTimeout(ctx, s.cfg.HandshakeTimeout)
		defer cancel()
		if err := tc.HandshakeContext(hctx); err != nil {
			return false, fmt.Errorf("nbd: TLS handshake: %w", err)
		}
		// Nothing negotiated in the clear carries over into TLS.
		*n = negotiation{conn: tc, tls: true}
		return false, nil

	case optInfo, optGo:
		return s.infoOrGo(n, opt, data)

	case optStructuredReply:
		if len(data) != 0 {
			return false, n.replyErr(opt, repErrInvalid, "NBD_OPT_STRUCTURED_REPLY takes no data")
		}
		n.structured = true
		return false, n.reply(opt, repAck, nil)

	case optListMetaContext, optSetMetaContext:
		return false, s.metaContext(n, opt, data)
	}
	return false, n.replyErr(opt, repErrUnsup, fmt.Sprintf("option %d is not supported", opt))
}

func (s *Server) infoOrGo(n *negotiation, opt uint32, data []byte) (bool, error) {
	if len(data) < 6 {
		return false, n.replyErr(opt, repErrInvalid, "option data too short")
	}
	nameLen := binary.BigEndian.Uint32(data)
	if uint64(nameLen)+6 > uint64(len(data)) {
		return false, n.replyErr(opt, repErrInvalid, "export name overruns the option")
	}
	name := string(data[4 : 4+nameLen])
	rest := data[4+nameLen:]
	nInfo := int(binary.BigEndian.Uint16(rest))
	rest = rest[2:]
	if len(rest) != 2*nInfo {
		return false, n.replyErr(opt, repErrInvalid, "information request list has the wrong length")
	}
	e, ok, refused := s.resolve(name)
	if !ok {
		return false, n.replyErr(opt, repErrUnknown, fmt.Sprintf("no export named %q", name))
	}
	if e.RequireTLS && !n.tls {
		return false, n.replyErr(opt, repErrTLSReqd, fmt.Sprintf("export %q requires TLS", e.Name))
	}
	if refused != nil {
		return false, n.replyErr(opt, repErrPolicy, fmt.Sprintf("export %q: %v", e.Name, refused))
	}
	var wantName, wantDesc, wantBlock bool
	for i := 0; i < nInfo; i++ {
		switch binary.BigEndian.Uint16(rest[2*i:]) {
		case infoName:
			wantName = true
		case infoDescription:
			wantDesc = true
		case infoBlockSize:
			wantBlock = true
		}
	}
	var info [14]byte
	binary.BigEndian.PutUint16(info[0:], infoExport)
	binary.BigEndian.PutUint64(info[2:], uint64(e.Device.Size()))
	binary.BigEndian.PutUint16(info[10:], transmissionFlags(e, n.structured))
	if err := n.reply(opt, repInfo, info[:12]); err != nil {
		return false, err
	}
	if wantName {
		if err := n.reply(opt, repInfo, append([]byte{0, infoName}, e.Name...)); err != nil {
			return false, err
		}
	}
	if wantDesc && e.Description != "" {
		if err := n.reply(opt, repInfo, append([]byte{0, infoDescription}, e.Description...)); err != nil {
			return false, err
		}
	}
	// Block sizes go to every client: those that did not ask may still use
	// them, but only those that asked are held to them.
	minBlk, prefBlk, maxBlk := blockSizes(e)
	binary.BigEndian.PutUint16(info[0:], infoBlockSize)
	binary.BigEndian.PutUint32(info[2:], minBlk)
	binary.BigEndian.PutUint32(info[6:], prefBlk)
	binary.BigEndian.PutUint32(info[10:], maxBlk)
	if err := n.reply(opt, repInfo, info[:14]); err != nil {
		return false, err
	}
	if err := n.reply(opt, repAck, nil); err != nil {
		return false, err
	}
	if opt == optInfo {
		return false, nil
	}
	n.export = e
	n.blockSizes = wantBlock
	n.metaAlloc = n.metaAlloc && n.metaExport == e.Name
	return true, nil
}

func (s *Server) metaContext(n *negotiation, opt uint32, data []byte) error {
	if !n.structured {
		return n.replyErr(opt, repErrInvalid, "metadata contexts need structured replies")
	}
	if len(data) < 8 {
		return n.replyErr(opt, repErrInvalid, "option data too short")
	}
	nameLen := binary.BigEndian.Uint32(data)
	if uint64(nameLen)+8 > uint64(len(data)) {
		return n.replyErr(opt, repErrInvalid, "export name overruns the option")
	}
	name := string(data[4 : 4+nameLen])
	rest := data[4+nameLen:]
	nq := binary.BigEndian.Uint32(rest)
	rest = rest[4:]
	var queries []string
	for i := uint32(0); i < nq; i++ {
		if len(rest) < 4 {
			return n.replyErr(opt, repErrInvalid, "query list overruns the option")
		}
		ql := binary.BigEndian.Uint32(rest)
		if uint64(ql)+4 > uint64(len(rest)) || ql > maxStringLen {
			return n.replyErr(opt, repErrInvalid, "query overruns the option")
		}
		queries = append(queries, string(rest[4:4+ql]))
		rest = rest[4+ql:]
	}
	if len(rest) != 0 {
		return n.replyErr(opt, repErrInvalid, "trailing data after the queries")
	}
	e, ok := s.lookup(name)
	if !ok {
		return n.replyErr(opt, repErrUnknown, fmt.Sprintf("no export named %q", name))
	}
	if e.RequireTLS && !n.tls {
		return n.replyErr(opt, repErrTLSReqd, fmt.Sprintf("export %q requires TLS", e.Name))
	}
	match := false
	if opt == optListMetaContext && len(queries) == 0 {
		match = true
	}
	for _, q := range queries {
		if q == metaContextAllocation || (opt == optListMetaContext && q == "base:") {
			match = true
		}
	}
	if opt == optSetMetaContext {
		n.metaAlloc = match
		n.metaExport = e.Name
	}
	if match {
		p := make([]byte, 4, 4+len(metaContextAllocation))
		binary.BigEndian.PutUint32(p, metaContextAllocID)
		if err := n.reply(opt, repMetaContext, append(p, metaContextAllocation...)); err != nil {
			return err
		}
	}
	return n.reply(opt, repAck, nil)
}

func (n *negotiation) reply(opt, typ uint32, data []byte) error {
	buf := make([]byte, 20+len(data))
	binary.BigEndian.PutUint64(buf[0:], optReplyMagic)
	binary.BigEndian.PutUint32(buf[8:], opt)
	binary.BigEndian.PutUint32(buf[12:], typ)
	binary.BigEndian.PutUint32(buf[16:], uint32(len(data)))
	copy(buf[20:], data)
	_, err := n.conn.Write(buf)
	return err
}

// replyErr sends an error reply with a human-readable message.
func (n *negotiation) replyErr(opt, typ uint32, msg string) error {
	return n.reply(opt, typ, []byte(msg))
}

// blockSizes returns the export's advertised minimum, preferred and maximum
// block sizes with defaults applied.
func blockSizes(e *Export) (minBlk, prefBlk, maxBlk uint32) {
	minBlk, prefBlk, maxBlk = e.MinBlockSize, e.PreferredBlockSize, e.MaxBlockSize
	if minBlk == 0 {
		minBlk = 1
	}
	if prefBlk == 0 {
		prefBlk = defaultPrefBlk
	}
	prefBlk = max(prefBlk, minBlk)
	if maxBlk == 0 || maxBlk > defaultMaxBlk {
		maxBlk = defaultMaxBlk
	}
	return minBlk, prefBlk, maxBlk
}

func transmissionFlags(e *Export, structured bool) uint16 {
	f := uint16(tflagHasFlags | tflagSendFlush | tflagSendFUA | tflagSendCache)
	if e.ReadOnly {
		f |= tflagReadOnly
	} else {
		f |= tflagSendTrim | tflagSendWriteZeros | tflagSendFastZero
	}
	if structured {
		f |= tflagSendDF
	}
	if e.MultiConn {
		f |= tflagCanMultiConn
	}
	return f
}
