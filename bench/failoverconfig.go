package bench

import (
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/blockrep/blockrep/config"

	"github.com/blockrep/blockrep/internal/freeport"
)

// FailoverVolume is the name of the volume of the failover benchmark.
const FailoverVolume = "bench"

// ClusterMember is one [[cluster.member]] table.
type ClusterMember struct {
	Name, Address string
}

// ClusterNode is one member of the failover benchmark's cluster: a data
// node (one volume, one peer) or a witness.
type ClusterNode struct {
	Name    string // node.name
	DataDir string
	Witness bool
	// ClusterListen is cluster.listen, host:port.
	ClusterListen string

	// Data nodes only.
	NBDPort    int
	ReplListen string // replication.listen
	Peer       string // the other data node's name
	PeerAddr   string // its replication.listen
	File       string // the volume's backing file (created by blockrepd)
}

// FailoverCluster is two data nodes replicating one volume and a witness,
// all members of one cluster, on loopback.
type FailoverCluster struct {
	Name       string // cluster.name
	SecretFile string
	// Heartbeat and FailoverTimeout are cluster.heartbeat_interval and
	// cluster.failover_timeout; zero leaves the key out, so the daemon's
	// default applies.
	Heartbeat, FailoverTimeout time.Duration
	// VolumeSize is the volume's size; blockrepd creates the sparse file.
	VolumeSize int64
	// Preferred is the volume's preferred_primary.
	Preferred string
	// Nodes are node1 and node2 (data) and w (witness), in that order.
	Nodes []ClusterNode
}

// Timing returns the effective heartbeat interval and failover timeout:
// the configured ones, or the daemon's defaults.
func (c *FailoverCluster) Timing() (heartbeat, failoverTimeout time.Duration) {
	heartbeat, failoverTimeout = c.Heartbeat, c.FailoverTimeout
	if heartbeat == 0 {
		heartbeat = config.DefaultHeartbeatInterval
	}
	if failoverTimeout == 0 {
		failoverTimeout = config.DefaultFailoverTimeout
	}
	return heartbeat, failoverTimeout
}

// CheckTiming rejects what blockrepd would refuse: a heartbeat interval or
// failover timeout out of range, or a failover timeout shorter than three
// heartbeat intervals. Zero stands for the daemon's default.
func CheckTiming(heartbeat, failoverTimeout time.Duration) error {
	if heartbeat == 0 {
		heartbeat = config.DefaultHeartbeatInterval
	}
	if failoverTimeout == 0 {
		failoverTimeout = config.DefaultFailoverTimeout
	}
	switch {
	case heartbeat < config.MinHeartbeatInterval || heartbeat > config.MaxHeartbeatInterval:
		return fmt.Errorf("heartbeat interval %s: want %s to %s", heartbeat, config.MinHeartbeatInterval, config.MaxHeartbeatInterval)
	case failoverTimeout > config.MaxFailoverTimeout:
		return fmt.Errorf("failover timeout %s: at most %s", failoverTimeout, config.MaxFailoverTimeout)
	case failoverTimeout < 3*heartbeat:
		return fmt.Errorf("failover timeout %s is less than three heartbeat intervals (%s)", failoverTimeout, 3*heartbeat)
	}
	return nil
}

// NewFailoverCluster configures node1 (the preferred primary), node2 and
// the witness w in workDir: free loopback ports, a fresh 32-byte secret
// (mode 0600), one volume of size bytes in workDir/NAME.img on each data
// node. heartbeat and failoverTimeout of zero leave the daemon's defaults.
func NewFailoverCluster(workDir string, size int64, heartbeat, failoverTimeout time.Duration) (*FailoverCluster, error) {
	if err := CheckTiming(heartbeat, failoverTimeout); err != nil {
		return nil, err
	}
	if size <= 0 || size%(1<<20) != 0 {
		return nil, fmt.Errorf("volume size %d: want a positive multiple of 1MiB", size)
	}
	// node1, node2: NBD, replication, cluster; w: cluster.
	ports, err := freePorts(7)
	if err != nil {
		return nil, err
	}
	secretFile, err := writeSecret(workDir)
	if err != nil {
		return nil, err
	}
	addr := func(p int) string { return fmt.Sprintf("127.0.0.1:%d", p) }
	c := &FailoverCluster{
		Name: "bench", SecretFile: secretFile,
		Heartbeat: heartbeat, FailoverTimeout: failoverTimeout,
		VolumeSize: size, Preferred: "node1",
	}
	for i, name := range []string{"node1", "node2"} {
		other := 1 - i
		c.Nodes = append(c.Nodes, ClusterNode{
			Name: name, DataDir: filepath.Join(workDir, name), ClusterListen: addr(ports[3*i+2]),
			NBDPort: ports[3*i], ReplListen: addr(ports[3*i+1]),
			Peer: []string{"node1", "node2"}[other], PeerAddr: addr(ports[3*other+1]),
			File: filepath.Join(workDir, name+".img"),
		})
	}
	c.Nodes = append(c.Nodes, ClusterNode{Name: "w", DataDir: filepath.Join(workDir, "w"), Witness: true, ClusterListen: addr(ports[6])})
	return c, nil
}

// writeSecret writes a fresh secret to workDir/cluster.secret (mode 0600):
// 24 random bytes in base64, 32 bytes of text with no whitespace.
func writeSecret(workDir string) (string, error) {
	secret := make([]byte, 24)
	if _, err := rand.Read(secret); err != nil {
		return "", err
	}
	p := filepath.Join(workDir, "cluster.secret")
	if err := os.WriteFile(p, []byte(base64.StdEncoding.EncodeToString(secret)), 0o600); err != nil {
		return "", err
	}
	return p, nil
}

// freePorts returns n distinct loopback TCP ports that were free a moment
// ago, from below the ephemeral range (freeport).
func freePorts(n int) ([]int, error) { return freeport.Pick(n) }

// Members returns the [[cluster.member]] list every node carries.
func (c *FailoverCluster) Members() []ClusterMember {
	var ms []ClusterMember
	for _, n := range c.Nodes {
		ms = append(ms, ClusterMember{Name: n.Name, Address: n.ClusterListen})
	}
	return ms
}

// TOML renders the configuration of node i as blockrepd reads it.
func (c *FailoverCluster) TOML(i int) string {
	n := c.Nodes[i]
	var b strings.Builder
	fmt.Fprintf(&b, "[node]\nname = %q\ndata_dir = %q\n", n.Name, n.DataDir)
	if !n.Witness {
		fmt.Fprintf(&b, "\n[nbd]\nlisten = [\"127.0.0.1:%d\"]\n", n.NBDPort)
		fmt.Fprintf(&b, "\n[replication]\nlisten = %q\nprotocol = \"C\"\n", n.ReplListen)
		fmt.Fprintf(&b, "\n[[peer]]\nname = %q\naddress = %q\n", n.Peer, n.PeerAddr)
	}
	fmt.Fprintf(&b, "\n[cluster]\nname = %q\nsecret_file = %q\nlisten = %q\n", c.Name, c.SecretFile, n.ClusterListen)
	if n.Witness {
		b.WriteString("kind = \"witness\"\n")
	}
	if c.Heartbeat != 0 {
		fmt.Fprintf(&b, "heartbeat_interval = %q\n", config.FormatDuration(c.Heartbeat))
	}
	if c.FailoverTimeout != 0 {
		fmt.Fprintf(&b, "failover_timeout = %q\n", config.FormatDuration(c.FailoverTimeout))
	}
	for _, m := range c.Members() {
		fmt.Fprintf(&b, "\n[[cluster.member]]\nname = %q\naddress = %q\n", m.Name, m.Address)
	}
	if !n.Witness {
		fmt.Fprintf(&b, "\n[[volume]]\nname = %q\npath = %q\nsize = %q\n", FailoverVolume, n.File, config.FormatSize(c.VolumeSize))
		if c.Preferred != "" {
			fmt.Fprintf(&b, "preferred_primary = %q\n", c.Preferred)
		}
	}
	return b.String()
}
