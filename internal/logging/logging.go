// Package logging builds the slog.Logger of a blockrep command from its
// -log-level and -log-format flags.
package logging

import (
	"fmt"
	"io"
	"log/slog"
)

// Levels and Formats list the accepted flag values, for usage messages.
const (
	Levels  = "debug|info|warn|error"
	Formats = "text|json"
)

// New returns a logger writing to w at the named level ("debug", "info",
// "warn", "error") in the named format ("text" or "json").
func New(w io.Writer, level, format string) (*slog.Logger, error) {
	lv, err := ParseLevel(level)
	if err != nil {
		return nil, err
	}
	opts := &slog.HandlerOptions{Level: lv}
	switch format {
	case "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	default:
		return nil, fmt.Errorf("log format %q is not one of %s", format, Formats)
	}
}

// ParseLevel parses a level name.
func ParseLevel(s string) (slog.Level, error) {
	switch s {
	case "debug":
		return slog.LevelDebug, nil
	case "info":
		return slog.LevelInfo, nil
	case "warn":
		return slog.LevelWarn, nil
	case "error":
		return slog.LevelError, nil
	default:
		return 0, fmt.Errorf("log level %q is not one of %s", s, Levels)
	}
}
