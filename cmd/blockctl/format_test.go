package main

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/blockrep/blockrep/api"
	"github.com/blockrep/blockrep/nbd"
	"github.com/blockrep/blockrep/replica"
)

func TestHumanSize(t *testing.T) {
	tests := []struct {
		in   int64
		want string
	}{
		{0, "0B"}, {1, "1B"}, {1023, "1023B"}, {1024, "1KiB"}, {1536, "1.5KiB"},
		{12288, "12KiB"}, {1 << 20, "1MiB"}, {1<<30 + 1<<29, "1.5GiB"}, {1 << 30, "1GiB"},
		{5 << 40, "5TiB"}, {1 << 62, "4EiB"},
	}
	for _, tt := range tests {
		if got := humanSize(tt.in); got != tt.want {
			t.Errorf("humanSize(%d) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

func TestHumanDuration(t *testing.T) {
	tests := []struct {
		in   time.Duration
		want string
	}{
		{-time.Second, "0s"}, {0, "0s"}, {45 * time.Second, "45s"}, {192 * time.Second, "3m12s"},
		{2*time.Hour + 5*time.Minute + 9*time.Second, "2h5m"}, {76 * time.Hour, "3d4h"},
	}
	for _, tt := range tests {
		if got := humanDuration(tt.in); got != tt.want {
			t.Errorf("humanDuration(%v) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

func TestWriteTable(t *testing.T) {
	now := time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)
	st := api.Status{
		Node: "node1", NodeID: "5b0c6a3e-8f53-4d43-9a43-3f7b1c3c2b11", Version: "v0.1.0", UptimeSeconds: 3725,
		Volumes: []api.VolumeStatus{
			{Name: "vol0", Size: 1 << 30, TLS: "optional", Path: "/srv/vol0.img", Clients: []nbd.ClientInfo{
				{ID: 1, Remote: "127.0.0.1:40000", TLS: false, Since: now.Add(-192 * time.Second), Reads: 10, Writes: 2, BytesRead: 40960, BytesWritten: 1536},
				{ID: 4, Remote: "10.0.0.2:51000", TLS: true, Since: now.Add(-2 * time.Hour), Reads: 0, Writes: 7, BytesWritten: 3 << 20},
			}},
			{Name: "archive", Size: 5 << 40, ReadOnly: true, TLS: "required", Path: "/dev/sdb", Clients: []nbd.ClientInfo{}},
		},
	}
	want := `node node1  id 5b0c6a3e-8f53-4d43-9a43-3f7b1c3c2b11  version v0.1.0  up 1h2m

NAME     SIZE  RO   TLS       CLIENTS  PATH
vol0     1GiB  no   optional  2        /srv/vol0.img
archive  5TiB  yes  required  0        /dev/sdb

ID  VOLUME  REMOTE           TLS  SINCE      READS  WRITES  BYTES R/W
1   vol0    127.0.0.1:40000  no   3m12s ago  10     2       40KiB/1.5KiB
4   vol0    10.0.0.2:51000   yes  2h0m ago   0      7       0B/3MiB
`
	var buf bytes.Buffer
	if err := writeTable(&buf, st, now); err != nil {
		t.Fatal(err)
	}
	if buf.String() != want {
		t.Errorf("got\n%s\nwant\n%s", buf.String(), want)
	}

	st.Volumes = st.Volumes[1:]
	buf.Reset()
	if err := writeTable(&buf, st, now); err != nil {
		t.Fatal(err)
	}
	want = `node node1  id 5b0c6a3e-8f53-4d43-9a43-3f7b1c3c2b11  version v0.1.0  up 1h2m

NAME     SIZE  RO   TLS       CLIENTS  PATH
archive  5TiB  yes  required  0        /dev/sdb

no clients connected
`
	if buf.String() != want {
		t.Errorf("got\n%s\nwant\n%s", buf.String(), want)
	}
}

func TestWriteTableReplication(t *testing.T) {
	now := time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)
	st := api.Status{
		Node: "node1", NodeID: "5b0c6a3e-8f53-4d43-9a43-3f7b1c3c2b11", Version: "v0.1.0", UptimeSeconds: 3725,
		Volumes: []api.VolumeStatus{
			{Name: "vol0", Size: 1 << 30, TLS: "optional", Path: "/srv/vol0.img", Clients: []nbd.ClientInfo{},
				Replication: &replica.Status{Role: "primary", Disk: "UpToDate", Epoch: 3, Generation: "5f3a9c0d1e2f3a4b", Protocol: "C", ContinueAlone: true,
					Peers: []replica.PeerStatus{
						{Name: "node2", Connection: replica.SyncSource, Role: "secondary", Disk: "Inconsistent", Replicating: true, OutOfSyncBytes: 112 << 20,
							Resync:   &replica.Progress{Kind: "bitmap", TotalBytes: 200 << 20, DoneBytes: 86 << 20, BytesPerSecond: 210 << 20, ETASeconds: 3.4},
							Decision: "SyncSource, bitmap resync"},
						{Name: "node3", Connection: replica.StandAlone, Role: "Unknown", Disk: "Outdated", OutOfSyncBytes: 12 << 10,
							LastError: "split brain: both sides wrote since generation 5f3a9c0d1e2f3a4a",
							Verify:    &replica.Progress{Kind: "verify", Finished: time.Date(2025, 3, 1, 10, 32, 1, 0, time.UTC), TotalBytes: 1 << 30, DoneBytes: 1 << 30, OutOfSyncBytes: 12 << 10}},
					}}},
			{Name: "plain", Size: 1 << 20, TLS: "optional", Path: "/srv/plain.img", Clients: []nbd.ClientInfo{}},
			{Name: "vol1", Size: 1 << 30, TLS: "required", Path: "/dev/sdc", Clients: []nbd.ClientInfo{},
				Replication: &replica.Status{Role: "secondary", Disk: "UpToDate", Epoch: 7, Generation: "c0ffee", Protocol: "A", ContinueAlone: true,
					Peers: []replica.PeerStatus{
						{Name: "node2", Connection: replica.VerifyTarget, Role: "primary", Disk: "UpToDate", Replicating: true,
							Verify: &replica.Progress{Kind: "verify", TotalBytes: 1 << 30, DoneBytes: 1 << 28, BytesPerSecond: 100 << 20, OutOfSyncBytes: 4 << 10}},
						{Name: "node3", Connection: replica.Connected, Role: "secondary", Disk: "UpToDate", Replicating: true,
							Resync: &replica.Progress{Kind: "bitmap", Started: time.Date(2025, 3, 1, 11, 0, 0, 0, time.UTC), Finished: time.Date(2025, 3, 1, 11, 0, 42, 0, time.UTC), TotalBytes: 16 << 20, DoneBytes: 16 << 20},
							Verify: &replica.Progress{Kind: "verify", Finished: time.Date(2025, 2, 27, 23, 5, 0, 0, time.UTC), TotalBytes: 1 << 30, DoneBytes: 1 << 30}},
					}}},
		},
	}
	var buf bytes.Buffer
	if err := writeTable(&buf, st, now); err != nil {
		t.Fatal(err)
	}
	want := `node node1  id 5b0c6a3e-8f53-4d43-9a43-3f7b1c3c2b11  version v0.1.0  up 1h2m

NAME   SIZE  RO  TLS       CLIENTS  PATH
vol0   1GiB  no  optional  0        /srv/vol0.img
plain  1MiB  no  optional  0        /srv/plain.img
vol1   1GiB  no  required  0        /dev/sdc

vol0  role primary  disk UpToDate  epoch 3  protocol C  gen 5f3a9c0d1e2f3a4b
  warning: continue_alone is on: this primary acknowledges writes its peers may not have (unsafe without quorum)
  PEER   CONNECTION  ROLE       DISK          REPL  OUT-OF-SYNC  RESYNC
  node2  SyncSource  secondary  Inconsistent  yes   112MiB       [========>           ] 43% 210MiB/s ETA 4s (bitmap)
  node3  StandAlone  Unknown    Outdated      no    12KiB
  node2: SyncSource, bitmap resync (last connect)
  node3: split brain: both sides wrote since generation 5f3a9c0d1e2f3a4a (last error)
  node3: verify finished 10:32:01: 12KiB out of sync

vol1  role secondary  disk UpToDate  epoch 7  protocol A  gen c0ffee
  warning: continue_alone is on: as primary, this node would acknowledge writes its peers may not have (unsafe without quorum)
  PEER   CONNECTION    ROLE       DISK      REPL  OUT-OF-SYNC  RESYNC
  node2  VerifyTarget  primary    UpToDate  yes   0B
  node3  Connected     secondary  UpToDate  yes   0B           bitmap done 11:00:42: 16MiB in 42s
  node2: verify [=====>              ] 25% 100MiB/s, 4KiB out of sync so far
  node3: verify finished 2025-02-27 23:05:00: in sync

no clients connected
`
	if buf.String() != want {
		t.Errorf("got\n%s\nwant\n%s", buf.String(), want)
	}
}

func TestProgressBar(t *testing.T) {
	tests := []struct {
		p    replica.Progress
		want string
	}{
		{replica.Progress{}, "[>                   ] 0%"},
		{replica.Progress{TotalBytes: 100, DoneBytes: 29}, "[=====>              ] 29%"},
		{replica.Progress{TotalBytes: 1000, DoneBytes: 999, BytesPerSecond: 1536, ETASeconds: 0.5}, "[===================>] 99% 1.5KiB/s ETA 1s"},
		{replica.Progress{TotalBytes: 100, DoneBytes: 100}, "[====================] 100%"},
		{replica.Progress{TotalBytes: 100, DoneBytes: 150}, "[====================] 100%"},
		{replica.Progress{TotalBytes: 1 << 30, DoneBytes: 1 << 29, BytesPerSecond: 1 << 20, ETASeconds: 512}, "[==========>         ] 50% 1MiB/s ETA 8m32s"},
	}
	for _, tt := range tests {
		if got := progressBar(&tt.p); got != tt.want {
			t.Errorf("progressBar(%+v) = %q, want %q", tt.p, got, tt.want)
		}
	}
}

func TestVerifyLine(t *testing.T) {
	now := time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)
	tests := []struct {
		v    replica.Progress
		want string
	}{
		{replica.Progress{TotalBytes: 100, DoneBytes: 50}, "verify [==========>         ] 50%, in sync so far"},
		{replica.Progress{Finished: now.Add(-time.Hour), OutOfSyncBytes: 12 << 10}, "verify finished 11:00:00: 12KiB out of sync"},
		{replica.Progress{Finished: now.Add(-time.Hour)}, "verify finished 11:00:00: in sync"},
		{replica.Progress{Finished: now.Add(-time.Minute), DoneBytes: 1 << 20, OutOfSyncBytes: 4096, Error: "link lost"},
			"verify failed 11:59:00: link lost (4KiB out of sync up to 1MiB)"},
	}
	for _, tt := range tests {
		if got := verifyLine(&tt.v, now); got != tt.want {
			t.Errorf("verifyLine(%+v) = %q, want %q", tt.v, got, tt.want)
		}
	}
}

// TestWriteTableStore: a store that is gone, came up Inconsistent or has no
// identity is named in the table; one in order is not.
func TestWriteTableStore(t *testing.T) {
	now := time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)
	st := api.Status{
		Node: "node1", NodeID: "id", Version: "v", UptimeSeconds: 1,
		Volumes: []api.VolumeStatus{
			{Name: "a", Size: 1 << 20, TLS: "optional", Path: "/a", Clients: []nbd.ClientInfo{}, Store: &api.StoreStatus{Identity: "protected", Opened: "Accept", Reason: "ok"}},
			{Name: "b", Size: 1 << 20, TLS: "optional", Path: "/b", Clients: []nbd.ClientInfo{}, Store: &api.StoreStatus{Identity: "protected", Opened: "Accept", Gone: "/b: store gone: the file has no links left"}},
			{Name: "c", Size: 1 << 20, TLS: "optional", Path: "/c", Clients: []nbd.ClientInfo{}, Store: &api.StoreStatus{Identity: "protected", Opened: "Inconsistent", Reason: "rule 8: blank"}},
			{Name: "d", Size: 1 << 20, TLS: "optional", Path: "/d", Clients: []nbd.ClientInfo{}, Store: &api.StoreStatus{Identity: "unprotected", Opened: "Unprotected", Reason: "rule 3: read-only"}},
		},
	}
	var buf bytes.Buffer
	if err := writeTable(&buf, st, now); err != nil {
		t.Fatal(err)
	}
	out := buf.String()
	for _, want := range []string{
		"store b: GONE, every request fails: /b: store gone: the file has no links left\n",
		"store c: opened Inconsistent (full sync from a peer): rule 8: blank\n",
		"store d: no identity (a replaced store cannot be recognised): rule 3: read-only\n",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("the table lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "store a") {
		t.Errorf("the table names a store in order:\n%s", out)
	}
}

func TestWriteReplicationDiskFailed(t *testing.T) {
	var buf bytes.Buffer
	rs := &replica.Status{Role: "secondary", Disk: "Diskless", Epoch: 4, Generation: "0", Protocol: "C",
		DiskFailed: "write /srv/vol0.img at 4096: input/output error"}
	if err := writeReplication(&buf, "vol0", rs, time.Now()); err != nil {
		t.Fatal(err)
	}
	want := "vol0  role secondary  disk Diskless  epoch 4  protocol C  gen 0\n" +
		"  local disk failed, detached (on_io_error): write /srv/vol0.img at 4096: input/output error\n" +
		"  no peers\n"
	if buf.String() != want {
		t.Errorf("got\n%s\nwant\n%s", buf.String(), want)
	}
}
