package logging

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"
)

func TestNew(t *testing.T) {
	tests := []struct {
		level, format string
		wantErr       string
		logAt         slog.Level
		wantOut       string // substring; "" means nothing logged
	}{
		{"info", "text", "", slog.LevelInfo, "level=INFO msg=hello"},
		{"info", "text", "", slog.LevelDebug, ""},
		{"debug", "text", "", slog.LevelDebug, "level=DEBUG"},
		{"warn", "json", "", slog.LevelWarn, `"level":"WARN","msg":"hello"`},
		{"error", "json", "", slog.LevelWarn, ""},
		{"verbose", "text", `log level "verbose" is not one of debug|info|warn|error`, 0, ""},
		{"INFO", "text", `log level "INFO"`, 0, ""},
		{"info", "xml", `log format "xml" is not one of text|json`, 0, ""},
	}
	for _, tt := range tests {
		var buf bytes.Buffer
		l, err := New(&buf, tt.level, tt.format)
		if tt.wantErr != "" {
			if err == nil || err.Error() != tt.wantErr && !strings.HasPrefix(err.Error(), tt.wantErr) {
				t.Errorf("New(%q, %q) error %v, want %q", tt.level, tt.format, err, tt.wantErr)
			}
			continue
		}
		if err != nil {
			t.Fatalf("New(%q, %q): %v", tt.level, tt.format, err)
		}
		l.Log(t.Context(), tt.logAt, "hello")
		if out := buf.String(); tt.wantOut == "" && out != "" || !strings.Contains(out, tt.wantOut) {
			t.Errorf("New(%q, %q) logging at %v wrote %q, want %q", tt.level, tt.format, tt.logAt, out, tt.wantOut)
		}
	}
}
