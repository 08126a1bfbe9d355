package nbd

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"net"
	"testing"
	"time"

	"github.com/blockrep/blockrep/block/blocktest"
)

// selfSigned returns a server certificate for 127.0.0.1 and a pool that
// trusts it.
func selfSigned(t *testing.T) (tls.Certificate, *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "blockrep test"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
		KeyUsage:     x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IsCA:         true, BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}, pool
}

func TestTLSRequired(t *testing.T) {
	cert, pool := selfSigned(t)
	srv := NewServer(Config{TLS: &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS13}})
	mem := blocktest.NewMem(1 << 20)
	if err := srv.AddExport(&Export{Name: "secret", Device: mem, RequireTLS: true, InlineMax: 64 << 10}); err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(l)
	defer srv.Shutdown(context.Background())

	// In the clear the export is refused, and not even listed.
	c := dialTest(t, l.Addr().String())
	if r := c.opt(optGo, goData("secret")); r[0].typ != repErrTLSReqd {
		t.Fatalf("GO without TLS: reply %#x", r[0].typ)
	}
	if r := c.opt(optList, nil); r[0].typ != repErrTLSReqd {
		t.Fatalf("LIST without TLS: reply %#x", r[0].typ)
	}

	// After STARTTLS it is served.
	c = dialTest(t, l.Addr().String())
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
