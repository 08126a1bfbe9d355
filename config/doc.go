// Package config reads the TOML configuration of one blockrepd node.
//
// Parsing is strict: an unknown key, a value of the wrong type and a value out
// of range are all errors, and each error names the full key path (arrays of
// tables are numbered from 0, e.g. "volume.0.size"), the offending value and,
// when it can be found, the line. All problems of a file are reported at once.
//
// Sizes are a plain byte count (4096 or "4096") or a whole number with a
// binary suffix: "512KiB", "10GiB", "1 TiB". Decimal suffixes (KB, MB, GB,
// TB) are rejected rather than guessed. Every path must be absolute.
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
//
// The repository's docs/blockrepd.example.toml is a commented example.
package config
