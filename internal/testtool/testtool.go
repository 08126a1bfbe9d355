// Package testtool finds the programs that tests drive (nbdinfo, mkfs.xfs,
// ...) and, when one is missing, skips the test, or fails it when
// BLOCKREP_REQUIRE_TOOLS=1: scripts/test sets that once it has installed
// them all, so that a tool that goes missing later fails the run instead
// of skipping silently.
package testtool

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// EnvRequire is the environment variable that turns a missing tool from a
// skip into a failure.
const EnvRequire = "BLOCKREP_REQUIRE_TOOLS"

// Required reports whether a missing tool fails the test.
func Required() bool { return os.Getenv(EnvRequire) == "1" }

// extraDirs are searched after PATH: the sbin directories are often
// missing from a non-login PATH.
var extraDirs = []string{"/usr/sbin", "/sbin"}

// Look finds name on PATH or in /usr/sbin and /sbin.
func Look(name string) (string, error) {
	if p, err := exec.LookPath(name); err == nil {
		return p, nil
	}
	for _, dir := range extraDirs {
		p := filepath.Join(dir, name)
		if st, err := os.Stat(p); err == nil && st.Mode().IsRegular() && st.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	return "", fmt.Errorf("%s not found on PATH or in %s", name, strings.Join(extraDirs, ":"))
}

// Missing skips t with the message, or fails it when Required.
func Missing(t testing.TB, format string, args ...any) {
	t.Helper()
	msg := fmt.Sprintf(format, args...)
	if Required() {
		t.Fatalf("%s (%s=1)", msg, EnvRequire)
	}
	t.Skipf("%s; skipping (set %s=1 to fail instead)", msg, EnvRequire)
}

// Need returns the path of name, or calls Missing naming the Debian
// package that provides it.
func Need(t testing.TB, name, debianPackage string) string {
	t.Helper()
	p, err := Look(name)
	if err != nil {
		Missing(t, "%s is not installed (Debian package %s; scripts/test installs it)", name, debianPackage)
	}
	return p
}
