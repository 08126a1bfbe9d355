package docs

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestDemoProblems checks demoProblems on a recorded good run of
// scripts/demo --check and on copies of it changed the way a broken demo
// would print: each change must be reported, naming its step.
func TestDemoProblems(t *testing.T) {
	b, err := os.ReadFile(filepath.Join("testdata", "demo-check.out"))
	if err != nil {
		t.Fatal(err)
	}
	good := string(b)
	if p := demoProblems(good); len(p) != 0 {
		t.Fatalf("the recorded good run has problems:\n%s", strings.Join(p, "\n"))
	}
	for _, c := range []struct {
		name, old, new, step string
	}{
		{"node2 elected", "elected node1 as", "elected node2 as", "election"},
		{"no primary elected", "elected node1 as", "elected  as", "election"},
		{"copies differ after the write", "node2 d27cdba7433edae2  identical", "node2 d27cdba7433edae3  identical", "write"},
		{"copies said different", "node2 d27cdba7433edae2  identical", "node2 d27cdba7433edae2  DIFFERENT", "write"},
		{"no failover time", "served its first write 1137 ms", "served its first write ms", "failover"},
		{"wrong primary after the kill", "primary now: node2", "primary now: node1", "failover"},
		{"full-size resync", "sent 67108864 bytes", "sent 1073741824 bytes", "resync"},
		{"nothing resynced", "sent 67108864 bytes", "sent 0 bytes", "resync"},
		{"full resync", "in a bitmap resync", "in a full resync", "resync"},
		{"no resync line", "    node2 sent 67108864 bytes in a bitmap resync (volume: 1 GiB = 1073741824 bytes)\n", "", "resync"},
		{"wrong primary after the promote", "primary now: node1, epoch 3", "primary now: node2, epoch 3", "switchover"},
		{"epoch not raised by the promote", "primary now: node1, epoch 3", "primary now: node1, epoch 2", "switchover"},
		{"copies differ at the end", "node2 554d92633494e39e", "node2 554d92633494e39f", "switchover"},
		{"stopped at the promote", "node1 is primary of vol0\n", "demo: step switchover failed: a command exited with status 1 (see above)\n", "switchover"},
		{"a daemon did not stop cleanly", "    node2, node1 and w exited 0\n", "demo: step stop failed: node1 exited with status 1 after SIGTERM\n", "stop"},
		{"cut short", "demo: every step did what it printed\n", "", "stop"},
	} {
		t.Run(c.name, func(t *testing.T) {
			if !strings.Contains(good, c.old) {
				t.Fatalf("the recorded run has no %q", c.old)
			}
			bad := strings.Replace(good, c.old, c.new, 1)
			p := demoProblems(bad)
			if len(p) == 0 {
				t.Fatalf("no problem found after replacing %q with %q", c.old, c.new)
			}
			found := false
			for _, m := range p {
				found = found || strings.HasPrefix(m, "step "+c.step+":")
			}
			if !found {
				t.Errorf("no problem names step %s; got:\n%s", c.step, strings.Join(p, "\n"))
			}
		})
	}
}
