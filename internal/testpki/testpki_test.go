package testpki

import (
	"crypto/x509"
	"testing"
)

func TestIssue(t *testing.T) {
	ca := NewCA(t, "testpki CA")
	foreign := NewCA(t, "testpki CA") // same name, different authority
	if ca.Cert.SerialNumber.Cmp(foreign.Cert.SerialNumber) == 0 {
		t.Error("two CAs got the same serial number")
	}
	for _, usage := range []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth} {
		tc := ca.TLSCertificate(t, "leaf", usage)
		leaf := tc.Leaf
		if leaf == nil {
			t.Fatal("tls.Certificate without Leaf")
		}
		for _, host := range []string{"127.0.0.1", "::1", "localhost"} {
			if err := leaf.VerifyHostname(host); err != nil {
				t.Errorf("usage %v: %v", usage, err)
			}
		}
		opts := x509.VerifyOptions{Roots: ca.Pool(), KeyUsages: []x509.ExtKeyUsage{usage}}
		if _, err := leaf.Verify(opts); err != nil {
			t.Errorf("usage %v: does not verify against its CA: %v", usage, err)
		}
		opts.Roots = foreign.Pool()
		if _, err := leaf.Verify(opts); err == nil {
			t.Errorf("usage %v: verifies against a foreign CA with the same name", usage)
		}
	}
}
