package fh

import (
	"bytes"
	"errors"
	"strings"
	"testing"
)

var testUUID = UUID{0x6b, 0x1f, 0x2e, 0x3d, 0x4c, 0x5b, 0x4a, 0x69, 0x88, 0x97, 0xa6, 0xb5, 0xc4, 0xd3, 0xe2, 0xf1}

func sampleHandle() Handle {
	return Handle{Export: 7, FS: testUUID, Kernel: KernelHandle{Type: 1, Bytes: []byte{1, 2, 3, 4, 5, 6, 7, 8}}}
}

func TestEncodeLayout(t *testing.T) {
	b, err := sampleHandle().Encode()
	if err != nil {
		t.Fatal(err)
	}
	want := []byte{Version, 0, 0, 0, 7}
	want = append(want, testUUID[:]...)
	want = append(want, 0, 0, 0, 1, 8, 1, 2, 3, 4, 5, 6, 7, 8, 0, 0) // padded to 36
	if !bytes.Equal(b, want) {
		t.Fatalf("Encode = %x, want %x", b, want)
	}
}

func TestRoundTrip(t *testing.T) {
	for _, h := range []Handle{
		sampleHandle(),
		{Export: 0, FS: testUUID, Kernel: KernelHandle{Type: 129, Bytes: bytes.Repeat([]byte{0xab}, 12)}},
		{Export: 0xffffffff, FS: testUUID, Kernel: KernelHandle{Type: -2, Bytes: []byte{0}}},
		{Export: 1, FS: UUID{}, Kernel: KernelHandle{Type: 0x82, Bytes: bytes.Repeat([]byte{9}, MaxKernelBytes)}},
	} {
		b, err := h.Encode()
		if err != nil {
			t.Fatalf("Encode(%+v): %v", h, err)
		}
		if len(b) > MaxSize {
			t.Fatalf("Encode(%+v): %d bytes > %d", h, len(b), MaxSize)
		}
		got, err := Decode(b)
		if err != nil {
			t.Fatalf("Decode(%x): %v", b, err)
		}
		if got.Export != h.Export || got.FS != h.FS || got.Kernel.Type != h.Kernel.Type || !bytes.Equal(got.Kernel.Bytes, h.Kernel.Bytes) {
			t.Fatalf("round trip: got %+v, want %+v", got, h)
		}
		b[len(b)-1] ^= 0xff
		if got.Kernel.Bytes[len(got.Kernel.Bytes)-1] == b[len(b)-1] {
			t.Fatal("Decode result aliases its input")
		}
	}
}

func TestEncodeRefuses(t *testing.T) {
	for name, h := range map[string]Handle{
		"empty":    {FS: testUUID},
		"too long": {FS: testUUID, Kernel: KernelHandle{Type: 1, Bytes: make([]byte, MaxKernelBytes+1)}},
	} {
		if b, err := h.Encode(); err == nil {
			t.Errorf("%s: Encode = %x, want an error", name, b)
		}
	}
}

func TestDecodeBadHandle(t *testing.T) {
	good, err := sampleHandle().Encode()
	if err != nil {
		t.Fatal(err)
	}
	mod := func(f func(b []byte) []byte) []byte { return f(append([]byte(nil), good...)) }
	for _, tc := range []struct {
		name   string
		in     []byte
		reason string
	}{
		{"nil", nil, "length 0"},
		{"header only", good[:HeaderSize], "length 26"},
		{"too long", append(bytes.Repeat([]byte{1}, MaxSize), 0), "more than NFSv3's maximum 64"},
		{"version 0", mod(func(b []byte) []byte { b[0] = 0; return b }), "version 0"},
		{"version 2", mod(func(b []byte) []byte { b[0] = 2; return b }), "version 2"},
		{"length byte 0", mod(func(b []byte) []byte { b[25] = 0; return b }), "kernel handle length 0"},
		{"length byte too big", mod(func(b []byte) []byte { b[25] = 11; return b }), "length byte 11"},
		{"length byte too small", mod(func(b []byte) []byte { b[25] = 5; return b }), "length byte 5"},
		{"padding not zero", mod(func(b []byte) []byte { b[len(b)-1] = 1; return b }), "padding byte 0x1"},
		{"truncated", good[:len(good)-1], "length byte 8"},
		{"extra byte", append(append([]byte(nil), good...), 0), "length byte 8"},
		{"unpadded", good[:HeaderSize+8], "length byte 8"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h, err := Decode(tc.in)
			if err == nil {
				t.Fatalf("Decode(%x) = %+v, want an error", tc.in, h)
			}
			if !errors.Is(err, ErrBadHandle) || errors.Is(err, ErrStale) {
				t.Fatalf("Decode(%x) = %v, want kind BadHandle", tc.in, err)
			}
			if !strings.Contains(err.Error(), tc.reason) || !strings.Contains(err.Error(), "NFS3ERR_BADHANDLE") {
				t.Fatalf("Decode(%x) = %q, want it to say %q and NFS3ERR_BADHANDLE", tc.in, err, tc.reason)
			}
		})
	}
}

func TestCheck(t *testing.T) {
	h := sampleHandle()
	if err := h.Check(7, testUUID); err != nil {
		t.Fatalf("Check of its own export: %v", err)
	}
	other := testUUID
	other[15] ^= 1
	for _, tc := range []struct {
		name   string
		export uint32
		fs     UUID
		reason string
	}{
		{"other export", 8, testUUID, "export id 7, this export is 8"},
		{"other file system", 7, other, "file system " + testUUID.String()},
	} {
		err := h.Check(tc.export, tc.fs)
		if !errors.Is(err, ErrStale) || errors.Is(err, ErrBadHandle) {
			t.Fatalf("%s: Check = %v, want kind Stale", tc.name, err)
		}
		if !strings.Contains(err.Error(), tc.reason) {
			t.Fatalf("%s: Check = %q, want it to say %q", tc.name, err, tc.reason)
		}
	}
}

func TestUUIDString(t *testing.T) {
	if got, want := testUUID.String(), "6b1f2e3d-4c5b-4a69-8897-a6b5c4d3e2f1"; got != want {
		t.Fatalf("String = %q, want %q", got, want)
	}
}

func TestErrorIs(t *testing.T) {
	inner := errors.New("inner")
	e := &Error{Kind: Stale, Reason: "x", Err: inner}
	if !errors.Is(e, ErrStale) || errors.Is(e, ErrBadHandle) || !errors.Is(e, inner) {
		t.Fatalf("errors.Is on %v wrong", e)
	}
	var target *Error
	if !errors.As(error(e), &target) || target.Kind != Stale {
		t.Fatal("errors.As failed")
	}
}

// FuzzDecode checks that Decode never panics, that what it accepts
// re-encodes to the same bytes, and that what it refuses is a BadHandle.
func FuzzDecode(f *testing.F) {
	good, _ := sampleHandle().Encode()
	f.Add(good)
	f.Add([]byte{})
	f.Add(good[:HeaderSize])
	f.Add(append(good, 0))
	xfs, _ := Handle{Export: 1, FS: testUUID, Kernel: KernelHandle{Type: 129, Bytes: make([]byte, 12)}}.Encode()
	f.Add(xfs)
	f.Add(bytes.Repeat([]byte{0xff}, MaxSize))
	f.Fuzz(func(t *testing.T, b []byte) {
		h, err := Decode(b)
		if err != nil {
			if !errors.Is(err, ErrBadHandle) {
				t.Fatalf("Decode(%x) = %v, not a BadHandle", b, err)
			}
			return
		}
		out, err := h.Encode()
		if err != nil {
			t.Fatalf("Decode(%x) accepted %+v, which Encode refuses: %v", b, h, err)
		}
		if !bytes.Equal(out, b) {
			t.Fatalf("Decode(%x) then Encode = %x", b, out)
		}
	})
}

func TestSuperblockUUID(t *testing.T) {
	ext := make([]byte, SuperblockReadSize)
	ext[ext4MagicOffset], ext[ext4MagicOffset+1] = 0x53, 0xef
	copy(ext[ext4UUIDOffset:], testUUID[:])
	xfs := make([]byte, SuperblockReadSize)
	copy(xfs, "XFSB")
	copy(xfs[xfsUUIDOffset:], testUUID[:])
	for _, fstype := range []string{"ext2", "ext3", "ext4"} {
		if u, err := SuperblockUUID(fstype, ext); err != nil || u != testUUID {
			t.Fatalf("%s: = %v, %v", fstype, u, err)
		}
	}
	if u, err := SuperblockUUID("xfs", xfs); err != nil || u != testUUID {
		t.Fatalf("xfs: = %v, %v", u, err)
	}
	zeroUUID := append([]byte(nil), xfs...)
	copy(zeroUUID[xfsUUIDOffset:], make([]byte, 16))
	for _, tc := range []struct {
		name, fstype string
		sb           []byte
		reason       string
	}{
		{"ext4 bad magic", "ext4", xfs, "magic 0x0000"},
		{"xfs bad magic", "xfs", ext, `magic "\x00\x00\x00\x00"`},
		{"short", "ext4", ext[:1100], "read 1100 bytes"},
		{"zero uuid", "xfs", zeroUUID, "all zeros"},
		{"btrfs", "btrfs", ext, `"btrfs"`},
	} {
		if _, err := SuperblockUUID(tc.fstype, tc.sb); err == nil || !strings.Contains(err.Error(), tc.reason) {
			t.Errorf("%s: err = %v, want it to say %q", tc.name, err, tc.reason)
		}
	}
}
