package main

import (
	"bytes"
	"testing"
	"time"

	"github.com/blockrep/blockrep/api"
	"github.com/blockrep/blockrep/nbd"
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
