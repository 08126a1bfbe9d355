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
//	[replication]        # optional; defaults apply when absent
//	cluster = "prod"     # required with peers; 1-63 of [a-z0-9-]; peers agree
//	secret_file = "/etc/blockrep/secret"  # required with peers; absolute
//	listen = "10.0.0.1:7789"  # required with peers; host:port, no unix:
//	protocol = "C"       # "A", "B" or "C" (default)
//	timeout = "2s"       # peer-loss detection; 100ms to 60s
//	connect_retry_max = "5s"  # reconnect backoff cap (from 100ms); 100ms to 10m
//	split_brain = "disconnect"  # or discard-zero-changes,
//	                     # discard-younger-primary, discard-older-primary,
//	                     # discard-least-changes
//	continue_alone = false  # UNSAFE without quorum: a primary keeps writing
//	                     # while its peer is unreachable
//	data_integrity = false  # CRC-32C of every replicated frame
//	bitmap_block_size = 4096  # power of two, 512 to 1GiB
//	al_extents = 1237    # 7 to 65534
//	al_extent_size = "4MiB"  # power of two, 1MiB to 1GiB
//	resync_rate = 0      # bytes per second; 0: the dynamic controller decides
//	secondary_nbd = "read-only"  # or "refuse"
//
//	[[peer]]             # zero or more; with peers this node replicates
//	name = "node2"       # required, unique; the peer's node.name, not ours
//	address = "10.0.0.2:7789"  # required, unique; the peer's
//	                     # replication.listen
//
//	[[volume]]                   # at least one
//	name = "vol0"                # required, unique; 1-64 of [A-Za-z0-9._-]
//	path = "/var/lib/blockrep/node1/vol0.img"  # required, unique, absolute;
//	                             # a file or a block device
//	size = "1GiB"                # optional: create a sparse file of this size
//	                             # when path is missing; an existing file must
//	                             # have this size; a multiple of block_size_min
//	read_only = false
//	tls = "optional"             # "optional" (default) or "required";
//	                             # "required" needs [nbd] tls_cert and tls_key
//	description = ""             # shown to NBD clients; at most 4096 bytes
//	block_size_min = 512         # power of two, 1 to 65536; default 512
//	block_size_preferred = 4096  # power of two >= min; default max(4096, min)
//	block_size_max = "32MiB"     # >= preferred, a multiple of min, <= 32MiB
//	multi_conn = true            # advertise NBD_FLAG_CAN_MULTI_CONN
//	role = "primary"             # "primary" or "secondary" at start; default
//	                             # "secondary" with peers, "primary" without
//
// The repository's docs/blockrepd.example.toml is a commented example.
package config
