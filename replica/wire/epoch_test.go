package wire

import (
	"errors"
	"strings"
	"testing"
)

func TestCheckEpoch(t *testing.T) {
	tests := []struct {
		frame, known uint64
		stale        bool
	}{
		{0, 0, false},
		{5, 5, false},
		{6, 5, false}, // newer passes the fence; adopting it is the cluster's job
		{4, 5, true},
		{0, 1, true},
		{^uint64(0), ^uint64(0), false},
		{^uint64(0) - 1, ^uint64(0), true},
		{^uint64(0), 0, false},
	}
	for _, tc := range tests {
		err := CheckEpoch(tc.frame, tc.known)
		if got := errors.Is(err, ErrStaleEpoch); got != tc.stale {
			t.Errorf("CheckEpoch(%d, %d) = %v, stale want %v", tc.frame, tc.known, err, tc.stale)
		}
		if !tc.stale {
			if err != nil {
				t.Errorf("CheckEpoch(%d, %d) = %v, want nil", tc.frame, tc.known, err)
			}
			continue
		}
		var se *StaleEpochError
		if !errors.As(err, &se) || se.Frame != tc.frame || se.Known != tc.known {
			t.Errorf("CheckEpoch(%d, %d): %#v does not carry both epochs", tc.frame, tc.known, err)
		}
	}
	msg := CheckEpoch(41, 42).Error()
	if !strings.Contains(msg, "41") || !strings.Contains(msg, "42") {
		t.Errorf("message %q does not name both epochs", msg)
	}
}
