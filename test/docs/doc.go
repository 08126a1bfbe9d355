// Package docs tests that what the documentation tells a user to run does
// what the documentation says.
//
// TestDemo runs the README's first command, scripts/demo, in its
// non-interactive mode (scripts/demo --check) from a clean build, with the
// default ports a user gets (it holds /tmp/blockrep-fixed-ports.lock while
// it runs), and checks its exit status and the line of every step:
// node1 elected, identical copies after the first write, the failover time,
// a bitmap-only resync smaller than the volume, node1 primary again after
// blockctl promote node1, identical copies at the end. Other tests of this
// package run the demo through runDemo.
//
// It needs bash, go, python3 and nbdcopy (Debian package libnbd-bin); when
// one is missing the test is skipped, unless BLOCKREP_REQUIRE_TOOLS=1 is
// set (scripts/test sets it when everything is installed), in which case it
// fails.
//
//	go test -count=1 -v ./test/docs/
package docs
