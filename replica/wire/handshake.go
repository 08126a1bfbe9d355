package wire

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
	"net"
	"os"
	"time"
)

// Handshake limits and constants.
const (
	// MinSecretLen is the shortest shared secret accepted. A captured
	// handshake lets an eavesdropper test guesses offline, so the secret must
	// carry real entropy; 16 random bytes put that out of reach.
	MinSecretLen = 16
	// MaxNameLen bounds cluster names and node IDs (they are length-prefixed
	// with one byte on the wire).
	MaxNameLen = 255
	// NonceSize is the size of each side's random challenge.
	NonceSize = 32
	// DefaultHandshakeTimeout applies when the context has no deadline, so a
	// peer that connects and stalls can never hold a handshake open forever.
	DefaultHandshakeTimeout = 10 * time.Second

	// handshakeVersion is the header version of handshake frames. The
	// version is not negotiated yet, so these frames use the first version,
	// which every implementation must keep decoding for them.
	handshakeVersion uint8 = 1
	// maxHandshakePayload bounds every handshake message (a Hello is at most
	// 2+32+2*(1+255) bytes) so an unauthenticated peer cannot make us
	// allocate more.
	maxHandshakePayload = 1024
	// maxErrorMessage bounds the text of an Error frame.
	maxErrorMessage = 256
	// errorSendTimeout bounds the best-effort Error frame sent before giving up.
	errorSendTimeout = time.Second

	// proofLabel separates these MACs from any other use of the secret.
	// It names version 2, whose transcript includes the protections.
	proofLabel = "blockrep peer-link handshake v2"
	// The direction labels make the initiator's and the responder's proofs
	// different even over the same transcript, so a proof cannot be
	// reflected back to the node that produced it.
	initiatorProof = "initiator proves"
	responderProof = "responder proves"
)

// Handshake errors. Each says which check failed; none carries secret
// material. An error from the peer's side arrives as a *RemoteError, which
// matches both ErrPeerRefused and the sentinel for the peer's reason.
var (
	// ErrAuthFailed: a proof did not verify — almost always a wrong secret.
	ErrAuthFailed = errors.New("wire: authentication failed (wrong shared secret?)")
	// ErrClusterMismatch: the peer belongs to a different cluster.
	ErrClusterMismatch = errors.New("wire: cluster name mismatch")
	// ErrSameNodeID: the peer claims our own node ID (a misconfiguration, a
	// clone, or our own messages echoed back).
	ErrSameNodeID = errors.New("wire: peer claims our own node ID")
	// ErrUnexpectedPeer: the peer is not the node HandshakeConfig.PeerID named.
	ErrUnexpectedPeer = errors.New("wire: unexpected peer node ID")
	// ErrNoCommonVersion: the two version ranges do not overlap.
	ErrNoCommonVersion = errors.New("wire: no common protocol version")
	// ErrReflected: the peer sent back our own nonce.
	ErrReflected = errors.New("wire: reflected handshake message")
	// ErrHandshakeProtocol: a malformed or out-of-order handshake message.
	ErrHandshakeProtocol = errors.New("wire: handshake protocol violation")
	// ErrPeerRefused: the peer sent an Error frame and refused the link.
	ErrPeerRefused = errors.New("wire: peer refused the link")
	// ErrBadConfig: HandshakeConfig.Validate failed.
	ErrBadConfig = errors.New("wire: bad handshake config")
	// ErrProtectionMismatch: the two ends protect the link differently
	// (one says "mac", the other "none", say).
	ErrProtectionMismatch = errors.New("wire: link protection differs between the ends (security setting)")
)

// Error codes in an Error frame, so the refused side learns why in a form it
// can match, not just as text.
const (
	codeProtocol uint16 = iota + 1
	codeAuth
	codeCluster
	codeSameNode
	codeUnexpectedPeer
	codeVersion
	codeReflected
	codeProtection
)

var codeErrs = map[uint16]error{
	codeProtocol:       ErrHandshakeProtocol,
	codeAuth:           ErrAuthFailed,
	codeCluster:        ErrClusterMismatch,
	codeSameNode:       ErrSameNodeID,
	codeUnexpectedPeer: ErrUnexpectedPeer,
	codeVersion:        ErrNoCommonVersion,
	codeReflected:      ErrReflected,
	codeProtection:     ErrProtectionMismatch,
}

func codeOf(err error) uint16 {
	for c, e := range codeErrs {
		if errors.Is(err, e) {
			return c
		}
	}
	return codeProtocol
}

// RemoteError is the peer's reason for refusing the link, from its Error
// frame. errors.Is matches ErrPeerRefused and the sentinel of the reason
// (e.g. ErrAuthFailed), so both sides of a failed handshake can be tested
// the same way.
type RemoteError struct {
	Code    uint16 // reason code
	Message string // the peer's text: untrusted, quoted when printed
}

// Error quotes the peer's text, since an unauthenticated peer wrote it.
func (e *RemoteError) Error() string {
	return fmt.Sprintf("wire: peer refused the link: %q", e.Message)
}

// Unwrap exposes ErrPeerRefused and the reason's sentinel.
func (e *RemoteError) Unwrap() []error {
	if s, ok := codeErrs[e.Code]; ok {
		return []error{ErrPeerRefused, s}
	}
	return []error{ErrPeerRefused}
}

// HandshakeConfig is one side's identity and secret for Handshake.
type HandshakeConfig struct {
	// Cluster is the cluster name; both sides must agree.
	Cluster string
	// NodeID is this node's stable ID (a UUID in blockrep).
	NodeID string
	// PeerID, if set, is the only node ID the peer may claim (a dialer
	// knows whom it meant to reach).
	PeerID string
	// Secret is the cluster's shared secret, at least MinSecretLen bytes.
	Secret []byte
	// Initiator is true on the side that dialed. The roles make the two
	// proofs different (reflection) and fix the message order.
	Initiator bool
	// MinVersion and MaxVersion narrow the versions offered; zero means
	// MinLinkVersion and MaxVersion.
	MinVersion, MaxVersion uint8
	// Protection is what guards the link after the handshake; both ends
	// must agree. Zero means ProtectMAC. ProtectTLS is for a conn that is
	// already a TLS 1.3 connection with verified certificates: Handshake
	// cannot check that, the caller vouches for it.
	Protection Protection
}

// Validate rejects a configuration the handshake cannot use safely. It is
// meant to run at config load so that a short secret is a startup error, not
// a link that never comes up.
func (c HandshakeConfig) Validate() error {
	if len(c.Secret) < MinSecretLen {
		return fmt.Errorf("%w: shared secret is %d bytes, need at least %d", ErrBadConfig, len(c.Secret), MinSecretLen)
	}
	for _, f := range []struct{ name, v string }{{"cluster name", c.Cluster}, {"node ID", c.NodeID}} {
		if f.v == "" || len(f.v) > MaxNameLen {
			return fmt.Errorf("%w: %s must be 1..%d bytes, is %d", ErrBadConfig, f.name, MaxNameLen, len(f.v))
		}
	}
	if len(c.PeerID) > MaxNameLen {
		return fmt.Errorf("%w: peer ID longer than %d bytes", ErrBadConfig, MaxNameLen)
	}
	if c.PeerID != "" && c.PeerID == c.NodeID {
		return fmt.Errorf("%w: peer ID equals our own node ID %q", ErrBadConfig, c.NodeID)
	}
	lo, hi := c.versions()
	if lo < MinLinkVersion || hi > MaxVersion || lo > hi {
		return fmt.Errorf("%w: version range %d..%d not within supported %d..%d", ErrBadConfig, lo, hi, MinLinkVersion, MaxVersion)
	}
	if !c.protection().Valid() {
		return fmt.Errorf("%w: %v", ErrBadConfig, c.Protection)
	}
	return nil
}

func (c HandshakeConfig) protection() Protection {
	if c.Protection == 0 {
		return ProtectMAC
	}
	return c.Protection
}

func (c HandshakeConfig) versions() (lo, hi uint8) {
	lo, hi = c.MinVersion, c.MaxVersion
	if lo == 0 {
		lo = MinLinkVersion
	}
	if hi == 0 {
		hi = MaxVersion
	}
	return lo, hi
}

// Peer is the authenticated remote end of a link.
type Peer struct {
	NodeID     string     // the ID the peer proved it holds the secret for
	Version    uint8      // negotiated protocol version: use it for Reader and Writer
	Protection Protection // what guards the link from here on (both ends agree)
	// Send and Recv are the session's MACs with ProtectMAC (nil
	// otherwise): give Send to the link's Writer and Recv to its Reader
	// (SetMAC). Each holds its direction's counter, so every frame of the
	// link in that direction must pass through it, in order, even when
	// the stream changes hands between readers or writers.
	Send, Recv *MAC
}

// hello is the content of a Hello frame. prot travels in the frame's
// header (its Offset field, unused by Hello) rather than in the payload, so
// that a version-1 peer, which refuses unknown payload bytes but ignores
// the header field, still parses our Hello and reports the version
// mismatch, the one error that tells its operator what is wrong.
type hello struct {
	minV, maxV uint8
	nonce      [NonceSize]byte
	cluster    string
	node       string
	prot       Protection
}

func (h *hello) marshal() []byte {
	b := make([]byte, 0, 2+NonceSize+2+len(h.cluster)+len(h.node))
	b = append(b, h.minV, h.maxV)
	b = append(b, h.nonce[:]...)
	b = append(b, byte(len(h.cluster)))
	b = append(b, h.cluster...)
	b = append(b, byte(len(h.node)))
	b = append(b, h.node...)
	return b
}

func parseHello(p []byte) (hello, error) {
	var h hello
	bad := func(what string) (hello, error) {
		return hello{}, fmt.Errorf("%w: Hello: %s", ErrHandshakeProtocol, what)
	}
	if len(p) < 2+NonceSize+1 {
		return bad("too short")
	}
	h.minV, h.maxV = p[0], p[1]
	copy(h.nonce[:], p[2:2+NonceSize])
	p = p[2+NonceSize:]
	str := func() (string, bool) {
		if len(p) < 1 || len(p) < 1+int(p[0]) || p[0] == 0 {
			return "", false
		}
		s := string(p[1 : 1+int(p[0])])
		p = p[1+int(p[0]):]
		return s, true
	}
	var ok bool
	if h.cluster, ok = str(); !ok {
		return bad("bad cluster name")
	}
	if h.node, ok = str(); !ok {
		return bad("bad node ID")
	}
	if len(p) != 0 {
		return bad("trailing bytes")
	}
	if h.minV == 0 || h.minV > h.maxV {
		return bad(fmt.Sprintf("bad version range %d..%d", h.minV, h.maxV))
	}
	return h, nil
}

// proof computes one side's HMAC over the handshake transcript. Every
// variable-length field is length-prefixed so that no two different
// transcripts encode to the same bytes ("ab"+"c" vs "a"+"bc"). Both version
// ranges and both protections are included so that a man in the middle
// cannot downgrade the negotiated version or the protection without
// breaking the proofs.
func proof(secret []byte, direction string, ini, res *hello) []byte {
	m := hmac.New(sha256.New, secret)
	for _, s := range []string{proofLabel, direction, ini.cluster, ini.node, res.node} {
		writeString(m, s)
	}
	m.Write(ini.nonce[:])
	m.Write(res.nonce[:])
	m.Write([]byte{ini.minV, ini.maxV, res.minV, res.maxV, byte(ini.prot), byte(res.prot)})
	return m.Sum(nil)
}

func writeString(h hash.Hash, s string) {
	var n [2]byte
	binary.BigEndian.PutUint16(n[:], uint16(len(s)))
	h.Write(n[:])
	h.Write([]byte(s))
}

// Handshake authenticates conn in either role and negotiates the protocol
// version. Both sides prove knowledge of the shared secret with an HMAC over
// a transcript bound to the cluster name, both node IDs (in role order), both
// fresh nonces and both version ranges:
//
//	initiator → responder  Hello{versions, nonce, cluster, node}
//	responder → initiator  Hello{versions, nonce, cluster, node}
//	initiator → responder  Auth{HMAC(secret, label, "initiator proves", transcript)}
//	responder → initiator  Auth{HMAC(secret, label, "responder proves", transcript)}
//	initiator → responder  AuthOK
//
// The initiator proves first, so a node that accepts connections never hands
// a proof of its own to an unauthenticated dialer. The responder accepts
// only after AuthOK, so when either side rejects the other, neither ends up
// with an accepted link. The side that rejects sends an Error frame with its
// reason's code and generic text before returning: the peer is not
// authenticated yet, so the frame names no cluster and no node (the error
// returned locally has the detail).
//
// Each Hello also carries its sender's Protection; the two must be equal
// (ErrProtectionMismatch). With ProtectMAC, Peer.Send and Peer.Recv are the
// session's MACs, derived from the secret, both nonces and the transcript
// (deriveMACs).
//
// The deadline is the context's (DefaultHandshakeTimeout if it has none);
// cancelling ctx aborts a blocked read or write. On success the connection's
// deadlines are cleared and exactly the handshake's bytes have been read. On
// error the caller must close conn. The handshake itself authenticates the
// link's start only; the later frames are protected by the caller's use of
// Peer.Send and Peer.Recv (or by TLS underneath).
func Handshake(ctx context.Context, conn net.Conn, cfg HandshakeConfig) (Peer, error) {
	role := "responder"
	if cfg.Initiator {
		role = "initiator"
	}
	if err := cfg.Validate(); err != nil {
		return Peer{}, err
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, DefaultHandshakeTimeout)
		defer cancel()
	}
	if err := ctx.Err(); err != nil {
		return Peer{}, fmt.Errorf("wire: handshake as %s: %w", role, err)
	}
	deadline, _ := ctx.Deadline()
	if err := conn.SetDeadline(deadline); err != nil {
		return Peer{}, fmt.Errorf("wire: handshake as %s: %w", role, err)
	}
	// Cancellation unblocks I/O by moving the deadline into the past; no
	// goroutine of ours outlives the call (stop removes the callback).
	stop := context.AfterFunc(ctx, func() { _ = conn.SetDeadline(time.Unix(1, 0)) })

	hs := &handshake{ctx: ctx, cfg: cfg, conn: conn, r: NewReader(conn, nil), w: NewWriter(conn), deadline: deadline}
	hs.r.SetLimit(maxHandshakePayload)
	hs.r.SetVersion(handshakeVersion)
	hs.w.SetVersion(handshakeVersion)
	peer, err := hs.run()
	if !stop() && err == nil {
		err = ctx.Err() // cancelled at the last moment: the deadline is spoiled
	}
	if err != nil {
		// Only our own deadlines, which come from ctx, time out I/O here.
		if errors.Is(err, os.ErrDeadlineExceeded) {
			cause := ctx.Err()
			if cause == nil {
				cause = context.DeadlineExceeded
			}
			err = fmt.Errorf("%w: %w", cause, err)
		}
		return Peer{}, fmt.Errorf("wire: handshake as %s: %w", role, err)
	}
	if err := conn.SetDeadline(time.Time{}); err != nil {
		return Peer{}, fmt.Errorf("wire: handshake as %s: %w", role, err)
	}
	return peer, nil
}

type handshake struct {
	ctx      context.Context
	cfg      HandshakeConfig
	conn     net.Conn
	r        *Reader
	w        *Writer
	seq      uint64
	deadline time.Time
}

func (hs *handshake) send(t FrameType, payload []byte) error {
	return hs.sendHeader(Header{Type: t, Flags: FlagChecksum}, payload)
}

func (hs *handshake) sendHeader(h Header, payload []byte) error {
	h.Seq = hs.seq
	hs.seq++
	return hs.w.WriteFrame(h, payload)
}

// recv reads the next frame and insists on type want; a peer's Error frame
// becomes a *RemoteError.
func (hs *handshake) recv(want FrameType) ([]byte, error) {
	_, p, err := hs.recvHeader(want)
	return p, err
}

func (hs *handshake) recvHeader(want FrameType) (Header, []byte, error) {
	h, p, err := hs.r.ReadFrame()
	if err != nil {
		return h, nil, err
	}
	switch h.Type {
	case want:
		return h, p, nil
	case TypeError:
		if len(p) < 2 {
			return h, nil, &RemoteError{Code: codeProtocol, Message: "(malformed Error frame)"}
		}
		return h, nil, &RemoteError{Code: binary.BigEndian.Uint16(p), Message: string(p[2:])}
	default:
		return h, nil, hs.reject(fmt.Errorf("%w: got %s, expected %s", ErrHandshakeProtocol, h.Type, want))
	}
}

// reject tells the peer why we refuse (best effort, briefly) and returns err.
// The peer has not proved anything yet, so it gets the reason's code and the
// reason's generic text only: err's detail can name our cluster, our node or
// the node we expected, which would tell a stranger what to claim next.
func (hs *handshake) reject(err error) error {
	code := codeOf(err)
	msg := codeErrs[code].Error()
	if len(msg) > maxErrorMessage {
		msg = msg[:maxErrorMessage]
	}
	p := binary.BigEndian.AppendUint16(nil, code)
	p = append(p, msg...)
	if hs.ctx.Err() != nil {
		return err // cancelled: do not undo the deadline that unblocks us
	}
	_ = hs.conn.SetWriteDeadline(earliest(hs.deadline, time.Now().Add(errorSendTimeout)))
	_ = hs.send(TypeError, p)
	return err
}

func earliest(a, b time.Time) time.Time {
	if a.Before(b) {
		return a
	}
	return b
}

// check decides whether the peer's Hello is acceptable and returns the
// negotiated version. The reflection check comes first because an echoed
// Hello also trips the same-node check, and "reflected" is the truer reason.
func (hs *handshake) check(local, remote *hello) (uint8, error) {
	if remote.nonce == local.nonce {
		return 0, fmt.Errorf("%w: the peer sent our own nonce", ErrReflected)
	}
	if remote.cluster != local.cluster {
		return 0, fmt.Errorf("%w: we are in %q, peer %q says %q", ErrClusterMismatch, local.cluster, remote.node, remote.cluster)
	}
	if remote.node == local.node {
		return 0, fmt.Errorf("%w: %q", ErrSameNodeID, remote.node)
	}
	if hs.cfg.PeerID != "" && remote.node != hs.cfg.PeerID {
		return 0, fmt.Errorf("%w: expected %q, peer says %q", ErrUnexpectedPeer, hs.cfg.PeerID, remote.node)
	}
	lo, hi := max(local.minV, remote.minV), min(local.maxV, remote.maxV)
	if lo > hi {
		err := fmt.Errorf("%w: we speak %d..%d, peer %d..%d", ErrNoCommonVersion, local.minV, local.maxV, remote.minV, remote.maxV)
		if remote.maxV < MinLinkVersion {
			err = fmt.Errorf("%w (the peer runs an older blockrep without link protection: upgrade it)", err)
		}
		return 0, err
	}
	if remote.prot != local.prot {
		return 0, fmt.Errorf("%w: here %v, peer %q says %v", ErrProtectionMismatch, local.prot, remote.node, remote.prot)
	}
	return hi, nil
}

func (hs *handshake) run() (Peer, error) {
	local := hello{cluster: hs.cfg.Cluster, node: hs.cfg.NodeID, prot: hs.cfg.protection()}
	local.minV, local.maxV = hs.cfg.versions()
	_, _ = rand.Read(local.nonce[:]) // crypto/rand.Read never fails (Go ≥ 1.24)
	sendHello := func() error {
		return hs.sendHeader(Header{Type: TypeHello, Flags: FlagChecksum, Offset: uint64(local.prot)}, local.marshal())
	}

	var remote hello
	readHello := func() (uint8, error) {
		h, p, err := hs.recvHeader(TypeHello)
		if err != nil {
			return 0, err
		}
		if remote, err = parseHello(p); err != nil {
			return 0, hs.reject(err)
		}
		if h.Offset < uint64(protectionEnd) {
			remote.prot = Protection(h.Offset) // else invalid: a mismatch
		}
		v, err := hs.check(&local, &remote)
		if err != nil {
			return 0, hs.reject(err)
		}
		return v, nil
	}
	verify := func(ini, res *hello, direction, who string) error {
		p, err := hs.recv(TypeAuth)
		if err != nil {
			return err
		}
		if !hmac.Equal(p, proof(hs.cfg.Secret, direction, ini, res)) {
			return hs.reject(fmt.Errorf("%w: the %s's proof does not verify", ErrAuthFailed, who))
		}
		return nil
	}

	var version uint8
	var err error
	if hs.cfg.Initiator {
		if err = sendHello(); err != nil {
			return Peer{}, err
		}
		if version, err = readHello(); err != nil {
			return Peer{}, err
		}
		if err = hs.send(TypeAuth, proof(hs.cfg.Secret, initiatorProof, &local, &remote)); err != nil {
			return Peer{}, err
		}
		if err = verify(&local, &remote, responderProof, "responder"); err != nil {
			return Peer{}, err
		}
		if err = hs.send(TypeAuthOK, nil); err != nil {
			return Peer{}, err
		}
	} else {
		if version, err = readHello(); err != nil {
			return Peer{}, err
		}
		if err = sendHello(); err != nil {
			return Peer{}, err
		}
		if err = verify(&remote, &local, initiatorProof, "initiator"); err != nil {
			return Peer{}, err
		}
		if err = hs.send(TypeAuth, proof(hs.cfg.Secret, responderProof, &remote, &local)); err != nil {
			return Peer{}, err
		}
		p, err := hs.recv(TypeAuthOK)
		if err != nil {
			return Peer{}, err
		}
		if len(p) != 0 {
			return Peer{}, hs.reject(fmt.Errorf("%w: AuthOK with payload", ErrHandshakeProtocol))
		}
	}
	peer := Peer{NodeID: remote.node, Version: version, Protection: local.prot}
	if local.prot == ProtectMAC {
		ini, res := &local, &remote
		if !hs.cfg.Initiator {
			ini, res = res, ini
		}
		toRes, toIni := deriveMACs(hs.cfg.Secret, ini, res, version)
		peer.Send, peer.Recv = toRes, toIni
		if !hs.cfg.Initiator {
			peer.Send, peer.Recv = toIni, toRes
		}
	}
	return peer, nil
}
