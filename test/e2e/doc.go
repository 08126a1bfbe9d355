// Package e2e is the end-to-end test suite of blockrep: it builds blockrepd
// and blockctl, starts real daemons from generated configurations on
// loopback, and drives them with NBD clients that this project did not write
// (libnbd's nbdinfo, nbdcopy, nbdsh and nbdfuse, qemu-img, fio) and with the
// kernel (loop device, ext4, e2fsck).
//
// The replication tests (cluster_test.go has the harness) start clusters of
// two or three daemons named node1..nodeN on 127.0.0.1 with generated
// [replication] and [[peer]] tables and a shared secret, optionally with a
// byte-counting TCP proxy on a peer link to measure what really crosses
// the wire, and drive them with blockctl, the NBD tools above and a small
// Go NBD client (internal/nbdclient):
//
//	BLOCKREP_REQUIRE_TOOLS=1 go test -count=1 -run 'Repl|Split|Secret|Epoch|Verify' ./test/e2e/
//
// A test whose tool is missing is skipped, unless BLOCKREP_REQUIRE_TOOLS=1
// is set (scripts/test sets it), in which case it fails. Tests that need
// losetup and mount are skipped when not run as root.
//
//	go test -count=1 ./test/e2e/
//	BLOCKREP_REQUIRE_TOOLS=1 go test -count=1 -v -run TestNbdsh ./test/e2e/
package e2e
