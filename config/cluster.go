package config

import (
	"fmt"
	"net"
	"path/filepath"
	"strconv"
	"time"
)

// Cluster is the [cluster] table: this node's membership in the Raft group
// that elects the primaries. Without the table the node runs alone or with
// manually driven replication, as before.
type Cluster struct {
	// Enabled is set when the [cluster] table is present.
	Enabled bool
	// Name names the cluster; every member must agree. Replication uses
	// it too unless [replication] names one.
	Name string
	// SecretFile is the absolute path of the shared secret that
	// authenticates members, the peer links (unless [replication] names
	// another) and remote blockctl.
	SecretFile string
	// Listen is the host:port of the Raft transport and the authenticated
	// control API; the other members and remote blockctl reach this node
	// there, so the host must be a concrete address.
	Listen string
	// Kind is "data" (holds volumes) or "witness" (votes, holds nothing).
	Kind NodeKind
	// HeartbeatInterval is how often each member reports to the leader.
	HeartbeatInterval time.Duration
	// FailoverTimeout is how long the leader waits after a primary's last
	// heartbeat before it promotes another node; the primary's lease is
	// one heartbeat interval shorter.
	FailoverTimeout time.Duration
	// Fence is what a primary whose lease ran out does with I/O.
	Fence Fence
	// Members is the initial membership of a new cluster (bootstrap). It
	// is used only when this node has no Raft state yet and is listed;
	// a node not listed starts empty and waits for `blockctl cluster add`.
	Members []Member
	// Security protects the cluster port's connections (Raft, control
	// API, remote blockctl) after their handshake; TLS holds the files
	// for SecurityTLS.
	Security Security
	TLS      TLSFiles
}

// NodeKind is what a member is.
type NodeKind string

// The kinds of members.
const (
	KindData    NodeKind = "data"
	KindWitness NodeKind = "witness"
)

// Fence is what a primary does with I/O once its lease has run out.
type Fence string

// The fencing modes.
const (
	// FenceSuspend holds I/O until the lease is renewed or the node is
	// demoted (then it fails): clients wait, as with DRBD's suspend-io.
	FenceSuspend Fence = "suspend"
	// FenceError fails I/O at once with EIO.
	FenceError Fence = "error"
)

// Failover is a volume's failover policy.
type Failover string

// The failover policies.
const (
	// FailoverAuto: the cluster promotes an UpToDate secondary when the
	// primary is lost (the default).
	FailoverAuto Failover = "auto"
	// FailoverManual: the cluster records the primary lost and waits for
	// blockctl promote.
	FailoverManual Failover = "manual"
)

// Member is one [[cluster.member]] table.
type Member struct {
	// Name is the member's node.name.
	Name string
	// Address is the member's cluster.listen.
	Address string
}

// Cluster defaults and limits.
const (
	DefaultHeartbeatInterval = 200 * time.Millisecond
	MinHeartbeatInterval     = 10 * time.Millisecond
	MaxHeartbeatInterval     = 10 * time.Second
	DefaultFailoverTimeout   = 1200 * time.Millisecond
	MaxFailoverTimeout       = 10 * time.Minute
)

// Clustered reports whether the node is a member of a cluster.
func (c *Config) Clustered() bool { return c.Cluster.Enabled }

// Witness reports whether the node is a witness.
func (c *Config) Witness() bool { return c.Cluster.Enabled && c.Cluster.Kind == KindWitness }

func decodeCluster(t *table, c *Cluster) {
	*c = Cluster{}
	if t.m == nil {
		return
	}
	*c = Cluster{
		Kind:              KindData,
		HeartbeatInterval: DefaultHeartbeatInterval,
		FailoverTimeout:   DefaultFailoverTimeout,
		Fence:             FenceSuspend,
	}
	c.Enabled = true
	t.str("name", &c.Name)
	t.str("secret_file", &c.SecretFile)
	t.str("listen", &c.Listen)
	oneOf(t, "kind", &c.Kind, KindData, KindWitness)
	t.duration("heartbeat_interval", &c.HeartbeatInterval, MinHeartbeatInterval, MaxHeartbeatInterval)
	t.duration("failover_timeout", &c.FailoverTimeout, 3*MinHeartbeatInterval, MaxFailoverTimeout)
	oneOf(t, "fence", &c.Fence, FenceSuspend, FenceError)
	decodeSecurity(t, &c.Security, &c.TLS)
	members := t.tables("member")
	t.unknown()

	switch {
	case c.Name == "":
		t.p.add(t.key("name"), "%s is required: every member must name the same cluster", t.key("name"))
	case !nodeNameRE.MatchString(c.Name):
		t.p.add(t.key("name"), "%s: %q is invalid: use 1 to 63 of a-z, 0-9 and -", t.key("name"), c.Name)
	}
	switch {
	case c.SecretFile == "":
		t.p.add(t.key("secret_file"), "%s is required: members authenticate each other with the secret in it", t.key("secret_file"))
	case checkAbs(t, "secret_file", c.SecretFile):
		c.SecretFile = filepath.Clean(c.SecretFile)
	}
	if c.Listen == "" {
		t.p.add(t.key("listen"), "%s is required: the host:port the other members and remote blockctl reach this node at", t.key("listen"))
	} else if err := checkAdvertised(c.Listen); err != nil {
		t.p.add(t.key("listen"), "%s: %v", t.key("listen"), err)
	}
	if c.FailoverTimeout < 3*c.HeartbeatInterval && !t.p.bad[t.key("failover_timeout")] && !t.p.bad[t.key("heartbeat_interval")] {
		if _, set := t.m["failover_timeout"]; set {
			t.p.add(t.key("failover_timeout"), "%s %s is less than three heartbeat intervals (%s): one late heartbeat would fail the primary over",
				t.key("failover_timeout"), FormatDuration(c.FailoverTimeout), FormatDuration(3*c.HeartbeatInterval))
		} else {
			t.p.add(t.key("heartbeat_interval"), "%s %s needs a failover_timeout of at least three intervals (%s), more than the default %s: set %s",
				t.key("heartbeat_interval"), FormatDuration(c.HeartbeatInterval), FormatDuration(3*c.HeartbeatInterval),
				FormatDuration(DefaultFailoverTimeout), t.key("failover_timeout"))
		}
	}
	names := map[string]int{}
	addrs := map[string]int{}
	for i, mt := range members {
		var m Member
		mt.str("name", &m.Name)
		mt.str("address", &m.Address)
		mt.unknown()
		key := t.key("member") + "." + strconv.Itoa(i)
		switch j, dup := names[m.Name]; {
		case m.Name == "":
			mt.p.add(key+".name", "%s.name is required (the member's node.name)", key)
		case !nodeNameRE.MatchString(m.Name):
			mt.p.add(key+".name", "%s.name: %q is invalid: use 1 to 63 of a-z, 0-9 and -", key, m.Name)
		case dup:
			mt.p.add(key+".name", "%s.name: %q is also the name of %s.%d", key, m.Name, t.key("member"), j)
		default:
			names[m.Name] = i
		}
		switch j, dup := addrs[m.Address]; {
		case m.Address == "":
			mt.p.add(key+".address", "%s.address is required (the member's cluster.listen)", key)
		case dup:
			mt.p.add(key+".address", "%s.address: %q is also the address of %s.%d", key, m.Address, t.key("member"), j)
		default:
			if err := checkAdvertised(m.Address); err != nil {
				mt.p.add(key+".address", "%s.address: %v", key, err)
			}
			addrs[m.Address] = i
		}
		c.Members = append(c.Members, m)
	}
}

// checkAdvertised checks an address other nodes dial: host:port with a
// concrete host (not a wildcard, which Raft would advertise as such).
func checkAdvertised(s string) error {
	if err := checkHostPort(s, true); err != nil {
		return err
	}
	host, _, _ := net.SplitHostPort(s)
	if ip := net.ParseIP(host); ip != nil && ip.IsUnspecified() {
		return fmt.Errorf("address %q: %s is a wildcard address: give one the other members can reach", s, host)
	}
	return nil
}

// validateCluster checks what [cluster] requires of the other tables.
// roleSet says, per volume, whether its table sets role.
func validateCluster(p *problems, cfg *Config, clusterTable, replTable *table, roleSet []bool) {
	c := &cfg.Cluster
	if !c.Enabled {
		for i, v := range cfg.Volumes {
			if v.PreferredPrimary != "" {
				key := "volume." + strconv.Itoa(i) + ".preferred_primary"
				p.add(key, "%s: only with [cluster] (without it the volume's role is set by hand)", key)
			}
			if v.Failover != "" {
				key := "volume." + strconv.Itoa(i) + ".failover"
				p.add(key, "%s: only with [cluster] (without it nothing fails over by itself)", key)
			}
		}
		return
	}
	if len(c.Members) > 0 {
		found := false
		for i, m := range c.Members {
			if m.Name == cfg.Node.Name {
				found = true
				key := clusterTable.key("member") + "." + strconv.Itoa(i) + ".address"
				if m.Address != c.Listen && c.Listen != "" && !p.bad[clusterTable.key("listen")] {
					p.add(key, "%s: %q is not this node's cluster.listen %q: the member named %q is this node, give it the same address", key, m.Address, c.Listen, m.Name)
				}
			}
		}
		if !found && cfg.Node.Name != "" {
			p.add(clusterTable.key("member"), "cluster.member does not list this node (%q): list every initial member, this one included, or none to join an existing cluster", cfg.Node.Name)
		}
	}
	// The keys name the first table, so that the error has its line.
	if c.Kind == KindWitness {
		if len(cfg.Volumes) > 0 {
			p.add("volume.0", "a witness holds no data: remove the [[volume]] tables or set cluster.kind = %q", KindData)
		}
		if len(cfg.Peers) > 0 {
			p.add("peer.0", "a witness holds no data and has no replication peers: remove the [[peer]] tables")
		}
	}
	if cfg.Replication.ContinueAlone {
		p.add(replTable.key("continue_alone"), "replication.continue_alone cannot be used with [cluster]: the cluster outdates a lost peer through quorum instead")
	}
	if cfg.Replication.Cluster == "" {
		cfg.Replication.Cluster = c.Name
	}
	if cfg.Replication.SecretFile == "" {
		cfg.Replication.SecretFile = c.SecretFile
	}
	if c.Listen != "" && c.Listen == cfg.Replication.Listen {
		p.add(clusterTable.key("listen"), "cluster.listen: %q is also replication.listen: the cluster needs its own port", c.Listen)
	}
	for i, l := range cfg.NBD.Listen {
		if l.Network == "tcp" && l.Address == c.Listen {
			p.add(clusterTable.key("listen"), "cluster.listen: %q is also nbd.listen entry %d: the cluster needs its own port", c.Listen, i)
		}
	}
	for i, v := range cfg.Volumes {
		key := "volume." + strconv.Itoa(i)
		// No volume starts as primary on its own (without peers the
		// default would be primary): the cluster promotes one node.
		cfg.Volumes[i].Role = RoleSecondary
		if roleSet[i] {
			p.add(key+".role", "%s.role: with [cluster] the cluster decides the role; remove the key (set preferred_primary to choose where the volume runs)", key)
		}
		if v.PreferredPrimary != "" && v.PreferredPrimary != cfg.Node.Name {
			known := false
			for _, pr := range cfg.Peers {
				known = known || pr.Name == v.PreferredPrimary
			}
			if !known {
				p.add(key+".preferred_primary", "%s.preferred_primary: %q is neither this node nor a [[peer]]", key, v.PreferredPrimary)
			}
		}
	}
}
