package config

import (
	"strings"
	"testing"
)

func TestParseSize(t *testing.T) {
	tests := []struct {
		in      string
		want    int64
		wantErr string
	}{
		{"0", 0, ""},
		{"4096", 4096, ""},
		{" 4096 ", 4096, ""},
		{"1KiB", KiB, ""},
		{"512MiB", 512 * MiB, ""},
		{"10GiB", 10 * GiB, ""},
		{"10 GiB", 10 * GiB, ""},
		{"1TiB", TiB, ""},
		{"8388607TiB", 8388607 * TiB, ""},
		{"8388608TiB", 0, "too large"},
		{"99999999999999999999", 0, "too large"},
		{"", 0, "invalid size"},
		{"GiB", 0, "invalid size"},
		{"1TB", 0, "binary suffix"},
		{"1GB", 0, "invalid size"},
		{"1G", 0, "invalid size"},
		{"1gib", 0, "invalid size"},
		{"1.5GiB", 0, "invalid size"},
		{"-1", 0, "invalid size"},
		{"+1", 0, "invalid size"},
		{"0x10", 0, "invalid size"},
		{"4096B", 0, "invalid size"},
	}
	for _, tt := range tests {
		got, err := ParseSize(tt.in)
		switch {
		case tt.wantErr == "" && err != nil:
			t.Errorf("ParseSize(%q): %v", tt.in, err)
		case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
			t.Errorf("ParseSize(%q) error = %v, want one containing %q", tt.in, err, tt.wantErr)
		case got != tt.want:
			t.Errorf("ParseSize(%q) = %d, want %d", tt.in, got, tt.want)
		}
	}
}

func TestFormatSize(t *testing.T) {
	tests := []struct {
		in   int64
		want string
	}{
		{0, "0"}, {1, "1"}, {4097, "4097"}, {1024, "1KiB"}, {1536 * KiB, "1536KiB"},
		{32 * MiB, "32MiB"}, {GiB, "1GiB"}, {3 * TiB, "3TiB"}, {2048 * TiB, "2048TiB"},
	}
	for _, tt := range tests {
		if got := FormatSize(tt.in); got != tt.want {
			t.Errorf("FormatSize(%d) = %q, want %q", tt.in, got, tt.want)
		}
		if back, err := ParseSize(FormatSize(tt.in)); err != nil || back != tt.in {
			t.Errorf("ParseSize(FormatSize(%d)) = %d, %v", tt.in, back, err)
		}
	}
}
