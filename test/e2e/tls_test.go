package e2e

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/blockrep/blockrep/internal/testpki"
)

// writeFiles creates dir and writes name -> content into it (mode 0600).
func writeFiles(t *testing.T, dir string, files map[string][]byte) string {
	t.Helper()
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	for name, b := range files {
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// tlsSetup holds the PKI of a TLS test in libnbd's directory layout
// (ca-cert.pem, client-cert.pem, client-key.pem; see
// nbd_set_tls_certificates(3)) plus the daemon's files.
type tlsSetup struct {
	serverCert, serverKey, caFile string
	clientDir                     string // CA + client certificate
	anonDir                       string // CA only: verifies the server, no client certificate
	wrongCADir                    string // another CA: the server's certificate does not verify
	otherClientDir                string // client certificate from another CA
}

func newTLSSetup(t *testing.T) *tlsSetup {
	t.Helper()
	dir := t.TempDir()
	ca := testpki.NewCA(t, "blockrep e2e CA")
	// Same name as the real CA, so that a client holding a certificate
	// from it does send that certificate (gnutls only sends one whose
	// issuer the server names as acceptable), and the server has to
	// reject it by its signature.
	other := testpki.NewCA(t, "blockrep e2e CA")
	sc, sk := ca.Issue(t, "blockrepd", x509.ExtKeyUsageServerAuth)
	cc, ck := ca.Issue(t, "e2e client", x509.ExtKeyUsageClientAuth)
	oc, ok := other.Issue(t, "intruder", x509.ExtKeyUsageClientAuth)
	s := &tlsSetup{}
	server := writeFiles(t, filepath.Join(dir, "server"), map[string][]byte{
		"ca-cert.pem": ca.CertPEM, "server-cert.pem": sc, "server-key.pem": sk,
	})
	s.serverCert = filepath.Join(server, "server-cert.pem")
	s.serverKey = filepath.Join(server, "server-key.pem")
	s.caFile = filepath.Join(server, "ca-cert.pem")
	s.clientDir = writeFiles(t, filepath.Join(dir, "client"), map[string][]byte{
		"ca-cert.pem": ca.CertPEM, "client-cert.pem": cc, "client-key.pem": ck,
	})
	s.anonDir = writeFiles(t, filepath.Join(dir, "anon"), map[string][]byte{"ca-cert.pem": ca.CertPEM})
	s.wrongCADir = writeFiles(t, filepath.Join(dir, "wrongca"), map[string][]byte{"ca-cert.pem": other.CertPEM})
	s.otherClientDir = writeFiles(t, filepath.Join(dir, "otherclient"), map[string][]byte{
		"ca-cert.pem": ca.CertPEM, "client-cert.pem": oc, "client-key.pem": ok,
	})
	return s
}

// tlsURI is an nbds:// URI that requires TLS and verifies the server with
// the certificates in dir.
func tlsURI(d *daemon, export, dir string) string {
	return "nbds://" + d.Addr() + "/" + export + "?tls-certificates=" + dir
}

// nbdinfoTLS runs nbdinfo --json and returns whether the session used TLS.
func nbdinfoTLS(t *testing.T, uri string) bool {
	t.Helper()
	out := must(t, "nbdinfo", "--json", uri)
	var info nbdinfoJSON
	if err := json.Unmarshal([]byte(out), &info); err != nil {
		t.Fatalf("nbdinfo --json: %v\n%s", err, out)
	}
	return info.TLS
}

// expectRefused runs nbdinfo and requires it to fail with a message that
// contains one of the words (case-insensitively).
func expectRefused(t *testing.T, uri string, words ...string) {
	t.Helper()
	stdout, stderr, err := run(t, "nbdinfo", uri)
	if err == nil {
		t.Errorf("nbdinfo %s succeeded, want it refused:\n%s", uri, stdout)
		return
	}
	msg := strings.ToLower(stderr)
	for _, w := range words {
		if strings.Contains(msg, strings.ToLower(w)) {
			t.Logf("refused as expected: %s", strings.TrimSpace(stderr))
			return
		}
	}
	t.Errorf("nbdinfo %s failed (%v) but its message mentions none of %q:\n%s", uri, err, words, stderr)
}

// expectTLSRequired runs a plain (non-TLS) nbdinfo against a TLS-only export:
// it must fail, and the server's error message (which libnbd shows only in
// its debug output) must say that TLS is required.
func expectTLSRequired(t *testing.T, uri string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), defaultCmdTimeout)
	defer cancel()
	cmd := command(ctx, t, "nbdinfo", uri)
	cmd.Env = append(cmd.Environ(), "LIBNBD_DEBUG=1")
	stdout, stderr, err := runCmd(t, cmd)
	if err == nil {
		t.Errorf("plain nbdinfo %s succeeded, want it refused:\n%s", uri, stdout)
		return
	}
	for _, l := range strings.Split(stderr, "\n") {
		if strings.Contains(l, "server error message") && strings.Contains(strings.ToLower(l), "tls") {
			t.Logf("refused as expected (%v): %s", err, strings.TrimSpace(l))
			return
		}
	}
	t.Errorf("plain nbdinfo %s failed (%v) but the server's message does not mention TLS:\n%s", uri, err, stderr)
}

// TestTLS serves a TLS-required and a TLS-optional volume with a
// certificate from a test CA and checks which clients get in.
func TestTLS(t *testing.T) {
	tool(t, "nbdinfo")
	tool(t, "nbdcopy")
	pki := newTLSSetup(t)
	d := startDaemon(t, daemonSpec{
		TLSCert: pki.serverCert, TLSKey: pki.serverKey,
		Volumes: []volumeSpec{
			{Name: "secure", Size: 16 * MiB, TLS: "required"},
			{Name: "open", Size: 16 * MiB, TLS: "optional"},
		},
	})

	// TLS-required volume: in with TLS, out without.
	if !nbdinfoTLS(t, tlsURI(d, "secure", pki.anonDir)) {
		t.Errorf("nbdinfo over nbds:// to the secure volume: TLS false")
	}
	if !nbdinfoTLS(t, tlsURI(d, "secure", pki.clientDir)) {
		t.Errorf("nbdinfo with a client certificate: TLS false")
	}
	expectTLSRequired(t, d.URI("secure"))
	// The plain listing does not show the TLS-only volume.
	if out, _, err := run(t, "nbdinfo", "--list", "--json", "nbd://"+d.Addr()); err == nil && strings.Contains(out, `"secure"`) {
		t.Errorf("nbdinfo --list without TLS shows the TLS-only volume:\n%s", out)
	}

	// The server certificate must verify: a client trusting another CA
	// refuses the server.
	expectRefused(t, tlsURI(d, "secure", pki.wrongCADir), "certificate", "verif", "tls", "handshake")

	// TLS-optional volume: both ways.
	if nbdinfoTLS(t, d.URI("open")) {
		t.Errorf("plain nbd:// to the open volume reports TLS")
	}
	if !nbdinfoTLS(t, tlsURI(d, "open", pki.anonDir)) {
		t.Errorf("nbds:// to the open volume: TLS false")
	}

	// Data over TLS.
	dir := t.TempDir()
	src := filepath.Join(dir, "src.img")
	writeRandomFile(t, src, 16*MiB, 9, [2]int64{4 * MiB, 8 * MiB})
	must(t, "nbdcopy", "--flush", src, tlsURI(d, "secure", pki.anonDir))
	out := filepath.Join(dir, "out.img")
	must(t, "nbdcopy", tlsURI(d, "secure", pki.clientDir), out)
	if a, b := sha256File(t, src), sha256File(t, out); a != b {
		t.Errorf("copy over TLS: sha256 %s, want %s", b, a)
	}
	if a, b := sha256File(t, src), volumeDataHash(t, d.VolumePath("secure")); a != b {
		t.Errorf("secure volume's backing file: sha256 %s, want %s", b, a)
	}
}

// TestTLSClientCA requires every TLS client to present a certificate from
// the configured CA.
func TestTLSClientCA(t *testing.T) {
	tool(t, "nbdinfo")
	tool(t, "nbdsh")
	pki := newTLSSetup(t)
	d := startDaemon(t, daemonSpec{
		TLSCert: pki.serverCert, TLSKey: pki.serverKey, TLSClientCA: pki.caFile,
		Volumes: []volumeSpec{{Name: "secure", Size: 16 * MiB, TLS: "required"}},
	})

	if !nbdinfoTLS(t, tlsURI(d, "secure", pki.clientDir)) {
		t.Errorf("client with a certificate from the CA: TLS false")
	}
	expectRefused(t, tlsURI(d, "secure", pki.anonDir), "certificate", "tls", "handshake", "connection")
	expectRefused(t, tlsURI(d, "secure", pki.otherClientDir), "certificate", "tls", "handshake", "connection")
	log, _ := os.ReadFile(d.LogPath)
	for _, want := range []string{"client didn't provide a certificate", "certificate signed by unknown authority"} {
		if !strings.Contains(string(log), want) {
			t.Errorf("daemon log lacks %q: the refusals above were not for the expected reasons", want)
		}
	}
	expectTLSRequired(t, d.URI("secure"))

	// The accepted client shows up as a TLS client in status.
	p := holdConnection(t, tlsURI(d, "secure", pki.clientDir))
	v := status(t, d).volume(t, "secure")
	if len(v.Clients) != 1 || !v.Clients[0].TLS {
		t.Errorf("status while a TLS client is connected: clients %+v, want one with tls=true", v.Clients)
	}
	p.release(t, true)
}
