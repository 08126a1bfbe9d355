package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"

	"github.com/blockrep/blockrep/api"
	"github.com/blockrep/blockrep/config"
	"github.com/blockrep/blockrep/internal/authnet"
	"github.com/blockrep/blockrep/internal/linktls"
	"github.com/blockrep/blockrep/replica/wire"
)

// target says which daemon a command talks to: the local one through its
// control socket, or with --node a remote node's authenticated control API.
type target struct {
	socket     string // -s
	config     string // -c
	node       string // --node
	secretFile string // --secret-file
	cluster    string // --cluster
	getenv     func(string) string
}

// check refuses global flags that contradict each other.
func (t target) check() error {
	switch {
	case t.node != "" && t.socket != "":
		return usagef("-s and --node both name the daemon; give one")
	case t.node == "" && t.secretFile != "":
		return usagef("--secret-file is only for --node (the control socket needs no secret)")
	case t.node == "" && t.cluster != "":
		return usagef("--cluster is only for --node (the control socket needs no cluster name)")
	}
	return nil
}

// client returns a client for the daemon the target names.
func (t target) client() (*api.Client, error) {
	if t.node == "" {
		socket, err := socketPath(t.socket, t.config, t.getenv)
		if err != nil {
			return nil, err
		}
		return api.Dial(socket), nil
	}
	cfg, secretFrom, err := remoteAuth(t)
	if err != nil {
		return nil, err
	}
	return dialRemote(t.node, cfg, secretFrom), nil
}

// hostname is os.Hostname; tests replace it.
var hostname = os.Hostname

// clientNodeID is the node ID blockctl proves in the handshake:
// "blockctl-" and the host name, cut to what the handshake carries.
func clientNodeID(host string) string {
	if host == "" {
		host = "unknown"
	}
	id := "blockctl-" + host
	if len(id) > wire.MaxNameLen {
		id = id[:wire.MaxNameLen]
	}
	return id
}

// remoteAuth gathers what authenticates blockctl to t.node: the cluster
// name and the secret, from --cluster and --secret-file, else from the
// [cluster] table of the configuration (-c, else DefaultConfig when it
// exists), and the link protection (cluster.security, with "tls" the
// node's own certificate) from that configuration: "mac" without one.
// secretFrom says where the secret came from, for errors.
func remoteAuth(t target) (cfg authnet.Config, secretFrom string, err error) {
	name, secretFile := t.cluster, t.secretFile
	secretFrom = "--secret-file " + secretFile
	confPath, confNote := t.config, ""
	sec, tlsFiles := config.DefaultSecurity, config.TLSFiles{}
	if name == "" || secretFile == "" || t.config != "" {
		if confPath == "" {
			if _, err := os.Stat(DefaultConfig); err == nil {
				confPath = DefaultConfig
			} else {
				confNote = " (there is no " + DefaultConfig + ")"
			}
		}
		if confPath != "" {
			c, err := config.Load(confPath)
			if err != nil {
				return cfg, "", err
			}
			if !c.Clustered() {
				confNote = " (" + confPath + " has no [cluster] table)"
			} else {
				sec, tlsFiles = c.Cluster.Security, c.Cluster.TLS
			}
			if name == "" {
				name = c.Cluster.Name
			}
			if secretFile == "" && c.Cluster.SecretFile != "" {
				secretFile = c.Cluster.SecretFile
				secretFrom = "cluster.secret_file of " + confPath
			}
		}
	}
	where := "-c CONFIG"
	if confPath != "" {
		where = confPath
	}
	switch {
	case secretFile == "":
		return cfg, "", fmt.Errorf("--node %s: no cluster secret to authenticate with: give --secret-file PATH, or set cluster.secret_file in %s%s",
			t.node, where, confNote)
	case name == "":
		return cfg, "", fmt.Errorf("--node %s: no cluster name to authenticate with: give --cluster NAME, or set cluster.name in %s%s",
			t.node, where, confNote)
	}
	secret, err := readSecret(secretFile, secretFrom)
	if err != nil {
		return cfg, "", err
	}
	prot, err := wire.ParseProtection(string(sec))
	if err != nil {
		return cfg, "", fmt.Errorf("cluster.security of %s: %w", where, err)
	}
	var tl *linktls.Config
	if prot == wire.ProtectTLS {
		if tl, err = linktls.Load(linktls.Files{Cert: tlsFiles.Cert, Key: tlsFiles.Key, CA: tlsFiles.CA, Keys: "cluster"}); err != nil {
			return cfg, "", fmt.Errorf("--node %s: %s: %w", t.node, where, err)
		}
	}
	host, _ := hostname() // without one the ID is still unique enough for logs
	return authnet.Config{Cluster: name, NodeID: clientNodeID(host), Secret: secret, Protection: prot, TLS: tl}, secretFrom, nil
}

// readSecret reads the cluster's shared secret from path, as blockrepd
// does: trailing whitespace (the newline an editor adds) is not part of it.
// from names the flag or key that gave path.
func readSecret(path, from string) ([]byte, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading the cluster secret (%s): %w", from, err)
	}
	secret := []byte(strings.TrimRight(string(b), " \t\r\n"))
	if len(secret) < wire.MinSecretLen {
		return nil, fmt.Errorf("the cluster secret in %s (%s) holds %d bytes, fewer than the %d a secret needs",
			path, from, len(secret), wire.MinSecretLen)
	}
	return secret, nil
}

// dialRemote returns a client for the control API of the node at addr,
// over connections authenticated with cfg.
func dialRemote(addr string, cfg authnet.Config, secretFrom string) *api.Client {
	return api.DialWith(addr, func(ctx context.Context) (net.Conn, error) {
		c, err := authnet.Dial(ctx, addr, authnet.ServiceControl, cfg, "")
		if err != nil {
			return nil, &dialError{addr: addr, cluster: cfg.Cluster, secretFrom: secretFrom, err: err}
		}
		return c, nil
	})
}

// dialError is a failure to open an authenticated connection to a remote
// node. It has no Unwrap on purpose: the api client would take a wrapped
// *net.OpError for a unix socket's and explain it as such; run finds the
// dialError under the client's wrapping and prints it alone.
type dialError struct {
	addr, cluster, secretFrom string
	err                       error
}

// handshakeErrs are the handshake's failures other than a wrong secret or
// cluster.
var handshakeErrs = []error{
	wire.ErrPeerRefused, wire.ErrSameNodeID, wire.ErrUnexpectedPeer, wire.ErrNoCommonVersion,
	wire.ErrReflected, wire.ErrHandshakeProtocol, wire.ErrBadConfig,
}

func (e *dialError) Error() string {
	cause := strings.TrimPrefix(e.err.Error(), "authnet: dial "+e.addr+": ")
	auth := "authentication with blockrepd at " + e.addr + " failed: "
	var opErr *net.OpError
	switch {
	case errors.Is(e.err, wire.ErrAuthFailed):
		return auth + "the node does not hold the secret blockctl has (from " + e.secretFrom + "); it must be the node's cluster.secret_file"
	case errors.Is(e.err, wire.ErrClusterMismatch):
		return auth + fmt.Sprintf("the node is not in cluster %q (see --cluster or cluster.name)", e.cluster)
	case errors.Is(e.err, wire.ErrProtectionMismatch):
		return auth + "the node protects its cluster port differently: cluster.security must be the same in the configuration blockctl reads (-c) and on the node"
	case isAny(e.err, handshakeErrs):
		return auth + cause
	case errors.As(e.err, &opErr) && opErr.Op == "dial":
		return fmt.Sprintf("cannot reach blockrepd at %s: %v (is the daemon running, with cluster.listen %s?)", e.addr, opErr.Err, e.addr)
	case errors.Is(e.err, context.DeadlineExceeded):
		return "cannot reach blockrepd at " + e.addr + ": no answer in time"
	}
	// Anything else broke off the handshake: EOF, a reset, a frame that is
	// not blockrep's.
	return auth + cause + " (is " + e.addr + " the node's cluster.listen, with the same cluster.security as the configuration blockctl reads?)"
}

// isAny reports whether err matches one of targets.
func isAny(err error, targets []error) bool {
	for _, t := range targets {
		if errors.Is(err, t) {
			return true
		}
	}
	return false
}
