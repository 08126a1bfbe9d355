package replica

import (
	"fmt"
	"strconv"
	"strings"
)

// MarshalText encodes the state by name ("UpToDate", ...), so that JSON
// (the control API, the cluster's log and snapshots) reads as it prints.
// A value out of range encodes as "DiskState(N)", so that a command
// carrying one can still be logged and refused.
func (d DiskState) MarshalText() ([]byte, error) { return []byte(d.String()), nil }

// UnmarshalText decodes what MarshalText wrote.
func (d *DiskState) UnmarshalText(b []byte) error {
	s := string(b)
	if n, ok := strings.CutPrefix(s, "DiskState("); ok {
		v, err := strconv.ParseUint(strings.TrimSuffix(n, ")"), 10, 8)
		if err != nil || !strings.HasSuffix(n, ")") {
			return fmt.Errorf("unknown disk state %q", s)
		}
		*d = DiskState(v)
		return nil
	}
	x, err := ParseDiskState(s)
	if err != nil {
		return err
	}
	*d = x
	return nil
}

// ParseDiskState returns the state named s (as String writes it).
func ParseDiskState(s string) (DiskState, error) {
	for x := Diskless; x <= UpToDate; x++ {
		if x.String() == s {
			return x, nil
		}
	}
	return 0, fmt.Errorf("unknown disk state %q (want Diskless, Inconsistent, Outdated or UpToDate)", s)
}
