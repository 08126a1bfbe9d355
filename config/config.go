package config

import (
	"fmt"
	"math/bits"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/BurntSushi/toml"
)

// Config is the validated configuration of one node. Every field holds its
// final value: defaults are filled in and every constraint in the package
// documentation holds.
type Config struct {
	// Source is the name the configuration was parsed under (its path).
	Source      string
	Node        Node
	NBD         NBD
	Replication Replication // the [replication] table
	Peers       []Peer      // the [[peer]] tables
	Cluster     Cluster     // the [cluster] table
	Volumes     []Volume
	Hooks       []Hook // the [[hook]] tables, in file order
	NFS         NFS    // the [nfs] table
}

// Replicated reports whether peers are configured, that is whether this node
// replicates its volumes.
func (c *Config) Replicated() bool { return len(c.Peers) > 0 }

// Node is the [node] table.
type Node struct {
	// Name identifies the node in the cluster and in logs.
	Name string
	// DataDir is the node's state directory; it holds meta.db.
	DataDir string
	// ControlSocket is the unix socket of the control API.
	ControlSocket string
}

// NBD is the [nbd] table.
type NBD struct {
	// Listen holds the addresses the NBD server accepts clients on.
	Listen []Listener
	// TLSCert and TLSKey are PEM files; when set, clients may STARTTLS.
	TLSCert, TLSKey string
	// TLSClientCA, when set, is a PEM file of the CA that must have signed
	// the certificate every TLS client presents.
	TLSClientCA string
	// MaxInFlight bounds the request buffers of all connections, in bytes.
	MaxInFlight int64
	// MaxConnections bounds the NBD connections open at once; each holds
	// about 1 MiB of buffers.
	MaxConnections int
	// MaxInFlightPerClient bounds the request buffers of one connection,
	// in bytes; 0 selects a quarter of MaxInFlight (at least 32 MiB).
	MaxInFlightPerClient int64
	// ReplyTimeout evicts a client that reads (almost) none of its replies
	// for this long.
	ReplyTimeout time.Duration
	// HandshakeTimeout bounds a connection's option phase.
	HandshakeTimeout time.Duration
	// HandshakesPerAddress bounds the unfinished handshakes from one
	// source address.
	HandshakesPerAddress int
	// DefaultExport is the volume served to clients asking for the empty
	// name; empty refuses the empty name.
	DefaultExport string
}

// TLSEnabled reports whether a certificate is configured.
func (n NBD) TLSEnabled() bool { return n.TLSCert != "" }

// Listener is one address of the NBD server.
type Listener struct {
	// Network is "tcp" or "unix".
	Network string
	// Address is host:port for tcp and the socket path for unix.
	Address string
}

// String returns the address in configuration syntax.
func (l Listener) String() string {
	if l.Network == "unix" {
		return "unix:" + l.Address
	}
	return l.Address
}

// TLSMode says whether a volume may be used without TLS.
type TLSMode string

// The TLS modes of a volume.
const (
	// TLSOptional serves the volume with or without TLS.
	TLSOptional TLSMode = "optional"
	// TLSRequired refuses the volume to clients that did not STARTTLS.
	TLSRequired TLSMode = "required"
)

// Volume is one [[volume]] table.
type Volume struct {
	// Name is the export name and the key of the volume's metadata.
	Name string
	// Path is the backing file or block device (absolute, cleaned); empty
	// for a RAID volume.
	Path string
	// RAID, when not nil, is the local RAID array the volume is stored on
	// instead of Path.
	RAID *RAID
	// Size, when not zero, creates a sparse file of this size if Path is
	// missing; an existing file must have exactly this size. For a RAID
	// volume it is the size of each member file created when missing.
	Size int64
	// ReadOnly refuses writes.
	ReadOnly bool
	// TLS is TLSOptional or TLSRequired.
	TLS TLSMode
	// Description is shown to NBD clients that ask for it.
	Description string
	// Block sizes advertised to NBD clients, in bytes.
	BlockSizeMin, BlockSizePreferred, BlockSizeMax uint32
	// MultiConn advertises that a flush on one connection covers all.
	MultiConn bool
	// Role is the volume's role when the node starts: RolePrimary or
	// RoleSecondary. With [cluster] the cluster decides instead.
	Role Role
	// PreferredPrimary is the node failover picks first for the volume,
	// and the one whose blank replica becomes a new volume's first data;
	// "" for none (then the first node by name). Only with [cluster].
	PreferredPrimary string
	// Failover is whether the cluster promotes another node by itself when
	// the volume's primary is lost (FailoverAuto) or leaves that to the
	// operator (FailoverManual). Only with [cluster].
	Failover Failover
	// NFS are the volume's [[volume.nfs]] tables: directories of the file
	// system on the volume exported over NFS, in file order.
	NFS []NFSExport
}

// Defaults and limits.
const (
	DefaultNBDListen   = "127.0.0.1:10809"
	DefaultMaxInFlight = 256 * MiB
	// DefaultMaxConnections and MaxConnectionsLimit bound nbd.max_connections.
	DefaultMaxConnections     = 256
	MaxConnectionsLimit       = 65536
	DefaultBlockSizeMin       = 512
	DefaultBlockSizePreferred = 4096
	DefaultBlockSizeMax       = 32 * MiB
	// MaxBlockSizeLimit is the largest block_size_max accepted.
	MaxBlockSizeLimit = 32 * MiB
	// MaxDescription is the longest volume description, in bytes.
	MaxDescription = 4096
	// maxSocketPath is the longest unix socket path Linux binds (108 bytes
	// with the terminating NUL).
	maxSocketPath = 107
	// MinMaxInFlight is the smallest max_inflight accepted: one request of
	// the largest block_size_max must fit (the NBD server enforces the same
	// floor). The same holds for max_inflight_per_client.
	MinMaxInFlight = MaxBlockSizeLimit
	// Defaults and bounds of the NBD server's client limits.
	DefaultReplyTimeout         = 30 * time.Second
	DefaultHandshakeTimeout     = 10 * time.Second
	DefaultHandshakesPerAddress = 16
	MinNBDTimeout               = 100 * time.Millisecond
	MaxReplyTimeout             = time.Hour
	MaxHandshakeTimeout         = 10 * time.Minute
)

var (
	nodeNameRE   = regexp.MustCompile(`^[a-z0-9-]{1,63}$`)
	volumeNameRE = regexp.MustCompile(`^[A-Za-z0-9._-]{1,64}$`)
)

// Load reads and parses the configuration file at path.
func Load(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, &Error{File: path, Msg: fmt.Sprintf("cannot read: %v", err)}
	}
	return Parse(data, path)
}

// Parse parses and validates a configuration; name is used in errors. It
// returns every problem it finds (joined with errors.Join), each an *Error
// naming the key, its value and, when known, its line.
func Parse(data []byte, name string) (*Config, error) {
	var raw map[string]any
	if _, err := toml.Decode(string(data), &raw); err != nil {
		return nil, syntaxError(name, err)
	}
	p := &problems{file: name, lines: indexLines(data), bad: map[string]bool{}}
	root := p.table("", raw)
	cfg := &Config{Source: name}

	rawNode := root.sub("node")
	rawNBD := root.sub("nbd")
	rawRepl := root.sub("replication")
	rawCluster := root.sub("cluster")
	rawPeers := root.tables("peer")
	rawVols := root.tables("volume")
	rawNFS := root.sub("nfs")
	cfg.Hooks = decodeHooks(root.tables("hook"))
	root.unknown()

	// Whether peers exist decides what [replication] requires and the
	// default role of the volumes, even when a [[peer]] table is invalid.
	replicated := len(rawPeers) > 0
	decodeNode(rawNode, &cfg.Node)
	decodeNBD(rawNBD, &cfg.NBD)
	decodeReplication(rawRepl, &cfg.Replication, replicated, rawCluster.m != nil)
	decodeCluster(rawCluster, &cfg.Cluster)
	for _, t := range rawPeers {
		cfg.Peers = append(cfg.Peers, decodePeer(t))
	}
	var roleSet []bool
	for _, t := range rawVols {
		cfg.Volumes = append(cfg.Volumes, decodeVolume(t, replicated))
		_, set := t.m["role"]
		roleSet = append(roleSet, set)
	}
	exports := false
	for _, v := range cfg.Volumes {
		exports = exports || len(v.NFS) > 0
	}
	decodeNFS(rawNFS, &cfg.NFS, exports)
	validate(p, cfg, rawNBD, rawRepl)
	validateNFS(p, cfg, rawNFS, rawVols)
	validateCluster(p, cfg, rawCluster, rawRepl, roleSet)
	if err := p.err(); err != nil {
		return nil, err
	}
	return cfg, nil
}

func decodeNode(t *table, n *Node) {
	if t.m == nil {
		t.p.add("node", "missing [node] table (node.name and node.data_dir are required)")
		return
	}
	t.str("name", &n.Name)
	t.str("data_dir", &n.DataDir)
	t.str("control_socket", &n.ControlSocket)
	t.unknown()

	switch {
	case n.Name == "":
		t.p.add(t.key("name"), "node.name is required")
	case !nodeNameRE.MatchString(n.Name):
		t.p.add(t.key("name"), "node.name %q is invalid: use 1 to 63 of a-z, 0-9 and -", n.Name)
	}
	if n.DataDir == "" {
		t.p.add(t.key("data_dir"), "node.data_dir is required")
	} else if checkAbs(t, "data_dir", n.DataDir) {
		n.DataDir = filepath.Clean(n.DataDir)
	}
	if n.ControlSocket == "" {
		if n.DataDir != "" {
			n.ControlSocket = filepath.Join(n.DataDir, "control.sock")
			if len(n.ControlSocket) > maxSocketPath {
				t.p.add(t.key("control_socket"), "node.control_socket defaults to %q, which is longer than the %d bytes a unix socket path may have: set node.control_socket", n.ControlSocket, maxSocketPath)
			}
		}
	} else if checkAbs(t, "control_socket", n.ControlSocket) {
		n.ControlSocket = filepath.Clean(n.ControlSocket)
		checkSocketPath(t, "control_socket", n.ControlSocket)
	}
}

func decodeNBD(t *table, n *NBD) {
	listen := []string{DefaultNBDListen}
	_, listenSet := t.m["listen"]
	t.strings("listen", &listen)
	t.str("tls_cert", &n.TLSCert)
	t.str("tls_key", &n.TLSKey)
	t.str("tls_client_ca", &n.TLSClientCA)
	n.MaxInFlight = DefaultMaxInFlight
	t.size("max_inflight", &n.MaxInFlight)
	n.MaxConnections = DefaultMaxConnections
	t.integer("max_connections", &n.MaxConnections, 1, MaxConnectionsLimit)
	t.size("max_inflight_per_client", &n.MaxInFlightPerClient)
	n.ReplyTimeout = DefaultReplyTimeout
	t.duration("reply_timeout", &n.ReplyTimeout, MinNBDTimeout, MaxReplyTimeout)
	n.HandshakeTimeout = DefaultHandshakeTimeout
	t.duration("handshake_timeout", &n.HandshakeTimeout, MinNBDTimeout, MaxHandshakeTimeout)
	n.HandshakesPerAddress = DefaultHandshakesPerAddress
	t.integer("handshakes_per_address", &n.HandshakesPerAddress, 1, MaxConnectionsLimit)
	t.str("default_export", &n.DefaultExport)
	t.unknown()

	if listenSet && len(listen) == 0 {
		t.p.add(t.key("listen"), "nbd.listen is empty: give at least one address (default [%q])", DefaultNBDListen)
	}
	seen := map[string]int{}
	for i, s := range listen {
		key := t.key("listen") + "." + strconv.Itoa(i)
		l, err := parseListener(s)
		if err != nil {
			t.p.add(key, "nbd.listen: %v", err)
			continue
		}
		if j, dup := seen[l.String()]; dup {
			t.p.add(key, "nbd.listen: %q is listed twice (entries %d and %d)", s, j, i)
			continue
		}
		seen[l.String()] = i
		if l.Network == "unix" && len(l.Address) > maxSocketPath {
			t.p.add(key, "nbd.listen: socket path %q is %d bytes, longer than the %d a unix socket path may have", l.Address, len(l.Address), maxSocketPath)
			continue
		}
		n.Listen = append(n.Listen, l)
	}

	switch {
	case n.TLSCert != "" && n.TLSKey == "":
		t.p.add(t.key("tls_key"), "nbd.tls_cert is set but nbd.tls_key is not: give both or neither")
	case n.TLSKey != "" && n.TLSCert == "":
		t.p.add(t.key("tls_cert"), "nbd.tls_key is set but nbd.tls_cert is not: give both or neither")
	}
	if n.TLSClientCA != "" && n.TLSCert == "" {
		t.p.add(t.key("tls_client_ca"), "nbd.tls_client_ca is set but nbd.tls_cert is not: client certificates need TLS")
	}
	for _, f := range []struct {
		key string
		val *string
	}{{"tls_cert", &n.TLSCert}, {"tls_key", &n.TLSKey}, {"tls_client_ca", &n.TLSClientCA}} {
		if *f.val != "" && checkAbs(t, f.key, *f.val) {
			*f.val = filepath.Clean(*f.val)
		}
	}
	if n.MaxInFlight < MinMaxInFlight && !t.p.bad[t.key("max_inflight")] {
		t.p.add(t.key("max_inflight"), "nbd.max_inflight %s is too small: at least %s, so that a request of the largest block size fits", FormatSize(n.MaxInFlight), FormatSize(MinMaxInFlight))
	}
	if k := t.key("max_inflight_per_client"); n.MaxInFlightPerClient != 0 && !t.p.bad[k] && !t.p.bad[t.key("max_inflight")] {
		switch {
		case n.MaxInFlightPerClient < MinMaxInFlight:
			t.p.add(k, "nbd.max_inflight_per_client %s is too small: at least %s, so that a request of the largest block size fits", FormatSize(n.MaxInFlightPerClient), FormatSize(MinMaxInFlight))
		case n.MaxInFlightPerClient > n.MaxInFlight:
			t.p.add(k, "nbd.max_inflight_per_client %s is larger than nbd.max_inflight %s", FormatSize(n.MaxInFlightPerClient), FormatSize(n.MaxInFlight))
		}
	}
}

// parseListener parses one entry of nbd.listen: "host:port" or "unix:/path".
func parseListener(s string) (Listener, error) {
	if path, ok := strings.CutPrefix(s, "unix:"); ok {
		if path == "" || !filepath.IsAbs(path) {
			return Listener{}, fmt.Errorf("unix socket %q: the path must be absolute (unix:/run/...)", s)
		}
		return Listener{Network: "unix", Address: filepath.Clean(path)}, nil
	}
	_, port, err := net.SplitHostPort(s)
	if err != nil {
		return Listener{}, fmt.Errorf("address %q: want host:port or unix:/path", s)
	}
	// Port 0 picks a free port, which tests use.
	if _, err := strconv.ParseUint(port, 10, 16); err != nil {
		return Listener{}, fmt.Errorf("address %q: port %q is not a number from 0 to 65535", s, port)
	}
	return Listener{Network: "tcp", Address: s}, nil
}

// decodeVolume decodes one [[volume]] table; replicated says whether
// [[peer]] tables exist.
func decodeVolume(t *table, replicated bool) Volume {
	v := Volume{
		TLS:       TLSOptional,
		MultiConn: true,
		Role:      RolePrimary,
	}
	// With peers a volume starts as secondary unless told otherwise, so that
	// two nodes never both accept writes by accident. Without peers it is
	// primary, as every volume was before replication, so that existing
	// configurations keep working.
	if replicated {
		v.Role = RoleSecondary
	}
	var tls string
	var bmin, bpref, bmax int64 = DefaultBlockSizeMin, 0, DefaultBlockSizeMax
	t.str("name", &v.Name)
	t.str("path", &v.Path)
	sizeSet := t.size("size", &v.Size)
	t.boolean("read_only", &v.ReadOnly)
	t.str("tls", &tls)
	t.str("description", &v.Description)
	t.size("block_size_min", &bmin)
	prefSet := t.size("block_size_preferred", &bpref)
	t.size("block_size_max", &bmax)
	t.boolean("multi_conn", &v.MultiConn)
	oneOf(t, "role", &v.Role, RolePrimary, RoleSecondary)
	t.str("preferred_primary", &v.PreferredPrimary)
	oneOf(t, "failover", &v.Failover, FailoverAuto, FailoverManual)
	decodeRAID(t, &v)
	nfsTables := t.tables("nfs")
	t.unknown()
	v.NFS = decodeNFSExports(nfsTables, v.Name)

	switch {
	case v.Name == "":
		t.p.add(t.key("name"), "%s is required", t.key("name"))
	case !volumeNameRE.MatchString(v.Name) || v.Name == "." || v.Name == "..":
		t.p.add(t.key("name"), "%s: %q is invalid: use 1 to 64 of A-Z, a-z, 0-9, '.', '_' and '-' (not \".\" or \"..\")", t.key("name"), v.Name)
	case v.Name == "_":
		// The control API names "the only volume" with "_".
		t.p.add(t.key("name"), "%s: %q is reserved (the control API uses it for \"the only volume\"): choose another name", t.key("name"), v.Name)
	}
	if v.RAID != nil {
		if _, pathSet := t.m["path"]; pathSet {
			t.p.add(t.key("path"), "%s and raid_members exclude each other: give path for a single file or device, raid_level and raid_members for a RAID array", t.key("path"))
		}
		if v.ReadOnly {
			// Assembling an array writes: the dirty mark, the resync of a
			// crash's dirty regions, a rebuild's progress.
			t.p.add(t.key("read_only"), "%s is not supported with raid_level: assembling an array writes to its members (superblocks, the resync after a crash, rebuild progress)", t.key("read_only"))
		}
	} else if v.Path == "" {
		t.p.add(t.key("path"), "%s is required (the backing file or block device)", t.key("path"))
	} else if checkAbs(t, "path", v.Path) {
		v.Path = filepath.Clean(v.Path)
	}
	if tls != "" {
		switch TLSMode(tls) {
		case TLSOptional, TLSRequired:
			v.TLS = TLSMode(tls)
		default:
			t.p.add(t.key("tls"), "%s: %q is not one of %q, %q", t.key("tls"), tls, TLSOptional, TLSRequired)
		}
	}
	if len(v.Description) > MaxDescription {
		t.p.add(t.key("description"), "%s is %d bytes, longer than %d", t.key("description"), len(v.Description), MaxDescription)
	}

	okMin := bmin >= 1 && bmin <= 64*KiB && isPow2(bmin)
	if !okMin {
		t.p.add(t.key("block_size_min"), "%s: %d is not a power of two from 1 to 65536", t.key("block_size_min"), bmin)
	}
	if !prefSet {
		bpref = max(DefaultBlockSizePreferred, bmin)
	}
	okPref := isPow2(bpref) && bpref <= MaxBlockSizeLimit
	if !okPref {
		t.p.add(t.key("block_size_preferred"), "%s: %d is not a power of two up to %s", t.key("block_size_preferred"), bpref, FormatSize(MaxBlockSizeLimit))
	} else if okMin && bpref < bmin {
		t.p.add(t.key("block_size_preferred"), "%s %d is smaller than block_size_min %d", t.key("block_size_preferred"), bpref, bmin)
		okPref = false
	}
	switch {
	case bmax > MaxBlockSizeLimit || bmax < 1:
		t.p.add(t.key("block_size_max"), "%s %s is out of range: at most %s", t.key("block_size_max"), FormatSize(bmax), FormatSize(MaxBlockSizeLimit))
	case okPref && bmax < bpref:
		t.p.add(t.key("block_size_max"), "%s %s is smaller than block_size_preferred %s", t.key("block_size_max"), FormatSize(bmax), FormatSize(bpref))
	case okMin && bmax%bmin != 0:
		t.p.add(t.key("block_size_max"), "%s %d is not a multiple of block_size_min %d", t.key("block_size_max"), bmax, bmin)
	}
	v.BlockSizeMin, v.BlockSizePreferred, v.BlockSizeMax = uint32(bmin), uint32(bpref), uint32(bmax)

	if sizeSet {
		switch {
		case v.Size == 0:
			t.p.add(t.key("size"), "%s must be positive (leave it out to use an existing file as it is)", t.key("size"))
		case okMin && v.Size%bmin != 0:
			t.p.add(t.key("size"), "%s %d is not a multiple of block_size_min %d", t.key("size"), v.Size, bmin)
		}
	}
	return v
}

// validate checks the constraints that span tables.
func validate(p *problems, cfg *Config, nbdTable, replTable *table) {
	if len(cfg.Volumes) == 0 && !p.bad["volume"] && !cfg.Witness() {
		p.add("volume", "no volumes: at least one [[volume]] table is required")
	}
	names := map[string]int{}
	paths := map[string]int{}
	for i, v := range cfg.Volumes {
		key := "volume." + strconv.Itoa(i)
		if v.Name != "" {
			if j, dup := names[v.Name]; dup {
				p.add(key+".name", "%s.name: %q is also the name of volume.%d", key, v.Name, j)
			} else {
				names[v.Name] = i
			}
		}
		if v.Path != "" && v.RAID == nil {
			if j, dup := paths[v.Path]; dup {
				p.add(key+".path", "%s.path: %q is also the path of volume.%d (%s)", key, v.Path, j, cfg.Volumes[j].Name)
			} else {
				paths[v.Path] = i
			}
		}
		if v.RAID != nil {
			for k, m := range v.RAID.Members {
				if j, dup := paths[m]; dup && j != i {
					p.add(fmt.Sprintf("%s.raid_members.%d", key, k), "%s.raid_members.%d: %q is also used by volume.%d (%s)", key, k, m, j, cfg.Volumes[j].Name)
				} else {
					paths[m] = i
				}
			}
			for k, m := range v.RAID.Spares {
				if j, dup := paths[m]; dup && j != i {
					p.add(fmt.Sprintf("%s.raid_spares.%d", key, k), "%s.raid_spares.%d: %q is also used by volume.%d (%s)", key, k, m, j, cfg.Volumes[j].Name)
				} else {
					paths[m] = i
				}
			}
		}
		if v.TLS == TLSRequired && !cfg.NBD.TLSEnabled() {
			p.add(key+".tls", "%s.tls is %q but nbd.tls_cert is not set: configure [nbd] tls_cert and tls_key", key, TLSRequired)
		}
	}
	for i, l := range cfg.NBD.Listen {
		if l.Network == "unix" && l.Address == cfg.Node.ControlSocket {
			p.add(nbdTable.key("listen")+"."+strconv.Itoa(i), "nbd.listen: %q is also node.control_socket: use another path", l)
		}
		// Only an exact match is caught; "0.0.0.0:7789" against
		// "10.0.0.1:7789" fails when the node binds.
		if l.Network == "tcp" && l.Address == cfg.Replication.Listen {
			p.add(replTable.key("listen"), "replication.listen: %q is also nbd.listen entry %d: the peer link needs its own port", l.Address, i)
		}
	}
	peerNames := map[string]int{}
	peerAddrs := map[string]int{}
	for i, pr := range cfg.Peers {
		key := "peer." + strconv.Itoa(i)
		switch j, dup := peerNames[pr.Name]; {
		case pr.Name == "":
		case pr.Name == cfg.Node.Name:
			p.add(key+".name", "%s.name: %q is this node's node.name: a peer is another node", key, pr.Name)
		case dup:
			p.add(key+".name", "%s.name: %q is also the name of peer.%d", key, pr.Name, j)
		default:
			peerNames[pr.Name] = i
		}
		switch j, dup := peerAddrs[pr.Address]; {
		case pr.Address == "":
		case pr.Address == cfg.Replication.Listen:
			p.add(key+".address", "%s.address: %q is this node's replication.listen: a peer is another node", key, pr.Address)
		case dup:
			p.add(key+".address", "%s.address: %q is also the address of peer.%d (%s)", key, pr.Address, j, cfg.Peers[j].Name)
		default:
			peerAddrs[pr.Address] = i
		}
	}
	switch {
	case cfg.NBD.DefaultExport != "":
		if _, ok := names[cfg.NBD.DefaultExport]; !ok {
			known := make([]string, 0, len(cfg.Volumes))
			for _, v := range cfg.Volumes {
				known = append(known, v.Name)
			}
			p.add(nbdTable.key("default_export"), "nbd.default_export %q is not a volume (volumes: %s)", cfg.NBD.DefaultExport, strings.Join(known, ", "))
		}
	case len(cfg.Volumes) == 1:
		cfg.NBD.DefaultExport = cfg.Volumes[0].Name
	}
}

// checkAbs reports a relative path; it returns whether path is absolute.
func checkAbs(t *table, key, path string) bool {
	if filepath.IsAbs(path) {
		return true
	}
	t.p.add(t.key(key), "%s: %q is a relative path: give an absolute path", t.key(key), path)
	return false
}

func checkSocketPath(t *table, key, path string) {
	if len(path) > maxSocketPath {
		t.p.add(t.key(key), "%s: socket path %q is %d bytes, longer than the %d a unix socket path may have", t.key(key), path, len(path), maxSocketPath)
	}
}

func isPow2(n int64) bool { return n > 0 && bits.OnesCount64(uint64(n)) == 1 }
