package config

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

const minimal = `
[node]
name = "node1"
data_dir = "/var/lib/blockrep/node1"

[[volume]]
name = "vol0"
path = "/var/lib/blockrep/node1/vol0.img"
`

func TestParseGood(t *testing.T) {
	tests := []struct {
		name string
		toml string
		want func(c *Config) // adjusts the defaults of minimal to the expected value
	}{
		{"minimal", minimal, func(c *Config) {}},
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
				},
				Volumes: []Volume{
					{Name: "a", Path: "/dev/sdb", ReadOnly: true, TLS: TLSRequired, Description: "the a volume",
						BlockSizeMin: 4096, BlockSizePreferred: 4096, BlockSizeMax: mib32(1)},
					{Name: "b", Path: "/srv/b.img", Size: 10 * GiB, TLS: TLSOptional,
						BlockSizeMin: 1024, BlockSizePreferred: 65536, BlockSizeMax: mib32(32), MultiConn: true},
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
				},
				Volumes: []Volume{{
					Name: "vol0", Path: "/var/lib/blockrep/node1/vol0.img", TLS: TLSOptional,
					BlockSizeMin: 512, BlockSizePreferred: 4096, BlockSizeMax: mib32(32), MultiConn: true,
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
		{"max_connections not an integer", minimal + "[nbd]\nmax_connections = \"many\"\n", []string{`nbd.max_connections: want an integer, got string "many"`}},
		{"max_inflight not a size", minimal + "[nbd]\nmax_inflight = true\n", []string{`nbd.max_inflight: want a size (4096 or "10GiB"), got boolean true`}},
		{"nbd socket is the control socket", minimal + "[nbd]\nlisten = [\"unix:/var/lib/blockrep/node1/control.sock\"]\n",
			[]string{`nbd.listen: "unix:/var/lib/blockrep/node1/control.sock" is also node.control_socket`}},
		{"unknown default export", minimal + "[nbd]\ndefault_export = \"vol9\"\n", []string{`line 10: nbd.default_export "vol9" is not a volume (volumes: vol0)`}},
		{"several problems", vol("sise = 1\ntls = \"maybe\""), []string{`unknown key "volume.0.sise"`, "\n", `volume.0.tls: "maybe"`}},
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
}
