package bench

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/pem"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/blockrep/blockrep/config"
	"github.com/blockrep/blockrep/internal/linktls"
)

func TestReplicatedPairConfig(t *testing.T) {
	dir := t.TempDir()
	pair, err := NewReplicatedPair(dir, "/var/tmp/p.img", "/var/tmp/s.img")
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(pair.Primary.SecretFile)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 || fi.Size() != 32 {
		t.Fatalf("secret file mode %v size %d, want 0600 and 32 bytes", fi.Mode().Perm(), fi.Size())
	}
	p, err := config.Parse([]byte(pair.Primary.TOML()), "primary")
	if err != nil {
		t.Fatalf("primary config: %v\n%s", err, pair.Primary.TOML())
	}
	s, err := config.Parse([]byte(pair.Secondary.TOML()), "secondary")
	if err != nil {
		t.Fatalf("secondary config: %v\n%s", err, pair.Secondary.TOML())
	}
	if p.Volumes[0].Role != config.RolePrimary || s.Volumes[0].Role != config.RoleSecondary {
		t.Fatalf("roles %s / %s", p.Volumes[0].Role, s.Volumes[0].Role)
	}
	if p.Replication.Protocol != config.ProtocolC || p.Peers[0].Address != s.Replication.Listen || s.Peers[0].Address != p.Replication.Listen {
		t.Fatalf("peers do not point at each other: %+v %+v", p, s)
	}

	standalone := NodeConfig{Name: "bench", DataDir: "/var/tmp/n", File: "/var/tmp/f.img", NBDPort: 1}
	c, err := config.Parse([]byte(standalone.TOML()), "standalone")
	if err != nil {
		t.Fatal(err)
	}
	if c.Replicated() || c.Volumes[0].Role != config.RolePrimary {
		t.Fatalf("standalone config replicates: %+v", c)
	}
}

func TestCopies(t *testing.T) {
	dir := t.TempDir()
	src, dst := filepath.Join(dir, "src"), filepath.Join(dir, "dst")
	data := make([]byte, 3*CopyChunk+512)
	for i := range data {
		data[i] = byte(i * 13)
	}
	if err := os.WriteFile(src, data, 0o600); err != nil {
		t.Fatal(err)
	}
	for name, copyFn := range map[string]func() (time.Duration, error){
		"tcp": func() (time.Duration, error) {
			return CopyTCP(context.Background(), src, dst, 4096, int64(len(data))-8192)
		},
		"local": func() (time.Duration, error) { return CopyLocal(src, dst, 4096, int64(len(data))-8192) },
	} {
		if err := os.WriteFile(dst, make([]byte, len(data)), 0o600); err != nil {
			t.Fatal(err)
		}
		if _, err := copyFn(); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		got, _ := os.ReadFile(dst)
		want := append(make([]byte, 4096), data[4096:len(data)-4096]...)
		want = append(want, make([]byte, 4096)...)
		if !bytes.Equal(got, want) {
			t.Fatalf("%s copy: wrong contents", name)
		}
	}
}

func TestReplTables(t *testing.T) {
	cs := []ReplComparison{
		{Row: ReplicationRows[0], Reference: Result{IOPS: 100}, Standalone: Result{IOPS: 200}, Replicated: Result{IOPS: 60}},
		{Row: ReplicationRows[2], Reference: Result{MeanLat: 80 * time.Microsecond}, Standalone: Result{MeanLat: 60 * time.Microsecond, P99Lat: 100 * time.Microsecond},
			Replicated: Result{MeanLat: 100 * time.Microsecond, P99Lat: 250 * time.Microsecond}},
	}
	var buf bytes.Buffer
	WriteReplTable(&buf, cs)
	out := buf.String()
	for _, want := range []string{"| 0.60× | 0.30× | ≥ 0.7× **missed**", "| 0.80× | 0.60× | — |", "+40.0 µs mean and +150 µs p99"} {
		if !strings.Contains(out, want) {
			t.Errorf("table lacks %q:\n%s", want, out)
		}
	}
	rounds := []ResyncRound{
		{Bytes: 100 << 20, Kind: "bitmap", Done: 100 << 20, Resync: time.Second, Wall: 2 * time.Second, TCPCopy: time.Second / 2, LocalCopy: time.Second / 4},
		{Bytes: 100 << 20, Kind: "bitmap", Done: 100 << 20, Resync: 2 * time.Second, Wall: 3 * time.Second, TCPCopy: time.Second, LocalCopy: time.Second / 4},
		{Bytes: 100 << 20, Kind: "bitmap", Done: 100 << 20, Resync: time.Second / 2, Wall: time.Second, TCPCopy: time.Second, LocalCopy: time.Second / 4},
	}
	if r := MedianOf(rounds, ResyncRound.ResyncRate); r != 100<<20 {
		t.Fatalf("median resync rate %v", r)
	}
	buf.Reset()
	WriteResyncTable(&buf, rounds)
	if !strings.Contains(buf.String(), "resync / plain TCP copy: 1.00× (target ≥ 0.8× met)") {
		t.Fatalf("resync table:\n%s", buf.String())
	}
}

// TestReplicatedPairSecurity: every security value renders to a
// configuration blockrepd takes, and "tls" comes with certificates that
// name each node and chain to the CA written beside them.
func TestReplicatedPairSecurity(t *testing.T) {
	for _, sec := range Securities {
		t.Run(sec, func(t *testing.T) {
			dir := t.TempDir()
			pair, err := NewReplicatedPair(dir, "/var/tmp/p.img", "/var/tmp/s.img")
			if err != nil {
				t.Fatal(err)
			}
			if err := pair.Protect(sec, dir); err != nil {
				t.Fatal(err)
			}
			for _, nc := range []NodeConfig{pair.Primary, pair.Secondary} {
				c, err := config.Parse([]byte(nc.TOML()), nc.Name)
				if err != nil {
					t.Fatalf("%s: %v\n%s", nc.Name, err, nc.TOML())
				}
				if string(c.Replication.Security) != sec {
					t.Fatalf("%s: security %q, want %q", nc.Name, c.Replication.Security, sec)
				}
				if sec != "tls" {
					continue
				}
				tl, err := linktls.Load(linktls.Files{Cert: c.Replication.TLS.Cert, Key: c.Replication.TLS.Key, CA: c.Replication.TLS.CA, Keys: "replication"})
				if err != nil || tl == nil {
					t.Fatalf("%s: %v", nc.Name, err)
				}
				pemBytes, err := os.ReadFile(c.Replication.TLS.Cert)
				if err != nil {
					t.Fatal(err)
				}
				block, _ := pem.Decode(pemBytes)
				cert, err := x509.ParseCertificate(block.Bytes)
				if err != nil {
					t.Fatal(err)
				}
				if err := cert.VerifyHostname(nc.Name); err != nil {
					t.Fatalf("%s: %v", nc.Name, err)
				}
			}
		})
	}
}

func TestWriteProtTable(t *testing.T) {
	row := ReplicationRows[0]
	var buf bytes.Buffer
	WriteProtTable(&buf, []ProtComparison{{Row: row, Securities: []string{"none", "mac"}, Results: []Result{{IOPS: 1000}, {IOPS: 900}}}})
	if !strings.Contains(buf.String(), "| 0.90× (0.9000) |") || !strings.Contains(buf.String(), `security = "mac"`) {
		t.Fatalf("table:\n%s", buf.String())
	}
}
