package nbd

import (
	"crypto/tls"
	"crypto/x509"
	"testing"

	"github.com/blockrep/blockrep/block/blocktest"
	"github.com/blockrep/blockrep/internal/testpki"
)

func TestTLSRequired(t *testing.T) {
	ca := testpki.NewCA(t, "blockrep test CA")
	cert, pool := ca.TLSCertificate(t, "blockrep test", x509.ExtKeyUsageServerAuth), ca.Pool()
	srv := NewServer(Config{TLS: &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS13}})
	mem := blocktest.NewMem(1 << 20)
	addr := serveTest(t, srv, &Export{Name: "secret", Device: mem, RequireTLS: true, InlineMax: 64 << 10})

	// In the clear the export is refused, and not even listed.
	c := dialTest(t, addr)
	if r := c.opt(optGo, goData("secret")); r[0].typ != repErrTLSReqd {
		t.Fatalf("GO without TLS: reply %#x", r[0].typ)
	}
	if r := c.opt(optList, nil); r[0].typ != repErrTLSReqd {
		t.Fatalf("LIST without TLS: reply %#x", r[0].typ)
	}

	// After STARTTLS it is served.
	c = dialTest(t, addr)
	if r := c.opt(optStartTLS, nil); r[0].typ != repAck {
		t.Fatalf("STARTTLS: reply %#x", r[0].typ)
	}
	tc := tls.Client(c.c, &tls.Config{RootCAs: pool, ServerName: "127.0.0.1"})
	if err := tc.Handshake(); err != nil {
		t.Fatal(err)
	}
	if v := tc.ConnectionState().Version; v != tls.VersionTLS13 {
		t.Fatalf("TLS version %#x, want 1.3", v)
	}
	c.c = tc
	if r := c.opt(optStartTLS, nil); r[0].typ != repErrInvalid {
		t.Fatalf("second STARTTLS: reply %#x", r[0].typ)
	}
	c.negotiateGo("secret", true)
	data := []byte("over tls, all of it")
	if r := c.do(cmdWrite, cmdFlagFUA, 4096, uint32(len(data)), data); r.errno != 0 {
		t.Fatalf("write: errno %d", r.errno)
	}
	if r := c.do(cmdRead, 0, 4096, uint32(len(data)), nil); string(r.data) != string(data) {
		t.Fatalf("read back %q", r.data)
	}
	if infos := srv.Clients(); len(infos) != 1 || !infos[0].TLS || infos[0].Export != "secret" || infos[0].Writes != 1 {
		t.Fatalf("Clients() = %+v", infos)
	}
}

func TestRequireTLSNeedsCertificate(t *testing.T) {
	srv := NewServer(Config{})
	if err := srv.AddExport(&Export{Name: "x", Device: blocktest.NewMem(4096), RequireTLS: true}); err == nil {
		t.Fatal("an export requiring TLS was accepted by a server without a certificate")
	}
}
