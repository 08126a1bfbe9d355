package e2e

import (
	"context"
	"encoding/json"
	"os/exec"
	"regexp"
	"strings"
	"testing"
	"time"
)

// statusJSON is blockctl status -o json, decoded independently of the api
// package: the JSON is a contract with scripts.
type statusJSON struct {
	Node          string         `json:"node"`
	NodeID        string         `json:"node_id"`
	Version       string         `json:"version"`
	UptimeSeconds float64        `json:"uptime_seconds"`
	Volumes       []statusVolume `json:"volumes"`
}

type statusVolume struct {
	Name     string         `json:"name"`
	UUID     string         `json:"uuid"`
	Path     string         `json:"path"`
	Size     int64          `json:"size"`
	ReadOnly bool           `json:"read_only"`
	TLS      string         `json:"tls"`
	Clients  []statusClient `json:"clients"`
	// Replication is set for a replicated volume (cluster_test.go).
	Replication *replStatusJSON `json:"replication"`
}

type statusClient struct {
	ID           uint64 `json:"id"`
	Remote       string `json:"remote"`
	Export       string `json:"export"`
	TLS          bool   `json:"tls"`
	Reads        uint64 `json:"reads"`
	Writes       uint64 `json:"writes"`
	BytesWritten uint64 `json:"bytes_written"`
}

// volume returns the named volume or fails the test.
func (s *statusJSON) volume(t *testing.T, name string) *statusVolume {
	t.Helper()
	for i := range s.Volumes {
		if s.Volumes[i].Name == name {
			return &s.Volumes[i]
		}
	}
	t.Fatalf("blockctl status shows no volume %q", name)
	return nil
}

// status runs blockctl status -o json.
func status(t *testing.T, d *daemon) *statusJSON {
	t.Helper()
	out := d.Blockctl(t, "status", "-o", "json")
	var st statusJSON
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		t.Fatalf("blockctl status -o json does not parse: %v\n%s", err, out)
	}
	return &st
}

var uuidRE = regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$`)

// holdScript connects to NBD_URI, does one write and one read, says
// "connected" and stays connected until its stdin is closed.
const holdScript = `
import os, sys, nbd
h = nbd.NBD()
h.set_uri_allow_local_file(True)  # for ?tls-certificates=DIR
h.connect_uri(os.environ["NBD_URI"])
h.pwrite(b"\x42" * 65536, 0)
h.pread(4096, 0)
print("connected", flush=True)
sys.stdin.readline()
h.shutdown()
`

// holdConnection starts an nbdsh client connected to uri that stays
// connected until released.
func holdConnection(t *testing.T, uri string) *nbdshProc {
	t.Helper()
	p := startNbdsh(t, holdScript, "NBD_URI="+uri)
	p.waitLine(t, "connected")
	return p
}

// TestBlockctlStatus checks blockctl status against a daemon with a client
// connected: the JSON names the volumes with UUID and size and lists the
// client under its export; the table names the volumes; the UUIDs and the
// node id survive a restart.
func TestBlockctlStatus(t *testing.T) {
	tool(t, "nbdsh")
	d := startDaemon(t, daemonSpec{Volumes: []volumeSpec{
		{Name: "vol0", Size: 64 * MiB},
		{Name: "vol1", Size: 32 * MiB},
	}})

	st := status(t, d)
	if st.Node != "e2e" {
		t.Errorf("node %q, want e2e", st.Node)
	}
	if !uuidRE.MatchString(st.NodeID) {
		t.Errorf("node_id %q is not a UUID", st.NodeID)
	}
	if len(st.Volumes) != 2 || st.Volumes[0].Name != "vol0" || st.Volumes[1].Name != "vol1" {
		t.Fatalf("volumes %+v, want vol0 and vol1 in configuration order", st.Volumes)
	}
	for _, v := range st.Volumes {
		if len(v.Clients) != 0 {
			t.Errorf("volume %s shows %d clients before any connected", v.Name, len(v.Clients))
		}
	}

	client := holdConnection(t, d.URI("vol0"))
	st = status(t, d)
	v0, v1 := st.volume(t, "vol0"), st.volume(t, "vol1")
	if !uuidRE.MatchString(v0.UUID) || !uuidRE.MatchString(v1.UUID) || v0.UUID == v1.UUID {
		t.Errorf("volume UUIDs %q and %q: want two distinct UUIDs", v0.UUID, v1.UUID)
	}
	if v0.Size != 64*MiB || v1.Size != 32*MiB {
		t.Errorf("sizes %d and %d, want %d and %d", v0.Size, v1.Size, 64*MiB, 32*MiB)
	}
	if v0.Path != d.VolumePath("vol0") {
		t.Errorf("vol0 path %q, want %q", v0.Path, d.VolumePath("vol0"))
	}
	if v0.ReadOnly || v0.TLS != "optional" {
		t.Errorf("vol0 read_only=%v tls=%q, want false, optional", v0.ReadOnly, v0.TLS)
	}
	if len(v0.Clients) != 1 {
		t.Fatalf("vol0 shows %d clients, want 1: %+v", len(v0.Clients), v0.Clients)
	}
	c := v0.Clients[0]
	if c.Export != "vol0" || !strings.HasPrefix(c.Remote, "127.0.0.1:") || c.TLS {
		t.Errorf("client %+v: want export vol0 from 127.0.0.1 without TLS", c)
	}
	if c.Writes < 1 || c.BytesWritten < 65536 || c.Reads < 1 {
		t.Errorf("client counters %+v: want at least the 64 KiB write and one read", c)
	}
	if len(v1.Clients) != 0 {
		t.Errorf("vol1 shows clients %+v, want none", v1.Clients)
	}

	table := d.Blockctl(t, "status")
	t.Logf("blockctl status:\n%s", table)
	for _, want := range []string{"NAME", "vol0", "vol1", "64MiB", "127.0.0.1:"} {
		if !strings.Contains(table, want) {
			t.Errorf("blockctl status table lacks %q", want)
		}
	}

	// The client leaves: status follows.
	client.release(t, true)
	deadline := time.Now().Add(10 * time.Second)
	for len(status(t, d).volume(t, "vol0").Clients) != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("vol0 still shows a client 10s after it disconnected")
		}
		time.Sleep(50 * time.Millisecond)
	}

	// Identities survive a restart.
	d.Stop()
	d.Start()
	st2 := status(t, d)
	if st2.NodeID != st.NodeID {
		t.Errorf("node_id changed across a restart: %s -> %s", st.NodeID, st2.NodeID)
	}
	for _, name := range []string{"vol0", "vol1"} {
		if a, b := st.volume(t, name).UUID, st2.volume(t, name).UUID; a != b {
			t.Errorf("volume %s UUID changed across a restart: %s -> %s", name, a, b)
		}
	}
	// A wrong socket is a clear error, exit status 1.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, blockctlBin, "-s", d.ControlSocket+".missing", "status").CombinedOutput()
	if exitCode(err) != 1 || !strings.Contains(string(out), "cannot reach blockrepd") {
		t.Errorf("blockctl with a missing socket: %v, %q; want exit 1 and \"cannot reach blockrepd\"", err, out)
	}
}
