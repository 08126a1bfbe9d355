package node

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/blockrep/blockrep/api"
	"github.com/blockrep/blockrep/config"
	"github.com/blockrep/blockrep/events"
	"github.com/blockrep/blockrep/internal/authnet"
	"github.com/blockrep/blockrep/replica"

	"github.com/blockrep/blockrep/internal/freeport"
)

// freeAddrs returns n loopback addresses with free ports.
func freeAddrs(t *testing.T, n int) []string {
	t.Helper()
	addrs, err := freeport.Addrs(n)
	if err != nil {
		t.Fatal(err)
	}
	return addrs
}

// trioConfigs returns the configurations of data nodes a and b and
// witness w in dir, with fast failover timing.
func trioConfigs(t *testing.T, dir string) map[string]*config.Config {
	t.Helper()
	secret := filepath.Join(dir, "secret")
	if err := os.WriteFile(secret, []byte("0123456789abcdef0123456789abcdef\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	addrs := freeAddrs(t, 5) // cluster a, b, w; replication a, b
	members := ""
	for i, n := range []string{"a", "b", "w"} {
		members += fmt.Sprintf("[[cluster.member]]\nname = %q\naddress = %q\n", n, addrs[i])
	}
	clusterTable := func(i int, kind string) string {
		return fmt.Sprintf("[cluster]\nname = \"t\"\nsecret_file = %q\nlisten = %q\nkind = %q\nheartbeat_interval = \"100ms\"\nfailover_timeout = \"1s\"\n%s", secret, addrs[i], kind, members)
	}
	data := func(name string, i int, peer string, pi int) string {
		d := filepath.Join(dir, name)
		return fmt.Sprintf(`
[node]
name = %[1]q
data_dir = %[2]q
control_socket = %[3]q
[nbd]
listen = ["127.0.0.1:0"]
[replication]
listen = %[4]q
[[peer]]
name = %[5]q
address = %[6]q
%[7]s
[[volume]]
name = "vol0"
path = %[8]q
size = "1MiB"
preferred_primary = "a"
`, name, filepath.Join(d, "data"), filepath.Join(d, "ctl.sock"), addrs[3+i], peer, addrs[3+pi], clusterTable(i, "data"), filepath.Join(d, "vol0.img"))
	}
	// a runs a hook on role changes that appends what it was told.
	hook := filepath.Join(dir, "hook.sh")
	if err := os.WriteFile(hook, []byte("#!/bin/sh\necho \"$BLOCKREP_EVENT $BLOCKREP_VOLUME $BLOCKREP_NEW\" >> "+filepath.Join(dir, "hook.out")+"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	texts := map[string]string{
		"a": data("a", 0, "b", 1) + fmt.Sprintf("[[hook]]\non = [\"role\"]\ncommand = [%q]\n", hook),
		"b": data("b", 1, "a", 0),
		"w": fmt.Sprintf("[node]\nname = \"w\"\ndata_dir = %q\ncontrol_socket = %q\n%s",
			filepath.Join(dir, "w", "data"), filepath.Join(dir, "w", "ctl.sock"), clusterTable(2, "witness")),
	}
	cfgs := map[string]*config.Config{}
	for name, text := range texts {
		cfg, err := config.Parse([]byte(text), name+".toml")
		if err != nil {
			t.Fatal(err)
		}
		cfgs[name] = cfg
	}
	return cfgs
}

// waitFor polls cond until it holds; the deadline only catches a hang.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func primaryInSync(n *Node) bool {
	st, err := n.Status(context.Background())
	if err != nil || len(st.Volumes) == 0 || st.Volumes[0].Replication == nil {
		return false
	}
	r := st.Volumes[0].Replication
	return r.Role == "primary" && !r.Fenced && len(r.Peers) == 1 && r.Peers[0].ClusterDisk == "UpToDate" && r.Peers[0].OutOfSyncBytes == 0
}

// TestClusterTrio runs two data nodes and a witness in one process over
// the authenticated cluster transport: the preferred node is elected,
// switchovers both ways through the node's ClusterController, the manual
// role commands are refused, a write survives, and the events say so.
func TestClusterTrio(t *testing.T) {
	cfgs := trioConfigs(t, t.TempDir())
	nodes := map[string]*Node{}
	for _, name := range []string{"w", "a", "b"} {
		nodes[name], _ = startNode(t, cfgs[name])
	}
	a, b := nodes["a"], nodes["b"]
	waitFor(t, "a primary, b in sync", func() bool { return primaryInSync(a) })

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	sub := a.Events().Subscribe(ctx)
	if err := a.SetRole(ctx, "", "secondary", false); !errors.Is(err, api.ErrConflict) || !strings.Contains(err.Error(), "promote") {
		t.Fatalf("manual role change with a cluster: %v", err)
	}
	data := []byte(strings.Repeat("cluster!", 512))
	if err := a.volumes[0].repl.WriteAt(data, 8192, true); err != nil {
		t.Fatal(err)
	}
	// Switch over to b and back, asking a different node each time.
	note, err := a.Promote(ctx, "", "b", false, "")
	if err != nil || !strings.Contains(note, "b is primary") {
		t.Fatalf("promote b: %q, %v", note, err)
	}
	waitFor(t, "b primary, a in sync", func() bool { return primaryInSync(b) })
	got := make([]byte, len(data))
	if err := b.volumes[0].repl.ReadAt(got, 8192); err != nil || string(got) != string(data) {
		t.Fatalf("b after the switchover: %v, data equal %v", err, string(got) == string(data))
	}
	if _, err := nodes["w"].Promote(ctx, "vol0", "w", false, ""); !errors.Is(err, api.ErrConflict) || !strings.Contains(err.Error(), "witness") {
		t.Fatalf("promote the witness: %v", err)
	}
	if note, err := nodes["w"].Demote(ctx, ""); err != nil || !strings.Contains(note, "a is primary") {
		t.Fatalf("demote b: %q, %v", note, err)
	}
	waitFor(t, "a primary again", func() bool { return primaryInSync(a) })
	// At least two promotions since the first (more if a loaded machine
	// made a heartbeat late enough for a failover: safe, and not the
	// point here).
	st, err := a.Status(ctx)
	if err != nil || st.Cluster == nil || st.Cluster.State.Volumes["vol0"].Epoch < 3 {
		t.Fatalf("status after two switchovers: %+v, %v", st.Cluster, err)
	}
	// The role changes went out as events: secondary, then primary.
	var roles []string
	for len(roles) < 2 {
		e, err := sub.Next(ctx)
		if err != nil {
			t.Fatalf("events so far %v: %v", roles, err)
		}
		if e.Kind == events.KindRole && e.Volume == "vol0" {
			roles = append(roles, e.New)
		}
	}
	if roles[0] != "secondary" || roles[1] != "primary" {
		t.Fatalf("role events on a: %v", roles)
	}
	// The hook saw the same changes.
	waitFor(t, "the role hook", func() bool {
		out, _ := os.ReadFile(filepath.Join(filepath.Dir(filepath.Dir(cfgs["a"].Node.DataDir)), "hook.out"))
		return strings.Contains(string(out), "role vol0 secondary\nrole vol0 primary\n")
	})
	if err := a.RemoveMember(ctx, "a", false, ""); !errors.Is(err, api.ErrConflict) {
		t.Fatalf("remove the primary: %v", err)
	}
	if r := b.volumes[0].repl; r.Role() != replica.Secondary {
		t.Fatalf("b is %v", r.Role())
	}
}

// TestNotClustered: the cluster commands answer that there is no cluster.
func TestNotClustered(t *testing.T) {
	n, _ := startNode(t, testConfig(t, t.TempDir(), ""))
	ctx := context.Background()
	if _, err := n.Promote(ctx, "", "x", false, ""); !errors.Is(err, api.ErrConflict) || !strings.Contains(err.Error(), "[cluster]") {
		t.Fatalf("promote without a cluster: %v", err)
	}
	if st, _ := n.Status(ctx); st.Cluster != nil {
		t.Fatal("status has a cluster section without [cluster]")
	}
}

// TestClusterSecretErrorNamesKey: an unreadable cluster secret is reported
// under cluster.secret_file, not replication.secret_file (both share the
// reading code).
func TestClusterSecretErrorNamesKey(t *testing.T) {
	dir := t.TempDir()
	cfg := trioConfigs(t, dir)["w"]
	cfg.Cluster.SecretFile = filepath.Join(dir, "missing")
	_, err := New(cfg, testLogger(t))
	var cerr *config.Error
	if !errors.As(err, &cerr) || cerr.Key != "cluster.secret_file" || !strings.Contains(err.Error(), "cluster.secret_file: ") {
		t.Fatalf("New with a missing cluster secret: %v, want an error naming cluster.secret_file", err)
	}
}

// TestPeerListenerFailureStopsNode: when the replication listener or the
// cluster port's listener fails for good, Run stops the node at once and
// returns the error, naming the listener, instead of running on
// unreachable.
func TestPeerListenerFailureStopsNode(t *testing.T) {
	for _, which := range []string{"replication", "cluster"} {
		t.Run(which, func(t *testing.T) {
			cfg := trioConfigs(t, t.TempDir())["b"]
			n, err := New(cfg, testLogger(t))
			if err != nil {
				t.Fatal(err)
			}
			want := "replication listen"
			if which == "replication" {
				// Closed under Run's feet: Accept fails with an error
				// that is not temporary.
				_ = n.transport.Close()
			} else {
				want = "cluster.listen"
				old := n.membership.mux
				_ = old.Close()
				ln, err := net.Listen("tcp", "127.0.0.1:0")
				if err != nil {
					t.Fatal(err)
				}
				if n.membership.mux, err = authnet.NewMux(brokenListener{ln}, n.membership.auth); err != nil {
					t.Fatal(err)
				}
			}
			done := make(chan error, 1)
			go func() { done <- n.Run(context.Background()) }()
			select {
			case err := <-done:
				if err == nil || !strings.Contains(err.Error(), want) || strings.Count(err.Error(), want) != 1 {
					t.Fatalf("Run: %v, want one error naming %q", err, want)
				}
				t.Logf("Run: %v", err)
			case <-time.After(40 * time.Second):
				t.Fatal("Run did not stop after the listener failed")
			}
		})
	}
}
