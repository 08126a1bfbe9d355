// Package config reads the TOML configuration of one blockrepd node.
//
// Parsing is strict: an unknown key, a value of the wrong type and a value out
// of range are all errors, and each error names the full key path (arrays of
// tables are numbered from 0, e.g. "volume.0.size"), the offending value and,
// when it can be found, the line. All problems of a file are reported at once.
//
// Sizes are a plain byte count (4096 or "4096") or a whole number with a
// binary suffix: "512KiB", "10GiB", "1 TiB". Decimal suffixes (KB, MB, GB,
// TB) are rejected rather than guessed. Durations are strings with a unit
// ("2s", "500ms"); a bare number is rejected. Every path must be absolute.
//
// # Schema
//
//	[node]
//	name = "node1"                             # required; 1-63 of [a-z0-9-]
//	data_dir = "/var/lib/blockrep/node1"       # required; holds meta.db
//	control_socket = "/run/blockrep/node1.sock" # default <data_dir>/control.sock
//
//	[nbd]
//	# TCP host:port, or "unix:" followed by a socket path. Port 0 picks a
//	# free port. Default ["127.0.0.1:10809"].
//	# A unix socket must not be the control socket.
//	listen = ["127.0.0.1:10809", "unix:/run/blockrep/node1-nbd.sock"]
//	tls_cert = ""        # PEM certificate; with tls_key enables STARTTLS
//	tls_key = ""         # PEM private key
//	tls_client_ca = ""   # PEM CA; clients must present a certificate it signed
//	max_inflight = "256MiB"  # request buffers of all connections; >= 32MiB
//	max_connections = 256    # NBD connections at once (1..65536); about 1 MiB each
//	default_export = ""  # volume served for the empty export name;
//	                     # default: the only volume if there is exactly one
//
//	[nfs]                # optional; its defaults apply when a volume has
//	                     # an export ([[volume.nfs]])
//	listen = [":2049"]   # TCP host:port of NFS and MOUNT (same port); no
//	                     # unix:; not an nbd, replication or cluster listen
//	                     # address; default [":2049"]
//	portmap = false      # also serve a portmapper (rpcbind) on the listen
//	                     # addresses and on port 111 of their hosts
//
//	[replication]        # optional; defaults apply when absent
//	cluster = "prod"     # required with peers; 1-63 of [a-z0-9-]; peers agree;
//	                     # default cluster.name with [cluster]
//	secret_file = "/etc/blockrep/secret"  # required with peers; absolute;
//	                     # default cluster.secret_file with [cluster]
//	listen = "10.0.0.1:7789"  # required with peers; host:port, no unix:
//	protocol = "C"       # "A", "B" or "C" (default)
//	timeout = "2s"       # peer-loss detection; 100ms to 60s
//	connect_retry_max = "5s"  # reconnect backoff cap (from 100ms); 100ms to 10m
//	split_brain = "disconnect"  # or discard-zero-changes,
//	                     # discard-younger-primary, discard-older-primary,
//	                     # discard-least-changes
//	continue_alone = false  # UNSAFE without quorum: a primary keeps writing
//	                     # while its peer is unreachable; true is refused
//	                     # with [cluster]
//	data_integrity = false  # CRC-32C of every replicated frame
//	bitmap_block_size = 4096  # power of two, 512 to 1GiB
//	al_extents = 1237    # 7 to 65534
//	al_extent_size = "4MiB"  # power of two, 1MiB to 1GiB
//	resync_rate = 0      # bytes per second; 0: the dynamic controller decides
//	secondary_nbd = "read-only"  # or "refuse"
//	on_io_error = "detach"  # or "pass_on": what a failed local disk does
//
//	[[peer]]             # zero or more; with peers this node replicates
//	name = "node2"       # required, unique; the peer's node.name, not ours
//	address = "10.0.0.2:7789"  # required, unique; the peer's
//	                     # replication.listen
//
//	[cluster]            # optional; makes the node a member of the Raft
//	                     # group that chooses the primaries and fails over
//	name = "prod"        # required; 1-63 of [a-z0-9-]; every member agrees
//	secret_file = "/etc/blockrep/secret"  # required; absolute; shared by
//	                     # every member (and remote blockctl)
//	listen = "10.0.0.1:7790"  # required; host:port of the Raft transport
//	                     # and the authenticated control API, advertised to
//	                     # the members: a concrete host (no empty host, no
//	                     # 0.0.0.0 or [::]), port 1-65535; not
//	                     # replication.listen, not an nbd.listen address
//	kind = "data"        # "data" (default) or "witness": a diskless voter
//	heartbeat_interval = "200ms"  # members report to the leader; 10ms to 10s
//	failover_timeout = "1.2s"  # the leader declares a primary lost this long
//	                     # after the last heartbeat it granted it; the
//	                     # primary's lease is failover_timeout -
//	                     # heartbeat_interval; 3 heartbeat intervals to 10m
//	fence = "suspend"    # a primary whose lease ran out holds I/O
//	                     # ("suspend") or fails it with EIO ("error")
//
//	[[cluster.member]]   # zero or more: the initial members, used only to
//	                     # create a new cluster (bootstrap); none to join
//	                     # an existing one (blockctl cluster add)
//	name = "node1"       # required, unique; the member's node.name
//	address = "10.0.0.1:7790"  # required, unique; the member's
//	                     # cluster.listen; concrete host, as listen
//
//	[[volume]]                   # at least one (none on a witness)
//	name = "vol0"                # required, unique; 1-64 of [A-Za-z0-9._-]
//	path = "/var/lib/blockrep/node1/vol0.img"  # required, unique, absolute;
//	                             # a file or a block device
//	size = "1GiB"                # optional: create a sparse file of this size
//	                             # when path is missing; an existing file must
//	                             # have this size; a multiple of block_size_min
//	read_only = false            # refuse writes; not with raid_level
//	tls = "optional"             # "optional" (default) or "required";
//	                             # "required" needs [nbd] tls_cert and tls_key
//	description = ""             # shown to NBD clients; at most 4096 bytes
//	block_size_min = 512         # power of two, 1 to 65536; default 512
//	block_size_preferred = 4096  # power of two >= min; default max(4096, min)
//	block_size_max = "32MiB"     # >= preferred, a multiple of min, <= 32MiB
//	multi_conn = true            # advertise NBD_FLAG_CAN_MULTI_CONN
//	role = "primary"             # "primary" or "secondary" at start; default
//	                             # "secondary" with peers, "primary" without;
//	                             # refused with [cluster]
//	preferred_primary = "node1"  # only with [cluster]: the node failover
//	                             # picks first; this node.name or a peer's
//	failover = "auto"            # only with [cluster]: "auto" or "manual"
//	                             # (the cluster records a lost primary and
//	                             # waits for blockctl promote)
//
//	[[volume.nfs]]               # zero or more, after a volume's keys: a
//	                             # directory of its file system over NFS
//	path = "htdocs"              # relative to the file system's root; ""
//	                             # (default) is the root; no ".." above it
//	export = "/vol0"             # the MOUNT path; absolute, clean, <= 1024
//	                             # bytes, unique; default "/" + volume name
//	id = 2001                    # export id in every file handle, 0 to
//	                             # 4294967295, unique; never change it;
//	                             # default DefaultNFSExportID(name, path)
//	networks = ["10.0.0.0/24"]   # required, at least one CIDR, no host bits
//	read_only = false            # refuse changes (NFS3ERR_ROFS)
//	squash = "root_squash"       # or "no_root_squash", "all_squash"
//	anonuid = 65534              # identity of squashed calls, 0 to
//	anongid = 65534              # 4294967295; default 65534
//	allow_auth_none = false      # admit AUTH_NONE calls as anonuid/anongid
//
//	[[volume]]                   # a volume on a local RAID array: raid_level
//	name = "fast"                # and raid_members instead of path (exactly
//	raid_level = "raid5"         # one of the two); "raid1" (>= 2 members),
//	                             # "raid10" (a multiple of raid_copies),
//	                             # "raid5" (>= 3) or "raid6" (>= 4)
//	raid_members = ["/dev/sdb", "/dev/sdc", "/dev/sdd"]  # absolute, unique,
//	                             # in role order; at most 244
//	raid_spares = ["/dev/sde"]   # optional hot spares: absolute, unique, not
//	                             # members; one takes a failed member's slot
//	                             # and is rebuilt at raid_rebuild_rate
//	raid_chunk_size = "64KiB"    # power of two, 4KiB to 16MiB; default 64KiB
//	raid_copies = 2              # raid10 only: 2 to 64; default 2
//	raid_rebuild_rate = "100MiB" # bytes/s of rebuilds and scrubs; 0 is
//	                             # unlimited; default 100MiB
//	raid_bitmap_region = "64MiB" # array bytes per write-intent bit, a
//	                             # multiple of the stripe; set at creation;
//	                             # default 64MiB
//	raid_scrub_interval = "720h" # periodic check-only scrub (Debian's monthly
//	                             # checkarray): one interval after the last
//	                             # completed scrub, when the array is optimal
//	                             # and idle; "0" turns it off; 1s to 8760h;
//	                             # default 720h (30 days)
//	size = "10GiB"               # with raid_members: the size of each member
//	                             # file created when missing
//	                             # (the other volume keys apply as above)
//
//	[[hook]]             # zero or more: a program run on state changes
//	on = ["role", "split-brain"]  # required: event kinds (HookKinds) or
//	                     # ["*"] alone for every kind
//	command = ["/usr/local/bin/notify", "arg"]  # required: argv, no shell;
//	                     # command[0] absolute; the event comes in the
//	                     # environment (BLOCKREP_EVENT, _VOLUME, _PEER,
//	                     # _OLD, _NEW, _NODE, _DETAIL, _SEQ, _TIME)
//	timeout = "30s"      # 1s to 10m; the hook is killed after it
//
// # The cluster and the other tables
//
// With a [cluster] table the cluster decides which node is primary of each
// volume, so:
//   - volume.role is refused, and every volume's Role is "secondary" (no
//     volume starts as primary on its own); preferred_primary names the
//     node failover picks first, this node or a [[peer]];
//   - replication.continue_alone = true is refused: a lost peer is outdated
//     through the cluster's quorum instead;
//   - replication.cluster and replication.secret_file default to
//     cluster.name and cluster.secret_file (a value given is kept); the
//     data nodes still need [[peer]] tables and replication.listen, which
//     must differ from cluster.listen;
//   - a witness (kind = "witness") has no [[volume]] and no [[peer]] tables;
//   - if [[cluster.member]] tables are given, one of them must have this
//     node's node.name, and its address must be cluster.listen;
//   - failover_timeout must be at least three heartbeat intervals.
//
// Without [cluster], preferred_primary and failover are refused.
//
// The repository's docs/blockrepd.example.toml is a commented example.
package config
