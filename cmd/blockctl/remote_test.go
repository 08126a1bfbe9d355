package main

import (
	"bytes"
	"context"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/blockrep/blockrep/api"
	"github.com/blockrep/blockrep/internal/authnet"
	"github.com/blockrep/blockrep/internal/linktls"
	"github.com/blockrep/blockrep/internal/testpki"
	"github.com/blockrep/blockrep/replica/wire"
)

const testSecret = "0123456789abcdef0123456789abcdef"

// remoteNode serves b's control API the way a cluster member does: over
// an authnet.Mux on 127.0.0.1, for cluster "prod" and testSecret. It
// records the node ID each connection proved.
type remoteNode struct {
	addr string

	mu    sync.Mutex
	peers []string
}

func (n *remoteNode) peerIDs() []string {
	n.mu.Lock()
	defer n.mu.Unlock()
	return slices.Clone(n.peers)
}

func serveRemote(t *testing.T, b api.Backend) *remoteNode {
	t.Helper()
	return serveRemoteWith(t, b, authnet.Config{Cluster: "prod", NodeID: "node1", Secret: []byte(testSecret)})
}

// serveRemoteWith is serveRemote with the Mux's configuration.
func serveRemoteWith(t *testing.T, b api.Backend, cfg authnet.Config) *remoteNode {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	mux, err := authnet.NewMux(ln, cfg)
	if err != nil {
		t.Fatal(err)
	}
	n := &remoteNode{addr: ln.Addr().String()}
	srv := &http.Server{Handler: api.NewHandler(b), ConnContext: func(ctx context.Context, c net.Conn) context.Context {
		n.mu.Lock()
		n.peers = append(n.peers, c.(*authnet.Conn).PeerID())
		n.mu.Unlock()
		return ctx
	}}
	go srv.Serve(mux.Listener(authnet.ServiceControl))
	ctx, cancel := context.WithCancel(context.Background())
	go mux.Serve(ctx)
	t.Cleanup(func() {
		cancel()
		mux.Close()
		srv.Close()
	})
	return n
}

// writeFile writes content to name in dir and returns its path.
func writeFile(t *testing.T, dir, name, content string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestRemote(t *testing.T) {
	old := hostname
	hostname = func() (string, error) { return "admin-box", nil }
	t.Cleanup(func() { hostname = old })

	fb := &fakeBackend{st: clusterStatus(time.Now())}
	node := serveRemote(t, &clusterBackend{fakeBackend: fb, note: "node2 is primary of vol0"})
	addr := node.addr

	dir := t.TempDir()
	// An editor's newline and blanks after the secret are not part of it.
	secret := writeFile(t, dir, "cluster.secret", testSecret+" \n\n")
	wrong := writeFile(t, dir, "wrong.secret", "fedcba9876543210fedcba9876543210\n")
	short := writeFile(t, dir, "short.secret", "0123456789abcde\n")
	member := writeFile(t, dir, "member.toml", `[node]
name = "witness"
data_dir = "/var/lib/blockrep/witness"

[cluster]
name = "prod"
secret_file = "`+secret+`"
listen = "10.0.0.9:7790"
kind = "witness"
`)
	plain := writeFile(t, dir, "plain.toml", `[node]
name = "n"
data_dir = "/var/lib/blockrep/n"
[[volume]]
name = "v"
path = "/v.img"
`)
	closed, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closedAddr := closed.Addr().String()
	closed.Close()
	// --node ignores $BLOCKREP_SOCKET.
	env := func(k string) string {
		return map[string]string{EnvSocket: filepath.Join(dir, "none.sock")}[k]
	}

	tests := []struct {
		name      string
		args      []string
		wantCode  int
		wantOut   string // substring of stdout
		wantErr   string // all of stderr, or with wantUsage its start
		wantUsage bool
		wantCall  string
		wantPeer  bool // the node saw blockctl's handshake
	}{
		{name: "status with flags", args: []string{"--node", addr, "--secret-file", secret, "--cluster", "prod", "status"},
			wantOut: "cluster  node node1  kind data  raft Leader  leader node1  term 7\n", wantPeer: true},
		{name: "status from the config", args: []string{"-c", member, "--node", addr, "status"},
			wantOut: "node node1  id 5b0c6a3e", wantPeer: true},
		{name: "flags after the command's", args: []string{"-node", addr, "-c", member, "status", "-o", "json"},
			wantOut: `"leader": "node1"`, wantPeer: true},
		{name: "promote", args: []string{"--node", addr, "-c", member, "promote", "node2", "vol0"},
			wantOut: "node2 is primary of vol0\n", wantCall: `Promote("vol0", "node2", false, "")`, wantPeer: true},
		{name: "connect", args: []string{"--node", addr, "-c", member, "connect", "vol0"},
			wantOut: "connect vol0 to every peer: requested\n", wantCall: `Connect("vol0", "", false)`, wantPeer: true},

		{name: "wrong secret", args: []string{"--node", addr, "--secret-file", wrong, "--cluster", "prod", "status"}, wantCode: 1,
			wantErr: "blockctl: authentication with blockrepd at " + addr + " failed: the node does not hold the secret blockctl has (from --secret-file " + wrong + "); it must be the node's cluster.secret_file\n"},
		{name: "events too", args: []string{"--node", addr, "--secret-file", wrong, "--cluster", "prod", "events"}, wantCode: 1,
			wantErr: "blockctl: authentication with blockrepd at " + addr + " failed: the node does not hold the secret blockctl has (from --secret-file " + wrong + "); it must be the node's cluster.secret_file\n"},
		{name: "wrong cluster", args: []string{"--node", addr, "-c", member, "--cluster", "test", "promote", "node2"}, wantCode: 1,
			wantErr: "blockctl: authentication with blockrepd at " + addr + " failed: the node is not in cluster \"test\" (see --cluster or cluster.name)\n"},
		{name: "unreachable", args: []string{"--node", closedAddr, "-c", member, "status"}, wantCode: 1,
			wantErr: "blockctl: cannot reach blockrepd at " + closedAddr + ": connect: connection refused (is the daemon running, with cluster.listen " + closedAddr + "?)\n"},
		{name: "no secret", args: []string{"--node", addr, "-c", plain, "--cluster", "prod", "status"}, wantCode: 1,
			wantErr: "blockctl: --node " + addr + ": no cluster secret to authenticate with: give --secret-file PATH, or set cluster.secret_file in " + plain + " (" + plain + " has no [cluster] table)\n"},
		{name: "no cluster name", args: []string{"--node", addr, "-c", plain, "--secret-file", secret, "status"}, wantCode: 1,
			wantErr: "blockctl: --node " + addr + ": no cluster name to authenticate with: give --cluster NAME, or set cluster.name in " + plain + " (" + plain + " has no [cluster] table)\n"},
		{name: "short secret", args: []string{"--node", addr, "--secret-file", short, "--cluster", "prod", "status"}, wantCode: 1,
			wantErr: "blockctl: the cluster secret in " + short + " (--secret-file " + short + ") holds 15 bytes, fewer than the 16 a secret needs\n"},
		{name: "missing secret file", args: []string{"--node", addr, "--secret-file", filepath.Join(dir, "nope"), "--cluster", "prod", "status"}, wantCode: 1,
			wantErr: "blockctl: reading the cluster secret (--secret-file " + filepath.Join(dir, "nope") + "): open " + filepath.Join(dir, "nope") + ": no such file or directory\n"},

		{name: "socket and node", args: []string{"-s", "/x.sock", "--node", addr, "status"}, wantCode: 2,
			wantErr: "blockctl: -s and --node both name the daemon; give one", wantUsage: true},
		{name: "secret without node", args: []string{"--secret-file", secret, "status"}, wantCode: 2,
			wantErr: "blockctl: --secret-file is only for --node", wantUsage: true},
		{name: "cluster without node", args: []string{"--cluster", "prod", "status"}, wantCode: 2,
			wantErr: "blockctl: --cluster is only for --node", wantUsage: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fb.mu.Lock()
			fb.calls = nil
			fb.mu.Unlock()
			before := len(node.peerIDs())
			var stdout, stderr bytes.Buffer
			code := run(tt.args, &stdout, &stderr, env)
			if code != tt.wantCode {
				t.Errorf("exit %d, want %d; stderr %s", code, tt.wantCode, stderr.String())
			}
			if !strings.Contains(stdout.String(), tt.wantOut) {
				t.Errorf("stdout %q does not contain %q", stdout.String(), tt.wantOut)
			}
			if tt.wantUsage {
				if !strings.HasPrefix(stderr.String(), tt.wantErr) || !strings.Contains(stderr.String(), "usage: blockctl") {
					t.Errorf("stderr %q, want %q and the usage", stderr.String(), tt.wantErr)
				}
			} else if stderr.String() != tt.wantErr {
				t.Errorf("stderr %q, want %q", stderr.String(), tt.wantErr)
			}
			var want []string
			if tt.wantCall != "" {
				want = []string{tt.wantCall}
			}
			fb.mu.Lock()
			calls := fb.calls
			fb.mu.Unlock()
			if !slices.Equal(calls, want) {
				t.Errorf("calls %q, want %q", calls, want)
			}
			peers := node.peerIDs()[before:]
			if tt.wantPeer && (len(peers) == 0 || peers[0] != "blockctl-admin-box") {
				t.Errorf("the node saw %q, want blockctl-admin-box", peers)
			}
			if !tt.wantPeer && len(peers) > 0 {
				t.Errorf("the node accepted %q", peers)
			}
		})
	}
}

func TestClientNodeID(t *testing.T) {
	if got := clientNodeID("db1.example.com"); got != "blockctl-db1.example.com" {
		t.Errorf("clientNodeID = %q", got)
	}
	if got := clientNodeID(""); got != "blockctl-unknown" {
		t.Errorf("clientNodeID(\"\") = %q", got)
	}
	long := clientNodeID(strings.Repeat("h", 300))
	if len(long) != wire.MaxNameLen || !strings.HasPrefix(long, "blockctl-hhh") {
		t.Errorf("clientNodeID(300 bytes) = %d bytes %q", len(long), long)
	}
}

// TestRemoteTLS: with cluster.security = "tls" in the configuration,
// blockctl presents the node's certificate from it and talks TLS; a
// configuration that says "mac" is refused by the same node.
func TestRemoteTLS(t *testing.T) {
	dir := t.TempDir()
	ca := testpki.NewCA(t, "blockctl test CA")
	nodeCert, _, _ := ca.NodeCertificate(t, "node1")
	_, certPEM, keyPEM := ca.NodeCertificate(t, "witness")
	caFile := writeFile(t, dir, "ca.crt", string(ca.CertPEM))
	certFile := writeFile(t, dir, "witness.crt", string(certPEM))
	keyFile := writeFile(t, dir, "witness.key", string(keyPEM))
	fb := &fakeBackend{st: clusterStatus(time.Now())}
	node := serveRemoteWith(t, &clusterBackend{fakeBackend: fb}, authnet.Config{Cluster: "prod", NodeID: "node1", Secret: []byte(testSecret),
		Protection: wire.ProtectTLS, TLS: linktls.New(nodeCert, ca.Pool())})
	secret := writeFile(t, dir, "cluster.secret", testSecret)
	conf := func(security string) string {
		extra := ""
		if security == "tls" {
			extra = "tls_cert = \"" + certFile + "\"\ntls_key = \"" + keyFile + "\"\ntls_ca = \"" + caFile + "\"\n"
		}
		return writeFile(t, dir, security+".toml", `[node]
name = "witness"
data_dir = "/var/lib/blockrep/witness"

[cluster]
name = "prod"
secret_file = "`+secret+`"
listen = "10.0.0.9:7790"
kind = "witness"
security = "`+security+`"
`+extra)
	}
	var stdout, stderr bytes.Buffer
	if code := run([]string{"-c", conf("tls"), "--node", node.addr, "status"}, &stdout, &stderr, func(string) string { return "" }); code != 0 {
		t.Fatalf("status over TLS: exit %d, stderr %s", code, stderr.String())
	}
	if !strings.Contains(stdout.String(), "leader node1") {
		t.Fatalf("status over TLS: %s", stdout.String())
	}
	stdout.Reset()
	stderr.Reset()
	if code := run([]string{"-c", conf("mac"), "--node", node.addr, "status"}, &stdout, &stderr, func(string) string { return "" }); code != 1 {
		t.Fatalf("status with security mac against a TLS node: exit %d, stdout %s", code, stdout.String())
	}
	t.Logf("mac against tls: %s", stderr.String())
}
