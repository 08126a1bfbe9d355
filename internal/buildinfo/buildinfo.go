// Package buildinfo reports the version of the running binary.
package buildinfo

import "runtime/debug"

// version is set at link time:
//
//	go build -ldflags "-X github.com/blockrep/blockrep/internal/buildinfo.version=v1.2.3"
//
// It is written only by the linker.
var version string

// Version returns the version set at link time, else the module version
// recorded by the Go toolchain, else "devel".
func Version() string {
	if version != "" {
		return version
	}
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
		return bi.Main.Version
	}
	return "devel"
}
