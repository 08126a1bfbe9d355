package config

import (
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
)

// Binary size units accepted by ParseSize.
const (
	KiB int64 = 1 << 10
	MiB int64 = 1 << 20
	GiB int64 = 1 << 30
	TiB int64 = 1 << 40
)

var sizeUnits = []struct {
	suffix string
	mult   int64
}{
	{"TiB", TiB},
	{"GiB", GiB},
	{"MiB", MiB},
	{"KiB", KiB},
}

// errSizeSyntax explains the accepted size syntax.
var errSizeSyntax = errors.New(`want a byte count (4096) or a whole number with a binary suffix KiB, MiB, GiB or TiB (e.g. "10GiB")`)

// ParseSize parses a size in bytes: a plain decimal integer ("4096") or a
// whole number with one of the binary suffixes KiB, MiB, GiB, TiB ("10GiB",
// "512 MiB"). Decimal suffixes (KB, MB, GB, TB), fractions and negative
// numbers are rejected so that a size never means something the operator did
// not intend.
func ParseSize(s string) (int64, error) {
	t := strings.TrimSpace(s)
	mult := int64(1)
	for _, u := range sizeUnits {
		if strings.HasSuffix(t, u.suffix) {
			mult = u.mult
			t = strings.TrimSpace(strings.TrimSuffix(t, u.suffix))
			break
		}
	}
	if t == "" || strings.IndexFunc(t, func(r rune) bool { return r < '0' || r > '9' }) >= 0 {
		return 0, fmt.Errorf("invalid size %q: %w", s, errSizeSyntax)
	}
	n, err := strconv.ParseInt(t, 10, 64)
	if err != nil || n > math.MaxInt64/mult {
		return 0, fmt.Errorf("invalid size %q: too large", s)
	}
	return n * mult, nil
}

// FormatSize renders n bytes with the largest binary unit that divides it
// exactly ("1GiB", "1536KiB", "4097"), the inverse of ParseSize.
func FormatSize(n int64) string {
	if n == 0 {
		return "0"
	}
	for _, u := range sizeUnits {
		if n%u.mult == 0 {
			return strconv.FormatInt(n/u.mult, 10) + u.suffix
		}
	}
	return strconv.FormatInt(n, 10)
}
