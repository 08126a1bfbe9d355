package node

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"

	"github.com/blockrep/blockrep/api"
	"github.com/blockrep/blockrep/config"
	"github.com/blockrep/blockrep/internal/linktls"
	"github.com/blockrep/blockrep/replica"
	"github.com/blockrep/blockrep/replica/wire"
)

// readSecret reads the shared secret at path, which the configuration key
// key names (replication.secret_file, cluster.secret_file) in the errors
// and the warning. Trailing whitespace (the newline an editor adds) is not
// part of it.
func readSecret(key, path string, logger *slog.Logger) ([]byte, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", key, err)
	}
	if fi.Mode().Perm()&0o077 != 0 {
		logger.Warn(key+" is readable by other users: chmod 600 it", "path", path, "mode", fi.Mode().Perm().String())
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", key, err)
	}
	secret := []byte(strings.TrimRight(string(b), " \t\r\n"))
	if len(secret) < wire.MinSecretLen {
		return nil, fmt.Errorf("%s %s holds %d bytes, fewer than the %d a secret needs (e.g. head -c 32 /dev/urandom | base64 > %s)", key, path, len(secret), wire.MinSecretLen, path)
	}
	return secret, nil
}

// peerConfigs lists the configured peers for the replica package.
func peerConfigs(cfg *config.Config) []replica.PeerConfig {
	out := make([]replica.PeerConfig, len(cfg.Peers))
	for i, p := range cfg.Peers {
		out[i] = replica.PeerConfig{Name: p.Name, Address: p.Address}
	}
	return out
}

// openReplica opens the replicated volume on top of v's store.
func (n *Node) openReplica(v *volume) (*replica.Volume, error) {
	rc := n.cfg.Replication
	role := replica.Secondary
	if v.cfg.Role == config.RolePrimary && n.membership == nil {
		role = replica.Primary
	}
	var auth replica.Authority
	fence := replica.FenceSuspend
	if n.membership != nil {
		// The cluster decides the role: every volume opens secondary.
		auth = n.membership.authority
		if n.cfg.Cluster.Fence == config.FenceError {
			fence = replica.FenceError
		}
	}
	return replica.Open(replica.VolumeConfig{
		Name:            v.cfg.Name,
		ID:              replica.VolumeID(rc.Cluster, v.cfg.Name),
		Store:           v.store,
		State:           replica.NewStore(n.meta, v.cfg.Name),
		Local:           n.cfg.Node.Name,
		Peers:           peerConfigs(n.cfg),
		Role:            role,
		Protocol:        rc.Protocol[0],
		SplitBrain:      rc.SplitBrain,
		ContinueAlone:   rc.ContinueAlone,
		OnIOError:       ioErrorPolicy(rc.OnIOError),
		DataIntegrity:   rc.DataIntegrity,
		BitmapBlockSize: int(rc.BitmapBlockSize),
		ALExtents:       rc.ALExtents,
		ALExtentSize:    rc.ALExtentSize,
		Timeout:         rc.Timeout,
		ResyncRate:      rc.ResyncRate,
		Authority:       auth,
		Fence:           fence,
		Logger:          n.log,
	})
}

// ioErrorPolicy maps replication.on_io_error (validated by config) to the
// replica's policy.
func ioErrorPolicy(p config.OnIOError) replica.IOErrorPolicy {
	if p == config.OnIOErrorPassOn {
		return replica.IOErrorPassOn
	}
	return replica.IOErrorDetach
}

// closeReplicas closes every replicated volume once.
func (n *Node) closeReplicas() error {
	var errs []error
	for _, v := range n.volumes {
		if v.repl != nil && !v.replClosed {
			v.replClosed = true
			if err := v.repl.Close(); err != nil {
				errs = append(errs, fmt.Errorf("volume %q: %w", v.cfg.Name, err))
			}
		}
	}
	return errors.Join(errs...)
}

// volumeNamed returns the volume named name ("" for the only volume), or
// an API error saying why there is none.
func (n *Node) volumeNamed(name string) (*volume, error) {
	if name == "" {
		if len(n.volumes) != 1 {
			names := make([]string, len(n.volumes))
			for i, v := range n.volumes {
				names[i] = v.cfg.Name
			}
			return nil, fmt.Errorf("%w: name a volume: this node has %d (%s)", api.ErrInvalid, len(n.volumes), strings.Join(names, ", "))
		}
		return n.volumes[0], nil
	}
	for _, v := range n.volumes {
		if v.cfg.Name == name {
			return v, nil
		}
	}
	return nil, fmt.Errorf("%w: no volume %q on node %s", api.ErrNotFound, name, n.cfg.Node.Name)
}

// replicated returns the replicated volume named name ("" for the only
// volume).
func (n *Node) replicated(name string) (*replica.Volume, error) {
	v, err := n.volumeNamed(name)
	if err != nil {
		return nil, err
	}
	if v.repl == nil {
		return nil, fmt.Errorf("%w: volume %q is not replicated (no [[peer]] is configured)", api.ErrConflict, v.cfg.Name)
	}
	return v.repl, nil
}

// Connect implements api.Controller.
func (n *Node) Connect(_ context.Context, volume, peer string, discardMyData bool) error {
	r, err := n.replicated(volume)
	if err != nil {
		return err
	}
	n.log.Info("operator: connect", "volume", r.Name(), "peer", peer, "discard_my_data", discardMyData)
	return r.Connect(peer, discardMyData)
}

// Disconnect implements api.Controller.
func (n *Node) Disconnect(_ context.Context, volume, peer string) error {
	r, err := n.replicated(volume)
	if err != nil {
		return err
	}
	n.log.Info("operator: disconnect", "volume", r.Name(), "peer", peer)
	return r.Disconnect(peer)
}

// Resync implements api.Controller.
func (n *Node) Resync(_ context.Context, volume, peer, mode string) error {
	r, err := n.replicated(volume)
	if err != nil {
		return err
	}
	switch m := replica.ResyncMode(mode); m {
	case "", replica.ResyncBitmap, replica.ResyncChecksum, replica.ResyncFull:
		n.log.Info("operator: resync", "volume", r.Name(), "peer", peer, "mode", mode)
		return r.Resync(peer, m)
	}
	return fmt.Errorf("%w: resync mode %q: want bitmap, checksum or full", api.ErrInvalid, mode)
}

// Verify implements api.Controller.
func (n *Node) Verify(_ context.Context, volume, peer string) error {
	r, err := n.replicated(volume)
	if err != nil {
		return err
	}
	n.log.Info("operator: verify", "volume", r.Name(), "peer", peer)
	return r.Verify(peer)
}

// Invalidate implements api.Controller.
func (n *Node) Invalidate(_ context.Context, volume string) error {
	r, err := n.replicated(volume)
	if err != nil {
		return err
	}
	n.log.Warn("operator: invalidate", "volume", r.Name())
	return r.Invalidate()
}

// SetRole implements api.Controller.
func (n *Node) SetRole(_ context.Context, volume, role string, force bool) error {
	if n.membership != nil {
		return fmt.Errorf("%w: the cluster decides the roles: use blockctl promote NODE or blockctl demote", api.ErrConflict)
	}
	r, err := n.replicated(volume)
	if err != nil {
		return err
	}
	var want replica.Role
	switch role {
	case "primary":
		want = replica.Primary
	case "secondary":
		want = replica.Secondary
	default:
		return fmt.Errorf("%w: role %q: want primary or secondary", api.ErrInvalid, role)
	}
	n.log.Info("operator: role", "volume", r.Name(), "role", role, "force", force)
	return r.SetRole(want, force)
}

// linkProtection is what protects one of the node's links.
type linkProtection struct {
	prot wire.Protection
	tls  *linktls.Config // with wire.ProtectTLS only
}

// linkSecurity turns a link's security setting (replication.security or
// cluster.security, keys names the table) into the protection its
// handshake negotiates and, for "tls", the loaded certificates.
func linkSecurity(sec config.Security, files config.TLSFiles, keys string) (linkProtection, error) {
	if sec == "" {
		sec = config.DefaultSecurity
	}
	p, err := wire.ParseProtection(string(sec))
	if err != nil {
		return linkProtection{}, fmt.Errorf("%s.security: %w", keys, err)
	}
	if p != wire.ProtectTLS {
		return linkProtection{prot: p}, nil
	}
	tl, err := linktls.Load(linktls.Files{Cert: files.Cert, Key: files.Key, CA: files.CA, Keys: keys})
	if err != nil {
		return linkProtection{}, err
	}
	return linkProtection{prot: p, tls: tl}, nil
}
