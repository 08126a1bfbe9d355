package replica

import (
	"encoding/binary"
	"errors"
	"strings"
	"testing"
)

// reseal fixes a record's checksum after a deliberate edit, so that a test
// reaches the checks behind it.
func reseal(d []byte) []byte {
	binary.LittleEndian.PutUint32(d[8:], recordCRC(d))
	return d
}

func TestRecordEnvelope(t *testing.T) {
	errTest := errors.New("test record damaged")
	k := recordKind{magic: "TEST", version: 3, name: "a test record", corrupt: errTest}
	good := make([]byte, 20)
	copy(good[12:], "payload!")
	k.seal(good)
	if err := k.open(good, 12); err != nil {
		t.Fatalf("open of a sealed record: %v", err)
	}
	for _, tc := range []struct {
		name string
		data func() []byte
		want string
	}{
		{"short", func() []byte { return good[:11] }, "shorter than the 12-byte header of a test record"},
		{"magic", func() []byte { d := clone(good); copy(d, "XXXX"); return reseal(d) }, "not a test record"},
		{"version", func() []byte { d := clone(good); d[4] = 4; return reseal(d) }, "format version 4"},
		{"payload bit", func() []byte { d := clone(good); d[15] ^= 1; return d }, "checksum mismatch"},
		{"checksum field", func() []byte { d := clone(good); d[9] ^= 1; return d }, "checksum mismatch"},
	} {
		err := k.open(tc.data(), 12)
		if !errors.Is(err, errTest) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: err = %v, want %q wrapping the kind's sentinel", tc.name, err, tc.want)
		}
	}
}

func clone(b []byte) []byte { return append([]byte(nil), b...) }
