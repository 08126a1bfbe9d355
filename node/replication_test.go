package node

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/blockrep/blockrep/api"
	"github.com/blockrep/blockrep/block/blocktest"
	"github.com/blockrep/blockrep/config"
	"github.com/blockrep/blockrep/meta"
	"github.com/blockrep/blockrep/replica"
)

func TestReadSecret(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	log := slog.New(slog.DiscardHandler)
	got, err := readSecret("replication.secret_file", write("ok", "0123456789abcdefXYZ\n"), log)
	if err != nil || string(got) != "0123456789abcdefXYZ" {
		t.Fatalf("secret %q, %v; want it without the trailing newline", got, err)
	}
	// 15 bytes once the newline is gone: too short, and the error says
	// which file and how to make a good one.
	short := write("short", "0123456789abcde\n")
	if _, err := readSecret("replication.secret_file", short, log); err == nil || !strings.Contains(err.Error(), short) || !strings.Contains(err.Error(), "15 bytes") {
		t.Fatalf("short secret: %v", err)
	}
	if _, err := readSecret("cluster.secret_file", filepath.Join(dir, "missing"), log); err == nil || !strings.HasPrefix(err.Error(), "cluster.secret_file: ") {
		t.Fatalf("missing secret file: %v", err)
	}
}

// TestReplicatedExport checks that a replicated volume's export follows
// the role: writable on the primary, read-only or refused (per
// secondary_nbd) on a secondary, and that control commands reach the
// volume with errors the API maps to status codes.
func TestReplicatedExport(t *testing.T) {
	db, err := meta.Open(filepath.Join(t.TempDir(), "meta.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	const size = 8 << 20
	if _, err := db.EnsureVolume("vol0", "/mem", size); err != nil {
		t.Fatal(err)
	}
	r, err := replica.Open(replica.VolumeConfig{
		Name: "vol0", Store: blocktest.NewMem(size), State: replica.NewStore(db, "vol0"),
		Local: "node1", Peers: []replica.PeerConfig{{Name: "node2", Address: "127.0.0.1:1"}},
		Role: replica.Secondary, ContinueAlone: true,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	for _, mode := range []config.SecondaryNBD{config.SecondaryReadOnly, config.SecondaryRefuse} {
		n := &Node{cfg: &config.Config{Node: config.Node{Name: "node1"}, Replication: config.Replication{SecondaryNBD: mode}}, log: slog.New(slog.DiscardHandler)}
		v := &volume{cfg: config.Volume{Name: "vol0"}, repl: r}
		n.volumes = []*volume{v}
		e := n.exportFor(v)
		if e.Device != r || e.Access == nil {
			t.Fatalf("%s: export %+v does not serve the replicated volume through Access", mode, e)
		}
		ro, err := e.Access()
		switch mode {
		case config.SecondaryReadOnly:
			if !ro || err != nil {
				t.Fatalf("secondary, read-only: Access = %v, %v", ro, err)
			}
		case config.SecondaryRefuse:
			if err == nil || !strings.Contains(err.Error(), "secondary") {
				t.Fatalf("secondary, refuse: Access = %v, %v", ro, err)
			}
		}
		if err := n.SetRole(context.Background(), "", "primary", false); err != nil {
			t.Fatal(err)
		}
		if ro, err := e.Access(); ro || err != nil {
			t.Fatalf("primary: Access = %v, %v, want writable", ro, err)
		}
		if err := n.SetRole(context.Background(), "", "secondary", false); err != nil {
			t.Fatal(err)
		}
		if err := n.Resync(context.Background(), "vol0", "node9", ""); !errors.Is(err, replica.ErrUnknownPeer) {
			t.Fatalf("resync to an unknown peer: %v", err)
		}
		if err := n.Resync(context.Background(), "vol0", "node2", ""); !errors.Is(err, replica.ErrState) {
			t.Fatalf("resync without a link: %v, want a state error", err)
		}
		if err := n.SetRole(context.Background(), "nope", "primary", false); !errors.Is(err, api.ErrNotFound) {
			t.Fatalf("unknown volume: %v", err)
		}
		if err := n.Resync(context.Background(), "", "", "sideways"); !errors.Is(err, api.ErrInvalid) {
			t.Fatalf("bad resync mode: %v", err)
		}
	}
}
