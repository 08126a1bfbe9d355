package config

import (
	"errors"
	"net/netip"
	"os"
	"reflect"
	"regexp"
	"strings"
	"testing"

	"github.com/blockrep/blockrep/nfsexport/export"
)

// nfsBase is a node with volume "web" (volume.0), whose [[volume.nfs]]
// tables follow it; withNFS appends them, then extra.
const nfsBase = `[node]
name = "node1"
data_dir = "/var/lib/blockrep/node1"

[[volume]]
name = "web"
path = "/srv/web.img"
`

func withNFS(extra string, tables ...string) string {
	var b strings.Builder
	b.WriteString(nfsBase)
	for _, t := range tables {
		b.WriteString("\n[[volume.nfs]]\n" + t + "\n")
	}
	b.WriteString(extra)
	return b.String()
}

const lan = `networks = ["10.0.0.0/24"]`

func nets(s ...string) []netip.Prefix {
	out := make([]netip.Prefix, len(s))
	for i, p := range s {
		out[i] = netip.MustParsePrefix(p)
	}
	return out
}

func TestNFSGood(t *testing.T) {
	defaults := func(path, exp string, n ...string) NFSExport {
		return NFSExport{Path: path, Export: exp, ID: DefaultNFSExportID("web", path), Networks: nets(n...),
			Squash: export.RootSquash, AnonUID: 65534, AnonGID: 65534}
	}
	for _, tt := range []struct {
		name string
		toml string
		nfs  NFS
		vols [][]NFSExport
	}{
		{"no exports, no [nfs]", nfsBase, NFS{}, [][]NFSExport{nil}},
		{"[nfs] without exports", nfsBase + "[nfs]\nportmap = true\n", NFS{Listen: []string{":2049"}, Portmap: true}, [][]NFSExport{nil}},
		{"defaults", withNFS("", lan), NFS{Listen: []string{":2049"}},
			[][]NFSExport{{defaults("", "/web", "10.0.0.0/24")}}},
		{"every key", withNFS(`
[nfs]
listen = ["10.0.0.1:2049", "[fd00::1]:2049", "127.0.0.1:0"]
portmap = true
`, `path = "htdocs/./site/"
export = "/srv/site"
id = 42
networks = ["10.0.0.0/24", "fd00::/64", "192.0.2.7/32"]
read_only = true
squash = "all_squash"
anonuid = 33
anongid = 34
allow_auth_none = true`,
			`path = "logs"
export = "/web-logs"
id = 4294967295
networks = ["0.0.0.0/0", "::/0"]
squash = "no_root_squash"
anonuid = 0
anongid = 4294967295`,
			`id = 0
networks = ["10.0.0.0/8"]
squash = "root_squash"`),
			NFS{Listen: []string{"10.0.0.1:2049", "[fd00::1]:2049", "127.0.0.1:0"}, Portmap: true},
			[][]NFSExport{{
				{Path: "htdocs/site", Export: "/srv/site", ID: 42, Networks: nets("10.0.0.0/24", "fd00::/64", "192.0.2.7/32"),
					ReadOnly: true, Squash: export.AllSquash, AnonUID: 33, AnonGID: 34, AllowAuthNone: true},
				{Path: "logs", Export: "/web-logs", ID: 4294967295, Networks: nets("0.0.0.0/0", "::/0"),
					Squash: export.NoRootSquash, AnonUID: 0, AnonGID: 4294967295},
				{Path: "", Export: "/web", ID: 0, Networks: nets("10.0.0.0/8"), Squash: export.RootSquash, AnonUID: 65534, AnonGID: 65534},
			}}},
		{"paths are cleaned", withNFS("", `path = "a/../b"
export = "/b"
`+lan, `path = "."
export = "/dot"
`+lan, `path = "./c//d/."
export = "/"
`+lan),
			NFS{Listen: []string{":2049"}},
			[][]NFSExport{{defaults("b", "/b", "10.0.0.0/24"), defaults("", "/dot", "10.0.0.0/24"), defaults("c/d", "/", "10.0.0.0/24")}}},
		{"two volumes", withNFS(`
[[volume]]
name = "db"
path = "/srv/db.img"

[[volume.nfs]]
networks = ["10.1.0.0/16"]
`, lan), NFS{Listen: []string{":2049"}},
			[][]NFSExport{{defaults("", "/web", "10.0.0.0/24")}, {{Export: "/db", ID: DefaultNFSExportID("db", ""),
				Networks: nets("10.1.0.0/16"), AnonUID: 65534, AnonGID: 65534}}}},
		{"inline array of tables", nfsBase + `nfs = [{ networks = ["10.0.0.0/24"] }, { path = "x", export = "/x", networks = ["::/0"] }]` + "\n",
			NFS{Listen: []string{":2049"}},
			[][]NFSExport{{defaults("", "/web", "10.0.0.0/24"), defaults("x", "/x", "::/0")}}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			cfg, err := Parse([]byte(tt.toml), "test.toml")
			if err != nil {
				t.Fatalf("Parse: %v\n%s", err, tt.toml)
			}
			if !reflect.DeepEqual(cfg.NFS, tt.nfs) {
				t.Errorf("NFS = %+v, want %+v", cfg.NFS, tt.nfs)
			}
			if len(cfg.Volumes) != len(tt.vols) {
				t.Fatalf("%d volumes, want %d", len(cfg.Volumes), len(tt.vols))
			}
			for i, v := range cfg.Volumes {
				if !reflect.DeepEqual(v.NFS, tt.vols[i]) {
					t.Errorf("volume %s exports\n got %+v\nwant %+v", v.Name, v.NFS, tt.vols[i])
				}
			}
		})
	}
}

// TestDefaultNFSExportID pins the derived ids: they are in every handle
// clients hold, so a change of the derivation makes them all stale.
func TestDefaultNFSExportID(t *testing.T) {
	for _, tt := range []struct {
		volume, path string
		want         uint32
	}{
		{"web", "", 2227427395},
		{"web", "htdocs", 0x1c8a6c68},
		{"db", "", 0xe54ce4f9},
	} {
		if got := DefaultNFSExportID(tt.volume, tt.path); got != tt.want {
			t.Errorf("DefaultNFSExportID(%q, %q) = %#x, want %#x", tt.volume, tt.path, got, tt.want)
		}
	}
	if DefaultNFSExportID("web", "a") == DefaultNFSExportID("weba", "") {
		t.Errorf("the volume name and the path are not separated")
	}
}

func TestNFSExportOptions(t *testing.T) {
	e := NFSExport{Path: "x", Export: "/x", ID: 9, Networks: nets("10.0.0.0/8"), ReadOnly: true,
		Squash: export.AllSquash, AnonUID: 1, AnonGID: 2, AllowAuthNone: true}
	o := e.Options()
	want := export.Options{ID: 9, Path: "/x", Networks: nets("10.0.0.0/8"), ReadOnly: true,
		Squash: export.AllSquash, AnonUID: 1, AnonGID: 2, AllowAuthNone: true}
	if !reflect.DeepEqual(o, want) {
		t.Errorf("Options() = %+v, want %+v", o, want)
	}
	if err := o.Validate(); err != nil {
		t.Errorf("Options().Validate: %v", err)
	}
	o.Networks[0] = netip.MustParsePrefix("0.0.0.0/0")
	if e.Networks[0] != netip.MustParsePrefix("10.0.0.0/8") {
		t.Errorf("Options() shares the networks with the configuration")
	}
}

func TestNFSBad(t *testing.T) {
	other := func(extra string) string {
		return "\n[[volume]]\nname = \"db\"\npath = \"/srv/db.img\"\n" + extra
	}
	for _, tt := range []struct {
		name string
		toml string
		key  string // the Key of the (only) error
		want string // a substring of its message
	}{
		{"unknown key", withNFS("", lan+"\nnetwork = \"10.0.0.0/8\""), "volume.0.nfs.0.network", `unknown key "volume.0.nfs.0.network"`},
		{"not an array of tables", nfsBase + "nfs = 3\n", "volume.0.nfs", "volume.0.nfs: want an array of tables ([[volume.0.nfs]]), got integer 3"},
		{"networks missing", withNFS("", `path = ""`), "volume.0.nfs.0.networks", `volume.0.nfs.0.networks is required: the client networks admitted`},
		{"networks empty", withNFS("", `networks = []`), "volume.0.nfs.0.networks", "volume.0.nfs.0.networks is empty"},
		{"networks a string", withNFS("", `networks = "10.0.0.0/8"`), "volume.0.nfs.0.networks", `volume.0.nfs.0.networks: want an array of strings, got string "10.0.0.0/8"`},
		{"network not a string", withNFS("", `networks = ["10.0.0.0/8", 10]`), "volume.0.nfs.0.networks.1", "volume.0.nfs.0.networks.1: want a string, got integer 10"},
		{"network length", withNFS("", `networks = ["10.1.0.0/16", "10.0.0.0/33"]`), "volume.0.nfs.0.networks.1", `volume.0.nfs.0.networks.1: "10.0.0.0/33" is not a CIDR`},
		{"network without length", withNFS("", `networks = ["10.0.0.5"]`), "volume.0.nfs.0.networks.0", `"10.0.0.5" is not a CIDR: want address/length, e.g. "10.0.0.0/24" ("10.0.0.5/32" for one host)`},
		{"network host bits", withNFS("", `networks = ["10.0.0.1/8"]`), "volume.0.nfs.0.networks.0", `"10.0.0.1/8" has address bits set past its length /8: write "10.0.0.0/8"`},
		{"network twice", withNFS("", `networks = ["10.0.0.0/8", "::/0", "10.0.0.0/8"]`), "volume.0.nfs.0.networks.2", `"10.0.0.0/8" is listed twice (entries 0 and 2)`},
		{"network mapped", withNFS("", `networks = ["::ffff:10.0.0.0/104"]`), "volume.0.nfs.0.networks.0", `is an IPv4-mapped IPv6 network, which matches no client (they are matched as IPv4): write 10.0.0.0/8`},
		{"path absolute", withNFS("", `path = "/htdocs"`+"\n"+lan), "volume.0.nfs.0.path", `volume.0.nfs.0.path: "/htdocs" is an absolute path: give the directory relative to the root`},
		{"path escapes", withNFS("", `path = "../other"`+"\n"+lan), "volume.0.nfs.0.path", `volume.0.nfs.0.path: "../other" leaves the volume's file system`},
		{"path escapes later", withNFS("", `path = "a/../../b"`+"\n"+lan), "volume.0.nfs.0.path", `"a/../../b" leaves the volume's file system`},
		{"path wrong type", withNFS("", `path = 1`+"\n"+lan), "volume.0.nfs.0.path", "volume.0.nfs.0.path: want a string, got integer 1"},
		{"export relative", withNFS("", `export = "web"`+"\n"+lan), "volume.0.nfs.0.export", `volume.0.nfs.0.export: "web" must start with /`},
		{"export trailing slash", withNFS("", `export = "/web/"`+"\n"+lan), "volume.0.nfs.0.export", `volume.0.nfs.0.export: "/web/" is not a clean path: write "/web"`},
		{"export dotdot", withNFS("", `export = "/a/../b"`+"\n"+lan), "volume.0.nfs.0.export", `"/a/../b" is not a clean path: write "/b"`},
		{"export too long", withNFS("", `export = "/`+strings.Repeat("x", MaxNFSExportPath)+`"`+"\n"+lan), "volume.0.nfs.0.export", "volume.0.nfs.0.export is 1025 bytes, longer than the 1024 MOUNT allows"},
		{"id negative", withNFS("", "id = -1\n"+lan), "volume.0.nfs.0.id", "volume.0.nfs.0.id: -1 is out of range: want 0 to 4294967295"},
		{"id too large", withNFS("", "id = 4294967296\n"+lan), "volume.0.nfs.0.id", "volume.0.nfs.0.id: 4294967296 is out of range"},
		{"id a string", withNFS("", "id = \"7\"\n"+lan), "volume.0.nfs.0.id", `volume.0.nfs.0.id: want an integer, got string "7"`},
		{"squash", withNFS("", "squash = \"root\"\n"+lan), "volume.0.nfs.0.squash", `volume.0.nfs.0.squash: "root" is not one of "root_squash", "no_root_squash", "all_squash"`},
		{"squash empty", withNFS("", "squash = \"\"\n"+lan), "volume.0.nfs.0.squash", `volume.0.nfs.0.squash: "" is not one of`},
		{"anonuid negative", withNFS("", "anonuid = -1\n"+lan), "volume.0.nfs.0.anonuid", "volume.0.nfs.0.anonuid: -1 is out of range"},
		{"anongid a string", withNFS("", "anongid = \"nogroup\"\n"+lan), "volume.0.nfs.0.anongid", `volume.0.nfs.0.anongid: want an integer, got string "nogroup"`},
		{"read_only", withNFS("", "read_only = \"yes\"\n"+lan), "volume.0.nfs.0.read_only", `volume.0.nfs.0.read_only: want true or false, got string "yes"`},
		{"allow_auth_none", withNFS("", "allow_auth_none = 1\n"+lan), "volume.0.nfs.0.allow_auth_none", "volume.0.nfs.0.allow_auth_none: want true or false, got integer 1"},
		{"id twice", withNFS("", "id = 5\nexport = \"/a\"\n"+lan, "id = 5\nexport = \"/b\"\n"+lan), "volume.0.nfs.1.id",
			"volume.0.nfs.1.id: export id 5 is also the id of volume.0.nfs.0 (/a)"},
		{"derived id twice", withNFS("", "export = \"/a\"\n"+lan, "export = \"/b\"\n"+lan), "volume.0.nfs.1.id",
			"is also the id of volume.0.nfs.0 (/a) (derived from the volume's name and path: set id to tell them apart)"},
		{"export twice by default", withNFS("", lan, "path = \"x\"\n"+lan), "volume.0.nfs.1.export", `volume.0.nfs.1.export: "/web" is also the export of volume.0.nfs.0`},
		{"export twice across volumes", withNFS(other("[[volume.nfs]]\nexport = \"/web\"\n"+lan+"\n"), lan), "volume.1.nfs.0.export",
			`volume.1.nfs.0.export: "/web" is also the export of volume.0.nfs.0`},
		{"id twice across volumes", withNFS(other("[[volume.nfs]]\nid = 3\n"+lan+"\n"), "id = 3\n"+lan), "volume.1.nfs.0.id",
			"volume.1.nfs.0.id: export id 3 is also the id of volume.0.nfs.0 (/web)"},
		{"listen empty", withNFS("[nfs]\nlisten = []\n", lan), "nfs.listen", "nfs.listen is empty"},
		{"listen unix", withNFS("[nfs]\nlisten = [\"unix:/run/nfs.sock\"]\n", lan), "nfs.listen.0", `nfs.listen: "unix:/run/nfs.sock": NFS is served over TCP only`},
		{"listen no port", withNFS("[nfs]\nlisten = [\":2049\", \"2049\"]\n", lan), "nfs.listen.1", `nfs.listen: address "2049": want host:port`},
		{"listen bad port", withNFS("[nfs]\nlisten = [\":20490\", \":99999\"]\n", lan), "nfs.listen.1", `nfs.listen: address ":99999": port "99999" is not a number from 0 to 65535`},
		{"listen twice", withNFS("[nfs]\nlisten = [\":2049\", \":2049\"]\n", lan), "nfs.listen.1", `nfs.listen: ":2049" is listed twice (entries 0 and 1)`},
		{"listen is nbd's", withNFS("[nfs]\nlisten = [\"127.0.0.1:10809\"]\n", lan), "nfs.listen.0", `nfs.listen: "127.0.0.1:10809" is also nbd.listen entry 0: NFS needs its own port`},
		{"listen is replication's", withNFS("[replication]\nlisten = \"10.0.0.1:2049\"\n[nfs]\nlisten = [\"10.0.0.1:2049\"]\n", lan), "nfs.listen.0",
			`nfs.listen: "10.0.0.1:2049" is also replication.listen`},
		{"unknown [nfs] key", withNFS("[nfs]\nport = 2049\n", lan), "nfs.port", `unknown key "nfs.port"`},
		{"portmap", withNFS("[nfs]\nportmap = \"yes\"\n", lan), "nfs.portmap", `nfs.portmap: want true or false, got string "yes"`},
		{"nfs not a table", "nfs = 1\n" + withNFS("", lan), "nfs", "nfs: want a table ([nfs]), got integer 1"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			cfg, err := Parse([]byte(tt.toml), "test.toml")
			if err == nil {
				t.Fatalf("Parse succeeded: %+v\n%s", cfg, tt.toml)
			}
			var errs []*Error
			for _, e := range err.(interface{ Unwrap() []error }).Unwrap() {
				var ce *Error
				if !errors.As(e, &ce) {
					t.Fatalf("error %v is not a *config.Error", e)
				}
				errs = append(errs, ce)
			}
			if len(errs) != 1 || errs[0].Key != tt.key || !strings.Contains(errs[0].Msg, tt.want) {
				t.Errorf("errors %v\nwant one for key %s: %q", err, tt.key, tt.want)
			}
			if len(errs) > 0 && errs[0].Line == 0 && tt.key != "volume.0.nfs.0.networks" {
				t.Errorf("error %v has no line", errs[0])
			}
		})
	}
}

// TestExampleNFSParses uncomments the example's NFS settings (the "# key"
// lines of the blocks that follow "# NFS (not served yet):" and "# NFS
// exports of the volume (not served yet):") and checks what they document.
func TestExampleNFSParses(t *testing.T) {
	data, err := os.ReadFile("../docs/blockrepd.example.toml")
	if err != nil {
		t.Fatal(err)
	}
	text := string(data)
	block := func(marker string) string {
		t.Helper()
		_, b, ok := strings.Cut(text, marker+"\n")
		if !ok {
			t.Fatalf("the example has no %q", marker)
		}
		b, _, _ = strings.Cut(b, "\n\n")
		var lines []string
		for _, m := range regexp.MustCompile(`(?m)^# ((?:[a-z_]+ = |\[\[?[a-z.]+\]\]?$).*)$`).FindAllStringSubmatch(b, -1) {
			lines = append(lines, m[1])
		}
		return strings.Join(lines, "\n") + "\n"
	}
	node := block("# NFS (not served yet):")
	exports := block("# NFS exports of the volume (not served yet):")
	base := strings.Replace(nfsBase, `name = "web"`, `name = "vol0"`, 1)
	cfg, err := Parse([]byte(base+exports+node), "example")
	if err != nil {
		t.Fatalf("%v\n%s", err, base+exports+node)
	}
	if want := (NFS{Listen: []string{":2049"}, Portmap: false}); !reflect.DeepEqual(cfg.NFS, want) {
		t.Errorf("example [nfs] = %+v, want %+v", cfg.NFS, want)
	}
	want := []NFSExport{
		{Path: "", Export: "/vol0", ID: DefaultNFSExportID("vol0", ""), Networks: nets("10.0.0.0/24", "fd00:10::/64"),
			Squash: export.RootSquash, AnonUID: 65534, AnonGID: 65534},
		{Path: "htdocs/static", Export: "/vol0-static", ID: 2001, Networks: nets("10.0.1.0/24"),
			ReadOnly: true, Squash: export.AllSquash, AnonUID: 33, AnonGID: 33},
	}
	if got := cfg.Volumes[0].NFS; !reflect.DeepEqual(got, want) {
		t.Errorf("example exports\n got %+v\nwant %+v", got, want)
	}
	// Every key is documented.
	for _, k := range []string{"path", "export", "id", "networks", "read_only", "squash", "anonuid", "anongid", "allow_auth_none"} {
		if !strings.Contains(exports, k+" = ") {
			t.Errorf("the example's [[volume.nfs]] does not show %s", k)
		}
	}
	for _, k := range []string{"listen", "portmap"} {
		if !strings.Contains(node, k+" = ") {
			t.Errorf("the example's [nfs] does not show %s", k)
		}
	}
}
