package rpc

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"runtime"
	"testing"
)

// frag encodes one fragment; last sets the last-fragment bit.
func frag(last bool, body []byte) []byte {
	h := uint32(len(body))
	if last {
		h |= lastFragment
	}
	return append(binary.BigEndian.AppendUint32(nil, h), body...)
}

func cat(parts ...[]byte) []byte { return bytes.Join(parts, nil) }

func TestReadRecord(t *testing.T) {
	cases := []struct {
		name    string
		in      []byte
		max     int
		want    [][]byte // records in order
		wantErr error    // after the records
	}{
		{"one fragment", frag(true, []byte("abcd")), 16, [][]byte{[]byte("abcd")}, io.EOF},
		{"three fragments", cat(frag(false, []byte("ab")), frag(false, []byte("cde")), frag(true, []byte("f"))), 16,
			[][]byte{[]byte("abcdef")}, io.EOF},
		{"zero-length fragments", cat(frag(false, nil), frag(false, []byte("x")), frag(false, nil), frag(true, nil)), 16,
			[][]byte{[]byte("x")}, io.EOF},
		{"empty record", frag(true, nil), 16, [][]byte{{}}, io.EOF},
		{"two records", cat(frag(true, []byte("1")), frag(false, []byte("2")), frag(true, []byte("3"))), 16,
			[][]byte{[]byte("1"), []byte("23")}, io.EOF},
		{"exactly max", cat(frag(false, []byte("1234")), frag(true, []byte("5678"))), 8,
			[][]byte{[]byte("12345678")}, io.EOF},
		{"oversized single fragment", frag(true, make([]byte, 9)), 8, nil, ErrRecordTooLarge},
		{"oversized over fragments", cat(frag(false, []byte("12345")), frag(true, []byte("6789"))), 8, nil, ErrRecordTooLarge},
		{"huge claimed length", []byte{0xff, 0xff, 0xff, 0xff}, 1 << 20, nil, ErrRecordTooLarge},
		{"truncated header", []byte{0x80, 0}, 16, nil, io.ErrUnexpectedEOF},
		{"truncated body", append(binary.BigEndian.AppendUint32(nil, lastFragment|8), 1, 2), 16, nil, io.ErrUnexpectedEOF},
		{"ends after non-last fragment", frag(false, []byte("ab")), 16, nil, io.ErrUnexpectedEOF},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := bytes.NewReader(c.in)
			var buf []byte
			for i, want := range c.want {
				rec, err := ReadRecord(r, buf, c.max)
				if err != nil {
					t.Fatalf("record %d: %v", i, err)
				}
				if !bytes.Equal(rec, want) {
					t.Fatalf("record %d = %q, want %q", i, rec, want)
				}
				buf = rec
			}
			_, err := ReadRecord(r, buf, c.max)
			if !errors.Is(err, c.wantErr) {
				t.Fatalf("final error %v, want %v", err, c.wantErr)
			}
		})
	}
}

// TestReadRecordNoAllocBeyondInput checks that a claimed fragment length is
// checked against the maximum before any buffer is made for it, and that the buffer grows
// with what arrives, not with what the length claims.
func TestReadRecordNoAllocBeyondInput(t *testing.T) {
	in := []byte{0x90, 0, 0, 0} // claims a 256 MiB last fragment, sends nothing
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	_, err := ReadRecord(bytes.NewReader(in), nil, 1<<30)
	runtime.ReadMemStats(&after)
	if !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("error %v, want unexpected EOF", err)
	}
	if n := after.TotalAlloc - before.TotalAlloc; n > 1<<20 {
		t.Fatalf("allocated %d bytes for a 4-byte input", n)
	}
}

func TestRecordMark(t *testing.T) {
	b := AppendRecordMark(nil)
	b = append(b, "hello"...)
	SetRecordMark(b)
	rec, err := ReadRecord(bytes.NewReader(b), nil, 16)
	if err != nil || string(rec) != "hello" {
		t.Fatalf("got %q, %v", rec, err)
	}
	if b[0] != 0x80 || b[3] != 5 {
		t.Fatalf("marker % x", b[:4])
	}
}
