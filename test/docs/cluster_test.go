package docs

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/blockrep/blockrep/api"
)

// clusterConfig writes the configuration of a cluster node: a data node
// (peer not nil) replicating vol0 to peer, or a witness. members are the
// initial [[cluster.member]]s (none for a node added later).
func clusterConfig(t *testing.T, f *docFixture, n, peer *docNode, members []*docNode) {
	t.Helper()
	var b strings.Builder
	fmt.Fprintf(&b, "[node]\nname = %s\ndata_dir = %s\ncontrol_socket = %s\n", q(n.Name), q(filepath.Join(n.Dir, "data")), q(n.Socket))
	if peer != nil {
		fmt.Fprintf(&b, "\n[nbd]\nlisten = [%s]\n\n[replication]\nlisten = %s\nconnect_retry_max = \"1s\"\n\n[[peer]]\nname = %s\naddress = %s\n",
			q(n.NBD), q(n.Repl), q(peer.Name), q(peer.Repl))
	}
	fmt.Fprintf(&b, "\n[cluster]\nname = \"docs\"\nsecret_file = %s\nlisten = %s\n", q(filepath.Join(f.etc, "cluster.secret")), q(n.ClusterAddr))
	if peer == nil {
		b.WriteString("kind = \"witness\"\n")
	}
	for _, m := range members {
		fmt.Fprintf(&b, "\n[[cluster.member]]\nname = %s\naddress = %s\n", q(m.Name), q(m.ClusterAddr))
	}
	if peer != nil {
		fmt.Fprintf(&b, "\n[[volume]]\nname = \"vol0\"\npath = %s\nsize = %d\npreferred_primary = \"node1\"\n", q(filepath.Join(n.Dir, "vol0.img")), docSize)
	}
	writeFile(t, n.Config, b.String(), 0o600)
}

// clusterPrimary is the cluster's primary of vol0 as s sees it.
func clusterPrimary(s *api.Status) string {
	if s.Cluster == nil || s.Cluster.State == nil || s.Cluster.State.Volumes["vol0"] == nil {
		return ""
	}
	return s.Cluster.State.Volumes["vol0"].Primary
}

// clusterMembers are the Raft members s lists.
func clusterMembers(s *api.Status) []string {
	var out []string
	if s.Cluster != nil {
		for _, m := range s.Cluster.Members {
			out = append(out, m.Name)
		}
	}
	return out
}

func clusterGroup() docGroup {
	node := func(f *docFixture, name string) *docNode { return f.Nodes[name] }
	// waitPrimary waits until p is the primary, serving, with the other
	// data node in sync, and the cluster agrees.
	waitPrimary := func(t *testing.T, f *docFixture, p string) {
		t.Helper()
		other := map[string]string{"node1": "node2", "node2": "node1"}[p]
		f.waitFor(t, node(f, other), "an UpToDate secondary", func(s *api.Status) bool { return inSync(s, "vol0", "secondary") })
		f.waitFor(t, node(f, p), "primary, in sync, as the cluster committed", func(s *api.Status) bool {
			return inSync(s, "vol0", "primary") && clusterPrimary(s) == p
		})
	}
	// secondaryNode is the data node that is not primary now.
	secondaryNode := func(t *testing.T, f *docFixture) string {
		t.Helper()
		s, err := f.statusErr(node(f, "node1"))
		if err != nil {
			t.Fatal(err)
		}
		if clusterPrimary(s) == "node1" {
			return "node2"
		}
		return "node1"
	}
	// promote runs a documented promote with NODE the secondary, and
	// waits until it is primary.
	promote := func(t *testing.T, f *docFixture, c string) {
		t.Helper()
		target := secondaryNode(t, f)
		r := f.on(t, node(f, "node1"), c, docVars{"NODE": target})
		if r.Stdout == "" {
			t.Errorf("%s printed nothing; want the daemon's note", r.Line)
		}
		waitPrimary(t, f, target)
	}
	// events runs blockctl events until it has printed the current state
	// (its exists-end line), interrupts it as a user would (SIGINT) and
	// checks what it printed.
	events := func(t *testing.T, f *docFixture, c string) {
		t.Helper()
		r := f.untilLine(t, f.cmdFor(t, c, node(f, "node1"), nil), "exists-end")
		if r.Code != 0 {
			t.Errorf("want exit 0 after SIGINT: %v", r)
		}
		if !strings.Contains(r.Stdout, "exists-end") || !strings.Contains(r.Stdout, "primary") || !strings.Contains(r.Stdout, "leader") {
			t.Errorf("%s: want the current state (role, leader, primary ...) ended by exists-end:\n%s", r.Line, r.Stdout)
		}
		if strings.HasSuffix(c, "-o json") {
			for _, l := range strings.Split(strings.TrimSpace(r.Stdout), "\n") {
				var m map[string]any
				if err := json.Unmarshal([]byte(l), &m); err != nil {
					t.Errorf("%s: a line is not JSON (%v): %s", r.Line, err, l)
				}
			}
		}
	}
	// addWitness starts a witness with no members, to be added.
	addWitness := func(t *testing.T, f *docFixture, name string) *docNode {
		t.Helper()
		n := f.newNode(t, name)
		n.ClusterAddr = freePorts(t, 1)[0]
		clusterConfig(t, f, n, nil, nil)
		f.start(t, n)
		f.Nodes[name] = n
		return n
	}
	hasMember := func(t *testing.T, f *docFixture, name string, want bool) {
		t.Helper()
		f.waitFor(t, node(f, "w"), fmt.Sprintf("listing %s as a member: %v", name, want), func(s *api.Status) bool {
			return slices.Contains(clusterMembers(s), name) == want
		})
	}
	return docGroup{Name: "cluster", Lane: "daemons",
		Setup: func(t *testing.T, f *docFixture) {
			secret := filepath.Join(f.etc, "cluster.secret")
			writeFile(t, secret, "docs-test-cluster-secret-0123456789abcdef\n", 0o600)
			ports := freePorts(t, 7)
			var all []*docNode
			for i, name := range []string{"node1", "node2", "w"} {
				n := f.newNode(t, name)
				n.ClusterAddr = ports[i]
				if name != "w" {
					n.NBD, n.Repl = ports[3+i], ports[5+i]
				}
				f.Nodes[name] = n
				all = append(all, n)
			}
			clusterConfig(t, f, all[0], all[1], all)
			clusterConfig(t, f, all[1], all[0], all)
			clusterConfig(t, f, all[2], nil, all)
			for _, n := range all {
				f.start(t, n)
			}
			waitPrimary(t, f, "node1")
			f.Vars = docVars{"VOLUME": "vol0"}
		},
		Steps: []docStep{
			{"blockctl status", func(t *testing.T, f *docFixture, key string) {
				r := f.on(t, node(f, "node2"), key, nil)
				for _, want := range []string{"node2", "node1", "w", "primary", "secondary", "epoch"} {
					if !strings.Contains(r.Stdout, want) {
						t.Errorf("%s: no %q in:\n%s", r.Line, want, r.Stdout)
					}
				}
			}},
			// The common flags before the command: the JSON status,
			// current (a read barrier answered) on a healthy cluster.
			{"blockctl -o json --timeout 5s status", func(t *testing.T, f *docFixture, key string) {
				r := f.on(t, node(f, "node2"), key, nil)
				var s api.Status
				if err := json.Unmarshal([]byte(r.Stdout), &s); err != nil {
					t.Fatalf("%s: not JSON (%v):\n%s", r.Line, err, r.Stdout)
				}
				if s.Node != "node2" || s.Cluster == nil || s.Cluster.Stale != "" || !s.Cluster.CaughtUp || clusterPrimary(&s) != "node1" {
					t.Errorf("%s: want node2's current status naming node1 primary:\n%s", r.Line, r.Stdout)
				}
			}},
			// -c of node2 gives the secret and the cluster's name; the
			// command goes to the witness over its cluster port.
			{"blockctl --node HOST:PORT status", func(t *testing.T, f *docFixture, key string) {
				w := node(f, "w")
				r := f.on(t, node(f, "node2"), key, docVars{"HOST:PORT": w.ClusterAddr})
				local := f.ctl(t, w, "status")
				if nodeLine(r.Stdout) != nodeLine(local) || !strings.Contains(r.Stdout, "witness") {
					t.Errorf("%s: want the witness's status (%q):\n%s", r.Line, nodeLine(local), r.Stdout)
				}
			}},
			{"blockctl events [-o json]", func(t *testing.T, f *docFixture, key string) {
				for _, c := range expandCommand(key) {
					events(t, f, c)
				}
			}},
			{"blockctl events", func(t *testing.T, f *docFixture, key string) { events(t, f, key) }},
			{"blockctl demote", func(t *testing.T, f *docFixture, key string) {
				f.on(t, node(f, "node1"), key, nil)
				waitPrimary(t, f, "node2")
			}},
			{"blockctl promote node1", func(t *testing.T, f *docFixture, key string) {
				f.on(t, node(f, "node2"), key, nil)
				waitPrimary(t, f, "node1")
			}},
			{"blockctl promote NODE", func(t *testing.T, f *docFixture, key string) { promote(t, f, key) }},
			{"blockctl promote NODE [--force]", func(t *testing.T, f *docFixture, key string) {
				for _, c := range expandCommand(key) {
					promote(t, f, c)
				}
			}},
			// Completed with NODE, which promote requires.
			{"blockctl promote --force", func(t *testing.T, f *docFixture, key string) {
				promote(t, f, strings.Replace(key, "promote", "promote NODE", 1))
			}},
			{`blockctl promote NODE --force --reason "…"`, func(t *testing.T, f *docFixture, key string) {
				promote(t, f, key)
				found := false
				for _, name := range []string{"node1", "node2", "w"} {
					b, _ := os.ReadFile(node(f, name).Log)
					found = found || strings.Contains(string(b), "docs test")
				}
				if !found {
					t.Errorf("the reason %q is in no daemon's log", "docs test")
				}
			}},
			{"blockctl cluster add NAME ADDRESS", func(t *testing.T, f *docFixture, key string) {
				w2 := addWitness(t, f, "w2")
				f.on(t, node(f, "node1"), key, docVars{"NAME": "w2", "ADDRESS": w2.ClusterAddr})
				hasMember(t, f, "w2", true)
				f.waitFor(t, w2, "a member with a leader", func(s *api.Status) bool { return s.Cluster != nil && s.Cluster.Leader != "" })
			}},
			// Completed with the node's name (and address).
			{"blockctl cluster add|remove", func(t *testing.T, f *docFixture, key string) {
				for _, c := range expandCommand(key) {
					switch {
					case strings.HasSuffix(c, " add"):
						w3 := addWitness(t, f, "w3")
						f.on(t, node(f, "node1"), c+" NAME ADDRESS", docVars{"NAME": "w3", "ADDRESS": w3.ClusterAddr})
						hasMember(t, f, "w3", true)
					case strings.HasSuffix(c, " remove"):
						f.on(t, node(f, "node1"), c+" NAME", docVars{"NAME": "w3"})
						hasMember(t, f, "w3", false)
					default:
						t.Fatalf("%s: no runner for this variant", c)
					}
				}
			}},
		}}
}

// nodeLine is the node's name and ID from the first line of a status
// table ("node w  id …  version …  up 1s"): the rest, its uptime, moves.
func nodeLine(s string) string {
	l, _, _ := strings.Cut(s, "\n")
	l, _, _ = strings.Cut(l, "  version ")
	return l
}

// ---- a volume on a RAID array

func raidGroup() docGroup {
	node := func(f *docFixture) *docNode { return f.Nodes["raid"] }
	raid := func(t *testing.T, f *docFixture) *api.RAIDStatus {
		t.Helper()
		s, err := f.statusErr(node(f))
		if err != nil {
			t.Fatal(err)
		}
		return volume(s, "vol0").RAID
	}
	waitHealth := func(t *testing.T, f *docFixture, health string) {
		t.Helper()
		f.waitFor(t, node(f), "RAID "+health+" with nothing running", func(s *api.Status) bool {
			r := volume(s, "vol0").RAID
			return r != nil && r.Health == health && (r.Progress == nil || r.Progress.State != "running")
		})
	}
	member := func(f *docFixture, name string) string { return filepath.Join(node(f).Dir, name+".img") }
	return docGroup{Name: "raid", Lane: "daemons",
		Setup: func(t *testing.T, f *docFixture) {
			n := f.newNode(t, "raid")
			n.NBD = freePorts(t, 1)[0]
			writeFile(t, n.Config, fmt.Sprintf(`[node]
name = "raid"
data_dir = %s
control_socket = %s

[nbd]
listen = [%s]

[[volume]]
name = "vol0"
raid_level = "raid1"
raid_members = [%s, %s, %s]
size = %d
`, q(filepath.Join(n.Dir, "data")), q(n.Socket), q(n.NBD), q(filepath.Join(n.Dir, "m0.img")), q(filepath.Join(n.Dir, "m1.img")), q(filepath.Join(n.Dir, "m2.img")), docSize), 0o600)
			f.Nodes["raid"] = n
			f.start(t, n)
			waitHealth(t, f, "optimal")
			f.Vars = docVars{"VOLUME": "vol0"}
		},
		Steps: []docStep{
			// Each subcommand completed with its MEMBER and PATH.
			{"blockctl raid status|fail|remove|add|replace|scrub", func(t *testing.T, f *docFixture, key string) {
				for _, c := range expandCommand(key) {
					sub := c[strings.LastIndex(c, " ")+1:]
					switch sub {
					case "status":
						r := f.on(t, node(f), c, nil)
						if !strings.Contains(r.Stdout, "raid1") || !strings.Contains(r.Stdout, "optimal") {
							t.Errorf("%s: want an optimal raid1:\n%s", r.Line, r.Stdout)
						}
					case "fail":
						f.on(t, node(f), c+" MEMBER", docVars{"MEMBER": "2"})
						if r := raid(t, f); r.Health != "degraded" || r.Members[2].State != "faulty" {
							t.Errorf("after %s 2: health %s, member 2 %s; want degraded, faulty", c, r.Health, r.Members[2].State)
						}
					case "remove":
						f.on(t, node(f), c+" MEMBER", docVars{"MEMBER": "2"})
						if r := raid(t, f); r.Members[2].Path != "" {
							t.Errorf("after %s 2: member 2 is %+v, want its slot empty", c, r.Members[2])
						}
					case "add":
						f.on(t, node(f), c+" PATH", docVars{"PATH": member(f, "m3")})
						waitHealth(t, f, "optimal")
						if r := raid(t, f); r.Members[2].Path != member(f, "m3") {
							t.Errorf("after %s: member 2 is %s, want the added %s", c, r.Members[2].Path, member(f, "m3"))
						}
					case "replace":
						f.ctl(t, node(f), "raid", "fail", "1")
						f.on(t, node(f), c+" MEMBER PATH", docVars{"MEMBER": "1", "PATH": member(f, "m4")})
						waitHealth(t, f, "optimal")
						if r := raid(t, f); r.Members[1].Path != member(f, "m4") {
							t.Errorf("after %s 1: member 1 is %s, want %s", c, r.Members[1].Path, member(f, "m4"))
						}
					case "scrub":
						f.on(t, node(f), c, nil)
						f.waitFor(t, node(f), "done with a scrub", func(s *api.Status) bool {
							r := volume(s, "vol0").RAID
							return r.Progress != nil && r.Progress.Op == "scrub" && r.Progress.State == "done" && r.Scrub != nil
						})
						if r := raid(t, f); r.Scrub.Mismatches != 0 || r.Scrub.Error != "" {
							t.Errorf("the scrub found %d mismatches on a fresh mirror (error %q)", r.Scrub.Mismatches, r.Scrub.Error)
						}
					default:
						t.Fatalf("%s: no runner for this subcommand", c)
					}
				}
			}},
			// README: on a full array, raid add adds a hot spare.
			// Completed with PATH.
			{"blockctl raid add", func(t *testing.T, f *docFixture, key string) {
				spare := member(f, "spare")
				f.on(t, node(f), key+" PATH", docVars{"PATH": spare})
				if r := raid(t, f); !slices.Contains(r.Spares, spare) || r.Health != "optimal" {
					t.Errorf("after %s on a full array: spares %q, health %s; want %s a spare", key, r.Spares, r.Health, spare)
				}
			}},
		}}
}
