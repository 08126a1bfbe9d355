package xdr

import (
	"bytes"
	"errors"
	"testing"
)

func TestRoundTrip(t *testing.T) {
	e := NewEncoder(nil)
	e.Uint32(0xdeadbeef)
	e.Int32(-2)
	e.Uint64(0x0102030405060708)
	e.Int64(-3)
	e.Bool(true)
	e.Bool(false)
	e.Optional(true)
	e.Opaque([]byte{1, 2, 3, 4, 5})
	e.FixedOpaque([]byte{9, 8, 7})
	e.String("héllo")
	e.Opaque(nil)

	want := []byte{
		0xde, 0xad, 0xbe, 0xef,
		0xff, 0xff, 0xff, 0xfe,
		1, 2, 3, 4, 5, 6, 7, 8,
		0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xfd,
		0, 0, 0, 1,
		0, 0, 0, 0,
		0, 0, 0, 1,
		0, 0, 0, 5, 1, 2, 3, 4, 5, 0, 0, 0,
		9, 8, 7, 0,
		0, 0, 0, 6, 'h', 0xc3, 0xa9, 'l', 'l', 'o', 0, 0,
		0, 0, 0, 0,
	}
	if !bytes.Equal(e.Bytes(), want) {
		t.Fatalf("encoded\n%x\nwant\n%x", e.Bytes(), want)
	}

	d := NewDecoder(e.Bytes())
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	u32, err := d.Uint32("a")
	must(err)
	i32, err := d.Int32("b")
	must(err)
	u64, err := d.Uint64("c")
	must(err)
	i64, err := d.Int64("d")
	must(err)
	b1, err := d.Bool("e")
	must(err)
	b2, err := d.Bool("f")
	must(err)
	opt, err := d.Optional("g")
	must(err)
	op, err := d.Opaque("h", 5)
	must(err)
	fo, err := d.FixedOpaque("i", 3)
	must(err)
	s, err := d.String("j", 255)
	must(err)
	empty, err := d.Opaque("k", 0)
	must(err)
	if u32 != 0xdeadbeef || i32 != -2 || u64 != 0x0102030405060708 || i64 != -3 || !b1 || b2 || !opt ||
		!bytes.Equal(op, []byte{1, 2, 3, 4, 5}) || !bytes.Equal(fo, []byte{9, 8, 7}) || s != "héllo" || len(empty) != 0 {
		t.Fatalf("decoded %x %d %x %d %v %v %v %x %x %q %x", u32, i32, u64, i64, b1, b2, opt, op, fo, s, empty)
	}
	if d.Remaining() != 0 || d.Offset() != len(want) {
		t.Fatalf("remaining %d offset %d", d.Remaining(), d.Offset())
	}
}

func TestDecodeErrors(t *testing.T) {
	cases := []struct {
		name   string
		in     []byte
		decode func(d *Decoder) error
		kind   error
		offset int
	}{
		{"uint32 short", []byte{0, 0, 1}, func(d *Decoder) error { _, err := d.Uint32("x"); return err }, ErrShort, 0},
		{"uint64 short", []byte{0, 0, 0, 1, 0, 0, 0}, func(d *Decoder) error { _, err := d.Uint64("x"); return err }, ErrShort, 0},
		{"bool 2", []byte{0, 0, 0, 2}, func(d *Decoder) error { _, err := d.Bool("x"); return err }, ErrBadBool, 0},
		{"opaque over max", []byte{0, 0, 0, 9, 1, 2, 3, 4, 5, 6, 7, 8, 9, 0, 0, 0}, func(d *Decoder) error { _, err := d.Opaque("x", 8); return err }, ErrTooLong, 0},
		{"opaque length past end", []byte{0xff, 0xff, 0xff, 0xf0, 1}, func(d *Decoder) error { _, err := d.Opaque("x", 1<<40); return err }, ErrShort, 0},
		{"opaque padding missing", []byte{0, 0, 0, 1, 7}, func(d *Decoder) error { _, err := d.Opaque("x", 8); return err }, ErrShort, 0},
		{"fixed short", []byte{1, 2}, func(d *Decoder) error { _, err := d.FixedOpaque("x", 3); return err }, ErrShort, 0},
		{"fixed negative", []byte{1, 2}, func(d *Decoder) error { _, err := d.FixedOpaque("x", -1); return err }, ErrShort, 0},
		{"string over max", []byte{0, 0, 1, 0}, func(d *Decoder) error { _, err := d.String("x", 255); return err }, ErrTooLong, 0},
		{"second field", []byte{0, 0, 0, 1, 0, 0}, func(d *Decoder) error {
			if _, err := d.Uint32("first"); err != nil {
				return err
			}
			_, err := d.Uint32("x")
			return err
		}, ErrShort, 4},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			d := NewDecoder(c.in)
			err := c.decode(d)
			var xe *Error
			if !errors.As(err, &xe) {
				t.Fatalf("error %v, want *Error", err)
			}
			if !errors.Is(err, c.kind) || xe.Field != "x" || xe.Offset != c.offset {
				t.Fatalf("error %v (field %q offset %d), want %v on x at %d", err, xe.Field, xe.Offset, c.kind, c.offset)
			}
			if d.Offset() != c.offset {
				t.Fatalf("failed decode consumed input: offset %d, want %d", d.Offset(), c.offset)
			}
		})
	}
}

// TestOpaqueAliasesNoAlloc pins the hot-path promise: decoding opaque data
// and integers allocates nothing.
func TestOpaqueAliasesNoAlloc(t *testing.T) {
	e := NewEncoder(make([]byte, 0, 64))
	e.Uint32(7)
	e.Opaque([]byte("abcdefgh"))
	in := e.Bytes()
	var d Decoder
	allocs := testing.AllocsPerRun(100, func() {
		d.Reset(in)
		if _, err := d.Uint32("n"); err != nil {
			t.Fatal(err)
		}
		if _, err := d.Opaque("o", 64); err != nil {
			t.Fatal(err)
		}
	})
	if allocs != 0 {
		t.Fatalf("%v allocations per decode, want 0", allocs)
	}
	d.Reset(in)
	d.Uint32("n")
	b, _ := d.Opaque("o", 64)
	in[8] = 'X'
	if b[0] != 'X' {
		t.Fatal("Opaque copied instead of aliasing the input")
	}
}

func FuzzDecoder(f *testing.F) {
	f.Add([]byte{0, 0, 0, 3, 'a', 'b', 'c', 0, 0, 0, 0, 1})
	f.Add([]byte{0xff, 0xff, 0xff, 0xff})
	f.Fuzz(func(t *testing.T, in []byte) {
		d := NewDecoder(in)
		for d.Remaining() > 0 {
			before := d.Offset()
			op, err := d.Opaque("o", 1<<30)
			if err == nil && len(op) > len(in) {
				t.Fatalf("opaque of %d bytes from %d bytes of input", len(op), len(in))
			}
			if err != nil {
				if _, err := d.Uint32("u"); err != nil {
					return
				}
			}
			if d.Offset() <= before {
				t.Fatalf("no progress at %d", before)
			}
		}
	})
}

func TestReserve(t *testing.T) {
	e := NewEncoder(nil)
	e.Uint32(7)
	b := e.Reserve(5)
	copy(b, "hello")
	e.Truncate(e.Len() - 1)
	if got := string(e.Bytes()[4:]); got != "hell" || len(b) != 5 {
		t.Fatalf("after Reserve and Truncate: %q", got)
	}
}
