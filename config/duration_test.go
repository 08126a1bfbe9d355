package config

import (
	"testing"
	"time"
)

func TestFormatDuration(t *testing.T) {
	tests := []struct {
		in   time.Duration
		want string
	}{
		{0, "0s"}, {100 * time.Millisecond, "100ms"}, {2 * time.Second, "2s"}, {90 * time.Second, "1m30s"},
		{time.Minute, "1m"}, {10 * time.Minute, "10m"}, {time.Hour, "1h"}, {time.Hour + time.Second, "1h0m1s"},
		{90 * time.Minute, "1h30m"}, {-time.Minute, "-1m"},
	}
	for _, tt := range tests {
		if got := FormatDuration(tt.in); got != tt.want {
			t.Errorf("FormatDuration(%v) = %q, want %q", tt.in, got, tt.want)
		}
		if back, err := time.ParseDuration(FormatDuration(tt.in)); err != nil || back != tt.in {
			t.Errorf("time.ParseDuration(FormatDuration(%v)) = %v, %v", tt.in, back, err)
		}
	}
}
