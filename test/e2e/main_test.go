package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// Paths of the binaries TestMain builds.
var (
	blockrepdBin string
	blockctlBin  string
)

func TestMain(m *testing.M) {
	os.Exit(runMain(m))
}

func runMain(m *testing.M) int {
	dir, err := os.MkdirTemp("", "blockrep-e2e-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		return 1
	}
	defer os.RemoveAll(dir)

	blockrepdBin = filepath.Join(dir, "blockrepd")
	blockctlBin = filepath.Join(dir, "blockctl")
	for _, b := range []struct{ out, pkg string }{
		{blockrepdBin, "github.com/blockrep/blockrep/cmd/blockrepd"},
		{blockctlBin, "github.com/blockrep/blockrep/cmd/blockctl"},
	} {
		cmd := exec.Command("go", "build", "-o", b.out, b.pkg)
		cmd.Stdout = os.Stderr
		cmd.Stderr = os.Stderr
		if err := cmd.Run(); err != nil {
			fmt.Fprintf(os.Stderr, "e2e: go build -o %s %s: %v\n", b.out, b.pkg, err)
			return 1
		}
	}
	return m.Run()
}
