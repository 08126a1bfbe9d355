package e2e

import (
	"encoding/json"
	"fmt"
	"net"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// The HA harness: a cluster of two data nodes (node1, node2) replicating
// clusterVolume to each other and a diskless witness (w), all three members
// of one Raft group that decides who is primary ([cluster] table). The
// replication link from node1 to node2 goes through a byte-counting proxy.

// haWait bounds every wait of the HA tests: only to catch a hang.
const haWait = 30 * time.Second

// haSpec is the [cluster] table of one node, rendered by haConfig.
type haSpec struct {
	// Kind is "data" or "witness" ("" leaves the key out: data).
	Kind              string
	Name              string
	SecretFile        string
	Listen            string
	HeartbeatInterval string
	FailoverTimeout   string
	Fence             string
	Members           []peerSpec
	// Preferred is written as preferred_primary in every [[volume]].
	Preferred string
}

// haConfig renders [cluster] and [[cluster.member]], and adds
// preferred_primary to the [[volume]] tables config() already wrote. It is
// called at the end of replicationConfig (cluster_test.go).
func (d *daemon) haConfig(b *strings.Builder) {
	h := d.spec.Replication.HA
	q := strconv.Quote
	if h.Preferred != "" {
		s := b.String()
		for _, v := range d.spec.Volumes {
			head := "\n[[volume]]\nname = " + q(v.Name) + "\n"
			if strings.Count(s, head) != 1 {
				d.t.Fatalf("haConfig: cannot find the table of volume %q in the generated configuration:\n%s", v.Name, s)
			}
			s = strings.Replace(s, head, head+"preferred_primary = "+q(h.Preferred)+"\n", 1)
		}
		b.Reset()
		b.WriteString(s)
	}
	fmt.Fprintf(b, "\n[cluster]\nname = %s\nsecret_file = %s\nlisten = %s\n", q(h.Name), q(h.SecretFile), q(h.Listen))
	for _, kv := range [][2]string{
		{"kind", h.Kind}, {"heartbeat_interval", h.HeartbeatInterval},
		{"failover_timeout", h.FailoverTimeout}, {"fence", h.Fence},
	} {
		if kv[1] != "" {
			fmt.Fprintf(b, "%s = %s\n", kv[0], q(kv[1]))
		}
	}
	for _, m := range h.Members {
		fmt.Fprintf(b, "\n[[cluster.member]]\nname = %s\naddress = %s\n", q(m.Name), q(m.Address))
	}
}

// haOptions are the settings of startHA ("" = the daemon's default).
type haOptions struct {
	Size            int64
	FailoverTimeout string
	Fence           string
	// ResyncRate is the data nodes' resync_rate.
	ResyncRate string
	// Paths maps a data node's name to the backing file of its
	// clusterVolume (default: in the daemon's directory).
	Paths map[string]string
}

// haCluster is a running HA cluster.
type haCluster struct {
	t          *testing.T
	N1, N2, W  *daemon
	SecretFile string
	// Repl is the proxy on the replication link node1 dials to node2:
	// its down count is what node2 sends node1.
	Repl *proxy
}

// Data returns the data nodes.
func (c *haCluster) Data() []*daemon { return []*daemon{c.N1, c.N2} }

// All returns every member.
func (c *haCluster) All() []*daemon { return []*daemon{c.N1, c.N2, c.W} }

// startHA starts node1 (data, preferred primary of clusterVolume), node2
// (data) and the witness w, and waits until node1 is primary and node2 an
// UpToDate secondary in sync with it, as the cluster committed.
func startHA(t *testing.T, o haOptions) *haCluster {
	t.Helper()
	if o.Size == 0 {
		o.Size = 64 * MiB
	}
	dir := t.TempDir()
	c := &haCluster{t: t, SecretFile: newSecretFile(t, dir, "cluster.secret")}
	c.Repl = startProxy(t, "")
	// nbd x3, replication x2, cluster x3
	ports := freePorts(t, 8)
	addr := func(i int) string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(ports[i])) }
	replAddr := func(i int) string { return addr(3 + i) }
	clusterAddr := func(i int) string { return addr(5 + i) }
	c.Repl.setTarget(replAddr(1))
	names := []string{"node1", "node2", "w"}
	var members []peerSpec
	for i, n := range names {
		members = append(members, peerSpec{Name: n, Address: clusterAddr(i)})
	}
	ha := func(i int) *haSpec {
		h := &haSpec{Name: "e2e", SecretFile: c.SecretFile, Listen: clusterAddr(i),
			FailoverTimeout: o.FailoverTimeout, Fence: o.Fence, Members: members}
		if i == 2 {
			h.Kind = "witness"
		} else {
			h.Preferred = "node1"
		}
		return h
	}
	var ds []*daemon
	for i, n := range names {
		spec := daemonSpec{Name: n}
		if i < 2 {
			spec.Volumes = []volumeSpec{{Name: clusterVolume, Size: o.Size, Path: o.Paths[n]}}
			peer := peerSpec{Name: "node2", Address: c.Repl.Addr()}
			if i == 1 {
				peer = peerSpec{Name: "node1", Address: replAddr(0)}
			}
			spec.Peers = []peerSpec{peer}
			// cluster and secret_file are left to default to [cluster]'s.
			spec.Replication = &replicationSpec{Listen: replAddr(i), ConnectRetryMax: "1s", ResyncRate: o.ResyncRate, HA: ha(i)}
		} else {
			spec.Replication = &replicationSpec{HA: ha(i)}
		}
		d := newDaemon(t, spec)
		d.Port = ports[i]
		ds = append(ds, d)
	}
	c.N1, c.N2, c.W = ds[0], ds[1], ds[2]
	for _, d := range ds {
		d.Start()
	}
	c.waitPair(t, c.N1, c.N2)
	return c
}

// waitPair waits until primary is the cluster's primary of clusterVolume
// and secondary an UpToDate secondary, connected, in sync, and UpToDate in
// what the primary committed to the cluster; it returns the primary's
// status.
func (c *haCluster) waitPair(t *testing.T, primary, secondary *daemon) *haStatusJSON {
	t.Helper()
	pn, sn := primary.spec.Name, secondary.spec.Name
	waitHA(t, secondary, sn+" an UpToDate secondary connected to "+pn, func(s *haStatusJSON) bool {
		r := s.repl()
		p := r.peer(pn)
		return r.Role == "secondary" && r.Disk == "UpToDate" && p != nil && p.Connection == "Connected" && p.Role == "primary"
	})
	return waitHA(t, primary, pn+" primary with "+sn+" in sync and committed UpToDate", func(s *haStatusJSON) bool {
		r := s.repl()
		p := r.peer(sn)
		v := s.clusterVolume()
		return r.Role == "primary" && r.Disk == "UpToDate" && !r.Fenced && p != nil && inSync(&p.peerStatusJSON) &&
			p.ClusterDisk == "UpToDate" && v != nil && v.Primary == pn && v.Epoch == r.Epoch && v.Disks[sn] == "UpToDate"
	})
}

// Status with the cluster parts, decoded independently of the api and
// cluster packages (the JSON is a contract with scripts).
type haStatusJSON struct {
	Node    string `json:"node"`
	Volumes []struct {
		Name        string      `json:"name"`
		Replication *haReplJSON `json:"replication"`
	} `json:"volumes"`
	Cluster *haMemberJSON `json:"cluster"`
}

type haReplJSON struct {
	Role             string       `json:"role"`
	Disk             string       `json:"disk"`
	DiskFailed       string       `json:"disk_failed"`
	Epoch            uint64       `json:"epoch"`
	Fenced           bool         `json:"fenced"`
	LeaseRemainingMS int64        `json:"lease_remaining_ms"`
	Peers            []haPeerJSON `json:"peers"`
}

type haPeerJSON struct {
	peerStatusJSON
	ClusterDisk string `json:"cluster_disk"`
}

type haMemberJSON struct {
	Name    string `json:"name"`
	Kind    string `json:"kind"`
	Raft    string `json:"raft"`
	Leader  string `json:"leader"`
	Term    string `json:"term"`
	Members []struct {
		Name    string `json:"name"`
		Address string `json:"address"`
		Voter   bool   `json:"voter"`
		Kind    string `json:"kind"`
		Alive   *bool  `json:"alive"`
	} `json:"members"`
	State struct {
		Volumes map[string]*haVolumeStateJSON `json:"volumes"`
	} `json:"state"`
	Leases map[string]time.Time `json:"leases"`
	Errors map[string]string    `json:"errors"`
}

type haVolumeStateJSON struct {
	Primary   string            `json:"primary"`
	Epoch     uint64            `json:"epoch"`
	Promoted  bool              `json:"promoted"`
	Disks     map[string]string `json:"disks"`
	Preferred string            `json:"preferred"`
	Lost      string            `json:"lost"`
}

// repl returns clusterVolume's replication status (an empty one if none).
func (s *haStatusJSON) repl() *haReplJSON {
	for _, v := range s.Volumes {
		if v.Name == clusterVolume && v.Replication != nil {
			return v.Replication
		}
	}
	return &haReplJSON{}
}

// clusterVolume returns what the cluster state says of clusterVolume, or nil.
func (s *haStatusJSON) clusterVolume() *haVolumeStateJSON {
	if s.Cluster == nil {
		return nil
	}
	return s.Cluster.State.Volumes[clusterVolume]
}

func (r *haReplJSON) peer(name string) *haPeerJSON {
	for i := range r.Peers {
		if r.Peers[i].Name == name {
			return &r.Peers[i]
		}
	}
	return nil
}

// alive reports whether the member says name is alive (only a leader
// knows).
func (m *haMemberJSON) alive(name string) bool {
	for _, x := range m.Members {
		if x.Name == name {
			return x.Alive != nil && *x.Alive
		}
	}
	return false
}

// haStatus runs blockctl status -o json on d without logging.
func haStatus(d *daemon) (*haStatusJSON, string, error) {
	_, raw, err := d.statusQuiet()
	if err != nil {
		return nil, raw, err
	}
	var s haStatusJSON
	if err := json.Unmarshal([]byte(raw), &s); err != nil {
		return nil, raw, fmt.Errorf("blockctl status -o json does not parse: %w", err)
	}
	return &s, raw, nil
}

// waitHA polls d's status until cond holds and returns that status; it
// fails the test after haWait, with the last status.
func waitHA(t *testing.T, d *daemon, what string, cond func(s *haStatusJSON) bool) *haStatusJSON {
	t.Helper()
	deadline := time.Now().Add(haWait)
	var last string
	for {
		if !d.running() {
			t.Fatalf("%s exited while waiting for %s (%v)", d.spec.Name, what, d.waitErr)
		}
		s, raw, err := haStatus(d)
		if err == nil && cond(s) {
			return s
		}
		last = raw
		if err != nil {
			last = err.Error() + "\n" + raw
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %s did not happen within %v; last status:\n%s", d.spec.Name, what, haWait, last)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// waitLeaderSees waits until the cluster's leader reports name alive.
func (c *haCluster) waitLeaderSees(t *testing.T, name string) {
	t.Helper()
	deadline := time.Now().Add(haWait)
	for {
		for _, d := range c.All() {
			if !d.running() {
				continue
			}
			if s, _, err := haStatus(d); err == nil && s.Cluster != nil && s.Cluster.Raft == "Leader" && s.Cluster.alive(name) {
				t.Logf("the leader %s sees %s alive", s.Node, name)
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no leader reported %s alive within %v", name, haWait)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// waitLeaderNot waits until a member reports itself Raft leader and it is
// not node; it returns the leader's name.
func (c *haCluster) waitLeaderNot(t *testing.T, node string) string {
	t.Helper()
	deadline := time.Now().Add(haWait)
	for {
		for _, d := range c.All() {
			if !d.running() {
				continue
			}
			if s, _, err := haStatus(d); err == nil && s.Cluster != nil && s.Cluster.Raft == "Leader" && s.Node != node {
				return s.Node
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no member other than %s led the cluster within %v", node, haWait)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// epochObserver polls the members' status in the background and records,
// per epoch of clusterVolume, which nodes reported themselves primary at
// that epoch and which primary the cluster state named for it.
type epochObserver struct {
	nodes []*daemon
	stop  chan struct{}
	done  chan struct{}

	mu        sync.Mutex
	primaries map[uint64]map[string]int // epoch -> node that said "primary" -> times
	named     map[uint64]map[string]int // epoch -> primary named by a cluster state -> times
	polls     int
}

func observeEpochs(t *testing.T, nodes ...*daemon) *epochObserver {
	o := &epochObserver{nodes: nodes, stop: make(chan struct{}), done: make(chan struct{}),
		primaries: map[uint64]map[string]int{}, named: map[uint64]map[string]int{}}
	// One round before returning, so that the state at the start is seen
	// even if the test freezes or kills a node at once.
	for _, d := range nodes {
		s, raw, err := haStatus(d)
		if err != nil {
			t.Fatalf("%s: %v\n%s", d.spec.Name, err, raw)
		}
		o.record(s)
	}
	go o.run()
	t.Cleanup(o.Stop)
	return o
}

// run polls each node in its own goroutine, so that a node that does not
// answer (stopped with SIGSTOP) holds up only its own polls.
func (o *epochObserver) run() {
	defer close(o.done)
	var wg sync.WaitGroup
	for _, d := range o.nodes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-o.stop:
					return
				case <-time.After(20 * time.Millisecond):
				}
				if !d.running() {
					continue
				}
				if s, _, err := haStatus(d); err == nil {
					o.record(s)
				}
			}
		}()
	}
	wg.Wait()
}

// record adds what one status says.
func (o *epochObserver) record(s *haStatusJSON) {
	add := func(m map[uint64]map[string]int, e uint64, n string) {
		if m[e] == nil {
			m[e] = map[string]int{}
		}
		m[e][n]++
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	o.polls++
	if r := s.repl(); r.Role == "primary" {
		add(o.primaries, r.Epoch, s.Node)
	}
	if v := s.clusterVolume(); v != nil && v.Primary != "" {
		add(o.named, v.Epoch, v.Primary)
	}
}

// Stop ends the polling (idempotent).
func (o *epochObserver) Stop() {
	select {
	case <-o.stop:
	default:
		close(o.stop)
	}
	<-o.done
}

// check stops the observer and fails the test unless, at every epoch seen,
// exactly one node was primary and the cluster state named that same node;
// and the epochs seen are exactly first, first+1, ..., first+n, named in
// order by want (want[i] is the primary of epoch first+i).
func (o *epochObserver) check(t *testing.T, first uint64, want ...string) {
	t.Helper()
	o.Stop()
	o.mu.Lock()
	defer o.mu.Unlock()
	epochs := map[uint64]bool{}
	for e := range o.primaries {
		epochs[e] = true
	}
	for e := range o.named {
		epochs[e] = true
	}
	var seen []uint64
	for e := range epochs {
		seen = append(seen, e)
	}
	sort.Slice(seen, func(i, j int) bool { return seen[i] < seen[j] })
	var lines []string
	for _, e := range seen {
		lines = append(lines, fmt.Sprintf("epoch %d: primary by its own status %v, named by the cluster state %v", e, o.primaries[e], o.named[e]))
	}
	t.Logf("epoch observer (%d status polls):\n  %s", o.polls, strings.Join(lines, "\n  "))
	var wantEpochs []uint64
	for i := range want {
		wantEpochs = append(wantEpochs, first+uint64(i))
	}
	if !slices.Equal(seen, wantEpochs) {
		t.Errorf("epochs observed %v, want %v: each promotion adds exactly one", seen, wantEpochs)
	}
	for i, e := range wantEpochs {
		for what, m := range map[string]map[string]int{"reported itself primary": o.primaries[e], "was named primary by the cluster state": o.named[e]} {
			var nodes []string
			for n := range m {
				nodes = append(nodes, n)
			}
			sort.Strings(nodes)
			if len(nodes) != 1 || nodes[0] != want[i] {
				t.Errorf("at epoch %d %v %s; want exactly %s", e, nodes, what, want[i])
			}
		}
	}
}
