package rpcclient

import (
	"bytes"
	"errors"
	"strings"
	"testing"

	"github.com/blockrep/blockrep/nfsexport/xdr"
)

func TestParseReply(t *testing.T) {
	accepted := func(stat uint32, rest ...uint32) []byte {
		e := xdr.NewEncoder(nil)
		for _, v := range append([]uint32{0x1234, 1, 0, 0, 0, stat}, rest...) {
			e.Uint32(v)
		}
		return e.Bytes()
	}
	xid, res, err := ParseReply(accepted(0, 7, 8))
	if err != nil || xid != 0x1234 || !bytes.Equal(res, []byte{0, 0, 0, 7, 0, 0, 0, 8}) {
		t.Fatalf("success: xid %#x, results %x, %v", xid, res, err)
	}
	for _, c := range []struct {
		name string
		rec  []byte
		want error
		text string
	}{
		{"prog unavail", accepted(1), ErrProgUnavail, "PROG_UNAVAIL"},
		{"prog mismatch", accepted(2, 2, 4), ErrProgMismatch, "versions 2–4"},
		{"proc unavail", accepted(3), ErrProcUnavail, "PROC_UNAVAIL"},
		{"garbage", accepted(4), ErrGarbageArgs, "GARBAGE_ARGS"},
		{"system err", accepted(5), ErrSystemErr, "SYSTEM_ERR"},
		{"unknown accept_stat", accepted(9), ErrBadReply, "accept_stat 9"},
		{"auth error", []byte{0, 0, 0x12, 0x34, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 5}, ErrDenied, "auth_stat 5"},
		{"rpc mismatch", []byte{0, 0, 0x12, 0x34, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0, 2}, ErrDenied, "RPC_MISMATCH"},
		{"a call", []byte{0, 0, 0x12, 0x34, 0, 0, 0, 0}, ErrBadReply, "msg_type 0"},
		{"truncated", []byte{0, 0, 0x12, 0x34, 0, 0, 0, 1, 0, 0}, ErrBadReply, ""},
		{"no xid", []byte{1, 2}, ErrBadReply, ""},
	} {
		_, _, err := ParseReply(c.rec)
		if !errors.Is(err, c.want) || !strings.Contains(err.Error(), c.text) {
			t.Errorf("%s: %v, want %v containing %q", c.name, err, c.want, c.text)
		}
	}
}
