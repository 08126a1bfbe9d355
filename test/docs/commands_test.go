package docs

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/blockrep/blockrep/api"
)

// docFiles are the files whose commands are run: README.md and docs/*.md.
func docFiles(t *testing.T, root string) []string {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(root, "docs", "*.md"))
	if err != nil {
		t.Fatal(err)
	}
	out := []string{"README.md"}
	for _, f := range files {
		rel, _ := filepath.Rel(root, f)
		out = append(out, filepath.ToSlash(rel))
	}
	return out
}

// docStep is one registered command and its runner.
type docStep struct {
	// Key is the command as extractCommands returns it.
	Key string
	// Run runs it (key is Key) on the group's fixture.
	Run func(t *testing.T, f *docFixture, key string)
}

// docGroup is a fixture and the commands run on it, in order: a command
// that changes the fixture comes after those that need it unchanged.
type docGroup struct {
	Name string
	// Lane: groups of one lane run one after the other, the lanes side
	// by side ("build" first and alone; "daemons": the fixtures of
	// blockrepd processes; "scripts": scripts/test and .ci/run;
	// "benchmarks": blockbench).
	Lane  string
	Setup func(t *testing.T, f *docFixture)
	Steps []docStep
}

// docFixture is a group's state: its nodes and what its steps leave for the
// next ones.
type docFixture struct {
	*docEnv
	Nodes map[string]*docNode
	// Runs caches benchmark results by their effective command.
	Runs map[string]docResult
	// Vars are the group's placeholder values.
	Vars docVars
}

// docVars are placeholder values (see the package doc), by placeholder.
// Two keys are not placeholders: "/tmp/" names the directory that stands
// for /tmp (a new one per command when missing), and the benchmarks'
// "BENCHDIR" their -dir.
type docVars map[string]string

var (
	binWord         = regexp.MustCompile(`(^|[\s;&|(])bin/`)
	leftPlaceholder = regexp.MustCompile(`(^|[\s=])([A-Z][A-Z_]+(:[A-Z]+)?)(\s|$)`)
)

// substitute turns a documented command into the one that runs (the
// package doc's table). It fails t when a placeholder has no value.
func (e *docEnv) substitute(t *testing.T, c string, v docVars) string {
	t.Helper()
	if strings.Contains(c, "/tmp/") {
		d := v["/tmp/"]
		if d == "" {
			d = e.dir(t, "tmp")
		}
		c = strings.ReplaceAll(c, "/tmp/", d+"/")
	}
	// After /tmp/: the directories below are in the temporary directory.
	c = binWord.ReplaceAllString(c, "${1}"+e.bin+"/")
	c = strings.ReplaceAll(c, "/etc/blockrep/", e.etc+"/")
	c, err := expandVars(c, v)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// docWord is a word of a command as placeholders are matched: HOST:PORT is
// one word, $BLOCKREP_SOCKET one that is never a placeholder.
var docWord = regexp.MustCompile(`\$?[A-Za-z0-9_]+(:[A-Za-z0-9_]+)?`)

// expandVars replaces every word of c that is a key of v by its value and
// "…" by "docs test", and refuses a placeholder left without a value (a
// word of two capitals or more: NODE, HOST:PORT).
func expandVars(c string, v docVars) (string, error) {
	c = strings.ReplaceAll(c, "…", "docs test")
	var out strings.Builder
	last := 0
	for _, m := range docWord.FindAllStringIndex(c, -1) {
		w := c[m[0]:m[1]]
		val, ok := v[w]
		if !ok || w == "BENCHDIR" {
			continue
		}
		out.WriteString(c[last:m[0]])
		out.WriteString(val)
		last = m[1]
	}
	out.WriteString(c[last:])
	c = out.String()
	if m := leftPlaceholder.FindStringSubmatch(c); m != nil {
		return "", fmt.Errorf("%s: the placeholder %s has no value in this runner: give it one (docVars)", c, m[2])
	}
	return c, nil
}

// withConfig adds -c config to a blockctl command (-config to a blockrepd
// one) that names no socket or configuration: the fixture's node stands
// for /etc/blockrep/blockrepd.toml.
func (e *docEnv) withConfig(c, config string) string {
	for prog, flag := range map[string]string{"blockctl": "-c", "blockrepd": "-config"} {
		for _, p := range []string{prog + " ", e.bin + "/" + prog + " "} {
			rest, ok := strings.CutPrefix(c, p)
			if !ok {
				continue
			}
			words := strings.Fields(rest)
			if slices.Contains(words, "-s") || slices.Contains(words, "-c") || slices.Contains(words, "-config") {
				return c
			}
			return p + flag + " " + config + " " + rest
		}
	}
	return c
}

// cmdFor is the command that runs for the documented c on node n: c
// substituted, with n's configuration.
func (f *docFixture) cmdFor(t *testing.T, c string, n *docNode, v docVars) string {
	t.Helper()
	all := docVars{}
	for k, x := range f.Vars {
		all[k] = x
	}
	for k, x := range v {
		all[k] = x
	}
	return f.withConfig(f.substitute(t, c, all), n.Config)
}

// on runs the documented c on node n and requires exit 0.
func (f *docFixture) on(t *testing.T, n *docNode, c string, v docVars) docResult {
	t.Helper()
	return f.mustShell(t, "", f.cmdFor(t, c, n, v))
}

func TestDocCommands(t *testing.T) {
	e := newDocEnv(t)
	groups := docGroups()

	// The docs against the registry, both ways.
	var extracted []docCommand
	for _, file := range docFiles(t, e.root) {
		b, err := os.ReadFile(filepath.Join(e.root, file))
		if err != nil {
			t.Fatal(err)
		}
		extracted = append(extracted, extractCommands(file, string(b))...)
	}
	if len(extracted) == 0 {
		t.Fatal("no command extracted from the docs")
	}
	registered := map[string]bool{}
	for _, g := range groups {
		for _, s := range g.Steps {
			if registered[s.Key] {
				t.Errorf("registry: %q is registered twice", s.Key)
			}
			registered[s.Key] = true
		}
	}
	documented := map[string]bool{}
	for _, c := range extracted {
		documented[c.Text] = true
		if !registered[c.Text] {
			t.Errorf("%s:%d: no runner for the documented command %q: add one to docGroups (commands_test.go)", c.File, c.Line, c.Text)
		}
	}
	for _, g := range groups {
		for _, s := range g.Steps {
			if !documented[s.Key] {
				t.Errorf("registry: group %s runs %q, which README.md and docs/*.md no longer contain: remove or update its runner", g.Name, s.Key)
			}
		}
	}
	t.Logf("%d commands extracted, %d distinct, %d runners", len(extracted), len(documented), len(registered))

	// Every runner needs the binaries: the README's build runs first,
	// whatever -run selects.
	for _, g := range groups {
		if g.Lane == "build" {
			f := &docFixture{docEnv: e, Vars: docVars{}}
			for _, s := range g.Steps {
				s.Run(t, f, s.Key)
			}
		}
	}
	for _, p := range []string{"blockrepd", "blockctl", "blockbench"} {
		if _, err := os.Stat(filepath.Join(e.bin, p)); err != nil {
			t.Fatalf("the README's go build did not build %s (%v): nothing else can run", p, err)
		}
	}
	lanes := map[string][]docGroup{}
	var laneNames []string
	for _, g := range groups {
		if g.Lane == "build" {
			continue
		}
		if _, ok := lanes[g.Lane]; !ok {
			laneNames = append(laneNames, g.Lane)
		}
		lanes[g.Lane] = append(lanes[g.Lane], g)
	}
	t.Run("lanes", func(t *testing.T) {
		for _, lane := range laneNames {
			t.Run(lane, func(t *testing.T) {
				t.Parallel()
				for _, g := range lanes[lane] {
					t.Run(g.Name, func(t *testing.T) { runGroup(t, e, g, documented) })
				}
			})
		}
	})
}

// runGroup sets up the group's fixture and runs its documented steps.
func runGroup(t *testing.T, e *docEnv, g docGroup, documented map[string]bool) {
	f := &docFixture{docEnv: e, Nodes: map[string]*docNode{}, Runs: map[string]docResult{}, Vars: docVars{}}
	if g.Setup != nil {
		g.Setup(t, f)
	}
	for _, s := range g.Steps {
		if !documented[s.Key] {
			continue // reported as stale
		}
		if !t.Run(s.Key, func(t *testing.T) { s.Run(t, f, s.Key) }) {
			// The next steps would fail on a fixture in an unknown state.
			t.Fatalf("%s failed: the group's later steps were not run", s.Key)
		}
	}
}

// docGroups is the registry: every command the docs contain, by fixture.
func docGroups() []docGroup {
	return []docGroup{
		{Name: "build", Lane: "build", Steps: []docStep{
			{"go build -o bin/ ./cmd/...", runBuild},
		}},
		usingItGroup(),
		pairGroup(),
		clusterGroup(),
		raidGroup(),
		{Name: "demo", Lane: "daemons", Steps: []docStep{
			// The README's first command: its whole story, checked
			// step by step, then Ctrl-C (runDemoInteractive, demo_test.go).
			{"scripts/demo", func(t *testing.T, f *docFixture, _ string) { logDemoTimes(t, runDemoInteractive(t)) }},
			// The same story, non-interactive (runDemo).
			{"scripts/demo --check", func(t *testing.T, f *docFixture, _ string) { logDemoTimes(t, runDemo(t)) }},
			{"scripts/demo --help", func(t *testing.T, f *docFixture, key string) {
				r := f.mustShell(t, f.root, key)
				for _, want := range []string{"--check", "BLOCKREP_DEMO_CHECK", "BLOCKREP_DEMO_PORT", "BLOCKREP_DEMO_PEER_PORT", "BLOCKREP_DEMO_DIR"} {
					if !strings.Contains(r.Stdout, want) {
						t.Errorf("%s: no %q in:\n%s", r.Line, want, r.Stdout)
					}
				}
			}},
		}},
		scriptsGroup(),
		benchGroup(),
	}
}

// runBuild runs the README's build with bin/ in a temporary directory,
// from the repository root.
func runBuild(t *testing.T, f *docFixture, key string) {
	r := f.mustShell(t, "", f.substitute(t, key, nil))
	for _, p := range []string{"blockrepd", "blockctl", "blockbench"} {
		if fi, err := os.Stat(filepath.Join(f.bin, p)); err != nil || fi.Mode()&0o111 == 0 {
			t.Errorf("%s did not write an executable %s: %v", r.Line, p, err)
		}
	}
}

// ---- scripts/test and .ci/run

func scriptsGroup() docGroup {
	return docGroup{Name: "scripts", Lane: "scripts", Steps: []docStep{
		// The whole suite cannot run inside itself: -run '^$' runs go
		// vet and compiles every package's tests, running none.
		{"scripts/test", func(t *testing.T, f *docFixture, key string) {
			r := f.mustShell(t, "", key+" -run '^$'")
			for _, want := range []string{"github.com/blockrep/blockrep/test/e2e", "github.com/blockrep/blockrep/test/docs", "[no tests to run]"} {
				if !strings.Contains(r.Stdout, want) {
					t.Errorf("%s: the output lacks %q:\n%s", r.Line, want, r.Stdout)
				}
			}
		}},
		// .ci/run must run exactly scripts/test: run it in a copy of the
		// tree whose scripts/test records how it was called.
		{".ci/run", func(t *testing.T, f *docFixture, key string) {
			tree := f.dir(t, "ci")
			for _, d := range []string{".ci", "scripts"} {
				if err := os.MkdirAll(filepath.Join(tree, d), 0o755); err != nil {
					t.Fatal(err)
				}
			}
			run, err := os.ReadFile(filepath.Join(f.root, ".ci", "run"))
			if err != nil {
				t.Fatal(err)
			}
			writeFile(t, filepath.Join(tree, ".ci", "run"), string(run), 0o755)
			writeFile(t, filepath.Join(tree, "scripts", "test"), "#!/bin/sh\necho \"scripts/test ran in $(pwd) with $# arguments: $*\"\n", 0o755)
			r := f.mustShell(t, tree, key)
			if want := fmt.Sprintf("scripts/test ran in %s with 0 arguments: \n", tree); r.Stdout != want {
				t.Errorf("%s printed %q, want %q (it must run exactly scripts/test, from the repository root)", key, r.Stdout, want)
			}
		}},
	}}
}

// ---- the README's "Using it": the example configuration

// exampleConfig returns docs/blockrepd.example.toml with its paths moved
// into the test's directories: /etc/blockrep, /var/lib/blockrep and
// /run/blockrep under the test's directory, the archive volume's device a
// file.
func exampleConfig(t *testing.T, f *docFixture) (config string, n *docNode) {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(f.root, "docs", "blockrepd.example.toml"))
	if err != nil {
		t.Fatal(err)
	}
	n = f.newNode(t, "node1")
	archive := filepath.Join(n.Dir, "archive.img")
	writeFile(t, archive, "archive volume\n", 0o600)
	if err := os.Truncate(archive, 4<<20); err != nil {
		t.Fatal(err)
	}
	run := filepath.Join(n.Dir, "run", "blockrep")
	if err := os.MkdirAll(run, 0o755); err != nil {
		t.Fatal(err)
	}
	text := strings.NewReplacer(
		"/var/lib/blockrep/", filepath.Join(n.Dir, "var", "lib", "blockrep")+"/",
		"/run/blockrep/", run+"/",
		"/etc/blockrep/", f.etc+"/",
		"/dev/disk/by-id/ata-EXAMPLE-part1", archive,
	).Replace(string(b))
	n.Config = filepath.Join(f.etc, "blockrepd.toml")
	n.Socket = filepath.Join(run, "blockrepd.sock")
	n.NBD = "127.0.0.1:10809"
	writeFile(t, n.Config, text, 0o600)
	return text, n
}

func usingItGroup() docGroup {
	node := func(f *docFixture) *docNode { return f.Nodes["node1"] }
	vol0 := func(t *testing.T, f *docFixture) string {
		t.Helper()
		s, err := f.statusErr(node(f))
		if err != nil {
			t.Fatal(err)
		}
		return volume(s, "vol0").Path
	}
	return docGroup{Name: "using-it", Lane: "daemons",
		Setup: func(t *testing.T, f *docFixture) {
			fixedPorts(t) // the example's 127.0.0.1:10809, and -pprof's 6061
			_, n := exampleConfig(t, f)
			f.Nodes["node1"] = n
		},
		Steps: []docStep{
			{"bin/blockrepd -config /etc/blockrep/blockrepd.toml", func(t *testing.T, f *docFixture, key string) {
				n := node(f)
				f.startLine(t, n, f.substitute(t, key, nil))
				s := f.waitFor(t, n, "serving vol0 and archive", func(s *api.Status) bool {
					return volume(s, "vol0") != nil && volume(s, "archive") != nil
				})
				if s.Node != "node1" || volume(s, "vol0").Size != 1<<30 || !volume(s, "archive").ReadOnly {
					t.Errorf("the example configuration's node: %s, vol0 %d bytes, archive read-only %v; want node1, 1GiB, true",
						s.Node, volume(s, "vol0").Size, volume(s, "archive").ReadOnly)
				}
			}},
			// And the alternatives its comment gives: -s SOCKET, or
			// $BLOCKREP_SOCKET.
			{"bin/blockctl -c /etc/blockrep/blockrepd.toml status", func(t *testing.T, f *docFixture, key string) {
				c := f.substitute(t, key, nil)
				sock := node(f).Socket
				for _, r := range []docResult{
					f.mustShell(t, "", c),
					f.mustShell(t, "", strings.Replace(c, "-c "+node(f).Config, "-s "+sock, 1)),
					f.mustShell(t, "", strings.Replace(c, "-c "+node(f).Config+" ", "", 1), "BLOCKREP_SOCKET="+sock),
				} {
					for _, want := range []string{"node1", "vol0", "archive"} {
						if !strings.Contains(r.Stdout, want) {
							t.Errorf("%s: no %q in:\n%s", r.Line, want, r.Stdout)
						}
					}
				}
			}},
			{"nbdinfo nbd://127.0.0.1:10809/vol0", func(t *testing.T, f *docFixture, key string) {
				needTools(t, "nbdinfo")
				r := f.mustShell(t, "", f.substitute(t, key, nil))
				for _, want := range []string{"export-size: 1073741824", "first volume"} {
					if !strings.Contains(r.Stdout, want) {
						t.Errorf("%s: no %q in:\n%s", r.Line, want, r.Stdout)
					}
				}
			}},
			{"blockctl status [-o json]", func(t *testing.T, f *docFixture, key string) {
				for _, c := range expandCommand(key) {
					r := f.on(t, node(f), c, nil)
					if strings.HasSuffix(c, "json") {
						var s api.Status
						if err := json.Unmarshal([]byte(r.Stdout), &s); err != nil || s.Node != "node1" || len(s.Volumes) != 2 {
							t.Errorf("%s: not the node's status as JSON (%v):\n%s", r.Line, err, r.Stdout)
						}
					} else if !strings.Contains(r.Stdout, "vol0") || strings.HasPrefix(r.Stdout, "{") {
						t.Errorf("%s: not a table naming vol0:\n%s", r.Line, r.Stdout)
					}
				}
			}},
			// README: a store deleted while open fails I/O, and
			// status -o json says so in store.gone.
			{"blockctl status -o json", func(t *testing.T, f *docFixture, key string) {
				n := node(f)
				path := vol0(t, f)
				r := f.on(t, n, key, nil)
				var s api.Status
				if err := json.Unmarshal([]byte(r.Stdout), &s); err != nil || volume(&s, "vol0").Store == nil || volume(&s, "vol0").Store.Gone != "" {
					t.Fatalf("%s: want vol0 with a store that is not gone (%v):\n%s", r.Line, err, r.Stdout)
				}
				keep := path + ".kept"
				if err := os.Rename(path, keep); err != nil {
					t.Fatal(err)
				}
				f.waitFor(t, n, "noticing that vol0's store is gone", func(*api.Status) bool {
					var s api.Status
					r := f.on(t, n, key, nil)
					return json.Unmarshal([]byte(r.Stdout), &s) == nil && volume(&s, "vol0").Store != nil && volume(&s, "vol0").Store.Gone != ""
				})
				// Put it back for the next steps: restart on it.
				n.kill()
				if err := os.Rename(keep, path); err != nil {
					t.Fatal(err)
				}
				f.start(t, n)
			}},
			// README "A store that is not the recorded one": a standalone
			// node refuses a replaced store; -forget-volume takes it.
			{"blockrepd -config /etc/blockrep/blockrepd.toml -forget-volume vol0", func(t *testing.T, f *docFixture, key string) {
				n := node(f)
				path := vol0(t, f)
				n.stop(t)
				fi, err := os.Stat(path)
				if err != nil {
					t.Fatal(err)
				}
				if err := os.Remove(path); err != nil {
					t.Fatal(err)
				}
				writeFile(t, path, "replaced store\n", 0o600)
				if err := os.Truncate(path, fi.Size()); err != nil {
					t.Fatal(err)
				}
				refused := f.shell(t, "", f.bin+"/blockrepd -config "+n.Config)
				if refused.Code == 0 || !strings.Contains(refused.Stderr, path) {
					t.Fatalf("a replaced standalone store: want blockrepd refused, naming %s: %v", path, refused)
				}
				f.mustShell(t, "", f.substitute(t, key, nil))
				f.start(t, n)
				if got := nbdRead(t, n.NBD, "vol0", 0, 15); string(got) != "replaced store\n" {
					t.Errorf("after -forget-volume, vol0 starts with %q, want what the new store holds", got)
				}
			}},
			// docs/BENCHMARKS.md: the profile was taken with these two.
			{"blockrepd -pprof 127.0.0.1:6061", func(t *testing.T, f *docFixture, key string) {
				n := node(f)
				n.stop(t)
				f.startLine(t, n, f.cmdFor(t, key, n, nil))
				resp, err := http.Get("http://127.0.0.1:6061/debug/pprof/")
				if err != nil {
					t.Fatal(err)
				}
				defer resp.Body.Close()
				b, _ := io.ReadAll(resp.Body)
				if resp.StatusCode != 200 || !strings.Contains(string(b), "goroutine") {
					t.Errorf("GET /debug/pprof/ on 127.0.0.1:6061: %s:\n%.500s", resp.Status, b)
				}
			}},
			// Completed with the profile's source: the daemon started
			// with -pprof just before.
			{"go tool pprof -top -cum", func(t *testing.T, f *docFixture, key string) {
				r := f.mustShell(t, "", key+" -seconds 1 http://127.0.0.1:6061/debug/pprof/profile")
				if !strings.Contains(r.Stdout, "flat%") || !strings.Contains(r.Stdout, "cum%") {
					t.Errorf("%s: no profile table:\n%s", r.Line, r.Stdout)
				}
				node(f).stop(t)
			}},
		}}
}

// ---- a replicated pair without a cluster

// docSize is the size of every fixture volume but the example's.
const docSize = 16 << 20

// pairConfig writes the configuration of one node of the pair.
func pairConfig(t *testing.T, f *docFixture, n, peer *docNode, role string) {
	t.Helper()
	writeFile(t, n.Config, fmt.Sprintf(`[node]
name = %s
data_dir = %s
control_socket = %s

[nbd]
listen = [%s]

[replication]
cluster = "docs"
secret_file = %s
listen = %s
connect_retry_max = "1s"

[[peer]]
name = %s
address = %s

[[volume]]
name = "vol0"
path = %s
size = %d
role = %s
`, q(n.Name), q(filepath.Join(n.Dir, "data")), q(n.Socket), q(n.NBD), q(filepath.Join(f.etc, "secret")), q(n.Repl),
		q(peer.Name), q(peer.Repl), q(filepath.Join(n.Dir, "vol0.img")), docSize, q(role)), 0o600)
}

// docLink is what a node's status says of its link to a peer.
type docLink struct {
	Connection, Disk string
	OutOfSync        int64
	ResyncKind       string
	ResyncStarted    time.Time
	ResyncDone       bool
	VerifyStarted    time.Time
	VerifyDone       bool
}

// link returns n's status of its link to peer (nil when missing).
func link(s *api.Status, peer string) *docLink {
	v := volume(s, "vol0")
	if v == nil || v.Replication == nil {
		return nil
	}
	for _, p := range v.Replication.Peers {
		if p.Name != peer {
			continue
		}
		l := &docLink{Connection: string(p.Connection), Disk: string(p.Disk), OutOfSync: p.OutOfSyncBytes}
		if p.Resync != nil {
			l.ResyncKind, l.ResyncStarted, l.ResyncDone = p.Resync.Kind, p.Resync.Started, !p.Resync.Finished.IsZero()
		}
		if p.Verify != nil {
			l.VerifyStarted, l.VerifyDone = p.Verify.Started, !p.Verify.Finished.IsZero()
		}
		return l
	}
	return nil
}

func role(s *api.Status) string {
	if v := volume(s, "vol0"); v != nil && v.Replication != nil {
		return v.Replication.Role
	}
	return ""
}

func disk(s *api.Status) string {
	if v := volume(s, "vol0"); v != nil && v.Replication != nil {
		return string(v.Replication.Disk)
	}
	return ""
}

// resyncedSince waits until n's link to peer ran a resync of kind (any
// kind when "") that started after since and is done, and is in sync.
func resyncedSince(t *testing.T, f *docFixture, n *docNode, peer, kind string, since time.Time) {
	t.Helper()
	f.waitFor(t, n, fmt.Sprintf("done with a %s resync to %s started after %s", kind, peer, since.Format(time.StampMilli)), func(s *api.Status) bool {
		l := link(s, peer)
		return l != nil && l.ResyncDone && l.ResyncStarted.After(since) && (kind == "" || l.ResyncKind == kind) &&
			l.Connection == "Connected" && l.OutOfSync == 0
	})
}

func pairGroup() docGroup {
	n1 := func(f *docFixture) *docNode { return f.Nodes["n1"] }
	n2 := func(f *docFixture) *docNode { return f.Nodes["n2"] }
	waitPair := func(t *testing.T, f *docFixture, primary, secondary *docNode) {
		t.Helper()
		f.waitFor(t, secondary, "an UpToDate secondary", func(s *api.Status) bool { return inSync(s, "vol0", "secondary") })
		f.waitFor(t, primary, "primary in sync with its peer", func(s *api.Status) bool { return inSync(s, "vol0", "primary") })
	}
	return docGroup{Name: "pair", Lane: "daemons",
		Setup: func(t *testing.T, f *docFixture) {
			ports := freePorts(t, 4)
			for i, name := range []string{"n1", "n2"} {
				n := f.newNode(t, name)
				n.NBD, n.Repl = ports[i], ports[2+i]
				f.Nodes[name] = n
			}
			f.Vars = docVars{"VOLUME": "vol0"}
		},
		Steps: []docStep{
			// The pair's shared secret is made by the README's command.
			{"head -c 32 /dev/urandom | base64 > /etc/blockrep/secret; chmod 600 /etc/blockrep/secret", func(t *testing.T, f *docFixture, key string) {
				f.mustShell(t, "", f.substitute(t, key, nil))
				secret := filepath.Join(f.etc, "secret")
				fi, err := os.Stat(secret)
				if err != nil {
					t.Fatal(err)
				}
				b, _ := os.ReadFile(secret)
				if fi.Mode().Perm() != 0o600 || len(strings.TrimSpace(string(b))) != 44 {
					t.Fatalf("%s: mode %v, %d characters; want 0600 and 44 (32 bytes in base64)", secret, fi.Mode().Perm(), len(strings.TrimSpace(string(b))))
				}
				pairConfig(t, f, n1(f), n2(f), "primary")
				pairConfig(t, f, n2(f), n1(f), "secondary")
				f.start(t, n1(f))
				f.start(t, n2(f))
				waitPair(t, f, n1(f), n2(f))
			}},
			{"blockctl verify", func(t *testing.T, f *docFixture, key string) {
				since := time.Now()
				f.on(t, n1(f), key, nil)
				f.waitFor(t, n1(f), "done with a verify started now, nothing out of sync", func(s *api.Status) bool {
					l := link(s, "n2")
					return l != nil && l.VerifyDone && l.VerifyStarted.After(since) && l.OutOfSync == 0
				})
			}},
			// README 260: after a verify, resync copies what it found.
			{"blockctl resync", func(t *testing.T, f *docFixture, key string) {
				r := f.on(t, n1(f), key, nil)
				if r.Stdout == "" {
					t.Errorf("%s printed nothing; a command that changes the node says what it asked for", r.Line)
				}
				waitPair(t, f, n1(f), n2(f))
			}},
			{"blockctl resync [--checksum|--full]", func(t *testing.T, f *docFixture, key string) {
				for _, c := range expandCommand(key) {
					since := time.Now()
					f.on(t, n1(f), c, nil)
					switch {
					case strings.HasSuffix(c, "--checksum"):
						resyncedSince(t, f, n1(f), "n2", "checksum", since)
					case strings.HasSuffix(c, "--full"):
						resyncedSince(t, f, n1(f), "n2", "full", since)
					default:
						waitPair(t, f, n1(f), n2(f))
					}
				}
			}},
			{"blockctl disconnect", func(t *testing.T, f *docFixture, key string) {
				f.on(t, n1(f), key, nil)
				f.waitFor(t, n1(f), "StandAlone from n2", func(s *api.Status) bool {
					l := link(s, "n2")
					return l != nil && l.Connection == "StandAlone"
				})
			}},
			{"blockctl connect", func(t *testing.T, f *docFixture, key string) {
				f.on(t, n1(f), key, nil)
				waitPair(t, f, n1(f), n2(f))
			}},
			{"blockctl invalidate", func(t *testing.T, f *docFixture, key string) {
				since := time.Now()
				f.on(t, n2(f), key, nil)
				resyncedSince(t, f, n1(f), "n2", "", since)
				waitPair(t, f, n1(f), n2(f))
			}},
			// README "A store that is not the recorded one", replicated:
			// the secondary's disk is replaced by a blank store.
			{"truncate -s SIZE PATH", func(t *testing.T, f *docFixture, key string) {
				s, err := f.statusErr(n2(f))
				if err != nil {
					t.Fatal(err)
				}
				v := volume(s, "vol0")
				n2(f).stop(t)
				if err := os.Remove(v.Path); err != nil {
					t.Fatal(err)
				}
				since := time.Now()
				f.mustShell(t, "", f.substitute(t, key, docVars{"SIZE": fmt.Sprint(v.Size), "PATH": v.Path}))
				f.start(t, n2(f))
				resyncedSince(t, f, n1(f), "n2", "full", since)
				waitPair(t, f, n1(f), n2(f))
			}},
			// README "Primary crashed": primary on the secondary, which
			// refuses writes until the old primary is disconnected;
			// the old primary comes back as secondary.
			{"blockctl primary", func(t *testing.T, f *docFixture, key string) {
				a, b := n1(f), n2(f)
				a.kill()
				f.on(t, b, key, nil)
				f.waitFor(t, b, "primary", func(s *api.Status) bool { return role(s) == "primary" })
				if err := nbdWrite(t, b.NBD, "vol0", 0, []byte("after the crash")); err == nil {
					t.Errorf("n2 acknowledged a write while the old primary was unreachable and not disconnected")
				}
				f.ctl(t, b, "disconnect")
				if err := nbdWrite(t, b.NBD, "vol0", 0, []byte("after the crash")); err != nil {
					t.Fatalf("a write on n2 after blockctl disconnect: %v", err)
				}
				pairConfig(t, f, a, b, "secondary")
				f.start(t, a)
				f.ctl(t, b, "connect")
				waitPair(t, f, b, a)
				if got := nbdRead(t, a.NBD, "vol0", 0, 15); string(got) != "after the crash" {
					t.Errorf("n1 after its resync holds %q at 0, want n2's write", got)
				}
			}},
			{"blockctl secondary", func(t *testing.T, f *docFixture, key string) {
				f.on(t, n2(f), key, nil)
				f.waitFor(t, n2(f), "secondary", func(s *api.Status) bool { return role(s) == "secondary" })
			}},
			{"blockctl primary [--force]", func(t *testing.T, f *docFixture, key string) {
				for _, c := range expandCommand(key) {
					f.on(t, n1(f), c, nil)
					f.waitFor(t, n1(f), "primary", func(s *api.Status) bool { return role(s) == "primary" })
					waitPair(t, f, n1(f), n2(f))
					if !strings.HasSuffix(c, "--force") {
						f.ctl(t, n1(f), "secondary")
					}
				}
			}},
			// README "Split brain": n1 primary and n2 both wrote while
			// apart; n2 is the victim.
			{"blockctl connect --discard-my-data", func(t *testing.T, f *docFixture, key string) {
				a, b := n1(f), n2(f)
				f.ctl(t, a, "disconnect")
				f.ctl(t, b, "disconnect")
				if err := nbdWrite(t, a.NBD, "vol0", 4096, []byte("n1 wrote this")); err != nil {
					t.Fatal(err)
				}
				f.ctl(t, b, "primary")
				if err := nbdWrite(t, b.NBD, "vol0", 8192, []byte("n2 wrote this")); err != nil {
					t.Fatal(err)
				}
				f.ctl(t, a, "secondary")
				f.ctl(t, b, "secondary")
				f.ctl(t, b, "connect")
				f.ctl(t, a, "connect")
				for _, x := range [][2]*docNode{{a, b}, {b, a}} {
					f.waitFor(t, x[0], "StandAlone after a split brain", func(s *api.Status) bool {
						l := link(s, x[1].Name)
						return l != nil && l.Connection == "StandAlone"
					})
				}
				f.on(t, b, key, nil)
				f.ctl(t, a, "connect")
				f.waitFor(t, b, "an UpToDate secondary connected to n1", func(s *api.Status) bool {
					l := link(s, "n1")
					return disk(s) == "UpToDate" && l != nil && l.Connection == "Connected" && l.OutOfSync == 0
				})
				if got := nbdRead(t, a.NBD, "vol0", 8192, 13); string(got) == "n2 wrote this" {
					t.Errorf("the survivor n1 holds the victim's write")
				}
				ra, rb := f.volumeBytes(t, a), f.volumeBytes(t, b)
				if ra != rb {
					t.Errorf("after the resolution n2's store differs from n1's")
				}
			}},
		}}
}

// volumeBytes returns a digest of vol0's first docSize bytes on n's store.
func (f *docFixture) volumeBytes(t *testing.T, n *docNode) string {
	t.Helper()
	r := f.mustShell(t, "", fmt.Sprintf("head -c %d %s | sha256sum", docSize, filepath.Join(n.Dir, "vol0.img")))
	return r.Stdout
}
