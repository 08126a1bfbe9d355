package testtool

import (
	"os"
	"path/filepath"
	"testing"
)

func TestLook(t *testing.T) {
	dir := t.TempDir()
	exe := filepath.Join(dir, "blockrep-tool")
	if err := os.WriteFile(exe, []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Setenv("PATH", dir)
	if p, err := Look("blockrep-tool"); err != nil || p != exe {
		t.Errorf("Look found %q, %v; want %s", p, err, exe)
	}
	if _, err := Look("blockrep-no-such-tool"); err == nil {
		t.Error("Look found a tool that does not exist")
	}
}

// A missing tool skips the test, or fails it when required.
func TestNeed(t *testing.T) {
	for _, required := range []bool{false, true} {
		r := &recorder{}
		v := ""
		if required {
			v = "1"
		}
		t.Setenv(EnvRequire, v)
		func() {
			defer func() { _ = recover() }() // Skipf/Fatalf end the goroutine: the recorder panics instead
			Need(r, "blockrep-no-such-tool", "blockrep-pkg")
		}()
		if r.skipped == required || r.failed != required {
			t.Errorf("required %v: skipped %v failed %v", required, r.skipped, r.failed)
		}
	}
}

// recorder is a testing.TB that records Skipf and Fatalf.
type recorder struct {
	testing.TB
	skipped, failed bool
}

func (r *recorder) Helper() {}
func (r *recorder) Skipf(string, ...any) {
	r.skipped = true
	panic("skip")
}
func (r *recorder) Fatalf(string, ...any) {
	r.failed = true
	panic("fatal")
}
