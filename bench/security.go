package bench

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"os"
	"path/filepath"
	"time"
)

// Securities are the values of replication.security the benchmark can
// compare.
var Securities = []string{"none", "mac", "tls"}

// Protect sets the pair's replication.security (every value blockrepd
// takes; "" leaves the key out, which is "mac"). For "tls" it writes a
// throwaway CA and a certificate for each node into workDir.
func (p *ReplicatedPair) Protect(security, workDir string) error {
	p.Primary.Security, p.Secondary.Security = security, security
	if security != "tls" {
		return nil
	}
	files, err := writeLinkCerts(workDir, p.Primary.Name, p.Secondary.Name)
	if err != nil {
		return err
	}
	for _, nc := range []*NodeConfig{&p.Primary, &p.Secondary} {
		nc.TLSCert, nc.TLSKey, nc.TLSCA = files[nc.Name][0], files[nc.Name][1], files["ca"][0]
	}
	return nil
}

// writeLinkCerts makes a CA and, for each node, a certificate naming it
// (for TLS server and client use, as a node both dials and accepts),
// written as PEM into dir: files["ca"][0] and files[node] = {cert, key}.
func writeLinkCerts(dir string, nodes ...string) (map[string][2]string, error) {
	newKey := func() (*ecdsa.PrivateKey, error) { return ecdsa.GenerateKey(elliptic.P256(), rand.Reader) }
	serial := func() *big.Int {
		n, _ := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
		return n.Add(n, big.NewInt(1))
	}
	write := func(name, typ string, der []byte) (string, error) {
		path := filepath.Join(dir, name)
		f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600)
		if err != nil {
			return "", err
		}
		if err := pem.Encode(f, &pem.Block{Type: typ, Bytes: der}); err != nil {
			f.Close()
			return "", err
		}
		return path, f.Close()
	}
	caKey, err := newKey()
	if err != nil {
		return nil, err
	}
	now := time.Now()
	caTmpl := &x509.Certificate{
		SerialNumber: serial(), Subject: pkix.Name{CommonName: "blockbench CA"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(7 * 24 * time.Hour),
		KeyUsage: x509.KeyUsageCertSign, BasicConstraintsValid: true, IsCA: true,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, caKey.Public(), caKey)
	if err != nil {
		return nil, err
	}
	caCert, err := x509.ParseCertificate(caDER)
	if err != nil {
		return nil, err
	}
	files := map[string][2]string{}
	caPath, err := write("ca.crt", "CERTIFICATE", caDER)
	if err != nil {
		return nil, err
	}
	files["ca"] = [2]string{caPath}
	for _, n := range nodes {
		key, err := newKey()
		if err != nil {
			return nil, err
		}
		tmpl := &x509.Certificate{
			SerialNumber: serial(), Subject: pkix.Name{CommonName: n}, DNSNames: []string{n},
			NotBefore: now.Add(-time.Hour), NotAfter: now.Add(7 * 24 * time.Hour),
			KeyUsage:    x509.KeyUsageDigitalSignature,
			ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, caCert, key.Public(), caKey)
		if err != nil {
			return nil, err
		}
		kder, err := x509.MarshalPKCS8PrivateKey(key)
		if err != nil {
			return nil, err
		}
		cp, err := write(n+".crt", "CERTIFICATE", der)
		if err != nil {
			return nil, err
		}
		kp, err := write(n+".key", "PRIVATE KEY", kder)
		if err != nil {
			return nil, err
		}
		files[n] = [2]string{cp, kp}
	}
	return files, nil
}

// ProtComparison is one row measured on replicated pairs that differ only
// in replication.security.
type ProtComparison struct {
	Row        Row
	Securities []string
	Results    []Result // per security
}

// WriteProtTable prints the comparisons as a Markdown table: each pair's
// median and its ratio to the first pair's (for latency, the first's mean
// over this one's: above 1 is better everywhere), then what each
// protection adds to the latency rows.
func WriteProtTable(w io.Writer, cs []ProtComparison) {
	if len(cs) == 0 {
		return
	}
	secs := cs[0].Securities
	fmt.Fprint(w, "| row |")
	for _, s := range secs {
		fmt.Fprintf(w, " security = %q |", s)
	}
	for _, s := range secs[1:] {
		fmt.Fprintf(w, " %s / %s |", s, secs[0])
	}
	fmt.Fprint(w, " fio CPU |\n|---|")
	for range 2*len(secs) - 1 {
		fmt.Fprint(w, "---|")
	}
	fmt.Fprintln(w, "---|")
	for _, c := range cs {
		fmt.Fprintf(w, "| %s |", c.Row.Name)
		for _, r := range c.Results {
			fmt.Fprintf(w, " %s |", describe(r, c.Row.Metric))
		}
		for _, r := range c.Results[1:] {
			fmt.Fprintf(w, " %.2f× (%.4f) |", ratio(r, c.Results[0], c.Row.Metric), ratio(r, c.Results[0], c.Row.Metric))
		}
		fmt.Fprint(w, " ")
		for i, r := range c.Results {
			if i > 0 {
				fmt.Fprint(w, " / ")
			}
			fmt.Fprintf(w, "%.0f%%", r.ClientCPU)
		}
		fmt.Fprintln(w, " |")
	}
	for _, c := range cs {
		if c.Row.Metric != Latency {
			continue
		}
		for i, r := range c.Results[1:] {
			fmt.Fprintf(w, "\n%s: %q adds %+.1f µs mean and %+.0f µs p99 over %q.\n", c.Row.Name, secs[i+1],
				us(r.MeanLat-c.Results[0].MeanLat), us(r.P99Lat-c.Results[0].P99Lat), secs[0])
		}
	}
}
