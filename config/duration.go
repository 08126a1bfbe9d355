package config

import (
	"strings"
	"time"
)

// FormatDuration renders d like time.Duration.String without the zero units
// it appends: "1m" rather than "1m0s", "1h" rather than "1h0m0s", the form a
// configuration file would use. time.ParseDuration reads it back.
func FormatDuration(d time.Duration) string {
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = s[:len(s)-2]
	}
	if strings.HasSuffix(s, "h0m") {
		s = s[:len(s)-2]
	}
	return s
}
