package node

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"

	"github.com/blockrep/blockrep/config"
	"github.com/blockrep/blockrep/meta"
	"github.com/blockrep/blockrep/storeid"
)

// Validate before writing anything: New checks what can fail in the
// configuration's environment — secrets, listening ports, the volumes'
// stores — before it creates meta.db or any store, so that a node refused
// for one of them leaves nothing behind. Such errors are *config.Error
// naming the key (blockrepd exits 2 on them). An existing meta.db is opened
// first: another blockrepd holding it is the first thing to say, and its
// records are what the stores are checked against.

// preflight holds what the checks read and New uses afterwards.
type preflight struct {
	secret, clusterSecret []byte
	// replication and cluster protect the peer links and the cluster
	// port (the TLS files loaded).
	replication, cluster linkProtection
}

// preflight runs the checks. n.meta is open if meta.db existed.
func (n *Node) preflight() (preflight, error) {
	cfg := n.cfg
	var p preflight
	var err error
	if cfg.Replicated() {
		if p.secret, err = readSecret("replication.secret_file", cfg.Replication.SecretFile, n.log); err != nil {
			return p, &config.Error{File: cfg.Source, Key: "replication.secret_file", Msg: err.Error()}
		}
		if p.replication, err = linkSecurity(cfg.Replication.Security, cfg.Replication.TLS, "replication"); err != nil {
			return p, &config.Error{File: cfg.Source, Key: "replication.security", Msg: err.Error()}
		}
	}
	if cfg.Clustered() {
		if p.clusterSecret, err = readSecret("cluster.secret_file", cfg.Cluster.SecretFile, n.log); err != nil {
			return p, &config.Error{File: cfg.Source, Key: "cluster.secret_file", Msg: err.Error()}
		}
		if p.cluster, err = linkSecurity(cfg.Cluster.Security, cfg.Cluster.TLS, "cluster"); err != nil {
			return p, &config.Error{File: cfg.Source, Key: "cluster.security", Msg: err.Error()}
		}
	}
	if err := checkPorts(cfg); err != nil {
		return p, err
	}
	for i, vc := range cfg.Volumes {
		if len(vc.NFS) > 0 {
			// Refused rather than ignored: an operator who wrote an export
			// would otherwise believe it served.
			return p, &config.Error{File: cfg.Source, Key: fmt.Sprintf("volume.%d.nfs", i),
				Msg: fmt.Sprintf("volume.%d.nfs (volume %q): ", i, vc.Name) + "NFS exports are not served yet: this blockrepd does not mount volumes (the serving stack that attaches, mounts and exports them on the primary is not built); remove the [[volume.nfs]] tables"}
		}
	}
	for _, vc := range cfg.Volumes {
		if vc.RAID != nil {
			continue // assembling an array is the check; openRAIDVolume refuses before it creates one
		}
		var rec *storeid.Record
		if n.meta != nil {
			if rec, err = loadRecord(n.meta, vc.Name); err != nil {
				return p, err
			}
		}
		f, err := n.inspectFile(vc, rec)
		if err != nil {
			return p, err
		}
		if v := storeid.Decide(f); v.Action == storeid.Refuse {
			return p, n.refusal(vc, v)
		}
	}
	return p, nil
}

// openExistingMeta opens meta.db if it exists, and leaves n.meta nil if not.
func (n *Node) openExistingMeta() error {
	path := filepath.Join(n.cfg.Node.DataDir, meta.FileName)
	if _, err := os.Stat(path); errors.Is(err, os.ErrNotExist) {
		return nil
	}
	var err error
	n.meta, err = meta.Open(path)
	return err
}

// checkPorts binds every TCP address the node will listen on, and lets go
// again: an address in use (or not this host's) is a configuration error
// naming its key, found before anything is written. Unix sockets are
// checked when they are created (a live socket is refused, a stale one
// replaced).
func checkPorts(cfg *config.Config) error {
	type addr struct{ key, address string }
	var addrs []addr
	if !cfg.Witness() {
		for i, l := range cfg.NBD.Listen {
			if l.Network == "tcp" {
				addrs = append(addrs, addr{"nbd.listen." + strconv.Itoa(i), l.Address})
			}
		}
	}
	if cfg.Replicated() {
		addrs = append(addrs, addr{"replication.listen", cfg.Replication.Listen})
	}
	if cfg.Clustered() {
		addrs = append(addrs, addr{"cluster.listen", cfg.Cluster.Listen})
	}
	for _, a := range addrs {
		l, err := net.Listen("tcp", a.address)
		if err != nil {
			return &config.Error{File: cfg.Source, Key: a.key, Msg: fmt.Sprintf("%s %s: %v", a.key, a.address, err)}
		}
		_ = l.Close()
	}
	return nil
}
