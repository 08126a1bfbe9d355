package linktls

import (
	"bytes"
	"context"
	"crypto/tls"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/blockrep/blockrep/internal/testpki"
)

func TestLoadErrorsNameKeys(t *testing.T) {
	dir := t.TempDir()
	ca := testpki.NewCA(t, "test CA")
	_, certPEM, keyPEM := ca.NodeCertificate(t, "n1")
	write := func(name string, b []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	cert, key, caFile := write("n1.crt", certPEM), write("n1.key", keyPEM), write("ca.crt", ca.CertPEM)
	notPEM := write("junk", []byte("not a certificate"))
	if _, err := Load(Files{Cert: cert, Key: key, CA: caFile, Keys: "replication"}); err != nil {
		t.Fatalf("good files: %v", err)
	}
	for _, tc := range []struct {
		name string
		f    Files
		want string
	}{
		{"missing cert", Files{Cert: filepath.Join(dir, "nope"), Key: key, CA: caFile}, "cluster.tls_cert"},
		{"key of another cert", Files{Cert: cert, Key: notPEM, CA: caFile}, "cluster.tls_key"},
		{"missing CA", Files{Cert: cert, Key: key, CA: filepath.Join(dir, "nope")}, "cluster.tls_ca"},
		{"CA without PEM", Files{Cert: cert, Key: key, CA: notPEM}, "cluster.tls_ca " + notPEM + ": no PEM certificate"},
	} {
		tc.f.Keys = "cluster"
		if _, err := Load(tc.f); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want %q", tc.name, err, tc.want)
		}
	}
}

// tlsPair connects a client and a server over a pipe.
func tlsPair(t *testing.T) (cli, srv *tls.Conn) {
	ca := testpki.NewCA(t, "test CA")
	c1, _, _ := ca.NodeCertificate(t, "n1")
	c2, _, _ := ca.NodeCertificate(t, "n2")
	a, b := net.Pipe()
	t.Cleanup(func() { a.Close(); b.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	errc := make(chan error, 1)
	go func() {
		var err error
		srv, err = New(c2, ca.Pool()).Server(ctx, b)
		errc <- err
	}()
	cli, err := New(c1, ca.Pool()).Client(ctx, a, "n2")
	if err != nil || <-errc != nil {
		t.Fatalf("handshake: %v", err)
	}
	if err := CheckPeerName(srv, "n1"); err != nil {
		t.Fatal(err)
	}
	if err := CheckPeerName(srv, "n2"); err == nil {
		t.Fatal("n1's certificate passed for n2")
	}
	return cli, srv
}

// TestCoalescerKeepsOrder: small and large buffers of one vectored write
// arrive whole and in order.
func TestCoalescerKeepsOrder(t *testing.T) {
	cli, srv := tlsPair(t)
	var bufs [][]byte
	var want []byte
	for i, n := range []int{64, 4096, 64, 100 << 10, 64, 16 << 10, 3} {
		b := bytes.Repeat([]byte{byte('a' + i)}, n)
		bufs = append(bufs, b)
		want = append(want, b...)
	}
	c := &Coalescer{W: cli}
	done := make(chan error, 1)
	go func() {
		n, err := c.Writev(bufs)
		if err == nil && n != int64(len(want)) {
			err = io.ErrShortWrite
		}
		done <- err
	}()
	got := make([]byte, len(want))
	if _, err := io.ReadFull(srv, got); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatal("the bytes came out changed or reordered")
	}
}
