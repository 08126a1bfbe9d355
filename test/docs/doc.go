// Package docs tests that what the documentation tells a user to run does
// what the documentation says: it runs every command that README.md and
// docs/*.md tell a user to type, so that the documentation cannot drift
// from what works.
//
// TestDocCommands extracts the commands from the files (extractCommands,
// extract_test.go: fenced sh/bash/shell/console blocks and the code spans
// in prose that are commands) and looks every one up, normalised, in the
// registry (docGroups, commands_test.go). A command with no runner fails the test,
// naming its file, line and text; a runner whose command is no longer in
// the docs fails it too (a stale registry). Each runner runs its command
// against a real fixture (blockrepd processes started from the binaries the
// README's own "go build -o bin/ ./cmd/..." wrote) and asserts its exit
// status and something in its output or in the daemons' state that shows
// it did its job.
//
// A documented command is turned into the one that runs by one table
// (docEnv.substitute), the same for every runner:
//
//	bin/                    the directory the README's go build wrote (in a temporary directory)
//	/etc/blockrep/          a temporary directory (nothing is written to /etc)
//	/tmp/                   a temporary directory
//	NODE                    a node of the fixture (the one the command should act on)
//	VOLUME, PEER            the fixture's volume and peer
//	HOST:PORT               a fixture node's cluster.listen
//	NAME ADDRESS            a node to add: its name and cluster.listen
//	SIZE, PATH              a volume's size and its store's path
//	MEMBER                  a RAID member's index
//	…                       the text "docs test"
//	[X]                     the command without X and with X (expandCommand)
//	a|b|c                   each alternative (expandCommand)
//	blockctl, blockrepd     with no -s/-c (-config): -c CONFIG (-config CONFIG) of the fixture's
//	                        node is added, standing for /etc/blockrep/blockrepd.toml, the
//	                        file both programs read by default
//	bin/blockbench ...      shortened (docBench): -rounds 1 -runtime 1s -size 64MiB -dir TMP
//	                        appended (later flags win), -runtime 250ms with -raid
//
// A subcommand named without its required arguments ("blockctl raid fail",
// "blockctl promote --force") gets them from its runner, which says so.
// Placeholders left after the substitution fail the test: a new
// placeholder in the docs needs a value here.
//
// Fixtures bind free ports, except the README's "Using it" node, which is
// docs/blockrepd.example.toml itself with its paths moved into a temporary
// directory and keeps the example's 127.0.0.1:10809: the test holds
// /tmp/blockrep-fixed-ports.lock while it runs. The daemon fixtures run one
// after the other; scripts/test and the benchmarks run beside them.
//
// Its "demo" group runs the README's first command, scripts/demo, in its
// non-interactive mode (scripts/demo --check) from a clean build, with the
// default ports a user gets (it holds /tmp/blockrep-fixed-ports.lock while
// it runs), and checks its exit status and the line of every step
// (runDemo, demo_test.go): node1 elected, identical copies after the first
// write, the failover time, a bitmap-only resync smaller than the volume,
// node1 primary again after blockctl promote node1, identical copies at
// the end.
//
// The demo needs bash, go, python3 and nbdcopy (Debian package
// libnbd-bin); when one is missing it is skipped, unless BLOCKREP_REQUIRE_TOOLS=1 is
// set (scripts/test sets it when everything is installed), in which case it
// fails.
//
//	go test -count=1 -v ./test/docs/                              # everything
//	go test -count=1 -v -run 'TestDocCommands/demo' ./test/docs/  # the demo alone
package docs
