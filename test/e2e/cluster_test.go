package e2e

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/blockrep/blockrep/internal/nbdclient"

	"github.com/blockrep/blockrep/internal/freeport"
)

// The cluster harness: N blockrepd daemons named node1..nodeN on loopback,
// replicating one volume (clusterVolume) to each other, with an optional
// byte-counting TCP proxy on a peer link.

// clusterVolume is the volume every cluster test replicates.
const clusterVolume = "vol0"

// waitTimeout bounds every wait for a replication state.
const waitTimeout = 60 * time.Second

// replicationSpec is the [replication] table of a generated configuration.
// Empty strings leave a key out (the daemon's default applies).
type replicationSpec struct {
	Cluster         string
	SecretFile      string
	Listen          string
	Protocol        string
	SplitBrain      string
	ContinueAlone   bool
	Timeout         string
	ConnectRetryMax string
	SecondaryNBD    string
	ResyncRate      string
	Security        string
	// HA, when not nil, adds the [cluster] table (see ha_test.go); a
	// witness gets no [replication] table.
	HA *haSpec
}

// peerSpec is one [[peer]] table.
type peerSpec struct {
	Name, Address string
}

// replicationConfig renders [replication] and [[peer]].
func (d *daemon) replicationConfig(b *strings.Builder) {
	r := d.spec.Replication
	if r == nil {
		return
	}
	if r.HA != nil {
		defer d.haConfig(b) // ha_test.go
		if r.HA.Kind == "witness" {
			return
		}
	}
	q := strconv.Quote
	b.WriteString("\n[replication]\n")
	for _, kv := range [][2]string{
		{"cluster", r.Cluster}, {"secret_file", r.SecretFile}, {"listen", r.Listen},
		{"protocol", r.Protocol}, {"split_brain", r.SplitBrain}, {"timeout", r.Timeout},
		{"connect_retry_max", r.ConnectRetryMax}, {"secondary_nbd", r.SecondaryNBD}, {"resync_rate", r.ResyncRate},
		{"security", r.Security},
	} {
		if kv[1] != "" {
			fmt.Fprintf(b, "%s = %s\n", kv[0], q(kv[1]))
		}
	}
	if r.ContinueAlone {
		b.WriteString("continue_alone = true\n")
	}
	for _, p := range d.spec.Peers {
		fmt.Fprintf(b, "\n[[peer]]\nname = %s\naddress = %s\n", q(p.Name), q(p.Address))
	}
}

// clusterSpec describes a cluster to start.
type clusterSpec struct {
	// Nodes is the number of daemons, named node1..nodeN.
	Nodes int
	// Size is the size of clusterVolume.
	Size int64
	// Primary is the index (0-based) of the node whose volume is
	// configured primary; the others are secondary. -1: none is primary.
	Primary int
	// Star makes node1 the only peer of the others (no links between the
	// other nodes); otherwise every node is a peer of every other.
	Star bool
	// Replication settings shared by every node ("" = default; Timeout
	// defaults to "2s", written out).
	Protocol, SplitBrain, SecondaryNBD, Timeout string
	// Proxied lists peer links, as (dialer, acceptor) indexes, to route
	// through a byte-counting proxy: the dialer's [[peer]] address of the
	// acceptor is the proxy's. The node whose name sorts first dials.
	Proxied [][2]int
	// Configure, when set, adjusts each node's configuration before the
	// first start (a different secret, continue_alone, ...).
	Configure func(i int, s *daemonSpec)
	// Deferred lists nodes that startCluster configures but does not
	// start: the test starts them (Start) when it wants.
	Deferred []int
}

// cluster is a running set of daemons.
type cluster struct {
	t          *testing.T
	Nodes      []*daemon
	Dir        string
	SecretFile string
	proxies    map[[2]int]*proxy
}

// newSecretFile writes 32 random bytes, base64, to a new file of mode 0600.
func newSecretFile(t *testing.T, dir, name string) string {
	t.Helper()
	var b [32]byte
	if _, err := rand.Read(b[:]); err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(base64.StdEncoding.EncodeToString(b[:])+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// freePorts returns n distinct TCP ports on 127.0.0.1 that were free a
// moment ago (all held open at once, so they differ from each other).
func freePorts(t *testing.T, n int) []int {
	t.Helper()
	ports, err := freeport.Pick(n)
	if err != nil {
		t.Fatal(err)
	}
	return ports
}

func nodeName(i int) string { return "node" + strconv.Itoa(i+1) }

// startCluster generates the configurations and starts every daemon. It
// does not wait for the links: see waitInSync.
func startCluster(t *testing.T, cs clusterSpec) *cluster {
	t.Helper()
	if cs.Size == 0 {
		cs.Size = 64 * MiB
	}
	if cs.Timeout == "" {
		cs.Timeout = "2s"
	}
	c := &cluster{t: t, Dir: t.TempDir(), proxies: map[[2]int]*proxy{}}
	c.SecretFile = newSecretFile(t, c.Dir, "cluster.secret")
	// Proxies listen first: the ports picked below cannot collide with
	// theirs.
	for _, pr := range cs.Proxied {
		c.proxies[pr] = startProxy(t, "") // target set below
	}
	ports := freePorts(t, 2*cs.Nodes)
	replAddr := func(i int) string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(ports[cs.Nodes+i])) }
	for pr, p := range c.proxies {
		p.setTarget(replAddr(pr[1]))
	}
	for i := 0; i < cs.Nodes; i++ {
		role := "secondary"
		if i == cs.Primary {
			role = "primary"
		}
		spec := daemonSpec{
			Name:    nodeName(i),
			Volumes: []volumeSpec{{Name: clusterVolume, Size: cs.Size, Role: role}},
			Replication: &replicationSpec{
				Cluster:         "e2e",
				SecretFile:      c.SecretFile,
				Listen:          replAddr(i),
				Protocol:        cs.Protocol,
				SplitBrain:      cs.SplitBrain,
				SecondaryNBD:    cs.SecondaryNBD,
				Timeout:         cs.Timeout,
				ConnectRetryMax: "1s",
			},
		}
		for j := 0; j < cs.Nodes; j++ {
			if j == i || (cs.Star && i != 0 && j != 0) {
				continue
			}
			addr := replAddr(j)
			if p, ok := c.proxies[[2]int{i, j}]; ok {
				addr = p.Addr()
			}
			spec.Peers = append(spec.Peers, peerSpec{Name: nodeName(j), Address: addr})
		}
		if cs.Configure != nil {
			cs.Configure(i, &spec)
		}
		d := newDaemon(t, spec)
		d.Port = ports[i]
		c.Nodes = append(c.Nodes, d)
	}
	for i, d := range c.Nodes {
		if !slices.Contains(cs.Deferred, i) {
			d.Start()
		}
	}
	return c
}

// proxy returns the proxy on the link from dialer to acceptor.
func (c *cluster) proxy(dialer, acceptor int) *proxy {
	p, ok := c.proxies[[2]int{dialer, acceptor}]
	if !ok {
		c.t.Fatalf("no proxy between %s and %s", nodeName(dialer), nodeName(acceptor))
	}
	return p
}

// Replication status, decoded from blockctl status -o json independently of
// the replica package (the JSON is a contract with scripts).
type replStatusJSON struct {
	Role          string           `json:"role"`
	Disk          string           `json:"disk"`
	Epoch         uint64           `json:"epoch"`
	Generation    string           `json:"generation"`
	Protocol      string           `json:"protocol"`
	ContinueAlone bool             `json:"continue_alone"`
	Peers         []peerStatusJSON `json:"peers"`
}

type peerStatusJSON struct {
	Name                string        `json:"name"`
	Address             string        `json:"address"`
	Connection          string        `json:"connection"`
	Role                string        `json:"role"`
	Disk                string        `json:"disk"`
	Replicating         bool          `json:"replicating"`
	OutOfSyncBytes      int64         `json:"out_of_sync_bytes"`
	Resync              *progressJSON `json:"resync"`
	Verify              *progressJSON `json:"verify"`
	Decision            string        `json:"decision"`
	LastError           string        `json:"last_error"`
	BytesSent           int64         `json:"bytes_sent"`
	BytesReceived       int64         `json:"bytes_received"`
	ResyncBytesSent     int64         `json:"resync_bytes_sent"`
	ResyncBytesReceived int64         `json:"resync_bytes_received"`
}

type progressJSON struct {
	Kind           string    `json:"kind"`
	Started        time.Time `json:"started"`
	Finished       time.Time `json:"finished"`
	TotalBytes     int64     `json:"total_bytes"`
	DoneBytes      int64     `json:"done_bytes"`
	OutOfSyncBytes int64     `json:"out_of_sync_bytes"`
	Error          string    `json:"error"`
}

// peer returns the named peer's status, or nil.
func (r *replStatusJSON) peer(name string) *peerStatusJSON {
	for i := range r.Peers {
		if r.Peers[i].Name == name {
			return &r.Peers[i]
		}
	}
	return nil
}

// statusQuiet runs blockctl status -o json without logging the command
// (for polling); it returns the decoded status and the raw JSON.
func (d *daemon) statusQuiet() (*statusJSON, string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	cmd := d.blockctlCmd(ctx, "status", "-o", "json")
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, string(out), fmt.Errorf("blockctl status -o json: %w: %s", err, stderr.String())
	}
	var st statusJSON
	if err := json.Unmarshal(out, &st); err != nil {
		return nil, string(out), fmt.Errorf("blockctl status -o json does not parse: %w", err)
	}
	return &st, string(out), nil
}

// repl returns the replication status of clusterVolume on d.
func repl(t *testing.T, d *daemon) *replStatusJSON {
	t.Helper()
	st, raw, err := d.statusQuiet()
	if err != nil {
		t.Fatalf("%s: %v\n%s", d.spec.Name, err, raw)
	}
	r := st.volume(t, clusterVolume).Replication
	if r == nil {
		t.Fatalf("%s: status of %s has no replication:\n%s", d.spec.Name, clusterVolume, raw)
	}
	return r
}

// waitRepl polls d's status until cond holds for clusterVolume's
// replication and returns that status; after waitTimeout it fails the test
// with the last status.
func waitRepl(t *testing.T, d *daemon, what string, cond func(r *replStatusJSON) bool) *replStatusJSON {
	t.Helper()
	deadline := time.Now().Add(waitTimeout)
	var last string
	for {
		if !d.running() {
			t.Fatalf("%s exited while waiting for %s (%v)", d.spec.Name, what, d.waitErr)
		}
		st, raw, err := d.statusQuiet()
		last = raw
		if err == nil {
			for i := range st.Volumes {
				if st.Volumes[i].Name == clusterVolume && st.Volumes[i].Replication != nil && cond(st.Volumes[i].Replication) {
					return st.Volumes[i].Replication
				}
			}
		} else {
			last = err.Error() + "\n" + raw
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %s did not happen within %v; last status:\n%s", d.spec.Name, what, waitTimeout, last)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// waitPeer waits until d's link to peer satisfies cond.
func waitPeer(t *testing.T, d *daemon, peer, what string, cond func(p *peerStatusJSON) bool) *peerStatusJSON {
	t.Helper()
	r := waitRepl(t, d, fmt.Sprintf("peer %s: %s", peer, what), func(r *replStatusJSON) bool {
		p := r.peer(peer)
		return p != nil && cond(p)
	})
	return r.peer(peer)
}

// waitConnection waits until d's link to peer is in connection state state.
func waitConnection(t *testing.T, d *daemon, peer, state string) *peerStatusJSON {
	t.Helper()
	return waitPeer(t, d, peer, "connection "+state, func(p *peerStatusJSON) bool { return p.Connection == state })
}

// inSync is a peer that is connected, UpToDate, with nothing out of sync
// and no resync running.
func inSync(p *peerStatusJSON) bool {
	return p.Connection == "Connected" && p.Disk == "UpToDate" && p.OutOfSyncBytes == 0 &&
		(p.Resync == nil || !p.Resync.Finished.IsZero())
}

// waitInSync waits until d sees each named peer in sync (see inSync) and
// returns the last status. A resync to one of them that starts during the
// wait and fails fails the test at once: nothing in these tests cuts a
// link while they wait, so that is never expected.
func waitInSync(t *testing.T, d *daemon, peers ...string) *replStatusJSON {
	t.Helper()
	since := time.Now()
	return waitRepl(t, d, "peers "+strings.Join(peers, ", ")+" Connected, UpToDate, nothing out of sync", func(r *replStatusJSON) bool {
		for _, name := range peers {
			p := r.peer(name)
			if p != nil && p.Resync != nil && p.Resync.Error != "" && p.Resync.Started.After(since) {
				t.Fatalf("%s: the resync to %s failed: %q (link %s, %d bytes out of sync, decision %q, last_error %q)",
					d.spec.Name, name, p.Resync.Error, p.Connection, p.OutOfSyncBytes, p.Decision, p.LastError)
			}
		}
		for _, name := range peers {
			p := r.peer(name)
			if p == nil || !inSync(p) {
				return false
			}
		}
		return true
	})
}

// blockctlResult runs blockctl against d and returns its output and error
// without failing the test (for commands expected to be refused).
func (d *daemon) blockctlResult(t *testing.T, args ...string) (string, string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	return runCmd(t, d.blockctlCmd(ctx, args...))
}

// volumeHash returns the SHA-256 of the data in clusterVolume's backing
// file on d (without its identity block).
func volumeHash(t *testing.T, d *daemon) string {
	t.Helper()
	return volumeDataHash(t, d.VolumePath(clusterVolume))
}

// sameVolumes fails the test unless every node's backing file of
// clusterVolume holds the same data as the first one's.
func sameVolumes(t *testing.T, nodes ...*daemon) {
	t.Helper()
	for _, d := range nodes[1:] {
		volumesEqual(t, nodes[0].VolumePath(clusterVolume), d.VolumePath(clusterVolume))
	}
}

// dialNBD opens clusterVolume on d with the Go NBD client; cleanup closes it.
func dialNBD(t *testing.T, d *daemon) *nbdclient.Client {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := nbdclient.Dial(ctx, d.Addr(), clusterVolume)
	if err != nil {
		t.Fatalf("NBD connection to %s on %s: %v", clusterVolume, d.spec.Name, err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// proxy is a TCP proxy that counts the bytes it forwards in each
// direction: up from the side that connects to the proxy, down from the
// target back. It counts everything on the connection (handshake, frame
// headers, payloads, pings): what is really on the wire.
type proxy struct {
	t      *testing.T
	ln     net.Listener
	target atomic.Value // string
	up     atomic.Int64
	down   atomic.Int64
	conns  atomic.Int64 // connections accepted
	ended  atomic.Int64 // connections that ended
	// blocked makes the proxy close new connections at once, as a
	// network that drops the link would.
	blocked atomic.Bool

	mu     sync.Mutex
	open   map[net.Conn]struct{}
	closed bool
	wg     sync.WaitGroup
}

// startProxy listens on a free port on 127.0.0.1 and forwards every
// connection to target; cleanup closes it.
func startProxy(t *testing.T, target string) *proxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &proxy{t: t, ln: ln, open: map[net.Conn]struct{}{}}
	p.target.Store(target)
	p.wg.Add(1)
	go p.serve()
	t.Cleanup(p.Close)
	return p
}

func (p *proxy) setTarget(addr string) { p.target.Store(addr) }

// Addr is where peers connect to the proxy.
func (p *proxy) Addr() string { return p.ln.Addr().String() }

// Counts returns the bytes forwarded up (to the target) and down.
func (p *proxy) Counts() (up, down int64) { return p.up.Load(), p.down.Load() }

func (p *proxy) track(c net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return false
	}
	p.open[c] = struct{}{}
	return true
}

func (p *proxy) untrack(c net.Conn) {
	p.mu.Lock()
	delete(p.open, c)
	p.mu.Unlock()
}

func (p *proxy) serve() {
	defer p.wg.Done()
	for {
		in, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.conns.Add(1)
		p.wg.Add(1)
		go p.handle(in)
	}
}

func (p *proxy) handle(in net.Conn) {
	defer p.wg.Done()
	defer p.ended.Add(1)
	if p.blocked.Load() || !p.track(in) {
		in.Close()
		return
	}
	defer p.untrack(in)
	out, err := net.DialTimeout("tcp", p.target.Load().(string), 5*time.Second)
	if err != nil {
		in.Close()
		return
	}
	if !p.track(out) {
		in.Close()
		out.Close()
		return
	}
	defer p.untrack(out)
	var wg sync.WaitGroup
	pipe := func(dst, src net.Conn, n *atomic.Int64) {
		defer wg.Done()
		_, _ = io.Copy(countingWriter{dst, n}, src)
		// Either side ending ends both: a peer that dies must look dead
		// to the other end too.
		in.Close()
		out.Close()
	}
	wg.Add(2)
	go pipe(out, in, &p.up)
	go pipe(in, out, &p.down)
	wg.Wait()
}

type countingWriter struct {
	w io.Writer
	n *atomic.Int64
}

func (c countingWriter) Write(b []byte) (int, error) {
	n, err := c.w.Write(b)
	c.n.Add(int64(n))
	return n, err
}

// Cut closes the connections the proxy carries, as a network failure
// would; it keeps accepting new ones.
func (p *proxy) Cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for c := range p.open {
		c.Close()
	}
}

// Close stops the proxy and cuts its connections.
func (p *proxy) Close() {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return
	}
	p.closed = true
	for c := range p.open {
		c.Close()
	}
	p.mu.Unlock()
	p.ln.Close()
	p.wg.Wait()
}
