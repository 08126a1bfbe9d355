package node

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/blockrep/blockrep/config"
	"github.com/blockrep/blockrep/internal/testpki"
)

// TestClusterTrioTLS runs the trio with security = "tls" on the peer link
// and on the cluster port: the certificates come from the configured files,
// Raft elects over TLS, the primary replicates over TLS, and a write
// reaches the secondary.
func TestClusterTrioTLS(t *testing.T) {
	dir := t.TempDir()
	cfgs := trioConfigs(t, dir)
	ca := testpki.NewCA(t, "node test CA")
	caFile := filepath.Join(dir, "ca.crt")
	if err := os.WriteFile(caFile, ca.CertPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	for name, cfg := range cfgs {
		_, certPEM, keyPEM := ca.NodeCertificate(t, name)
		files := config.TLSFiles{Cert: filepath.Join(dir, name+".crt"), Key: filepath.Join(dir, name+".key"), CA: caFile}
		if err := os.WriteFile(files.Cert, certPEM, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(files.Key, keyPEM, 0o600); err != nil {
			t.Fatal(err)
		}
		cfg.Cluster.Security, cfg.Cluster.TLS = config.SecurityTLS, files
		if cfg.Replicated() {
			cfg.Replication.Security, cfg.Replication.TLS = config.SecurityTLS, files
		}
	}
	nodes := map[string]*Node{}
	for _, name := range []string{"w", "a", "b"} {
		nodes[name], _ = startNode(t, cfgs[name])
	}
	a, b := nodes["a"], nodes["b"]
	waitFor(t, "a primary, b in sync", func() bool { return primaryInSync(a) })
	data := []byte(strings.Repeat("over tls", 512))
	if err := a.volumes[0].repl.WriteAt(data, 8192, true); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, len(data))
	if err := b.volumes[0].store.ReadAt(got, 8192); err != nil || string(got) != string(data) {
		t.Fatalf("b's store after the write: %v, data equal %v", err, string(got) == string(data))
	}
}

// TestLinkTLSFileErrorNamesKey: a missing certificate file stops the node
// with an error that names the key.
func TestLinkTLSFileErrorNamesKey(t *testing.T) {
	dir := t.TempDir()
	cfg := trioConfigs(t, dir)["a"]
	cfg.Replication.Security = config.SecurityTLS
	cfg.Replication.TLS = config.TLSFiles{Cert: filepath.Join(dir, "missing.crt"), Key: filepath.Join(dir, "missing.key"), CA: filepath.Join(dir, "ca.crt")}
	n, err := New(cfg, testLogger(t))
	if n != nil {
		defer n.Close()
	}
	if err == nil || !strings.Contains(err.Error(), "replication.tls_cert") {
		t.Fatalf("New: %v, want an error naming replication.tls_cert", err)
	}
}
