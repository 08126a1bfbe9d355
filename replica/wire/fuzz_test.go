package wire

import (
	"bytes"
	"testing"
)

func FuzzDecodeHeader(f *testing.F) {
	for _, ft := range allTypes() {
		h := sampleHeader(ft)
		h.Length = uint32(ft) * 1000
		b := h.Encode()
		f.Add(b[:])
	}
	f.Add(make([]byte, HeaderSize))
	f.Add([]byte("BRPL"))
	f.Fuzz(func(t *testing.T, b []byte) {
		h, err := DecodeHeader(b)
		if err != nil {
			return
		}
		// Whatever decodes is valid and re-encodes to the same bytes: the
		// encoding is canonical, so no two byte strings mean one header.
		if h.Length > MaxPayload {
			t.Fatalf("accepted length %d", h.Length)
		}
		if err := h.Validate(); err != nil {
			t.Fatalf("decoded header does not validate: %v", err)
		}
		if enc := h.Encode(); !bytes.Equal(enc[:], b[:HeaderSize]) {
			t.Fatalf("re-encoding differs:\n%x\n%x", enc, b[:HeaderSize])
		}
	})
}

func FuzzReader(f *testing.F) {
	var stream []byte
	for i, ft := range allTypes() {
		h := sampleHeader(ft)
		if i%2 == 0 {
			h.Flags = 0
		}
		stream = append(stream, encodeFrame(f, h, bytes.Repeat([]byte{byte(i)}, i*3))...)
	}
	f.Add(stream)
	f.Add(stream[:len(stream)-1])
	f.Add(stream[:HeaderSize+1])
	big := sampleHeader(TypeWrite)
	big.Flags, big.Length = 0, MaxPayload // claims a full payload, delivers none
	enc := big.Encode()
	f.Add(enc[:])
	f.Fuzz(func(t *testing.T, data []byte) {
		r := NewReader(bytes.NewReader(data), nil)
		consumed := 0
		for {
			h, p, err := r.ReadFrame()
			if err != nil {
				// Sticky: the stream is not trusted again.
				if _, _, err2 := r.ReadFrame(); err2 != err {
					t.Fatalf("error not sticky: %v then %v", err, err2)
				}
				return
			}
			// The only allocation is the payload buffer, bounded by the
			// checked length.
			if cap(p) > MaxPayload || len(p) != int(h.Length) {
				t.Fatalf("payload len %d cap %d for length %d", len(p), cap(p), h.Length)
			}
			consumed += HeaderSize + len(p)
			if consumed > len(data) {
				t.Fatalf("read %d bytes from %d", consumed, len(data))
			}
			if h.Flags&FlagChecksum != 0 && PayloadChecksum(p) != h.PayloadCRC {
				t.Fatal("checksum not enforced")
			}
		}
	})
}
