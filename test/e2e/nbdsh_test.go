package e2e

import (
	"strconv"
	"testing"
)

// TestNbdshCommands runs testdata/commands.py under nbdsh: every NBD command
// (read, write, FUA write, flush, trim, the four kinds of write-zeroes,
// cache, block status), and requests the server must refuse (out of range,
// misaligned, zero length) without breaking the connection.
func TestNbdshCommands(t *testing.T) {
	tool(t, "nbdsh")
	const size = 64 * MiB
	d := startDaemon(t, daemonSpec{Volumes: []volumeSpec{{Name: "vol0", Size: size}}})
	out := runNbdsh(t, "commands.py", "NBD_URI="+d.URI("vol0"), "NBD_SIZE="+strconv.Itoa(size))
	if !containsLine(out, "all checks passed") {
		t.Fatalf("commands.py did not finish its checks")
	}
}

// TestNbdshProtocolErrors checks requests that the NBD protocol says the
// server should (or, for flags on NBD_CMD_CACHE, must) refuse with EINVAL:
// a trim past the end, and command flags that are unknown or do not apply
// to the command (testdata/spec.py).
func TestNbdshProtocolErrors(t *testing.T) {
	tool(t, "nbdsh")
	d := startDaemon(t, daemonSpec{Volumes: []volumeSpec{{Name: "vol0", Size: 16 * MiB}}})
	runNbdsh(t, "spec.py", "NBD_URI="+d.URI("vol0"))
}
