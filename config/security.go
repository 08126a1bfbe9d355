package config

import "path/filepath"

// Security is what protects a link's bytes after its handshake (the
// security key of [replication] and [cluster]). Both ends of a link must
// use the same.
type Security string

// The link protections.
const (
	// SecurityMAC (the default): every frame (peer link) or record
	// (cluster port) carries a MAC under a per-session key, so that
	// changed, replayed, reordered or dropped bytes are refused and the
	// connection dropped. The data travels in clear.
	SecurityMAC Security = "mac"
	// SecurityTLS: the link runs over TLS 1.3 with mutual certificates
	// (tls_cert, tls_key, tls_ca), which also encrypts it.
	SecurityTLS Security = "tls"
	// SecurityNone: nothing after the handshake is protected. Only for a
	// network no attacker can reach, or to measure what protection costs.
	SecurityNone Security = "none"
)

// DefaultSecurity is the protection of a link whose table does not say.
const DefaultSecurity = SecurityMAC

// TLSFiles are the PEM files of a link with security = "tls".
type TLSFiles struct {
	// Cert is this node's certificate (chain), which the other end
	// checks against its CA; on the peer link it must name the node
	// (node.name) as a DNS name.
	Cert string
	// Key is the certificate's private key.
	Key string
	// CA holds the certificates of the authority (or authorities) that
	// signed the other ends' certificates.
	CA string
}

// decodeSecurity reads security, tls_cert, tls_key and tls_ca of t: the
// files are required with "tls" and refused without it, so that a file
// given for nothing is noticed.
func decodeSecurity(t *table, sec *Security, files *TLSFiles) {
	*sec = DefaultSecurity
	oneOf(t, "security", sec, SecurityMAC, SecurityTLS, SecurityNone)
	for _, f := range []struct {
		key string
		dst *string
	}{{"tls_cert", &files.Cert}, {"tls_key", &files.Key}, {"tls_ca", &files.CA}} {
		t.str(f.key, f.dst)
		switch {
		case *f.dst == "" && *sec == SecurityTLS:
			t.p.add(t.key(f.key), "%s is required with %s = %q", t.key(f.key), t.key("security"), SecurityTLS)
		case *f.dst == "":
		case *sec != SecurityTLS:
			t.p.add(t.key(f.key), "%s is used only with %s = %q (it is %q)", t.key(f.key), t.key("security"), SecurityTLS, *sec)
		case checkAbs(t, f.key, *f.dst):
			*f.dst = filepath.Clean(*f.dst)
		}
	}
}
