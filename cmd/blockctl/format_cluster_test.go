package main

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/blockrep/blockrep/api"
	"github.com/blockrep/blockrep/cluster"
	"github.com/blockrep/blockrep/nbd"
	"github.com/blockrep/blockrep/replica"
)

// clusterStatus is the status of node1, the leader of a cluster of node1,
// node2, the witness w1 and node4 (just added, not heard from yet).
func clusterStatus(now time.Time) api.Status {
	alive, dead := true, false
	return api.Status{
		Node: "node1", NodeID: "5b0c6a3e-8f53-4d43-9a43-3f7b1c3c2b11", Version: "v0.1.0", UptimeSeconds: 3725,
		Volumes: []api.VolumeStatus{{Name: "vol0", Size: 1 << 30, TLS: "optional", Path: "/srv/vol0.img", Clients: []nbd.ClientInfo{}}},
		Cluster: &cluster.MemberStatus{
			Name: "node1", Kind: "data", Raft: "Leader", Leader: "node1", Term: "7",
			Members: []cluster.MemberInfo{
				{Name: "node1", Address: "10.0.0.1:7790", Voter: true, Kind: "data", Alive: &alive, LastSeen: "12ms ago"},
				{Name: "node2", Address: "10.0.0.2:7790", Voter: true, Kind: "data", Alive: &dead, LastSeen: "4.8s ago"},
				{Name: "w1", Address: "10.0.0.9:7790", Voter: true, Kind: "witness", Alive: &alive, LastSeen: "150ms ago"},
				{Name: "node4", Address: "10.0.0.4:7790", Voter: false},
			},
			State: &cluster.State{
				Nodes: map[string]cluster.Node{"node1": {Name: "node1", Kind: cluster.DataNode}, "node2": {Name: "node2", Kind: cluster.DataNode},
					"w1": {Name: "w1", Kind: cluster.Witness}},
				Volumes: map[string]*cluster.VolumeState{
					"vol0": {Name: "vol0", Primary: "node1", Epoch: 4, Preferred: "node1",
						Disks: map[string]replica.DiskState{"node2": replica.Outdated, "node1": replica.UpToDate}},
					"vol1": {Name: "vol1", Epoch: 2, Lost: "node2",
						Disks: map[string]replica.DiskState{"node1": replica.Outdated, "node2": replica.UpToDate}},
					"vol2": {Name: "vol2", Primary: "node2", Epoch: 1,
						Disks: map[string]replica.DiskState{"node1": replica.Inconsistent, "node2": replica.UpToDate}},
					"arch": {Name: "arch", Primary: "node1", Epoch: 9,
						Disks: map[string]replica.DiskState{"node1": replica.UpToDate}},
					"new": {Name: "new", Disks: map[string]replica.DiskState{}},
				},
			},
			Leases: map[string]time.Time{
				"vol0": now.Add(812 * time.Millisecond),
				"arch": now.Add(-time.Second),
				"vol2": now.Add(5 * time.Second), // left from when node1 was vol2's primary
			},
			Errors: map[string]string{"vol1": "no UpToDate replica to promote", "arch": "lease expired"},
		},
	}
}

func TestWriteTableCluster(t *testing.T) {
	now := time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)
	st := clusterStatus(now)
	var buf bytes.Buffer
	if err := writeTable(&buf, st, now); err != nil {
		t.Fatal(err)
	}
	want := `node node1  id 5b0c6a3e-8f53-4d43-9a43-3f7b1c3c2b11  version v0.1.0  up 1h2m

NAME  SIZE  RO  TLS       CLIENTS  PATH
vol0  1GiB  no  optional  0        /srv/vol0.img

cluster  node node1  kind data  raft Leader  leader node1  term 7
  MEMBER  ADDRESS        KIND     VOTER  ALIVE  LAST SEEN
  node1   10.0.0.1:7790  data     yes    yes    12ms ago
  node2   10.0.0.2:7790  data     yes    no     4.8s ago
  w1      10.0.0.9:7790  witness  yes    yes    150ms ago
  node4   10.0.0.4:7790  -        no     ?      -
  VOLUME  PRIMARY  EPOCH  PREFERRED  LOST   LEASE    DISKS
  arch    node1    9      -          -      expired  node1 UpToDate
  new     -        0      -          -      -        -
  vol0    node1    4      node1      -      810ms    node1 UpToDate, node2 Outdated
  vol1    -        2      -          node2  -        node1 Outdated, node2 UpToDate
  vol2    node2    1      -          -      -        node1 Inconsistent, node2 UpToDate
  arch: lease expired (control loop)
  vol1: no UpToDate replica to promote (control loop)

no clients connected
`
	if buf.String() != want {
		t.Errorf("got\n%s\nwant\n%s", buf.String(), want)
	}

	// A follower: the members' liveness is the leader's to say.
	cs := st.Cluster
	cs.Name, cs.Raft, cs.Term = "node2", "Follower", "8"
	for i := range cs.Members {
		cs.Members[i].Alive, cs.Members[i].LastSeen = nil, ""
	}
	cs.Leases = map[string]time.Time{"vol2": now.Add(1234 * time.Millisecond)}
	cs.Errors = nil
	buf.Reset()
	if err := writeCluster(&buf, cs, now); err != nil {
		t.Fatal(err)
	}
	want = `cluster  node node2  kind data  raft Follower  leader node1  term 8
  MEMBER  ADDRESS        KIND     VOTER
  node1   10.0.0.1:7790  data     yes
  node2   10.0.0.2:7790  data     yes
  w1      10.0.0.9:7790  witness  yes
  node4   10.0.0.4:7790  -        no
  liveness: only the leader node1 knows: blockctl --node 10.0.0.1:7790 status
  VOLUME  PRIMARY  EPOCH  PREFERRED  LOST   LEASE  DISKS
  arch    node1    9      -          -      -      node1 UpToDate
  new     -        0      -          -      -      -
  vol0    node1    4      node1      -      -      node1 UpToDate, node2 Outdated
  vol1    -        2      -          node2  -      node1 Outdated, node2 UpToDate
  vol2    node2    1      -          -      1.23s  node1 Inconsistent, node2 UpToDate
`
	if buf.String() != want {
		t.Errorf("follower: got\n%s\nwant\n%s", buf.String(), want)
	}

	// A node waiting to be added, with no leader and no state yet.
	buf.Reset()
	if err := writeCluster(&buf, &cluster.MemberStatus{Name: "node5", Kind: "witness", Raft: "Follower"}, now); err != nil {
		t.Fatal(err)
	}
	want = `cluster  node node5  kind witness  raft Follower  leader none  term -
  no members: this node waits to be added (blockctl cluster add on a member)
`
	if buf.String() != want {
		t.Errorf("new node: got\n%s\nwant\n%s", buf.String(), want)
	}

	// The json output stays the raw status, cluster included.
	sock := serve(t, &fakeBackend{st: st})
	var stdout, stderr bytes.Buffer
	if code := run([]string{"-s", sock, "status", "-o", "json"}, &stdout, &stderr, noEnv); code != 0 {
		t.Fatalf("json status: exit %d: %s", code, stderr.String())
	}
	var got api.Status
	if err := json.Unmarshal(stdout.Bytes(), &got); err != nil || got.Cluster == nil || got.Cluster.Leader != "node1" ||
		got.Cluster.State.Volumes["vol0"].Disks["node2"] != replica.Outdated {
		t.Errorf("json status %s: %v", stdout.String(), err)
	}
	// And the table output shows the cluster.
	stdout.Reset()
	if code := run([]string{"-s", sock, "status"}, &stdout, &stderr, noEnv); code != 0 ||
		!strings.Contains(stdout.String(), "\ncluster  node node2  kind data  raft Follower  leader node1  term 8\n") {
		t.Errorf("table status: exit %d, stdout %s", code, stdout.String())
	}
}

func TestLeaseLeft(t *testing.T) {
	tests := []struct {
		in   time.Duration
		want string
	}{
		{-time.Millisecond, "expired"}, {0, "expired"}, {812 * time.Millisecond, "810ms"},
		{1234 * time.Millisecond, "1.23s"}, {59 * time.Second, "59s"}, {192 * time.Second, "3m12s"},
	}
	for _, tt := range tests {
		if got := leaseLeft(tt.in); got != tt.want {
			t.Errorf("leaseLeft(%v) = %q, want %q", tt.in, got, tt.want)
		}
	}
}
