package config

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/blockrep/blockrep/replica"
)

const minimal = `
[node]
name = "node1"
data_dir = "/var/lib/blockrep/node1"

[[volume]]
name = "vol0"
path = "/var/lib/blockrep/node1/vol0.img"
`

// replicationTable is a [replication] table with the keys required when
// peers exist, and onePeer a [[peer]] table that satisfies them.
const (
	replicationTable = `[replication]
cluster = "prod"
secret_file = "/etc/blockrep/secret"
listen = "10.0.0.1:7789"
`
	onePeer = `
[[peer]]
name = "node2"
address = "10.0.0.2:7789"
`
)

// defaultReplication is the [replication] table as Parse fills it in when
// no key is given.
func defaultReplication() Replication {
	return Replication{
		Protocol:        "C",
		Timeout:         2 * time.Second,
		ConnectRetryMax: 5 * time.Second,
		SplitBrain:      replica.PolicyDisconnect,
		BitmapBlockSize: 4096,
		ALExtents:       1237,
		ALExtentSize:    4 * MiB,
		SecondaryNBD:    "read-only",
		OnIOError:       "detach",
		Security:        SecurityMAC,
	}
}

func TestParseGood(t *testing.T) {
	tests := []struct {
		name string
		toml string
		want func(c *Config) // adjusts the defaults of minimal to the expected value
	}{
		{"minimal", minimal, func(c *Config) {}},
		{"role defaults to primary without peers", minimal, func(c *Config) { c.Volumes[0].Role = "primary" }},
		{"full", `
[node]
name = "node-2"
data_dir = "/var/lib/blockrep/node2/"
control_socket = "/run/blockrep/node2.sock"

[nbd]
listen = ["[::1]:10809", ":10810", "unix:/run/blockrep/nbd.sock"]
tls_cert = "/etc/blockrep/cert.pem"
tls_key = "/etc/blockrep/key.pem"
tls_client_ca = "/etc/blockrep/ca.pem"
max_inflight = "64MiB"
max_connections = 10
default_export = "b"
max_inflight_per_client = "32MiB"
reply_timeout = "5s"
handshake_timeout = "2s"
handshakes_per_address = 4

[[volume]]
name = "a"
path = "/dev/sdb"
read_only = true
tls = "required"
description = "the a volume"
block_size_min = 4096
block_size_max = 1048576
multi_conn = false

[[volume]]
name = "b"
path = "/srv/b.img"
size = "10 GiB"
block_size_min = "1KiB"
block_size_preferred = 65536
block_size_max = "32MiB"
`, func(c *Config) {
			*c = Config{
				Node: Node{Name: "node-2", DataDir: "/var/lib/blockrep/node2", ControlSocket: "/run/blockrep/node2.sock"},
				NBD: NBD{
					Listen: []Listener{
						{"tcp", "[::1]:10809"}, {"tcp", ":10810"}, {"unix", "/run/blockrep/nbd.sock"},
					},
					TLSCert: "/etc/blockrep/cert.pem", TLSKey: "/etc/blockrep/key.pem", TLSClientCA: "/etc/blockrep/ca.pem",
					MaxInFlight: 64 * MiB, MaxConnections: 10, DefaultExport: "b",
					MaxInFlightPerClient: 32 * MiB, ReplyTimeout: 5 * time.Second, HandshakeTimeout: 2 * time.Second, HandshakesPerAddress: 4,
				},
				Replication: defaultReplication(),
				Volumes: []Volume{
					{Name: "a", Path: "/dev/sdb", ReadOnly: true, TLS: TLSRequired, Description: "the a volume",
						BlockSizeMin: 4096, BlockSizePreferred: 4096, BlockSizeMax: mib32(1), Role: "primary"},
					{Name: "b", Path: "/srv/b.img", Size: 10 * GiB, TLS: TLSOptional,
						BlockSizeMin: 1024, BlockSizePreferred: 65536, BlockSizeMax: mib32(32), MultiConn: true, Role: "primary"},
				},
			}
		}},
		{"two volumes have no default export", minimal + `
[[volume]]
name = "vol1"
path = "/var/lib/blockrep/node1/vol1.img"
`, func(c *Config) {
			c.NBD.DefaultExport = ""
			v := c.Volumes[0]
			v.Name, v.Path = "vol1", "/var/lib/blockrep/node1/vol1.img"
			c.Volumes = append(c.Volumes, v)
		}},
		{"preferred defaults to min when min is larger", strings.Replace(minimal, `name = "vol0"`, `name = "vol0"
block_size_min = 65536`, 1), func(c *Config) {
			c.Volumes[0].BlockSizeMin, c.Volumes[0].BlockSizePreferred = 65536, 65536
		}},
		{"integer size and inline volume table", `
node = { name = "n", data_dir = "/d" }
volume = [{ name = "v", path = "/v.img", size = 1048576 }]
`, func(c *Config) {
			c.Node = Node{Name: "n", DataDir: "/d", ControlSocket: "/d/control.sock"}
			c.Volumes[0].Name, c.Volumes[0].Path, c.Volumes[0].Size = "v", "/v.img", MiB
			c.NBD.DefaultExport = "v"
		}},
		{"tls optional with tls configured", minimal + `
[nbd]
tls_cert = "/c.pem"
tls_key = "/k.pem"
`, func(c *Config) { c.NBD.TLSCert, c.NBD.TLSKey = "/c.pem", "/k.pem" }},
		{"port 0", minimal + "[nbd]\nlisten = [\"127.0.0.1:0\"]\n", func(c *Config) {
			c.NBD.Listen = []Listener{{"tcp", "127.0.0.1:0"}}
		}},
		{"role defaults to secondary with peers", minimal + replicationTable + onePeer, func(c *Config) {
			c.Replication.Cluster, c.Replication.SecretFile, c.Replication.Listen = "prod", "/etc/blockrep/secret", "10.0.0.1:7789"
			c.Peers = []Peer{{Name: "node2", Address: "10.0.0.2:7789"}}
			c.Volumes[0].Role = RoleSecondary
		}},
		{"every replication key", strings.Replace(minimal, `name = "vol0"`, `name = "vol0"
role = "primary"`, 1) + `
[[volume]]
name = "vol1"
path = "/srv/vol1.img"

[replication]
cluster = "prod-1"
secret_file = "/etc/blockrep/../blockrep/secret"
listen = ":7789"
protocol = "A"
timeout = "500ms"
connect_retry_max = "1m30s"
split_brain = "discard-least-changes"
continue_alone = true
data_integrity = true
bitmap_block_size = "64KiB"
al_extents = 100
al_extent_size = "16MiB"
resync_rate = "100MiB"
secondary_nbd = "refuse"
on_io_error = "pass_on"

[[peer]]
name = "node2"
address = "10.0.0.2:7789"

[[peer]]
name = "node-3"
address = "[fd00::3]:7790"
`, func(c *Config) {
			c.Replication = Replication{
				Cluster: "prod-1", SecretFile: "/etc/blockrep/secret", Listen: ":7789",
				Protocol: "A", Timeout: 500 * time.Millisecond, ConnectRetryMax: 90 * time.Second,
				SplitBrain: replica.PolicyDiscardLeastChanges, ContinueAlone: true, DataIntegrity: true,
				BitmapBlockSize: 64 * KiB, ALExtents: 100, ALExtentSize: 16 * MiB, ResyncRate: 100 * MiB,
				SecondaryNBD: "refuse", OnIOError: "pass_on", Security: SecurityMAC,
			}
			c.Peers = []Peer{{Name: "node2", Address: "10.0.0.2:7789"}, {Name: "node-3", Address: "[fd00::3]:7790"}}
			v := c.Volumes[0]
			v.Name, v.Path, v.Role = "vol1", "/srv/vol1.img", RoleSecondary
			c.Volumes = append(c.Volumes, v)
			c.NBD.DefaultExport = ""
		}},
		{"replication lower bounds", minimal + `[replication]
protocol = "B"
timeout = "100ms"
connect_retry_max = "100ms"
split_brain = "discard-zero-changes"
bitmap_block_size = 512
al_extents = 7
al_extent_size = "1MiB"
`, func(c *Config) {
			r := &c.Replication
			r.Protocol, r.Timeout, r.ConnectRetryMax = ProtocolB, 100*time.Millisecond, 100*time.Millisecond
			r.SplitBrain, r.BitmapBlockSize, r.ALExtents, r.ALExtentSize = replica.PolicyDiscardZeroChanges, 512, 7, MiB
		}},
		{"replication upper bounds", minimal + `[replication]
protocol = "C"
timeout = "1m"
connect_retry_max = "10m"
split_brain = "disconnect"
bitmap_block_size = "1GiB"
al_extents = 65534
al_extent_size = "1GiB"
`, func(c *Config) {
			r := &c.Replication
			r.Timeout, r.ConnectRetryMax = time.Minute, 10*time.Minute
			r.BitmapBlockSize, r.ALExtents, r.ALExtentSize = GiB, 65534, GiB
		}},
		{"replication table without peers requires nothing", minimal + "[replication]\nsecondary_nbd = \"refuse\"\n", func(c *Config) {
			c.Replication.SecondaryNBD = SecondaryRefuse
		}},
		{"secondary without peers", strings.Replace(minimal, `name = "vol0"`, "name = \"vol0\"\nrole = \"secondary\"", 1), func(c *Config) {
			c.Volumes[0].Role = RoleSecondary
		}},
		{"read-only primary with peers", strings.Replace(minimal, `name = "vol0"`, "name = \"vol0\"\nrole = \"primary\"\nread_only = true", 1) + replicationTable + onePeer, func(c *Config) {
			c.Replication.Cluster, c.Replication.SecretFile, c.Replication.Listen = "prod", "/etc/blockrep/secret", "10.0.0.1:7789"
			c.Peers = []Peer{{Name: "node2", Address: "10.0.0.2:7789"}}
			c.Volumes[0].Role, c.Volumes[0].ReadOnly = RolePrimary, true
		}},
		{"replication listen port 0", minimal + strings.Replace(replicationTable, "10.0.0.1:7789", "127.0.0.1:0", 1) + onePeer, func(c *Config) {
			c.Replication.Cluster, c.Replication.SecretFile, c.Replication.Listen = "prod", "/etc/blockrep/secret", "127.0.0.1:0"
			c.Peers = []Peer{{Name: "node2", Address: "10.0.0.2:7789"}}
			c.Volumes[0].Role = RoleSecondary
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Parse([]byte(tt.toml), "test.toml")
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			want := &Config{
				Source: "test.toml",
				Node:   Node{Name: "node1", DataDir: "/var/lib/blockrep/node1", ControlSocket: "/var/lib/blockrep/node1/control.sock"},
				NBD: NBD{
					Listen:         []Listener{{"tcp", "127.0.0.1:10809"}},
					MaxInFlight:    256 * MiB,
					MaxConnections: DefaultMaxConnections,
					DefaultExport:  "vol0",
					ReplyTimeout:   DefaultReplyTimeout, HandshakeTimeout: DefaultHandshakeTimeout, HandshakesPerAddress: DefaultHandshakesPerAddress,
				},
				Replication: defaultReplication(),
				Volumes: []Volume{{
					Name: "vol0", Path: "/var/lib/blockrep/node1/vol0.img", TLS: TLSOptional,
					BlockSizeMin: 512, BlockSizePreferred: 4096, BlockSizeMax: mib32(32), MultiConn: true,
					Role: "primary",
				}},
			}
			tt.want(want)
			want.Source = "test.toml"
			if !reflect.DeepEqual(got, want) {
				t.Errorf("got  %+v\nwant %+v", got, want)
			}
		})
	}
}

// mib32 returns n MiB as a uint32, for block sizes in tests.
func mib32(n uint32) uint32 { return n << 20 }

func TestParseBad(t *testing.T) {
	vol := func(extra string) string {
		return strings.Replace(minimal, `name = "vol0"`, `name = "vol0"`+"\n"+extra, 1)
	}
	// repl puts extra in the [replication] table (from line 13) of a
	// configuration with one peer (peer.0, node2); peers adds peer tables
	// after it (peer.1 from line 18).
	repl := func(extra string) string {
		return minimal + replicationTable + extra + "\n" + onePeer
	}
	peers := func(extra string) string { return repl("") + extra }
	without := func(key string) string {
		return minimal + regexp.MustCompile(`(?m)^`+key+` = .*\n`).ReplaceAllString(replicationTable, "") + onePeer
	}
	tests := []struct {
		name string
		toml string
		want []string // substrings of the error, in order
	}{
		{"syntax", "[node]\nname = \n", []string{"config test.toml: line 2: invalid TOML: column"}},
		{"unknown volume key", vol(`sise = "1GiB"`), []string{`config test.toml: line 8: unknown key "volume.0.sise"`}},
		{"unknown key in second volume", minimal + "[[volume]]\nname = \"b\"\npath = \"/b\"\nbogus = 1\n",
			[]string{`line 12: unknown key "volume.1.bogus"`}},
		{"unknown top-level table", minimal + "[extra]\nz = 1\n", []string{`line 9: unknown key "extra"`}},
		{"unknown node key", strings.Replace(minimal, "[node]", "[node]\nnmae = \"x\"", 1), []string{`line 3: unknown key "node.nmae"`}},
		{"unknown dotted key", vol(`x.y = 1`), []string{`line 8: unknown key "volume.0.x"`}},
		{"unknown key in inline table", "node = { name = \"n\", data_dir = \"/d\", foo = 1 }\n[[volume]]\nname=\"v\"\npath=\"/v\"\n",
			[]string{`line 1: unknown key "node.foo"`}},
		{"missing node", "[[volume]]\nname = \"v\"\npath = \"/v\"\n", []string{"missing [node] table"}},
		{"node not a table", "node = \"x\"\n[[volume]]\nname = \"v\"\npath = \"/v\"\n", []string{`line 1: node: want a table ([node]), got string "x"`}},
		{"missing node name", strings.Replace(minimal, `name = "node1"`, "", 1), []string{"node.name is required"}},
		{"bad node name", strings.Replace(minimal, `"node1"`, `"Node_1"`, 1), []string{`line 3: node.name "Node_1" is invalid`}},
		{"node name wrong type", strings.Replace(minimal, `"node1"`, `7`, 1), []string{`node.name: want a string, got integer 7`}},
		{"missing data_dir", strings.Replace(minimal, `data_dir = "/var/lib/blockrep/node1"`, "", 1), []string{"node.data_dir is required"}},
		{"relative data_dir", strings.Replace(minimal, `"/var/lib/blockrep/node1"`, `"var/lib"`, 1), []string{`node.data_dir: "var/lib" is a relative path`}},
		{"relative control socket", strings.Replace(minimal, "[node]", "[node]\ncontrol_socket = \"x.sock\"", 1), []string{`node.control_socket: "x.sock" is a relative path`}},
		{"long control socket", strings.Replace(minimal, "[node]", "[node]\ncontrol_socket = \"/"+strings.Repeat("s", 120)+"\"", 1), []string{`node.control_socket: socket path`, "longer than the 107"}},
		{"no volumes", "[node]\nname = \"n\"\ndata_dir = \"/d\"\n", []string{"no volumes: at least one [[volume]]"}},
		{"volume not array of tables", "volume = 3\n[node]\nname = \"n\"\ndata_dir = \"/d\"\n", []string{"volume: want an array of tables ([[volume]]), got integer 3"}},
		{"volume missing name", strings.Replace(minimal, `name = "vol0"`, "", 1), []string{"volume.0.name is required"}},
		{"volume bad name", strings.Replace(minimal, `"vol0"`, `"vol 0"`, 1), []string{`line 7: volume.0.name: "vol 0" is invalid`}},
		{"volume name dotdot", strings.Replace(minimal, `"vol0"`, `".."`, 1), []string{`volume.0.name: ".." is invalid`}},
		{"volume name reserved", strings.Replace(minimal, `"vol0"`, `"_"`, 1), []string{`volume.0.name: "_" is reserved`}},
		{"volume missing path", strings.Replace(minimal, `path = "/var/lib/blockrep/node1/vol0.img"`, "", 1), []string{"volume.0.path is required"}},
		{"volume relative path", strings.Replace(minimal, `"/var/lib/blockrep/node1/vol0.img"`, `"vol0.img"`, 1), []string{`line 8: volume.0.path: "vol0.img" is a relative path`}},
		{"duplicate volume name", minimal + "[[volume]]\nname = \"vol0\"\npath = \"/other\"\n", []string{`line 10: volume.1.name: "vol0" is also the name of volume.0`}},
		{"duplicate volume path", minimal + "[[volume]]\nname = \"vol1\"\npath = \"/var/lib/blockrep/node1/../node1/vol0.img\"\n",
			[]string{`volume.1.path: "/var/lib/blockrep/node1/vol0.img" is also the path of volume.0 (vol0)`}},
		{"decimal size", vol(`size = "1TB"`), []string{`line 8: volume.0.size: invalid size "1TB"`, "KiB, MiB, GiB or TiB"}},
		{"fractional size", vol(`size = "1.5GiB"`), []string{`volume.0.size: invalid size "1.5GiB"`}},
		{"float size", vol(`size = 1.5`), []string{`volume.0.size: want a size (4096 or "10GiB"), got float 1.5`}},
		{"negative size", vol(`size = -4096`), []string{`volume.0.size: size -4096 is negative`}},
		{"zero size", vol(`size = 0`), []string{`volume.0.size must be positive`}},
		{"size not multiple of min", vol(`size = 1000`), []string{`volume.0.size 1000 is not a multiple of block_size_min 512`}},
		{"huge size", vol(`size = "9999999999TiB"`), []string{`volume.0.size: invalid size "9999999999TiB": too large`}},
		{"read_only string", vol(`read_only = "yes"`), []string{`volume.0.read_only: want true or false, got string "yes"`}},
		{"bad tls", vol(`tls = "off"`), []string{`volume.0.tls: "off" is not one of "optional", "required"`}},
		{"tls required without cert", vol(`tls = "required"`), []string{`volume.0.tls is "required" but nbd.tls_cert is not set`}},
		{"block_size_min not pow2", vol(`block_size_min = 1000`), []string{`volume.0.block_size_min: 1000 is not a power of two from 1 to 65536`}},
		{"block_size_min too big", vol(`block_size_min = 131072`), []string{`volume.0.block_size_min: 131072 is not a power of two`}},
		{"preferred below min", vol("block_size_min = 8192\nblock_size_preferred = 4096"), []string{`volume.0.block_size_preferred 4096 is smaller than block_size_min 8192`}},
		{"preferred not pow2", vol(`block_size_preferred = 5000`), []string{`volume.0.block_size_preferred: 5000 is not a power of two`}},
		{"max too big", vol(`block_size_max = "64MiB"`), []string{`volume.0.block_size_max 64MiB is out of range: at most 32MiB`}},
		{"max below preferred", vol(`block_size_max = 2048`), []string{`volume.0.block_size_max 2KiB is smaller than block_size_preferred 4KiB`}},
		{"max not multiple of min", vol("block_size_min = 4096\nblock_size_max = 1050000"), []string{`volume.0.block_size_max 1050000 is not a multiple of block_size_min 4096`}},
		{"description too long", vol(`description = "` + strings.Repeat("d", 5000) + `"`), []string{`volume.0.description is 5000 bytes`}},
		{"listen empty", minimal + "[nbd]\nlisten = []\n", []string{`nbd.listen is empty`}},
		{"listen bad address", minimal + "[nbd]\nlisten = [\"localhost\"]\n", []string{`line 10: nbd.listen: address "localhost": want host:port or unix:/path`}},
		{"listen bad port", minimal + "[nbd]\nlisten = [\"localhost:nbd\"]\n", []string{`nbd.listen: address "localhost:nbd": port "nbd" is not a number`}},
		{"listen relative unix", minimal + "[nbd]\nlisten = [\"unix:nbd.sock\"]\n", []string{`nbd.listen: unix socket "unix:nbd.sock": the path must be absolute`}},
		{"listen duplicate", minimal + "[nbd]\nlisten = [\"unix:/a\", \"unix:/a/\"]\n", []string{`nbd.listen: "unix:/a/" is listed twice (entries 0 and 1)`}},
		{"listen not strings", minimal + "[nbd]\nlisten = [10809]\n", []string{`nbd.listen.0: want a string, got integer 10809`}},
		{"listen not array", minimal + "[nbd]\nlisten = \"127.0.0.1:10809\"\n", []string{`nbd.listen: want an array of strings, got string "127.0.0.1:10809"`}},
		{"cert without key", minimal + "[nbd]\ntls_cert = \"/c.pem\"\n", []string{`nbd.tls_cert is set but nbd.tls_key is not`}},
		{"key without cert", minimal + "[nbd]\ntls_key = \"/k.pem\"\n", []string{`nbd.tls_key is set but nbd.tls_cert is not`}},
		{"client ca without cert", minimal + "[nbd]\ntls_client_ca = \"/ca.pem\"\n", []string{`nbd.tls_client_ca is set but nbd.tls_cert is not`}},
		{"relative cert", minimal + "[nbd]\ntls_cert = \"c.pem\"\ntls_key = \"/k.pem\"\n", []string{`nbd.tls_cert: "c.pem" is a relative path`}},
		{"max_inflight too small", minimal + "[nbd]\nmax_inflight = \"16MiB\"\n", []string{`line 10: nbd.max_inflight 16MiB is too small: at least 32MiB`}},
		{"max_connections zero", minimal + "[nbd]\nmax_connections = 0\n", []string{`line 10: nbd.max_connections: 0 is out of range: want 1 to 65536`}},
		{"max_inflight_per_client too small", minimal + "[nbd]\nmax_inflight_per_client = \"16MiB\"\n", []string{`line 10: nbd.max_inflight_per_client 16MiB is too small: at least 32MiB`}},
		{"max_inflight_per_client above max_inflight", minimal + "[nbd]\nmax_inflight = \"64MiB\"\nmax_inflight_per_client = \"128MiB\"\n", []string{`nbd.max_inflight_per_client 128MiB is larger than nbd.max_inflight 64MiB`}},
		{"reply_timeout zero", minimal + "[nbd]\nreply_timeout = \"0s\"\n", []string{`nbd.reply_timeout: "0s" is out of range: want 100ms to 1h`}},
		{"handshake_timeout too long", minimal + "[nbd]\nhandshake_timeout = \"1h\"\n", []string{`nbd.handshake_timeout: "1h" is out of range: want 100ms to 10m`}},
		{"handshakes_per_address zero", minimal + "[nbd]\nhandshakes_per_address = 0\n", []string{`nbd.handshakes_per_address: 0 is out of range: want 1 to 65536`}},
		{"max_connections not an integer", minimal + "[nbd]\nmax_connections = \"many\"\n", []string{`nbd.max_connections: want an integer, got string "many"`}},
		{"max_inflight not a size", minimal + "[nbd]\nmax_inflight = true\n", []string{`nbd.max_inflight: want a size (4096 or "10GiB"), got boolean true`}},
		{"nbd socket is the control socket", minimal + "[nbd]\nlisten = [\"unix:/var/lib/blockrep/node1/control.sock\"]\n",
			[]string{`nbd.listen: "unix:/var/lib/blockrep/node1/control.sock" is also node.control_socket`}},
		{"unknown default export", minimal + "[nbd]\ndefault_export = \"vol9\"\n", []string{`line 10: nbd.default_export "vol9" is not a volume (volumes: vol0)`}},
		{"several problems", vol("sise = 1\ntls = \"maybe\""), []string{`unknown key "volume.0.sise"`, "\n", `volume.0.tls: "maybe"`}},

		{"bad role", vol(`role = "master"`), []string{`line 8: volume.0.role: "master" is not one of "primary", "secondary"`}},
		{"empty role", vol(`role = ""`), []string{`volume.0.role: "" is not one of "primary", "secondary"`}},
		{"role not a string", vol(`role = 1`), []string{`volume.0.role: want one of "primary", "secondary", got integer 1`}},

		{"missing cluster with peers", without("cluster"), []string{`replication.cluster is required when [[peer]] tables are configured`}},
		{"missing secret_file with peers", without("secret_file"), []string{`replication.secret_file is required when [[peer]] tables are configured`}},
		{"missing listen with peers", without("listen"), []string{`replication.listen is required when [[peer]] tables are configured`}},
		{"missing replication table with peers", minimal + onePeer, []string{
			"replication.cluster is required", "\n", "replication.secret_file is required", "\n", "replication.listen is required"}},
		{"empty listen with peers", strings.Replace(repl(""), `"10.0.0.1:7789"`, `""`, 1), []string{`line 12: replication.listen is required when [[peer]] tables are configured`}},
		{"replication not a table", "replication = 1\n" + minimal, []string{`line 1: replication: want a table ([replication]), got integer 1`}},
		{"unknown replication key", repl(`protocl = "C"`), []string{`line 13: unknown key "replication.protocl"`}},
		{"bad cluster", strings.Replace(repl(""), `"prod"`, `"Prod_1"`, 1), []string{`line 10: replication.cluster: "Prod_1" is invalid: use 1 to 63 of a-z, 0-9 and -`}},
		{"relative secret_file", strings.Replace(repl(""), `"/etc/blockrep/secret"`, `"secret"`, 1), []string{`line 11: replication.secret_file: "secret" is a relative path`}},
		{"listen unix", strings.Replace(repl(""), `"10.0.0.1:7789"`, `"unix:/run/blockrep/peer.sock"`, 1), []string{`line 12: replication.listen: "unix:/run/blockrep/peer.sock" is a unix socket: the peer link is TCP only`}},
		{"listen not host:port", strings.Replace(repl(""), `"10.0.0.1:7789"`, `"10.0.0.1"`, 1), []string{`replication.listen: address "10.0.0.1": want host:port`}},
		{"listen bad port", strings.Replace(repl(""), `"10.0.0.1:7789"`, `"10.0.0.1:70000"`, 1), []string{`replication.listen: address "10.0.0.1:70000": port "70000" is not a number from 0 to 65535`}},
		{"listen is an nbd address", repl("") + "[nbd]\nlisten = [\"127.0.0.1:10809\", \"10.0.0.1:7789\"]\n",
			[]string{`line 12: replication.listen: "10.0.0.1:7789" is also nbd.listen entry 1`}},
		{"bad protocol", repl(`protocol = "D"`), []string{`line 13: replication.protocol: "D" is not one of "A", "B", "C"`}},
		{"lower-case protocol", repl(`protocol = "c"`), []string{`replication.protocol: "c" is not one of "A", "B", "C"`}},
		{"protocol not a string", repl(`protocol = 3`), []string{`replication.protocol: want one of "A", "B", "C", got integer 3`}},
		{"bad split_brain", repl(`split_brain = "discard-newest"`), []string{`line 13: replication.split_brain: unknown split-brain policy "discard-newest"`,
			"allowed: disconnect, discard-zero-changes, discard-younger-primary, discard-older-primary, discard-least-changes"}},
		{"empty split_brain", repl(`split_brain = ""`), []string{`replication.split_brain: unknown split-brain policy ""`}},
		{"split_brain not a string", repl(`split_brain = false`), []string{`replication.split_brain: want a string, got boolean false`}},
		{"timeout too short", repl(`timeout = "50ms"`), []string{`line 13: replication.timeout: "50ms" is out of range: want 100ms to 1m`}},
		{"timeout too long", repl(`timeout = "61s"`), []string{`replication.timeout: "61s" is out of range: want 100ms to 1m`}},
		{"timeout negative", repl(`timeout = "-2s"`), []string{`replication.timeout: "-2s" is out of range`}},
		{"timeout integer", repl(`timeout = 2`), []string{`line 13: replication.timeout: integer 2 has no unit: write a duration string such as "2s"`}},
		{"timeout without unit", repl(`timeout = "2"`), []string{`replication.timeout: invalid duration "2": want a number with a unit`}},
		{"timeout words", repl(`timeout = "2 seconds"`), []string{`replication.timeout: invalid duration "2 seconds"`}},
		{"timeout float", repl(`timeout = 2.5`), []string{`replication.timeout: want a duration ("2s" or "500ms"), got float 2.5`}},
		{"connect_retry_max too long", repl(`connect_retry_max = "11m"`), []string{`replication.connect_retry_max: "11m" is out of range: want 100ms to 10m`}},
		{"connect_retry_max too short", repl(`connect_retry_max = "10ms"`), []string{`replication.connect_retry_max: "10ms" is out of range: want 100ms to 10m`}},
		{"connect_retry_max integer", repl(`connect_retry_max = 5`), []string{`replication.connect_retry_max: integer 5 has no unit`}},
		{"continue_alone not a boolean", repl(`continue_alone = "yes"`), []string{`replication.continue_alone: want true or false, got string "yes"`}},
		{"data_integrity not a boolean", repl(`data_integrity = 1`), []string{`replication.data_integrity: want true or false, got integer 1`}},
		{"unknown security", repl(`security = "hmac"`), []string{`line 13: replication.security: "hmac" is not one of "mac", "tls", "none"`}},
		{"tls without files", repl(`security = "tls"`), []string{`replication.tls_cert is required with replication.security = "tls"`,
			`replication.tls_key is required with replication.security = "tls"`, `replication.tls_ca is required with replication.security = "tls"`}},
		{"tls file without tls", repl(`tls_ca = "/etc/blockrep/ca.crt"`), []string{`line 13: replication.tls_ca is used only with replication.security = "tls" (it is "mac")`}},
		{"relative tls file", repl("security = \"tls\"\ntls_cert = \"n1.crt\"\ntls_key = \"/k\"\ntls_ca = \"/ca\""),
			[]string{`replication.tls_cert: "n1.crt" is a relative path: give an absolute path`}},
		{"bitmap_block_size not pow2", repl(`bitmap_block_size = 3000`), []string{`line 13: replication.bitmap_block_size: 3000 is not a power of two from 512 to 1GiB`}},
		{"bitmap_block_size too small", repl(`bitmap_block_size = 256`), []string{`replication.bitmap_block_size: 256 is not a power of two from 512 to 1GiB`}},
		{"bitmap_block_size too big", repl(`bitmap_block_size = "2GiB"`), []string{`replication.bitmap_block_size: 2GiB is not a power of two from 512 to 1GiB`}},
		{"bitmap_block_size zero", repl(`bitmap_block_size = 0`), []string{`replication.bitmap_block_size: 0 is not a power of two`}},
		{"bitmap_block_size decimal suffix", repl(`bitmap_block_size = "4KB"`), []string{`replication.bitmap_block_size: invalid size "4KB"`}},
		{"al_extents too few", repl(`al_extents = 6`), []string{`line 13: replication.al_extents: 6 is out of range: want 7 to 65534`}},
		{"al_extents too many", repl(`al_extents = 65535`), []string{`replication.al_extents: 65535 is out of range: want 7 to 65534`}},
		{"al_extents not an integer", repl(`al_extents = "1237"`), []string{`replication.al_extents: want an integer, got string "1237"`}},
		{"al_extent_size too small", repl(`al_extent_size = "512KiB"`), []string{`line 13: replication.al_extent_size: 512KiB is not a power of two from 1MiB to 1GiB`}},
		{"al_extent_size not pow2", repl(`al_extent_size = "3MiB"`), []string{`replication.al_extent_size: 3MiB is not a power of two from 1MiB to 1GiB`}},
		{"al_extent_size too big", repl(`al_extent_size = "2GiB"`), []string{`replication.al_extent_size: 2GiB is not a power of two from 1MiB to 1GiB`}},
		{"resync_rate negative", repl(`resync_rate = -1`), []string{`replication.resync_rate: size -1 is negative`}},
		{"resync_rate bad size", repl(`resync_rate = "100MB/s"`), []string{`replication.resync_rate: invalid size "100MB/s"`}},
		{"bad secondary_nbd", repl(`secondary_nbd = "readonly"`), []string{`line 13: replication.secondary_nbd: "readonly" is not one of "read-only", "refuse"`}},
		{"bad on_io_error", repl(`on_io_error = "detatch"`), []string{`line 13: replication.on_io_error: "detatch" is not one of "detach", "pass_on"`}},
		{"bad value without peers", minimal + "[replication]\nprotocol = \"D\"\n", []string{`line 10: replication.protocol: "D" is not one of`}},

		{"peer not an array of tables", "peer = \"node2\"\n" + minimal, []string{`line 1: peer: want an array of tables ([[peer]]), got string "node2"`}},
		{"unknown peer key", peers("[[peer]]\nname = \"node3\"\naddress = \"10.0.0.3:7789\"\nport = 7789\n"), []string{`line 21: unknown key "peer.1.port"`}},
		{"peer missing name", peers("[[peer]]\naddress = \"10.0.0.3:7789\"\n"), []string{`peer.1.name is required (the peer's node.name)`}},
		{"peer bad name", peers("[[peer]]\nname = \"Node3\"\naddress = \"10.0.0.3:7789\"\n"), []string{`line 19: peer.1.name: "Node3" is invalid: use 1 to 63 of a-z, 0-9 and -`}},
		{"peer missing address", peers("[[peer]]\nname = \"node3\"\n"), []string{`peer.1.address is required (the host:port of the peer's replication.listen)`}},
		{"peer name is node.name", peers("[[peer]]\nname = \"node1\"\naddress = \"10.0.0.3:7789\"\n"), []string{`line 19: peer.1.name: "node1" is this node's node.name: a peer is another node`}},
		{"duplicate peer name", peers("[[peer]]\nname = \"node2\"\naddress = \"10.0.0.3:7789\"\n"), []string{`line 19: peer.1.name: "node2" is also the name of peer.0`}},
		{"duplicate peer address", peers("[[peer]]\nname = \"node3\"\naddress = \"10.0.0.2:7789\"\n"), []string{`line 20: peer.1.address: "10.0.0.2:7789" is also the address of peer.0 (node2)`}},
		{"peer address is our listen", peers("[[peer]]\nname = \"node3\"\naddress = \"10.0.0.1:7789\"\n"), []string{`peer.1.address: "10.0.0.1:7789" is this node's replication.listen`}},
		{"peer address not host:port", peers("[[peer]]\nname = \"node3\"\naddress = \"node3\"\n"), []string{`line 20: peer.1.address: address "node3": want host:port`}},
		{"peer address without host", peers("[[peer]]\nname = \"node3\"\naddress = \":7789\"\n"), []string{`peer.1.address: address ":7789": the host is missing`}},
		{"peer address port 0", peers("[[peer]]\nname = \"node3\"\naddress = \"node3:0\"\n"), []string{`peer.1.address: address "node3:0": port "0" is not a number from 1 to 65535`}},
		{"peer address bad port", peers("[[peer]]\nname = \"node3\"\naddress = \"node3:drbd\"\n"), []string{`peer.1.address: address "node3:drbd": port "drbd" is not a number from 1 to 65535`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, err := Parse([]byte(tt.toml), "test.toml")
			if err == nil {
				t.Fatalf("Parse succeeded: %+v", cfg)
			}
			msg := err.Error()
			rest := msg
			for _, w := range tt.want {
				i := strings.Index(rest, w)
				if i < 0 {
					t.Fatalf("error %q\ndoes not contain %q (in order)", msg, w)
				}
				rest = rest[i+len(w):]
			}
			var ce *Error
			if !errors.As(err, &ce) || ce.File != "test.toml" {
				t.Errorf("error is not a *config.Error for test.toml: %#v", err)
			}
		})
	}
}

func TestErrorKeyAndLine(t *testing.T) {
	_, err := Parse([]byte(minimal+"[[volume]]\nname = \"b\"\npath = \"/b\"\nsize = \"3GB\"\n"), "x.toml")
	var ce *Error
	if !errors.As(err, &ce) {
		t.Fatalf("not a *Error: %v", err)
	}
	if ce.Key != "volume.1.size" || ce.Line != 12 {
		t.Errorf("Key %q Line %d, want volume.1.size line 12", ce.Key, ce.Line)
	}
}

func TestLoad(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "n.toml")
	if err := os.WriteFile(p, []byte(minimal), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := Load(p)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Source != p || cfg.Node.Name != "node1" {
		t.Errorf("Load: %+v", cfg)
	}
	_, err = Load(filepath.Join(dir, "missing.toml"))
	if err == nil || !strings.Contains(err.Error(), "missing.toml: cannot read") {
		t.Errorf("Load missing: %v", err)
	}
}

func TestExampleFileParses(t *testing.T) {
	cfg, err := Load("../docs/blockrepd.example.toml")
	if err != nil {
		t.Fatal(err)
	}
	if len(cfg.Volumes) != 2 || cfg.Volumes[0].Size != GiB || !cfg.Volumes[1].ReadOnly {
		t.Errorf("example: %+v", cfg)
	}
	if got := cfg.NBD.Listen[1]; got != (Listener{"unix", "/run/blockrep/node1-nbd.sock"}) {
		t.Errorf("listen[1] = %+v", got)
	}
	// The example is a standalone node: replication stays commented out.
	if cfg.Replicated() || cfg.Volumes[0].Role != RolePrimary || cfg.Replication != defaultReplication() {
		t.Errorf("example is not standalone: %+v %+v %+v", cfg.Peers, cfg.Replication, cfg.Volumes)
	}
}

// TestExampleReplicationParses uncomments the example's replication
// settings, the lines where "#" is directly followed by a key or a table
// header, and checks that they parse to what they document.
func TestExampleReplicationParses(t *testing.T) {
	data, err := os.ReadFile("../docs/blockrepd.example.toml")
	if err != nil {
		t.Fatal(err)
	}
	uncommented := regexp.MustCompile(`(?m)^#([a-z\[])`).ReplaceAll(data, []byte("$1"))
	cfg, err := Parse(uncommented, "example")
	if err != nil {
		t.Fatal(err)
	}
	want := defaultReplication()
	want.Cluster, want.SecretFile, want.Listen = "prod", "/etc/blockrep/cluster.secret", "10.0.0.1:7789"
	if cfg.Replication != want {
		t.Errorf("replication = %+v\nwant %+v", cfg.Replication, want)
	}
	wantPeers := []Peer{{"node2", "10.0.0.2:7789"}, {"node3", "10.0.0.3:7789"}}
	if !reflect.DeepEqual(cfg.Peers, wantPeers) {
		t.Errorf("peers = %+v, want %+v", cfg.Peers, wantPeers)
	}
	if got := [2]Role{cfg.Volumes[0].Role, cfg.Volumes[1].Role}; got != [2]Role{RolePrimary, RoleSecondary} {
		t.Errorf("roles = %v, want [primary secondary]", got)
	}
}

func TestReplicated(t *testing.T) {
	for _, tt := range []struct {
		toml string
		want bool
	}{
		{minimal, false},
		{minimal + "[replication]\nprotocol = \"A\"\n", false},
		{minimal + replicationTable + onePeer, true},
	} {
		cfg, err := Parse([]byte(tt.toml), "test.toml")
		if err != nil {
			t.Fatal(err)
		}
		if got := cfg.Replicated(); got != tt.want {
			t.Errorf("Replicated() = %v, want %v for\n%s", got, tt.want, tt.toml)
		}
	}
}
