package wire

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/binary"
	"errors"
	"fmt"
)

// Protection says what guards a link's bytes after the handshake. Both
// ends must be configured alike; the handshake refuses a mismatch
// (ErrProtectionMismatch) and binds both ends' settings into its proofs, so
// a man in the middle cannot talk either end down.
type Protection uint8

// Link protections. The numeric values travel in the Hello frame.
const (
	// ProtectMAC (the default): every frame after the handshake carries a
	// tag under a per-session, per-direction key, bound to an implicit
	// per-direction counter, so that a changed, replayed, reordered,
	// dropped or reflected frame is refused (ErrTampered). The data
	// travels in clear.
	ProtectMAC Protection = iota + 1
	// ProtectTLS: the link runs inside TLS 1.3 with mutual certificates,
	// which encrypts and authenticates every byte; frames carry no tag of
	// their own.
	ProtectTLS
	// ProtectNone: nothing after the handshake is protected. For links
	// that an attacker cannot reach, and to measure what the protection
	// costs.
	ProtectNone

	protectionEnd
)

var protectionNames = [...]string{ProtectMAC: "mac", ProtectTLS: "tls", ProtectNone: "none"}

// String is the protection's name in configuration files.
func (p Protection) String() string {
	if p.Valid() {
		return protectionNames[p]
	}
	return fmt.Sprintf("Protection(%d)", uint8(p))
}

// Valid reports whether p is a protection this version defines.
func (p Protection) Valid() bool { return p >= ProtectMAC && p < protectionEnd }

// ParseProtection reads a protection's configuration name: "mac", "tls" or
// "none".
func ParseProtection(s string) (Protection, error) {
	for p := ProtectMAC; p < protectionEnd; p++ {
		if protectionNames[p] == s {
			return p, nil
		}
	}
	return 0, fmt.Errorf("unknown link protection %q (want \"mac\", \"tls\" or \"none\")", s)
}

// TagSize is the size of the tag that follows every frame (and every
// record of an authnet stream) on a ProtectMAC link.
const TagSize = 16

// MaxSealedHead is the longest head a MAC authenticates besides the body:
// a frame header.
const MaxSealedHead = HeaderSize

// ErrTampered: a frame's or record's tag does not verify. The bytes were
// changed, replayed, reordered or dropped on the way (or the stream lost
// step); nothing of them may be used, and the connection must be dropped.
var ErrTampered = errors.New("wire: frame MAC mismatch: tampered with, replayed, reordered or lost in transit")

// MAC authenticates one direction of one link: the n-th message sent that
// way (counted from 0) is tagged with the counter n, which is never sent.
// A receiver that counts its own messages therefore refuses a message that
// was replayed, reordered or dropped before it as surely as one that was
// changed; the other direction has a key of its own, so a message
// reflected back to its sender is refused too.
//
// A message is a head (a frame header, at most MaxSealedHead bytes) and a
// body (the payload, any size). The tag is AES-256-GCM's: the GCM
// encryption of the head under the nonce 0^32 ‖ n (64-bit big-endian), with
// the body as additional data. The encrypted head is thrown away and the
// head travels in clear; the receiver repeats the computation and compares
// tags. Forging a tag is forging a GCM ciphertext, so this is exactly as
// strong as GCM's authentication, and the body, however large, is
// authenticated where it lies (GHASH over additional data runs at >10 GB/s
// with AES-NI and carry-less multiplication, about 7× HMAC-SHA256 with
// SHA-NI on the machine this was measured on). A MAC is not safe for
// concurrent use: one stream, in order.
type MAC struct {
	aead    cipher.AEAD
	n       uint64
	nonce   [12]byte
	scratch [MaxSealedHead + TagSize]byte
	failed  bool
}

func newMAC(key []byte) *MAC {
	block, err := aes.NewCipher(key)
	if err != nil {
		panic("wire: MAC key: " + err.Error()) // a 32-byte key from deriveMACs
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		panic("wire: MAC: " + err.Error())
	}
	return &MAC{aead: aead}
}

// tag computes the next message's tag into m.scratch and advances the
// counter.
func (m *MAC) tag(head, body []byte) ([]byte, error) {
	if len(head) > MaxSealedHead {
		return nil, fmt.Errorf("wire: MAC: a %d-byte head (max %d)", len(head), MaxSealedHead)
	}
	if m.failed || m.n == ^uint64(0) {
		return nil, fmt.Errorf("%w (after an earlier failure, or the counter is exhausted)", ErrTampered)
	}
	binary.BigEndian.PutUint64(m.nonce[4:], m.n)
	m.n++
	out := m.aead.Seal(m.scratch[:0], m.nonce[:], head, body)
	return out[len(head):], nil
}

// Seal appends the tag of the next message (head, body) to dst.
func (m *MAC) Seal(dst, head, body []byte) ([]byte, error) {
	t, err := m.tag(head, body)
	if err != nil {
		return dst, err
	}
	return append(dst, t...), nil
}

// Open checks that tag belongs to the next message (head, body). After a
// failure every later call fails too: the stream is out of step for good.
func (m *MAC) Open(head, body, tag []byte) error {
	want, err := m.tag(head, body)
	if err != nil {
		return err
	}
	if len(tag) != TagSize || subtle.ConstantTimeCompare(want, tag) != 1 {
		m.failed = true
		return ErrTampered
	}
	return nil
}

// Count is how many messages the MAC has tagged or checked.
func (m *MAC) Count() uint64 { return m.n }

// keyLabel separates the link keys from every other use of the secret.
const keyLabel = "blockrep link keys v2"

// deriveMACs derives the two directions' MACs of a session with HKDF-SHA256:
// the shared secret as input key material, both nonces as salt, and the
// whole transcript (cluster, both node IDs, both version ranges and
// protections, the negotiated version) plus the direction as info. Every
// session therefore has keys of its own even though the secret is long
// lived, and the two directions never share one.
func deriveMACs(secret []byte, ini, res *hello, version uint8) (iniToRes, resToIni *MAC) {
	salt := make([]byte, 0, 2*NonceSize)
	salt = append(salt, ini.nonce[:]...)
	salt = append(salt, res.nonce[:]...)
	var info []byte
	for _, s := range []string{keyLabel, ini.cluster, ini.node, res.node} {
		info = binary.BigEndian.AppendUint16(info, uint16(len(s)))
		info = append(info, s...)
	}
	info = append(info, ini.minV, ini.maxV, res.minV, res.maxV, byte(ini.prot), byte(res.prot), version)
	key := func(direction string) *MAC {
		k, err := hkdf.Key(sha256.New, secret, salt, string(info)+direction, 32)
		if err != nil {
			panic("wire: hkdf: " + err.Error()) // only for absurd lengths
		}
		return newMAC(k)
	}
	return key("initiator to responder"), key("responder to initiator")
}
