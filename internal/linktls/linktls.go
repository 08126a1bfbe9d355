// Package linktls is the TLS 1.3 of blockrep's node-to-node links
// (security = "tls" on the peer link and the cluster port): mutual
// certificates signed by the link's CA, as DRBD 9.2 does with kTLS. The
// shared-secret handshake of replica/wire still runs inside the TLS
// session, so a link needs both the secret and a certificate.
package linktls

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"os"
	"time"
)

// Files names a link's PEM files and the configuration keys they come
// from, for errors.
type Files struct {
	Cert, Key, CA string
	// Keys is the configuration table the files are keys of
	// ("replication", "cluster"): errors name e.g. replication.tls_ca.
	Keys string
}

// Config is a link's loaded TLS material.
type Config struct {
	cert tls.Certificate
	pool *x509.CertPool
}

// Load reads and checks the files. Errors name the configuration key.
func Load(f Files) (*Config, error) {
	cert, err := tls.LoadX509KeyPair(f.Cert, f.Key)
	if err != nil {
		return nil, fmt.Errorf("%s.tls_cert %s / %s.tls_key %s: %w", f.Keys, f.Cert, f.Keys, f.Key, err)
	}
	ca, err := os.ReadFile(f.CA)
	if err != nil {
		return nil, fmt.Errorf("%s.tls_ca: %w", f.Keys, err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(ca) {
		return nil, fmt.Errorf("%s.tls_ca %s: no PEM certificate in it", f.Keys, f.CA)
	}
	return New(cert, pool), nil
}

// New makes a Config from a certificate and the pool of CAs that sign the
// other ends' certificates.
func New(cert tls.Certificate, pool *x509.CertPool) *Config {
	return &Config{cert: cert, pool: pool}
}

// server is the accepting end's configuration: TLS 1.3 only, and the
// dialer must present a certificate the CA signed.
func (c *Config) server() *tls.Config {
	return &tls.Config{
		MinVersion:   tls.VersionTLS13,
		Certificates: []tls.Certificate{c.cert},
		ClientAuth:   tls.RequireAndVerifyClientCert,
		ClientCAs:    c.pool,
	}
}

// client is the dialing end's configuration. With a name the server's
// certificate must carry it as a DNS name (a peer's node.name); without one
// (Raft and blockctl dial addresses, not names) the chain to the CA is
// checked and the name is not.
func (c *Config) client(name string) *tls.Config {
	cfg := &tls.Config{
		MinVersion:   tls.VersionTLS13,
		Certificates: []tls.Certificate{c.cert},
		RootCAs:      c.pool,
		ServerName:   name,
	}
	if name == "" {
		// Go checks the chain and the name together; this checks the
		// chain alone, so InsecureSkipVerify skips nothing else.
		cfg.InsecureSkipVerify = true
		cfg.VerifyConnection = func(cs tls.ConnectionState) error {
			if len(cs.PeerCertificates) == 0 {
				return errors.New("linktls: the server sent no certificate")
			}
			opts := x509.VerifyOptions{Roots: c.pool, Intermediates: x509.NewCertPool(), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
			for _, ic := range cs.PeerCertificates[1:] {
				opts.Intermediates.AddCert(ic)
			}
			_, err := cs.PeerCertificates[0].Verify(opts)
			return err
		}
	}
	return cfg
}

// Server runs the accepting end's TLS handshake on conn within ctx.
func (c *Config) Server(ctx context.Context, conn net.Conn) (*tls.Conn, error) {
	tc := tls.Server(conn, c.server())
	return tc, handshake(ctx, tc)
}

// Client runs the dialing end's TLS handshake on conn within ctx; name, if
// not empty, is the node the server's certificate must name.
func (c *Config) Client(ctx context.Context, conn net.Conn, name string) (*tls.Conn, error) {
	tc := tls.Client(conn, c.client(name))
	return tc, handshake(ctx, tc)
}

func handshake(ctx context.Context, tc *tls.Conn) error {
	if err := tc.HandshakeContext(ctx); err != nil {
		if _, ok := errors.AsType[tls.RecordHeaderError](err); ok {
			return fmt.Errorf("tls handshake: %w (the other end does not speak TLS: security = \"tls\" here, not there?)", err)
		}
		return fmt.Errorf("tls handshake: %w", err)
	}
	// HandshakeContext leaves no deadline behind; the shared-secret
	// handshake that follows sets its own.
	_ = tc.SetDeadline(time.Time{})
	return nil
}

// CheckPeerName makes sure the other end's certificate names node (as a
// DNS name): once the shared-secret handshake told which node the other
// end is, its certificate must be that node's, so that one node's
// certificate cannot stand in for another's.
func CheckPeerName(tc *tls.Conn, node string) error {
	cs := tc.ConnectionState()
	if len(cs.PeerCertificates) == 0 {
		return fmt.Errorf("linktls: node %q presented no certificate", node)
	}
	if err := cs.PeerCertificates[0].VerifyHostname(node); err != nil {
		return fmt.Errorf("linktls: the certificate of node %q does not name it: %w", node, err)
	}
	return nil
}

// recordMax is the most data of one TLS record.
const recordMax = 16 << 10

// Coalescer writes the buffers of a vectored write (wire.Vectored) to a
// TLS connection in as few records as it can: without it each buffer of a
// batch of small frames would cost a record and a system call of its own.
// Buffers smaller than a record are gathered; larger ones are written as
// they are. It is not safe for concurrent use (nor is the frame writer
// that uses it).
type Coalescer struct {
	W   *tls.Conn
	buf []byte
}

// Write writes p.
func (c *Coalescer) Write(p []byte) (int, error) { return c.W.Write(p) }

// Writev writes bufs in order.
func (c *Coalescer) Writev(bufs [][]byte) (int64, error) {
	var n int64
	flush := func() error {
		if len(c.buf) == 0 {
			return nil
		}
		m, err := c.W.Write(c.buf)
		n += int64(m)
		c.buf = c.buf[:0]
		return err
	}
	for _, b := range bufs {
		if len(b) >= recordMax {
			if err := flush(); err != nil {
				return n, err
			}
			m, err := c.W.Write(b)
			n += int64(m)
			if err != nil {
				return n, err
			}
			continue
		}
		if len(c.buf)+len(b) > recordMax {
			if err := flush(); err != nil {
				return n, err
			}
		}
		c.buf = append(c.buf, b...)
	}
	return n, flush()
}
