package wire

import (
	"bytes"
	"encoding/binary"
	"errors"
	"hash/crc32"
	"testing"
)

func sampleHeader(t FrameType) Header {
	return Header{
		Version: MaxVersion,
		Type:    t,
		Flags:   FlagChecksum | FlagFUA,
		Volume:  [16]byte{0xde, 0xad, 0xbe, 0xef, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12},
		Epoch:   0x0102030405060708,
		Seq:     0x1112131415161718,
		Offset:  0x2122232425262728,
	}
}

func allTypes() []FrameType {
	var ts []FrameType
	for t := TypeHello; t < typeEnd; t++ {
		ts = append(ts, t)
	}
	return ts
}

func TestFrameTypeNames(t *testing.T) {
	if n := len(allTypes()); n != 21 {
		t.Fatalf("%d frame types, want 21", n)
	}
	seen := map[string]bool{}
	for _, ft := range allTypes() {
		s := ft.String()
		if s == "" || seen[s] {
			t.Errorf("type %d has empty or duplicate name %q", ft, s)
		}
		seen[s] = true
	}
	if FrameType(0).Valid() || typeEnd.Valid() {
		t.Error("0 and typeEnd must be invalid")
	}
	if got := FrameType(200).String(); got != "FrameType(200)" {
		t.Errorf("String of unknown type = %q", got)
	}
}

// TestHeaderRoundTrip checks every frame type and flag combination through
// Encode/DecodeHeader, and the exact byte positions of the documented layout.
func TestHeaderRoundTrip(t *testing.T) {
	for _, ft := range allTypes() {
		for _, fl := range []Flags{0, FlagChecksum, FlagFUA, FlagChecksum | FlagFUA} {
			h := sampleHeader(ft)
			h.Flags = fl
			h.Length = 4096
			if fl&FlagChecksum != 0 {
				h.PayloadCRC = 0xcafef00d
			}
			b := h.Encode()
			got, err := DecodeHeader(b[:])
			if err != nil {
				t.Fatalf("%s flags %#x: %v", ft, fl, err)
			}
			if got != h {
				t.Fatalf("%s: round trip\n got %+v\nwant %+v", ft, got, h)
			}
		}
	}

	h := sampleHeader(TypeWrite)
	h.Length, h.PayloadCRC = 0x31323334, 0x41424344
	b := h.Encode()
	want := []struct {
		off int
		val []byte
	}{
		{0, []byte("BRPL")},
		{4, []byte{MaxVersion, uint8(TypeWrite), 0, 3}},
		{8, h.Volume[:]},
		{24, []byte{1, 2, 3, 4, 5, 6, 7, 8}},
		{32, []byte{0x11, 0x12, 0x13, 0x14, 0x15, 0x16, 0x17, 0x18}},
		{40, []byte{0x21, 0x22, 0x23, 0x24, 0x25, 0x26, 0x27, 0x28}},
		{48, []byte{0x31, 0x32, 0x33, 0x34, 0x41, 0x42, 0x43, 0x44, 0, 0, 0, 0}},
	}
	for _, w := range want {
		if !bytes.Equal(b[w.off:w.off+len(w.val)], w.val) {
			t.Errorf("bytes at %d = %x, want %x", w.off, b[w.off:w.off+len(w.val)], w.val)
		}
	}
	if got := binary.BigEndian.Uint32(b[60:]); got != crc32.Checksum(b[:60], castagnoli) {
		t.Errorf("header crc %#x is not crc32c of bytes 0..59", got)
	}
}

// reseal recomputes the header checksum after a deliberate edit, so a test
// reaches the field checks behind it.
func reseal(b []byte) {
	binary.BigEndian.PutUint32(b[offHeaderCRC:], crc32.Checksum(b[:offHeaderCRC], castagnoli))
}

func TestDecodeHeaderErrors(t *testing.T) {
	good := sampleHeader(TypeWrite)
	good.Length, good.PayloadCRC = 512, 7
	tests := []struct {
		name string
		edit func(b []byte) []byte
		want error
	}{
		{"short", func(b []byte) []byte { return b[:HeaderSize-1] }, ErrShortHeader},
		{"empty", func(b []byte) []byte { return nil }, ErrShortHeader},
		{"magic", func(b []byte) []byte { b[0] = 'X'; reseal(b); return b }, ErrBadMagic},
		{"version 0", func(b []byte) []byte { b[offVersion] = 0; reseal(b); return b }, ErrVersion},
		{"version too new", func(b []byte) []byte { b[offVersion] = MaxVersion + 1; reseal(b); return b }, ErrVersion},
		{"header checksum", func(b []byte) []byte { b[offHeaderCRC] ^= 1; return b }, ErrHeaderChecksum},
		{"length edited", func(b []byte) []byte { b[offLength+3]++; return b }, ErrHeaderChecksum},
		{"reserved", func(b []byte) []byte { b[offReserved+3] = 1; reseal(b); return b }, ErrMalformed},
		{"type 0", func(b []byte) []byte { b[offType] = 0; reseal(b); return b }, ErrFrameType},
		{"type unknown", func(b []byte) []byte { b[offType] = uint8(typeEnd); reseal(b); return b }, ErrFrameType},
		{"flags unknown", func(b []byte) []byte { b[offFlags] = 0x80; reseal(b); return b }, ErrFlags},
		{"crc without flag", func(b []byte) []byte {
			binary.BigEndian.PutUint16(b[offFlags:], 0)
			reseal(b)
			return b
		}, ErrMalformed},
		{"payload too large", func(b []byte) []byte {
			binary.BigEndian.PutUint32(b[offLength:], MaxPayload+1)
			reseal(b)
			return b
		}, ErrPayloadTooLarge},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			enc := good.Encode()
			_, err := DecodeHeader(tc.edit(enc[:]))
			if !errors.Is(err, tc.want) {
				t.Fatalf("err = %v, want %v", err, tc.want)
			}
		})
	}
	// The largest allowed payload is accepted.
	h := good
	h.Length = MaxPayload
	enc := h.Encode()
	if _, err := DecodeHeader(enc[:]); err != nil {
		t.Fatalf("MaxPayload refused: %v", err)
	}
}

// TestHeaderBitFlips flips every single bit of an encoded header: each must
// be refused (crc32c detects all single-bit errors), never decoded into a
// different header.
func TestHeaderBitFlips(t *testing.T) {
	for _, ft := range []FrameType{TypeWrite, TypeHello, TypeError} {
		h := sampleHeader(ft)
		h.Length, h.PayloadCRC = 1<<20, 0x12345678
		enc := h.Encode()
		for bit := 0; bit < HeaderSize*8; bit++ {
			b := enc
			b[bit/8] ^= 1 << (bit % 8)
			if got, err := DecodeHeader(b[:]); err == nil {
				t.Fatalf("%s: flipped bit %d decoded as %+v", ft, bit, got)
			} else if !errors.Is(err, ErrBadMagic) && !errors.Is(err, ErrVersion) && !errors.Is(err, ErrHeaderChecksum) {
				t.Fatalf("%s: flipped bit %d: %v (want magic, version or checksum error)", ft, bit, err)
			}
		}
	}
}

func TestMarshalToShortBufferPanics(t *testing.T) {
	defer func() {
		if recover() == nil {
			t.Error("MarshalTo into a short buffer did not panic")
		}
	}()
	h := sampleHeader(TypePing)
	h.MarshalTo(make([]byte, HeaderSize-1))
}
