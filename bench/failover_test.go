package bench

import (
	"bytes"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/blockrep/blockrep/config"
)

func TestSummarize(t *testing.T) {
	ms := func(vs ...int) []time.Duration {
		var ds []time.Duration
		for _, v := range vs {
			ds = append(ds, time.Duration(v)*time.Millisecond)
		}
		return ds
	}
	stats := func(n, median, p90, min, max int) DurationStats {
		d := func(v int) time.Duration { return time.Duration(v) * time.Millisecond }
		return DurationStats{N: n, Median: d(median), P90: d(p90), Min: d(min), Max: d(max)}
	}
	withMedian := func(s DurationStats, m time.Duration) DurationStats { s.Median = m; return s }
	tests := []struct {
		name string
		in   []time.Duration
		want DurationStats
	}{
		{"empty", nil, DurationStats{}},
		{"one", ms(1100), stats(1, 1100, 1100, 1100, 1100)},
		{"two: median is the mean, p90 the larger", ms(1000, 1200), stats(2, 1100, 1200, 1000, 1200)},
		{"three unsorted", ms(1300, 1000, 1100), stats(3, 1100, 1300, 1000, 1300)},
		{"ten: p90 is the 9th smallest", ms(10, 9, 8, 7, 6, 5, 4, 3, 2, 1), withMedian(stats(10, 0, 9, 1, 10), 5500*time.Microsecond)},
		{"eleven: p90 is the 10th smallest", ms(1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11), stats(11, 6, 10, 1, 11)},
		{"twenty: p90 is the 18th smallest", ms(20, 19, 18, 17, 16, 15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1), withMedian(stats(20, 0, 18, 1, 20), 10500*time.Microsecond)},
		{"ties", ms(1000, 1000, 1000, 2000), stats(4, 1000, 2000, 1000, 2000)},
		{"the mean of the middle two truncates to the nanosecond", []time.Duration{1, 2}, DurationStats{N: 2, Median: 1, P90: 2, Min: 1, Max: 2}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := append([]time.Duration(nil), tt.in...)
			if got := Summarize(tt.in); got != tt.want {
				t.Fatalf("Summarize(%v) = %+v, want %+v", tt.in, got, tt.want)
			}
			for i := range in {
				if in[i] != tt.in[i] {
					t.Fatalf("Summarize reordered its argument")
				}
			}
		})
	}
}

func TestFailoverClusterConfig(t *testing.T) {
	tests := []struct {
		name                 string
		heartbeat, failover  time.Duration
		wantHB, wantFailover time.Duration
		wantKeys             bool // heartbeat_interval and failover_timeout written
		wantErr              string
	}{
		{"daemon defaults", 0, 0, config.DefaultHeartbeatInterval, config.DefaultFailoverTimeout, false, ""},
		{"faster", 100 * time.Millisecond, 600 * time.Millisecond, 100 * time.Millisecond, 600 * time.Millisecond, true, ""},
		{"heartbeat only", 100 * time.Millisecond, 0, 100 * time.Millisecond, config.DefaultFailoverTimeout, true, ""},
		{"three intervals exactly", 50 * time.Millisecond, 150 * time.Millisecond, 50 * time.Millisecond, 150 * time.Millisecond, true, ""},
		{"timeout under three intervals", 500 * time.Millisecond, 0, 0, 0, false, "less than three heartbeat intervals"},
		{"timeout alone too short", 0, 500 * time.Millisecond, 0, 0, false, "less than three heartbeat intervals"},
		{"heartbeat too short", 5 * time.Millisecond, 100 * time.Millisecond, 0, 0, false, "heartbeat interval 5ms"},
		{"timeout too long", 0, 11 * time.Minute, 0, 0, false, "at most 10m"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			fc, err := NewFailoverCluster(dir, 64<<20, tt.heartbeat, tt.failover)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("error %v, want one containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if fi, err := os.Stat(fc.SecretFile); err != nil || fi.Mode().Perm() != 0o600 || fi.Size() != 32 {
				t.Fatalf("secret file %v: %v", fi, err)
			}
			if hb, ft := fc.Timing(); hb != tt.wantHB || ft != tt.wantFailover {
				t.Fatalf("Timing() = %v, %v", hb, ft)
			}
			if len(fc.Nodes) != 3 {
				t.Fatalf("%d nodes", len(fc.Nodes))
			}
			ports := map[string]bool{}
			var cfgs []*config.Config
			for i, n := range fc.Nodes {
				text := fc.TOML(i)
				if got := strings.Contains(text, "heartbeat_interval") || strings.Contains(text, "failover_timeout"); got != tt.wantKeys {
					t.Errorf("%s: timing keys written %v, want %v:\n%s", n.Name, got, tt.wantKeys, text)
				}
				c, err := config.Parse([]byte(text), n.Name+".toml")
				if err != nil {
					t.Fatalf("%s: %v\n%s", n.Name, err, text)
				}
				cfgs = append(cfgs, c)
				if !c.Clustered() || c.Cluster.Name != fc.Name || c.Cluster.SecretFile != fc.SecretFile {
					t.Fatalf("%s: cluster %+v", n.Name, c.Cluster)
				}
				if c.Cluster.HeartbeatInterval != tt.wantHB || c.Cluster.FailoverTimeout != tt.wantFailover {
					t.Errorf("%s: timing %v / %v", n.Name, c.Cluster.HeartbeatInterval, c.Cluster.FailoverTimeout)
				}
				if len(c.Cluster.Members) != 3 {
					t.Fatalf("%s: members %+v", n.Name, c.Cluster.Members)
				}
				for j, m := range c.Cluster.Members {
					if m.Name != fc.Nodes[j].Name || m.Address != fc.Nodes[j].ClusterListen {
						t.Errorf("%s: member %d is %+v", n.Name, j, m)
					}
				}
				addrs := []string{c.Cluster.Listen}
				if !n.Witness {
					addrs = append(addrs, c.Replication.Listen, c.NBD.Listen[0].Address)
				}
				for _, a := range addrs {
					if ports[a] {
						t.Errorf("address %s used twice", a)
					}
					ports[a] = true
				}
			}
			w := cfgs[2]
			if !w.Witness() || len(w.Volumes) != 0 || len(w.Peers) != 0 {
				t.Fatalf("witness: %+v", w)
			}
			for i, c := range cfgs[:2] {
				other := cfgs[1-i]
				if c.Witness() || len(c.Volumes) != 1 || len(c.Peers) != 1 {
					t.Fatalf("%s: %+v", c.Node.Name, c)
				}
				v := c.Volumes[0]
				if v.Name != FailoverVolume || v.PreferredPrimary != "node1" || v.Size != 64<<20 || v.Role != config.RoleSecondary {
					t.Errorf("%s: volume %+v", c.Node.Name, v)
				}
				if c.Peers[0].Name != other.Node.Name || c.Peers[0].Address != other.Replication.Listen {
					t.Errorf("%s: peer %+v, want %s at %s", c.Node.Name, c.Peers[0], other.Node.Name, other.Replication.Listen)
				}
				if c.Replication.Protocol != config.ProtocolC || c.Replication.SecretFile != fc.SecretFile {
					t.Errorf("%s: replication %+v", c.Node.Name, c.Replication)
				}
			}
		})
	}
	if _, err := NewFailoverCluster(t.TempDir(), 1000, 0, 0); err == nil {
		t.Error("a volume size that is no multiple of 1MiB was accepted")
	}
}

func TestScanLogMarks(t *testing.T) {
	log := strings.Join([]string{
		`time=2026-11-26T01:26:37.444Z level=INFO msg="arbiter decision" component=cluster op=promote volume=bench node=node1 epoch=1 reason="preferred primary"`,
		`time=2026-11-26T01:26:37.488Z level=INFO msg="cluster committed peer disk state" volume=bench peer=node2 disk=Outdated epoch=1`,
		`time=2026-11-26T01:26:39.739Z level=INFO msg="arbiter decision" component=cluster op=primary-lost volume=bench node="" epoch=1 reason="node1 not heard for 1.223s"`,
		`time=2026-11-26T01:26:39.744Z level=INFO msg="arbiter decision" component=cluster op=promote volume=bench node=node2 epoch=2 reason="alive and UpToDate"`,
		`not a log line`,
		`time=garbage msg="promoted by the cluster"`,
		`time=2026-11-26T01:26:39.746Z level=INFO msg="promoted by the cluster" component=cluster volume=bench epoch=2`,
		`time=2026-11-26T01:26:39.747Z level=INFO msg="lease renewed: serving I/O again" volume=bench remaining=999ms`,
		`time=2026-11-26T01:26:39.748Z level=INFO msg="cluster committed peer disk state" volume=bench peer=node1 disk=Inconsistent epoch=2`,
		`time=2026-11-26T01:26:39.751Z level=INFO msg="cluster committed peer disk state" volume=bench peer=node1 disk=Outdated epoch=2`,
		`time=2026-11-26T01:26:39.760Z level=INFO msg="promoted by the cluster" component=cluster volume=bench epoch=3`,
		`time=2026-11-26T01:26:39.770Z level=INFO msg="cluster committed peer disk state" volume=bench peer=node1 disk=Outdated`,
	}, "\n")
	at := func(s string) time.Time {
		tm, err := time.Parse(time.RFC3339Nano, "2026-11-26T01:26:"+s+"Z")
		if err != nil {
			t.Fatal(err)
		}
		return tm
	}
	tests := []struct {
		name  string
		since time.Time
		want  map[string]time.Time
	}{
		{"the failover after the kill", at("38.5"), map[string]time.Time{
			MarkLost: at("39.739"), MarkPromote: at("39.744"), MarkPromoted: at("39.746"),
			MarkLease: at("39.747"), MarkOutdated: at("39.751"),
		}},
		{"a kill within the millisecond of the log line counts", at("39.7399"), map[string]time.Time{
			MarkLost: at("39.739"), MarkPromote: at("39.744"), MarkPromoted: at("39.746"),
			MarkLease: at("39.747"), MarkOutdated: at("39.751"),
		}},
		{"from the start: first occurrences", at("00"), map[string]time.Time{
			MarkLost: at("39.739"), MarkPromote: at("37.444"), MarkPromoted: at("39.746"),
			MarkLease: at("39.747"), MarkOutdated: at("37.488"),
		}},
		{"last line only (attribute at the end)", at("39.765"), map[string]time.Time{MarkOutdated: at("39.770")}},
		{"nothing after", at("40"), map[string]time.Time{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := ScanLogMarks([]byte(log), tt.since)
			if len(got) != len(tt.want) {
				t.Fatalf("got %v, want %v", got, tt.want)
			}
			for k, v := range tt.want {
				if !got[k].Equal(v) {
					t.Errorf("%s: %v, want %v", k, got[k], v)
				}
			}
		})
	}
}

func TestWriteFailoverTables(t *testing.T) {
	round := func(failover, says int) FailoverRound {
		return FailoverRound{Killed: "node1", Survivor: "node2", Leader: "w", Epoch: 2,
			Failover: time.Duration(failover) * time.Millisecond, SaysPrimary: time.Duration(says) * time.Millisecond,
			Marks:    map[string]time.Duration{MarkLost: time.Duration(says-20) * time.Millisecond},
			Attempts: 200, Writes: 150, InFlight: true, Rejoin: 300 * time.Millisecond}
	}
	tests := []struct {
		name   string
		rounds []FailoverRound
		want   []string
	}{
		{"met", []FailoverRound{round(1100, 1080), round(1200, 1150), round(1000, 990)}, []string{
			"**median 1.10 s**, p90 1.20 s, min 1.00 s, max 1.20 s over 3 rounds",
			"Target median ≤ 2 s (set for the default timing): met.",
			"| leader committed the primary lost | 1060 | 1130 | 970 | 1130 |",
			"| status says primary → first write | 20 | 50 | 10 | 50 |",
			"| 1 | node1 → node2 | w | 2 | 150 (yes) | 1060 | — | — | — | — | 1080 | **1100** | 200 | 0.30 s |",
			"≈ 3.5 s before a backup even takes over; the measured median is 3.2× shorter",
			"so 1s to 1.25s after the death",
		}},
		{"missed", []FailoverRound{round(2500, 2400), round(2100, 2000)}, []string{
			"**median 2.30 s**", "Target median ≤ 2 s (set for the default timing): **missed**.",
		}},
		{"status not seen in one round", []FailoverRound{round(1100, 1080), round(1200, 0)}, []string{
			"| new primary's status says primary (1 rounds) | 1080 |", "| 2 | node1 → node2 | w | 2 | 150 (yes) | -20 | — | — | — | — | — | **1200** |",
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var buf bytes.Buffer
			WriteFailoverTables(&buf, tt.rounds, 200*time.Millisecond, 1200*time.Millisecond)
			for _, w := range tt.want {
				if !strings.Contains(buf.String(), w) {
					t.Errorf("output lacks %q:\n%s", w, buf.String())
				}
			}
		})
	}
	var buf bytes.Buffer
	WriteFailoverTables(&buf, nil, time.Second, 3*time.Second)
	if buf.Len() != 0 {
		t.Errorf("no rounds printed %q", buf.String())
	}
}
