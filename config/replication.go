package config

import (
	"fmt"
	"net"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/blockrep/blockrep/replica"
)

// Replication is the [replication] table: how this node replicates its
// volumes to its peers. Every field holds its default when the table is
// absent; without [[peer]] tables nothing in it is required.
type Replication struct {
	// Cluster names the cluster; both ends of a peer link must agree. It is
	// required when peers are configured; 1 to 63 of a-z, 0-9 and -.
	Cluster string
	// SecretFile is the absolute path of the secret shared by the peers. It
	// is required when peers are configured. The node reads it; the
	// configuration only checks that the path is absolute.
	SecretFile string
	// Listen is the host:port the peer link accepts connections on. It is
	// required when peers are configured. Port 0 picks a free port.
	Listen string
	// Protocol is when a replicated write is acknowledged: ProtocolA,
	// ProtocolB or ProtocolC.
	Protocol Protocol
	// Timeout is how long a peer may stay silent before it counts as lost.
	Timeout time.Duration
	// ConnectRetryMax is the longest wait between reconnect attempts; the
	// wait starts at ConnectRetryInitial and doubles up to it.
	ConnectRetryMax time.Duration
	// SplitBrain is how a split brain is resolved when the peers reconnect;
	// both ends must use the same policy.
	SplitBrain replica.SplitBrainPolicy
	// ContinueAlone lets a primary keep acknowledging writes while its peer
	// is unreachable. It is unsafe without quorum: if the peer was only cut
	// off and is promoted, both nodes accept writes (split brain).
	ContinueAlone bool
	// DataIntegrity adds a CRC-32C of the data to every replicated frame.
	DataIntegrity bool
	// BitmapBlockSize is the bytes one bit of the out-of-sync bitmap stands
	// for.
	BitmapBlockSize int64
	// ALExtents is how many activity-log extents may be hot at once.
	ALExtents int
	// ALExtentSize is the bytes one activity-log extent covers.
	ALExtentSize int64
	// ResyncRate caps the resync traffic in bytes per second; 0 sets no
	// fixed cap and leaves the rate to the dynamic controller.
	ResyncRate int64
	// SecondaryNBD is what the NBD export of a volume does while this node
	// is its secondary.
	SecondaryNBD SecondaryNBD
	// OnIOError is what a replicated volume does when its local store
	// fails a write or a flush.
	OnIOError OnIOError
	// Security protects the peer links after their handshake; TLS holds
	// the files for SecurityTLS.
	Security Security
	TLS      TLSFiles
}

// OnIOError says what a replicated volume does when its local store fails.
type OnIOError string

// The on_io_error policies (replica.IOErrorPolicy).
const (
	// OnIOErrorDetach detaches the failed disk: the replica becomes
	// Diskless and refuses I/O; with a cluster a primary hands the volume
	// to an UpToDate peer.
	OnIOErrorDetach OnIOError = "detach"
	// OnIOErrorPassOn passes the error to the client and keeps the disk.
	OnIOErrorPassOn OnIOError = "pass_on"
)

// Protocol says when the primary acknowledges a replicated write.
type Protocol string

// The replication protocols.
const (
	// ProtocolA acknowledges a write once it is on the local disk and sent
	// to the peer: losing the primary loses the writes still in flight.
	ProtocolA Protocol = "A"
	// ProtocolB acknowledges a write once it is on the local disk and the
	// peer has received it: only losing both nodes at once loses writes.
	ProtocolB Protocol = "B"
	// ProtocolC acknowledges a write once it is on both disks.
	ProtocolC Protocol = "C"
)

// SecondaryNBD says what the NBD export of a secondary volume does.
type SecondaryNBD string

// The NBD behaviours of a secondary.
const (
	// SecondaryReadOnly serves reads and refuses writes.
	SecondaryReadOnly SecondaryNBD = "read-only"
	// SecondaryRefuse refuses NBD clients of the volume altogether.
	SecondaryRefuse SecondaryNBD = "refuse"
)

// Role is the role of a volume on this node.
type Role string

// The roles of a volume.
const (
	// RolePrimary serves writes and replicates them to the peers.
	RolePrimary Role = "primary"
	// RoleSecondary receives the primary's writes and serves no writes of
	// its own.
	RoleSecondary Role = "secondary"
)

// Peer is one [[peer]] table: another data node that holds copies of this
// node's volumes.
type Peer struct {
	// Name is the peer's node.name; unique, and not this node's name.
	Name string
	// Address is the host:port of the peer's replication.listen.
	Address string
}

// Replication defaults and limits.
const (
	DefaultProtocol = ProtocolC
	// DefaultTimeout, MinTimeout and MaxTimeout bound replication.timeout.
	// Below 100ms a busy network or a GC pause looks like a lost peer; above
	// a minute a primary waits that long before it notices.
	DefaultTimeout = 2 * time.Second
	MinTimeout     = 100 * time.Millisecond
	MaxTimeout     = 60 * time.Second
	// ConnectRetryInitial is the first wait between reconnect attempts.
	ConnectRetryInitial = 100 * time.Millisecond
	// DefaultConnectRetryMax, MinConnectRetryMax and MaxConnectRetryMax
	// bound replication.connect_retry_max.
	DefaultConnectRetryMax = 5 * time.Second
	MinConnectRetryMax     = ConnectRetryInitial
	MaxConnectRetryMax     = 10 * time.Minute
	// DefaultBitmapBlockSize, MinBitmapBlockSize and MaxBitmapBlockSize
	// bound replication.bitmap_block_size; they are the bitmap's own.
	DefaultBitmapBlockSize = replica.DefaultBlockSize
	MinBitmapBlockSize     = replica.MinBlockSize
	MaxBitmapBlockSize     = replica.MaxBlockSize
	// DefaultALExtents, MinALExtents and MaxALExtents bound
	// replication.al_extents. Fewer than 7 hot extents make scattered
	// concurrent writes wait for a free one; 65534 extents of the default
	// size are already 256GiB to resync after a primary crash.
	DefaultALExtents = replica.DefaultALCapacity
	MinALExtents     = 7
	MaxALExtents     = 65534
	// DefaultALExtentSize, MinALExtentSize and MaxALExtentSize bound
	// replication.al_extent_size; 1GiB bounds what each hot extent adds to
	// the resync after a primary crash.
	DefaultALExtentSize       = replica.DefaultExtentSize
	MinALExtentSize           = replica.MinExtentSize
	MaxALExtentSize     int64 = GiB
	DefaultSecondaryNBD       = SecondaryReadOnly
	DefaultOnIOError          = OnIOErrorDetach
)

// decodeReplication decodes the [replication] table; replicated says whether
// [[peer]] tables exist, which makes cluster, secret_file and listen required
// (cluster and secret_file default to [cluster]'s when clustered).
func decodeReplication(t *table, r *Replication, replicated, clustered bool) {
	*r = Replication{
		Protocol:        DefaultProtocol,
		Timeout:         DefaultTimeout,
		ConnectRetryMax: DefaultConnectRetryMax,
		SplitBrain:      replica.PolicyDisconnect,
		BitmapBlockSize: DefaultBitmapBlockSize,
		ALExtents:       DefaultALExtents,
		ALExtentSize:    DefaultALExtentSize,
		SecondaryNBD:    DefaultSecondaryNBD,
		OnIOError:       DefaultOnIOError,
	}
	var splitBrain string
	_, splitBrainSet := t.m["split_brain"]
	t.str("cluster", &r.Cluster)
	t.str("secret_file", &r.SecretFile)
	t.str("listen", &r.Listen)
	oneOf(t, "protocol", &r.Protocol, ProtocolA, ProtocolB, ProtocolC)
	t.duration("timeout", &r.Timeout, MinTimeout, MaxTimeout)
	t.duration("connect_retry_max", &r.ConnectRetryMax, MinConnectRetryMax, MaxConnectRetryMax)
	t.str("split_brain", &splitBrain)
	t.boolean("continue_alone", &r.ContinueAlone)
	t.boolean("data_integrity", &r.DataIntegrity)
	t.size("bitmap_block_size", &r.BitmapBlockSize)
	t.integer("al_extents", &r.ALExtents, MinALExtents, MaxALExtents)
	t.size("al_extent_size", &r.ALExtentSize)
	t.size("resync_rate", &r.ResyncRate)
	oneOf(t, "secondary_nbd", &r.SecondaryNBD, SecondaryReadOnly, SecondaryRefuse)
	oneOf(t, "on_io_error", &r.OnIOError, OnIOErrorDetach, OnIOErrorPassOn)
	decodeSecurity(t, &r.Security, &r.TLS)
	t.unknown()

	// A node without peers may keep a [replication] table for later, so
	// nothing is required then; whatever is given is still checked.
	const why = "when [[peer]] tables are configured"
	switch {
	case r.Cluster == "":
		if replicated && !clustered {
			t.p.add(t.key("cluster"), "%s is required %s: both ends of a peer link must name the same cluster", t.key("cluster"), why)
		}
	case !nodeNameRE.MatchString(r.Cluster):
		t.p.add(t.key("cluster"), "%s: %q is invalid: use 1 to 63 of a-z, 0-9 and -", t.key("cluster"), r.Cluster)
	}
	switch {
	case r.SecretFile == "":
		if replicated && !clustered {
			t.p.add(t.key("secret_file"), "%s is required %s: the peers authenticate each other with the secret in it", t.key("secret_file"), why)
		}
	case checkAbs(t, "secret_file", r.SecretFile):
		r.SecretFile = filepath.Clean(r.SecretFile)
	}
	switch {
	case r.Listen == "":
		if replicated {
			t.p.add(t.key("listen"), "%s is required %s: it is the host:port the peers connect to", t.key("listen"), why)
		}
	case strings.HasPrefix(r.Listen, "unix:"):
		t.p.add(t.key("listen"), "%s: %q is a unix socket: the peer link is TCP only, give host:port", t.key("listen"), r.Listen)
	default:
		if err := checkHostPort(r.Listen, false); err != nil {
			t.p.add(t.key("listen"), "%s: %v", t.key("listen"), err)
		}
	}

	// ParseSplitBrainPolicy refuses the empty string, so an explicit
	// split_brain = "" is an error rather than a silent "disconnect".
	if splitBrainSet && !t.p.bad[t.key("split_brain")] {
		if p, err := replica.ParseSplitBrainPolicy(splitBrain); err != nil {
			t.p.add(t.key("split_brain"), "%s: %v", t.key("split_brain"), err)
		} else {
			r.SplitBrain = p
		}
	}
	if !isPow2(r.BitmapBlockSize) || r.BitmapBlockSize < MinBitmapBlockSize || r.BitmapBlockSize > MaxBitmapBlockSize {
		t.p.add(t.key("bitmap_block_size"), "%s: %s is not a power of two from %s to %s", t.key("bitmap_block_size"),
			FormatSize(r.BitmapBlockSize), FormatSize(MinBitmapBlockSize), FormatSize(MaxBitmapBlockSize))
	}
	if !isPow2(r.ALExtentSize) || r.ALExtentSize < MinALExtentSize || r.ALExtentSize > MaxALExtentSize {
		t.p.add(t.key("al_extent_size"), "%s: %s is not a power of two from %s to %s", t.key("al_extent_size"),
			FormatSize(r.ALExtentSize), FormatSize(MinALExtentSize), FormatSize(MaxALExtentSize))
	}
}

// decodePeer decodes one [[peer]] table. The checks against this node and
// the other peers are in validate.
func decodePeer(t *table) Peer {
	var p Peer
	t.str("name", &p.Name)
	t.str("address", &p.Address)
	t.unknown()

	switch {
	case p.Name == "":
		t.p.add(t.key("name"), "%s is required (the peer's node.name)", t.key("name"))
	case !nodeNameRE.MatchString(p.Name):
		t.p.add(t.key("name"), "%s: %q is invalid: use 1 to 63 of a-z, 0-9 and -", t.key("name"), p.Name)
	}
	if p.Address == "" {
		t.p.add(t.key("address"), "%s is required (the host:port of the peer's replication.listen)", t.key("address"))
	} else if err := checkHostPort(p.Address, true); err != nil {
		t.p.add(t.key("address"), "%s: %v", t.key("address"), err)
	}
	return p
}

// checkHostPort checks that s is host:port with a numeric port. An address
// to listen on may leave the host empty (every address) and use port 0 (a
// free port, which tests use), as nbd.listen may. An address to dial needs
// both: an empty host dials this node itself and port 0 cannot be dialed.
func checkHostPort(s string, dial bool) error {
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		return fmt.Errorf("address %q: want host:port", s)
	}
	var lo uint64
	if dial {
		lo = 1
	}
	if n, err := strconv.ParseUint(port, 10, 16); err != nil || n < lo {
		return fmt.Errorf("address %q: port %q is not a number from %d to 65535", s, port, lo)
	}
	if dial && host == "" {
		return fmt.Errorf("address %q: the host is missing", s)
	}
	return nil
}
