package config

import (
	"errors"
	"fmt"
	"os"
	"reflect"
	"regexp"
	"strings"
	"testing"
	"time"
)

// clusterNode is a data node of a three-node cluster (node1, node2,
// node3), each holding the volume. TestClusterBad relies on its line
// numbers: the [cluster] table is on line 20, and cluster.member.0, .1 and
// .2 start on lines 25, 29 and 33.
const clusterNode = `[node]
name = "node1"
data_dir = "/var/lib/blockrep/node1"

[[volume]]
name = "vol0"
path = "/var/lib/blockrep/node1/vol0.img"

[replication]
listen = "10.0.0.1:7789"

[[peer]]
name = "node2"
address = "10.0.0.2:7789"

[[peer]]
name = "node3"
address = "10.0.0.3:7789"

[cluster]
name = "prod"
secret_file = "/etc/blockrep/cluster.secret"
listen = "10.0.0.1:7790"

[[cluster.member]]
name = "node1"
address = "10.0.0.1:7790"

[[cluster.member]]
name = "node2"
address = "10.0.0.2:7790"

[[cluster.member]]
name = "node3"
address = "10.0.0.3:7790"
`

// witnessNode is the witness of a cluster: no volumes, no peers. Its
// [cluster] table is on line 5.
const witnessNode = `[node]
name = "witness"
data_dir = "/var/lib/blockrep/witness"

[cluster]
name = "prod"
secret_file = "/etc/blockrep/cluster.secret"
listen = "10.0.0.9:7790"
kind = "witness"
`

// edit returns s with old, which must occur exactly once, replaced by new.
func edit(s, old, new string) string {
	if n := strings.Count(s, old); n != 1 {
		panic(fmt.Sprintf("edit: %q occurs %d times", old, n))
	}
	return strings.Replace(s, old, new, 1)
}

// clusterKeys adds lines to clusterNode's [cluster] table, from line 24;
// the member tables move down by as many lines.
func clusterKeys(lines string) string {
	return edit(clusterNode, `listen = "10.0.0.1:7790"`+"\n", `listen = "10.0.0.1:7790"`+"\n"+lines+"\n")
}

// volumeKeys adds lines to clusterNode's [[volume]] table, from line 8.
func volumeKeys(lines string) string {
	return edit(clusterNode, `path = "/var/lib/blockrep/node1/vol0.img"`+"\n", `path = "/var/lib/blockrep/node1/vol0.img"`+"\n"+lines+"\n")
}

// clusterMembers replaces clusterNode's member tables (from line 24).
func clusterMembers(tables string) string {
	i := strings.Index(clusterNode, "\n[[cluster.member]]")
	return clusterNode[:i+1] + tables
}

// wantClusterNode is clusterNode as Parse returns it.
func wantClusterNode() *Config {
	repl := defaultReplication()
	repl.Cluster, repl.SecretFile, repl.Listen = "prod", "/etc/blockrep/cluster.secret", "10.0.0.1:7789"
	return &Config{
		Source: "test.toml",
		Node:   Node{Name: "node1", DataDir: "/var/lib/blockrep/node1", ControlSocket: "/var/lib/blockrep/node1/control.sock"},
		NBD: NBD{
			Listen:         []Listener{{"tcp", "127.0.0.1:10809"}},
			MaxInFlight:    256 * MiB,
			MaxConnections: DefaultMaxConnections,
			DefaultExport:  "vol0",
			ReplyTimeout:   DefaultReplyTimeout, HandshakeTimeout: DefaultHandshakeTimeout, HandshakesPerAddress: DefaultHandshakesPerAddress,
		},
		Replication: repl,
		Peers:       []Peer{{"node2", "10.0.0.2:7789"}, {"node3", "10.0.0.3:7789"}},
		Cluster: Cluster{
			Enabled:           true,
			Name:              "prod",
			SecretFile:        "/etc/blockrep/cluster.secret",
			Listen:            "10.0.0.1:7790",
			Kind:              KindData,
			HeartbeatInterval: 200 * time.Millisecond,
			FailoverTimeout:   1200 * time.Millisecond,
			Fence:             FenceSuspend,
			Security:          SecurityMAC,
			Members:           []Member{{"node1", "10.0.0.1:7790"}, {"node2", "10.0.0.2:7790"}, {"node3", "10.0.0.3:7790"}},
		},
		Volumes: []Volume{{
			Name: "vol0", Path: "/var/lib/blockrep/node1/vol0.img", TLS: TLSOptional,
			BlockSizeMin: 512, BlockSizePreferred: 4096, BlockSizeMax: mib32(32), MultiConn: true,
			Role: RoleSecondary,
		}},
	}
}

func TestClusterGood(t *testing.T) {
	tests := []struct {
		name string
		toml string
		want func(c *Config) // adjusts wantClusterNode()
	}{
		{"data node, two peers, three members, defaults", clusterNode, func(c *Config) {}},
		{"every key", clusterKeys(`kind = "data"
heartbeat_interval = "100ms"
failover_timeout = "300ms"
fence = "error"`), func(c *Config) {
			c.Cluster.HeartbeatInterval, c.Cluster.FailoverTimeout, c.Cluster.Fence = 100*time.Millisecond, 300*time.Millisecond, FenceError
		}},
		{"timing bounds", clusterKeys("heartbeat_interval = \"10s\"\nfailover_timeout = \"10m\""), func(c *Config) {
			c.Cluster.HeartbeatInterval, c.Cluster.FailoverTimeout = 10*time.Second, 10*time.Minute
		}},
		{"shortest timing", clusterKeys("heartbeat_interval = \"10ms\"\nfailover_timeout = \"30ms\""), func(c *Config) {
			c.Cluster.HeartbeatInterval, c.Cluster.FailoverTimeout = 10*time.Millisecond, 30*time.Millisecond
		}},
		{"heartbeat of a third of the default failover timeout", clusterKeys(`heartbeat_interval = "400ms"`), func(c *Config) {
			c.Cluster.HeartbeatInterval = 400 * time.Millisecond
		}},
		{"no members: joins an existing cluster", clusterMembers(""), func(c *Config) { c.Cluster.Members = nil }},
		{"secret_file cleaned", edit(clusterNode, `"/etc/blockrep/cluster.secret"`, `"/etc//blockrep/x/../cluster.secret"`), func(c *Config) {}},
		{"replication keeps its own cluster and secret_file", edit(clusterNode, "[replication]\n",
			"[replication]\ncluster = \"peers\"\nsecret_file = \"/etc/blockrep/peers.secret\"\n"), func(c *Config) {
			c.Replication.Cluster, c.Replication.SecretFile = "peers", "/etc/blockrep/peers.secret"
		}},
		{"preferred_primary is this node", volumeKeys(`preferred_primary = "node1"`), func(c *Config) {
			c.Volumes[0].PreferredPrimary = "node1"
		}},
		{"preferred_primary is a peer", volumeKeys(`preferred_primary = "node3"`), func(c *Config) {
			c.Volumes[0].PreferredPrimary = "node3"
		}},
		{"without peers: role secondary, replication defaults still taken", edit(edit(clusterNode, "[[peer]]\nname = \"node2\"\naddress = \"10.0.0.2:7789\"\n", ""),
			"[[peer]]\nname = \"node3\"\naddress = \"10.0.0.3:7789\"\n", ""), func(c *Config) {
			c.Peers = nil
		}},
		{"cluster.listen may share the host of replication.listen and nbd.listen", edit(clusterNode, "[replication]\n",
			"[nbd]\nlisten = [\"10.0.0.1:10809\"]\n\n[replication]\n"), func(c *Config) {
			c.NBD.Listen = []Listener{{"tcp", "10.0.0.1:10809"}}
		}},
		{"IPv6 and host names", edit(edit(clusterNode, `listen = "10.0.0.1:7790"`, `listen = "[fd00::1]:7790"`),
			`address = "10.0.0.1:7790"`, `address = "[fd00::1]:7790"`) + "\n[[cluster.member]]\nname = \"witness\"\naddress = \"witness.example.com:7790\"\n", func(c *Config) {
			c.Cluster.Listen = "[fd00::1]:7790"
			c.Cluster.Members[0].Address = "[fd00::1]:7790"
			c.Cluster.Members = append(c.Cluster.Members, Member{"witness", "witness.example.com:7790"})
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Parse([]byte(tt.toml), "test.toml")
			if err != nil {
				t.Fatalf("Parse: %v\n%s", err, tt.toml)
			}
			want := wantClusterNode()
			tt.want(want)
			if !reflect.DeepEqual(got, want) {
				t.Errorf("got  %+v\nwant %+v", got, want)
			}
			if !got.Clustered() || got.Witness() {
				t.Errorf("Clustered() %v Witness() %v, want true false", got.Clustered(), got.Witness())
			}
		})
	}
}

func TestClusterWitness(t *testing.T) {
	for _, tt := range []struct {
		name, toml string
	}{
		{"minimal", witnessNode},
		{"with members", witnessNode + `
[[cluster.member]]
name = "node1"
address = "10.0.0.1:7790"

[[cluster.member]]
name = "witness"
address = "10.0.0.9:7790"
`},
	} {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Parse([]byte(tt.toml), "test.toml")
			if err != nil {
				t.Fatal(err)
			}
			if !got.Clustered() || !got.Witness() || got.Replicated() {
				t.Errorf("Clustered() %v Witness() %v Replicated() %v, want true true false", got.Clustered(), got.Witness(), got.Replicated())
			}
			want := Cluster{
				Enabled: true, Name: "prod", SecretFile: "/etc/blockrep/cluster.secret", Listen: "10.0.0.9:7790", Kind: KindWitness,
				HeartbeatInterval: DefaultHeartbeatInterval, FailoverTimeout: DefaultFailoverTimeout, Fence: FenceSuspend,
				Security: SecurityMAC,
			}
			if strings.Contains(tt.toml, "cluster.member") {
				want.Members = []Member{{"node1", "10.0.0.1:7790"}, {"witness", "10.0.0.9:7790"}}
			}
			if !reflect.DeepEqual(got.Cluster, want) {
				t.Errorf("cluster %+v\nwant    %+v", got.Cluster, want)
			}
			if got.Volumes != nil || got.Peers != nil || got.NBD.DefaultExport != "" {
				t.Errorf("volumes %+v peers %+v default export %q", got.Volumes, got.Peers, got.NBD.DefaultExport)
			}
		})
	}
}

func TestNotClustered(t *testing.T) {
	cfg, err := Parse([]byte(minimal+replicationTable+onePeer), "test.toml")
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Clustered() || cfg.Witness() || !reflect.DeepEqual(cfg.Cluster, Cluster{}) {
		t.Errorf("Clustered() %v Witness() %v Cluster %+v", cfg.Clustered(), cfg.Witness(), cfg.Cluster)
	}
}

func TestClusterBad(t *testing.T) {
	// member adds a fourth [[cluster.member]] (cluster.member.3) on line 37
	// after clusterNode, with body from line 38.
	member := func(body string) string { return clusterNode + "\n[[cluster.member]]\n" + body + "\n" }
	tests := []struct {
		name    string
		toml    string
		want    string // the whole message of the only error
		wantKey string
	}{
		{"missing name", edit(clusterNode, "name = \"prod\"\n", ""),
			`config test.toml: line 20: cluster.name is required: every member must name the same cluster`, "cluster.name"},
		{"bad name", edit(clusterNode, `"prod"`, `"Prod_1"`),
			`config test.toml: line 21: cluster.name: "Prod_1" is invalid: use 1 to 63 of a-z, 0-9 and -`, "cluster.name"},
		{"name not a string", edit(clusterNode, `"prod"`, `1`),
			`config test.toml: line 21: cluster.name: want a string, got integer 1`, "cluster.name"},
		{"missing secret_file", edit(clusterNode, "secret_file = \"/etc/blockrep/cluster.secret\"\n", ""),
			`config test.toml: line 20: cluster.secret_file is required: members authenticate each other with the secret in it`, "cluster.secret_file"},
		{"relative secret_file", edit(clusterNode, `"/etc/blockrep/cluster.secret"`, `"cluster.secret"`),
			`config test.toml: line 22: cluster.secret_file: "cluster.secret" is a relative path: give an absolute path`, "cluster.secret_file"},
		{"missing listen", clusterMembers("")[:strings.Index(clusterNode, `listen = "10.0.0.1:7790"`)],
			`config test.toml: line 20: cluster.listen is required: the host:port the other members and remote blockctl reach this node at`, "cluster.listen"},
		{"listen 0.0.0.0", edit(clusterMembers(""), `"10.0.0.1:7790"`, `"0.0.0.0:7790"`),
			`config test.toml: line 23: cluster.listen: address "0.0.0.0:7790": 0.0.0.0 is a wildcard address: give one the other members can reach`, "cluster.listen"},
		{"listen [::]", edit(clusterMembers(""), `"10.0.0.1:7790"`, `"[::]:7790"`),
			`config test.toml: line 23: cluster.listen: address "[::]:7790": :: is a wildcard address: give one the other members can reach`, "cluster.listen"},
		{"wildcard listen is not also reported against the member", edit(clusterNode, `listen = "10.0.0.1:7790"`, `listen = "0.0.0.0:7790"`),
			`config test.toml: line 23: cluster.listen: address "0.0.0.0:7790": 0.0.0.0 is a wildcard address: give one the other members can reach`, "cluster.listen"},
		{"listen without host", edit(clusterMembers(""), `"10.0.0.1:7790"`, `":7790"`),
			`config test.toml: line 23: cluster.listen: address ":7790": the host is missing`, "cluster.listen"},
		{"listen without port", edit(clusterMembers(""), `"10.0.0.1:7790"`, `"10.0.0.1"`),
			`config test.toml: line 23: cluster.listen: address "10.0.0.1": want host:port`, "cluster.listen"},
		{"listen port 0", edit(clusterMembers(""), `"10.0.0.1:7790"`, `"10.0.0.1:0"`),
			`config test.toml: line 23: cluster.listen: address "10.0.0.1:0": port "0" is not a number from 1 to 65535`, "cluster.listen"},
		{"listen is replication.listen", edit(clusterMembers(""), `"10.0.0.1:7790"`, `"10.0.0.1:7789"`),
			`config test.toml: line 23: cluster.listen: "10.0.0.1:7789" is also replication.listen: the cluster needs its own port`, "cluster.listen"},
		{"listen is an nbd address", edit(clusterNode, "[replication]\n", "[nbd]\nlisten = [\"127.0.0.1:10809\", \"10.0.0.1:7790\"]\n\n[replication]\n"),
			`config test.toml: line 26: cluster.listen: "10.0.0.1:7790" is also nbd.listen entry 1: the cluster needs its own port`, "cluster.listen"},

		{"failover_timeout below three heartbeats", clusterKeys("heartbeat_interval = \"100ms\"\nfailover_timeout = \"299ms\""),
			`config test.toml: line 25: cluster.failover_timeout 299ms is less than three heartbeat intervals (300ms): one late heartbeat would fail the primary over`, "cluster.failover_timeout"},
		{"default failover_timeout below three heartbeats", clusterKeys(`heartbeat_interval = "500ms"`),
			`config test.toml: line 24: cluster.heartbeat_interval 500ms needs a failover_timeout of at least three intervals (1.5s), more than the default 1.2s: set cluster.failover_timeout`, "cluster.heartbeat_interval"},
		{"cluster security unknown", clusterKeys(`security = "off"`),
			`config test.toml: line 24: cluster.security: "off" is not one of "mac", "tls", "none"`, "cluster.security"},
		{"cluster tls without key", clusterKeys("security = \"tls\"\ntls_cert = \"/c\"\ntls_ca = \"/ca\""),
			`config test.toml: line 20: cluster.tls_key is required with cluster.security = "tls"`, "cluster.tls_key"},
		{"heartbeat_interval too short", clusterKeys(`heartbeat_interval = "9ms"`),
			`config test.toml: line 24: cluster.heartbeat_interval: "9ms" is out of range: want 10ms to 10s`, "cluster.heartbeat_interval"},
		// The failover_timeout is less than three default heartbeat
		// intervals: a bad heartbeat_interval is not compared with it.
		{"heartbeat_interval too long", clusterKeys("heartbeat_interval = \"11s\"\nfailover_timeout = \"500ms\""),
			`config test.toml: line 24: cluster.heartbeat_interval: "11s" is out of range: want 10ms to 10s`, "cluster.heartbeat_interval"},
		{"heartbeat_interval without unit", clusterKeys(`heartbeat_interval = 200`),
			`config test.toml: line 24: cluster.heartbeat_interval: integer 200 has no unit: write a duration string such as "2s" or "500ms"`, "cluster.heartbeat_interval"},
		{"failover_timeout too long", clusterKeys(`failover_timeout = "11m"`),
			`config test.toml: line 24: cluster.failover_timeout: "11m" is out of range: want 30ms to 10m`, "cluster.failover_timeout"},
		{"bad failover_timeout is not compared with heartbeat_interval", clusterKeys("failover_timeout = \"1h\"\nheartbeat_interval = \"500ms\""),
			`config test.toml: line 24: cluster.failover_timeout: "1h" is out of range: want 30ms to 10m`, "cluster.failover_timeout"},
		{"unknown kind", clusterKeys(`kind = "arbiter"`),
			`config test.toml: line 24: cluster.kind: "arbiter" is not one of "data", "witness"`, "cluster.kind"},
		{"empty kind", clusterKeys(`kind = ""`),
			`config test.toml: line 24: cluster.kind: "" is not one of "data", "witness"`, "cluster.kind"},
		{"unknown fence", clusterKeys(`fence = "panic"`),
			`config test.toml: line 24: cluster.fence: "panic" is not one of "suspend", "error"`, "cluster.fence"},
		{"unknown key", clusterKeys(`heartbeat = "200ms"`),
			`config test.toml: line 24: unknown key "cluster.heartbeat"`, "cluster.heartbeat"},
		{"cluster not a table", "cluster = \"prod\"\n" + minimal,
			`config test.toml: line 1: cluster: want a table ([cluster]), got string "prod"`, "cluster"},
		{"member not an array of tables", clusterMembers("[cluster.member]\nname = \"node1\"\naddress = \"10.0.0.1:7790\"\n"),
			`config test.toml: line 25: cluster.member: want an array of tables ([[cluster.member]]), got a table`, "cluster.member"},

		{"unknown member key", member("name = \"node4\"\naddress = \"10.0.0.4:7790\"\nkind = \"data\""),
			`config test.toml: line 40: unknown key "cluster.member.3.kind"`, "cluster.member.3.kind"},
		{"member without name", member(`address = "10.0.0.4:7790"`),
			`config test.toml: line 37: cluster.member.3.name is required (the member's node.name)`, "cluster.member.3.name"},
		{"member bad name", member("name = \"Node4\"\naddress = \"10.0.0.4:7790\""),
			`config test.toml: line 38: cluster.member.3.name: "Node4" is invalid: use 1 to 63 of a-z, 0-9 and -`, "cluster.member.3.name"},
		{"member without address", member(`name = "node4"`),
			`config test.toml: line 37: cluster.member.3.address is required (the member's cluster.listen)`, "cluster.member.3.address"},
		{"member wildcard address", member("name = \"node4\"\naddress = \"0.0.0.0:7790\""),
			`config test.toml: line 39: cluster.member.3.address: address "0.0.0.0:7790": 0.0.0.0 is a wildcard address: give one the other members can reach`, "cluster.member.3.address"},
		{"member address without port", member("name = \"node4\"\naddress = \"node4\""),
			`config test.toml: line 39: cluster.member.3.address: address "node4": want host:port`, "cluster.member.3.address"},
		{"duplicate member name", member("name = \"node2\"\naddress = \"10.0.0.4:7790\""),
			`config test.toml: line 38: cluster.member.3.name: "node2" is also the name of cluster.member.1`, "cluster.member.3.name"},
		{"duplicate member address", member("name = \"node4\"\naddress = \"10.0.0.3:7790\""),
			`config test.toml: line 39: cluster.member.3.address: "10.0.0.3:7790" is also the address of cluster.member.2`, "cluster.member.3.address"},
		{"members do not list this node", edit(clusterNode, "name = \"node1\"\naddress = \"10.0.0.1:7790\"", "name = \"node4\"\naddress = \"10.0.0.4:7790\""),
			`config test.toml: line 20: cluster.member does not list this node ("node1"): list every initial member, this one included, or none to join an existing cluster`, "cluster.member"},
		{"this node's member address is not cluster.listen", edit(clusterNode, `address = "10.0.0.1:7790"`, `address = "10.0.0.1:7791"`),
			`config test.toml: line 27: cluster.member.0.address: "10.0.0.1:7791" is not this node's cluster.listen "10.0.0.1:7790": the member named "node1" is this node, give it the same address`, "cluster.member.0.address"},

		{"witness with a volume", witnessNode + "\n[[volume]]\nname = \"vol0\"\npath = \"/v\"\n",
			`config test.toml: line 11: a witness holds no data: remove the [[volume]] tables or set cluster.kind = "data"`, "volume.0"},
		{"witness with a peer", edit(witnessNode, "[cluster]", "[replication]\nlisten = \"10.0.0.9:7789\"\n\n[[peer]]\nname = \"node1\"\naddress = \"10.0.0.1:7789\"\n\n[cluster]"),
			`config test.toml: line 8: a witness holds no data and has no replication peers: remove the [[peer]] tables`, "peer.0"},
		{"role with cluster", volumeKeys(`role = "primary"`),
			`config test.toml: line 8: volume.0.role: with [cluster] the cluster decides the role; remove the key (set preferred_primary to choose where the volume runs)`, "volume.0.role"},
		{"secondary role with cluster", volumeKeys(`role = "secondary"`),
			`config test.toml: line 8: volume.0.role: with [cluster] the cluster decides the role`, "volume.0.role"},
		{"continue_alone with cluster", edit(clusterNode, "[replication]\n", "[replication]\ncontinue_alone = true\n"),
			`config test.toml: line 10: replication.continue_alone cannot be used with [cluster]: the cluster outdates a lost peer through quorum instead`, "replication.continue_alone"},
		{"preferred_primary names an unknown node", volumeKeys(`preferred_primary = "node4"`),
			`config test.toml: line 8: volume.0.preferred_primary: "node4" is neither this node nor a [[peer]]`, "volume.0.preferred_primary"},
		{"preferred_primary names a member that is not a peer", volumeKeys(`preferred_primary = "witness"`) + "\n[[cluster.member]]\nname = \"witness\"\naddress = \"10.0.0.9:7790\"\n",
			`config test.toml: line 8: volume.0.preferred_primary: "witness" is neither this node nor a [[peer]]`, "volume.0.preferred_primary"},
		{"preferred_primary without cluster", edit(minimal, `path = "/var/lib/blockrep/node1/vol0.img"`, "path = \"/var/lib/blockrep/node1/vol0.img\"\npreferred_primary = \"node1\""),
			`config test.toml: line 9: volume.0.preferred_primary: only with [cluster] (without it the volume's role is set by hand)`, "volume.0.preferred_primary"},
		{"failover without cluster", edit(minimal, `path = "/var/lib/blockrep/node1/vol0.img"`, "path = \"/var/lib/blockrep/node1/vol0.img\"\nfailover = \"manual\""),
			`config test.toml: line 9: volume.0.failover: only with [cluster] (without it nothing fails over by itself)`, "volume.0.failover"},
		{"unknown failover policy", volumeKeys(`failover = "sometimes"`),
			`config test.toml: line 8: volume.0.failover: "sometimes" is not one of "auto", "manual"`, "volume.0.failover"},
		{"preferred_primary not a string", volumeKeys(`preferred_primary = 1`),
			`config test.toml: line 8: volume.0.preferred_primary: want a string, got integer 1`, "volume.0.preferred_primary"},
		{"no volumes on a data node", edit(clusterNode, "[[volume]]\nname = \"vol0\"\npath = \"/var/lib/blockrep/node1/vol0.img\"\n", ""),
			`config test.toml: no volumes: at least one [[volume]] table is required`, "volume"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, err := Parse([]byte(tt.toml), "test.toml")
			if err == nil {
				t.Fatalf("Parse succeeded: %+v", cfg)
			}
			var errs []error
			if j, ok := err.(interface{ Unwrap() []error }); ok {
				errs = j.Unwrap()
			}
			if len(errs) != 1 {
				t.Fatalf("%d errors, want 1: %v\n%s", len(errs), err, tt.toml)
			}
			if !strings.HasPrefix(err.Error(), tt.want) {
				t.Errorf("error\n %s\ndoes not start with\n %s", err, tt.want)
			}
			var ce *Error
			if !errors.As(err, &ce) || ce.Key != tt.wantKey {
				t.Errorf("error key %q, want %q", ce.Key, tt.wantKey)
			}
		})
	}
}

// TestExampleClusterParses uncomments the example's settings, as
// TestExampleReplicationParses does, and checks the [cluster] it documents.
func TestExampleClusterParses(t *testing.T) {
	data, err := os.ReadFile("../docs/blockrepd.example.toml")
	if err != nil {
		t.Fatal(err)
	}
	// The replication settings ("#key") and the cluster settings ("##key"),
	// except the role line, which [cluster] refuses.
	uncommented := regexp.MustCompile(`(?m)^##?([a-z\[])`).ReplaceAll(data, []byte("$1"))
	uncommented = regexp.MustCompile(`(?m)^role = .*\n`).ReplaceAll(uncommented, nil)
	cfg, err := Parse(uncommented, "example")
	if err != nil {
		t.Fatal(err)
	}
	if len(cfg.Peers) != 2 || cfg.Replication.Cluster != "prod" || cfg.Volumes[0].Role != RoleSecondary {
		t.Errorf("peers %+v replication %+v volumes %+v", cfg.Peers, cfg.Replication, cfg.Volumes)
	}
	want := Cluster{
		Enabled: true, Name: "prod", SecretFile: "/etc/blockrep/cluster.secret", Listen: "10.0.0.1:7790",
		Kind: KindData, HeartbeatInterval: 200 * time.Millisecond, FailoverTimeout: 1200 * time.Millisecond, Fence: FenceSuspend,
		Security: SecurityMAC,
		Members:  []Member{{"node1", "10.0.0.1:7790"}, {"node2", "10.0.0.2:7790"}, {"node3", "10.0.0.3:7790"}},
	}
	if !reflect.DeepEqual(cfg.Cluster, want) {
		t.Errorf("cluster = %+v\nwant %+v", cfg.Cluster, want)
	}
	if got := cfg.Volumes[0].PreferredPrimary; got != "node1" {
		t.Errorf("volume.0.preferred_primary = %q, want node1", got)
	}

	// The witness's configuration, indented in a comment, is valid too.
	i := strings.Index(string(data), "#   [node]\n")
	if i < 0 {
		t.Fatal("the example shows no witness configuration")
	}
	var witness strings.Builder
	for _, l := range strings.SplitAfter(string(data[i:]), "\n") {
		s, ok := strings.CutPrefix(l, "#   ")
		if !ok {
			break
		}
		witness.WriteString(s)
	}
	cfg, err = Parse([]byte(witness.String()), "witness")
	if err != nil {
		t.Fatalf("%v\n%s", err, witness.String())
	}
	if !cfg.Witness() || cfg.Cluster.Name != "prod" {
		t.Errorf("witness: %+v", cfg.Cluster)
	}
}
