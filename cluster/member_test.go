package cluster

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/blockrep/blockrep/replica"
)

// The partition tests run whole Members — Raft on its in-memory transport,
// the arbiter, heartbeats, leases and the control loop — over a simulated
// network that the test cuts and heals, with simulated replicas whose data
// is a version number. A writer plays the application: it writes through
// whichever replica serves (primary with a lease), replicates to the
// secondaries it can reach, and when it cannot reach one that the cluster
// lists UpToDate it must commit that peer Outdated before it acknowledges
// (invariant 2). A checker samples all replicas continuously. Safety is
// asserted throughout, whatever the timing:
//   - at most one node per epoch ever becomes primary (every node's applied
//     state is watched);
//   - never two replicas serving at the same instant (invariant 4);
//   - a replica is only ever promoted holding every acknowledged write
//     (invariants 1 and 3: no promotion of a replica that is not UpToDate).

// testTiming is fast enough for tests; the rules do not depend on it.
var testTiming = Timing{HeartbeatInterval: 20 * time.Millisecond, FailoverTimeout: 150 * time.Millisecond}

type simNet struct {
	t       *testing.T
	mu      sync.Mutex
	members map[string]*simMember
	cut     map[[2]string]bool
	// acked is the newest version acknowledged to the application.
	acked uint64
	// epochs records which node became primary at each epoch, from every
	// node's applied state.
	epochs     map[uint64]string
	violations []string
	// remote, when set, makes each member's Remote (default simRemote).
	remote func(from string) Remote
	// failover is volume v's configured failover policy.
	failover string
}

type simMember struct {
	name  string
	kind  NodeKind
	trans *raft.InmemTransport
	m     *Member
	vol   *simVolume // nil on a witness
	stop  context.CancelFunc
	done  chan struct{}
}

// simVolume is a data node's replica of volume "v".
type simVolume struct {
	net     *simNet
	node    string
	primary bool
	epoch   uint64
	lease   time.Time
	data    uint64
	disk    replica.DiskState
}

func (v *simVolume) Name() string { return "v" }
func (v *simVolume) Fresh() bool  { return false }
func (v *simVolume) Report() LocalReport {
	v.net.mu.Lock()
	defer v.net.mu.Unlock()
	return LocalReport{Primary: v.primary, Epoch: v.epoch, Disk: v.disk}
}

func (v *simVolume) Promote(epoch uint64) error {
	n := v.net
	n.mu.Lock()
	defer n.mu.Unlock()
	if epoch <= v.epoch {
		return fmt.Errorf("epoch %d not newer than %d", epoch, v.epoch)
	}
	if v.data < n.acked {
		n.violate("%s promoted at epoch %d with version %d, but %d was acknowledged", v.node, epoch, v.data, n.acked)
	}
	v.primary, v.epoch = true, epoch
	return nil
}

func (v *simVolume) Demote(deposed bool) error {
	v.net.mu.Lock()
	defer v.net.mu.Unlock()
	v.primary = false
	return nil
}

func (v *simVolume) SetLease(until time.Time) {
	v.net.mu.Lock()
	defer v.net.mu.Unlock()
	if until.After(v.lease) {
		v.lease = until
	}
}

// serving reports whether v serves I/O now. Caller holds net.mu.
func (v *simVolume) serving(now time.Time) bool { return v.primary && now.Before(v.lease) }

func (n *simNet) violate(format string, args ...any) {
	n.violations = append(n.violations, fmt.Sprintf(format, args...))
}

func (n *simNet) reachable(a, b string) bool {
	return !n.cut[[2]string{a, b}] && !n.cut[[2]string{b, a}]
}

// testLog sends the members' logs to the test's log (shown on failure).
type testLog struct{ t *testing.T }

func (w testLog) Write(p []byte) (int, error) {
	if w.t.Context().Err() == nil {
		w.t.Log(strings.TrimSpace(string(p)))
	}
	return len(p), nil
}

// simRemote routes one member's calls to the leader, unless cut.
type simRemote struct {
	net  *simNet
	from string
}

func (r simRemote) target(addr raft.ServerAddress) (*Member, error) {
	r.net.mu.Lock()
	defer r.net.mu.Unlock()
	to := r.net.members[string(addr)]
	if to == nil || to.m == nil || !r.net.reachable(r.from, to.name) {
		return nil, fmt.Errorf("%s unreachable from %s", addr, r.from)
	}
	return to.m, nil
}

func (r simRemote) Heartbeat(ctx context.Context, addr raft.ServerAddress, rep Report) (HeartbeatReply, error) {
	m, err := r.target(addr)
	if err != nil {
		return HeartbeatReply{}, err
	}
	reply, err := m.HandleHeartbeat(ctx, rep)
	if err == nil {
		// The answer must make it back, too.
		_, err = r.target(addr)
	}
	return reply, err
}

func (r simRemote) ReadIndex(ctx context.Context, addr raft.ServerAddress) (uint64, error) {
	m, err := r.target(addr)
	if err != nil {
		return 0, err
	}
	idx, err := m.HandleReadIndex(ctx)
	if err == nil {
		_, err = r.target(addr)
	}
	return idx, err
}

func (r simRemote) Apply(ctx context.Context, addr raft.ServerAddress, c Command) (Result, error) {
	m, err := r.target(addr)
	if err != nil {
		return Result{}, err
	}
	if !m.IsLeader() {
		return Result{}, &NotLeaderError{}
	}
	return m.applyLocal(ctx, c)
}

func (r simRemote) Switchover(ctx context.Context, addr raft.ServerAddress, volume, target string) error {
	m, err := r.target(addr)
	if err != nil {
		return err
	}
	return m.HandleSwitchover(ctx, volume, target)
}

func (r simRemote) AddMember(ctx context.Context, addr raft.ServerAddress, name, memberAddr string) error {
	m, err := r.target(addr)
	if err != nil {
		return err
	}
	return m.HandleAddMember(ctx, name, memberAddr)
}

func (r simRemote) RemoveMember(ctx context.Context, addr raft.ServerAddress, name string, force bool, reason string) error {
	m, err := r.target(addr)
	if err != nil {
		return err
	}
	return m.HandleRemoveMember(ctx, name, force, reason)
}

// newSimNet starts the members, data nodes and witnesses by name, with
// preferred as volume v's preferred primary.
func newSimNet(t *testing.T, data, witnesses []string, preferred string) *simNet {
	return newSimNetWith(t, data, witnesses, preferred, nil)
}

func newSimNetWith(t *testing.T, data, witnesses []string, preferred string, remote func(n *simNet, from string) Remote, failover ...string) *simNet {
	t.Helper()
	n := &simNet{t: t, members: map[string]*simMember{}, cut: map[[2]string]bool{}, epochs: map[uint64]string{}}
	if len(failover) > 0 {
		n.failover = failover[0]
	}
	if remote != nil {
		n.remote = func(from string) Remote { return remote(n, from) }
	}
	var boot []Server
	add := func(name string, kind NodeKind) {
		_, trans := raft.NewInmemTransport(raft.ServerAddress(name))
		sm := &simMember{name: name, kind: kind, trans: trans}
		if kind == DataNode {
			sm.vol = &simVolume{net: n, node: name, disk: replica.UpToDate}
		}
		n.members[name] = sm
		boot = append(boot, Server{Name: name, Address: name})
	}
	for _, d := range data {
		add(d, DataNode)
	}
	for _, w := range witnesses {
		add(w, Witness)
	}
	n.connectAll()
	for _, sm := range n.members {
		n.start(sm, boot, preferred)
	}
	t.Cleanup(n.stopAll)
	go n.check()
	return n
}

func (n *simNet) connectAll() {
	for _, a := range n.members {
		for _, b := range n.members {
			if a != b {
				a.trans.Connect(b.trans.LocalAddr(), b.trans)
			}
		}
	}
}

func (n *simNet) start(sm *simMember, boot []Server, preferred string) {
	store := raft.NewInmemStore()
	cfg := MemberConfig{
		Name: sm.name, Kind: sm.kind, Timing: testTiming,
		Transport: sm.trans, LogStore: store, StableStore: store, Snapshots: raft.NewInmemSnapshotStore(),
		Bootstrap: boot,
		Initial:   map[string]string{"v": preferred},
		Preferred: map[string]string{"v": preferred},
		Failover:  map[string]string{"v": n.failover},
		Remote:    simRemote{net: n, from: sm.name},
		Logger:    slog.New(slog.NewTextHandler(testLog{n.t}, nil)).With("node", sm.name),
	}
	if n.remote != nil {
		cfg.Remote = n.remote(sm.name)
	}
	if sm.vol != nil {
		cfg.Volumes = []LocalVolume{sm.vol}
	}
	m, err := NewMember(cfg)
	if err != nil {
		n.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	sm.stop, sm.done = cancel, make(chan struct{})
	n.mu.Lock()
	sm.m = m
	n.mu.Unlock()
	go func() {
		defer close(sm.done)
		_ = m.Run(ctx)
	}()
	go n.watch(ctx, sm.name, m)
}

func (n *simNet) stopAll() {
	for _, sm := range n.members {
		sm.stop()
	}
	for _, sm := range n.members {
		<-sm.done
	}
}

// watch records every primary each node's applied state shows.
func (n *simNet) watch(ctx context.Context, name string, m *Member) {
	for {
		ch := m.Changed()
		if v := m.State().Volumes["v"]; v != nil && v.Primary != "" {
			n.mu.Lock()
			if p, ok := n.epochs[v.Epoch]; ok && p != v.Primary {
				n.violate("epoch %d has two primaries: %s and %s (seen on %s)", v.Epoch, p, v.Primary, name)
			}
			n.epochs[v.Epoch] = v.Primary
			n.mu.Unlock()
		}
		select {
		case <-ctx.Done():
			return
		case <-ch:
		}
	}
}

// check samples the replicas: never two serving at once.
func (n *simNet) check() {
	for {
		time.Sleep(time.Millisecond)
		n.mu.Lock()
		if n.members == nil {
			n.mu.Unlock()
			return
		}
		now := time.Now()
		var serving []string
		for _, sm := range n.members {
			if sm.vol != nil && sm.vol.serving(now) {
				serving = append(serving, sm.name)
			}
		}
		if len(serving) > 1 {
			slices.Sort(serving)
			n.violate("two replicas serving at once: %v", serving)
		}
		done := n.t.Context().Err() != nil
		n.mu.Unlock()
		if done {
			return
		}
	}
}

// partition cuts every link between a and b.
func (n *simNet) partition(a, b string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.cut[[2]string{a, b}] = true
	ta, tb := n.members[a].trans, n.members[b].trans
	ta.Disconnect(tb.LocalAddr())
	tb.Disconnect(ta.LocalAddr())
}

// isolate cuts node off from everyone.
func (n *simNet) isolate(node string) {
	for name := range n.members {
		if name != node {
			n.partition(node, name)
		}
	}
}

func (n *simNet) heal() {
	n.mu.Lock()
	defer n.mu.Unlock()
	clear(n.cut)
	n.connectAll()
}

// write plays one application write: through the serving replica, to
// every reachable secondary, and for an unreachable one listed UpToDate
// an Outdated commit first. It reports whether the write was
// acknowledged. Like the replica's reporter, it also resyncs reachable
// secondaries and reports them UpToDate, serially with writes.
func (n *simNet) write(ctx context.Context) bool {
	n.mu.Lock()
	now := time.Now()
	var p *simMember
	for _, sm := range n.members {
		if sm.vol != nil && sm.vol.serving(now) {
			p = sm
		}
	}
	if p == nil {
		n.mu.Unlock()
		return false
	}
	version := p.vol.data + 1
	epoch := p.vol.epoch
	state := p.m.State().Volumes["v"]
	var missing, resynced []string
	for _, sm := range n.members {
		if sm == p || sm.vol == nil {
			continue
		}
		if n.reachable(p.name, sm.name) && !sm.vol.primary {
			sm.vol.data = version
			if state.Disks[sm.name] != replica.UpToDate {
				resynced = append(resynced, sm.name)
			}
			continue
		}
		if state.Disks[sm.name] == replica.UpToDate {
			missing = append(missing, sm.name)
		}
	}
	n.mu.Unlock()
	for _, peer := range missing {
		cctx, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
		err := p.m.ReportPeerDisk(cctx, "v", peer, epoch, replica.Outdated)
		cancel()
		if err != nil {
			return false // not acknowledged: the peer may be promoted
		}
	}
	n.mu.Lock()
	ok := p.vol.serving(time.Now()) && p.vol.epoch == epoch
	if ok {
		p.vol.data = version
		if version > n.acked {
			n.acked = version
		}
	}
	n.mu.Unlock()
	for _, peer := range resynced {
		cctx, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
		_ = p.m.ReportPeerDisk(cctx, "v", peer, epoch, replica.UpToDate)
		cancel()
	}
	return ok
}

// writer writes until ctx ends and counts the acknowledged writes.
func (n *simNet) writer(ctx context.Context) (stop func() int) {
	var acked int
	done := make(chan struct{})
	go func() {
		defer close(done)
		for ctx.Err() == nil {
			if n.write(ctx) {
				acked++
			}
			time.Sleep(time.Millisecond)
		}
	}()
	return func() int { <-done; return acked }
}

// primary waits until some node's applied state names a primary of v that
// serves, and returns it.
func (n *simNet) waitServing(t *testing.T, not string) string {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		n.mu.Lock()
		now := time.Now()
		for _, sm := range n.members {
			if sm.vol != nil && sm.name != not && sm.vol.serving(now) {
				n.mu.Unlock()
				return sm.name
			}
		}
		n.mu.Unlock()
		time.Sleep(5 * time.Millisecond)
	}
	t.Fatalf("no replica other than %q serves", not)
	return ""
}

func (n *simNet) leader(t *testing.T, not string) string {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		for _, sm := range n.members {
			if sm.name != not && sm.m.IsLeader() {
				return sm.name
			}
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Fatal("no leader")
	return ""
}

func (n *simNet) stateOf(node string) *VolumeState {
	return n.members[node].m.State().Volumes["v"]
}

func (n *simNet) assertSafe(t *testing.T) {
	t.Helper()
	n.mu.Lock()
	defer n.mu.Unlock()
	for _, v := range n.violations {
		t.Error(v)
	}
}

// settle writes for d with a writer running and returns the acked count.
func (n *simNet) run(d time.Duration) int {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	return n.writer(ctx)()
}

func TestMemberFirstPrimaryIsPreferred(t *testing.T) {
	n := newSimNet(t, []string{"a", "b"}, []string{"w"}, "b")
	if p := n.waitServing(t, ""); p != "b" {
		t.Fatalf("first primary %s, want the preferred b", p)
	}
	if acked := n.run(200 * time.Millisecond); acked == 0 {
		t.Fatal("no write acknowledged with everything up")
	}
	v := n.stateOf("a")
	if v.Epoch != 1 || v.Disks["a"] != replica.UpToDate {
		t.Fatalf("state %+v: want epoch 1 and a UpToDate (in sync)", v)
	}
	n.assertSafe(t)
}

func TestPartitionPrimaryIsolated(t *testing.T) {
	n := newSimNet(t, []string{"a", "b"}, []string{"w"}, "a")
	if p := n.waitServing(t, ""); p != "a" {
		t.Fatalf("first primary %s", p)
	}
	ctx, cancel := context.WithCancel(context.Background())
	stop := n.writer(ctx)
	time.Sleep(100 * time.Millisecond)
	n.isolate("a")
	// b takes over once a's lease has run out; a stops serving first.
	if p := n.waitServing(t, "a"); p != "b" {
		t.Fatalf("new primary %s", p)
	}
	time.Sleep(200 * time.Millisecond)
	cancel()
	if stop() == 0 {
		t.Fatal("no write acknowledged")
	}
	if v := n.stateOf("b"); v.Primary != "b" || v.Epoch != 2 || v.Lost != "" {
		t.Fatalf("state on b %+v: want b primary at epoch 2", v)
	}
	n.mu.Lock()
	aServes := n.members["a"].vol.serving(time.Now())
	n.mu.Unlock()
	if aServes {
		t.Fatal("isolated a still serves")
	}
	// Healed, a learns it was deposed and steps down.
	n.heal()
	deadline := time.Now().Add(10 * time.Second)
	for n.members["a"].vol.Report().Primary {
		if time.Now().After(deadline) {
			t.Fatal("a did not step down after the heal")
		}
		time.Sleep(5 * time.Millisecond)
	}
	n.run(200 * time.Millisecond)
	n.assertSafe(t)
}

func TestPartitionLeaderIsolated(t *testing.T) {
	n := newSimNet(t, []string{"a", "b"}, []string{"w"}, "a")
	p := n.waitServing(t, "")
	// Leadership moves off the primary by itself; isolate whoever leads
	// then, primary or not.
	time.Sleep(3 * testTiming.FailoverTimeout)
	l := n.leader(t, "")
	ctx, cancel := context.WithCancel(context.Background())
	stop := n.writer(ctx)
	time.Sleep(100 * time.Millisecond)
	n.isolate(l)
	nl := n.leader(t, l)
	time.Sleep(10 * testTiming.FailoverTimeout)
	after := n.waitServing(t, l)
	cancel()
	stop()
	t.Logf("primary %s, leader %s isolated, new leader %s, primary now %s", p, l, nl, after)
	if l != p && after != p {
		t.Errorf("isolating leader %s (not the primary) moved the primary from %s to %s", l, p, after)
	}
	n.heal()
	n.run(200 * time.Millisecond)
	n.assertSafe(t)
}

func TestPartitionWitnessLost(t *testing.T) {
	n := newSimNet(t, []string{"a", "b"}, []string{"w"}, "a")
	n.waitServing(t, "")
	n.isolate("w")
	acked := n.run(10 * testTiming.FailoverTimeout)
	if acked == 0 {
		t.Fatal("no write acknowledged with only the witness lost")
	}
	if v := n.stateOf("a"); v.Primary != "a" || v.Disks["b"] != replica.UpToDate {
		t.Fatalf("state %+v: losing the witness must change nothing", v)
	}
	n.assertSafe(t)
}

func TestPartitionSecondaryThenPrimaryLost(t *testing.T) {
	n := newSimNet(t, []string{"a", "b"}, []string{"w"}, "a")
	n.waitServing(t, "")
	n.isolate("b")
	// a outdates b through the cluster and goes on.
	if acked := n.run(10 * testTiming.FailoverTimeout); acked == 0 {
		t.Fatal("no write acknowledged after the secondary was lost")
	}
	if v := n.stateOf("a"); v.Disks["b"] != replica.Outdated {
		t.Fatalf("b is %v in the cluster, want Outdated", v.Disks["b"])
	}
	// Now the primary dies and b comes back: b must not be promoted.
	n.members["a"].stop()
	<-n.members["a"].done
	n.heal()
	n.isolate("a")
	time.Sleep(20 * testTiming.FailoverTimeout)
	v := n.stateOf("b")
	if v.Primary == "b" {
		t.Fatalf("Outdated b was promoted automatically: %+v", v)
	}
	if v.Primary != "" || v.Lost != "a" {
		t.Fatalf("state %+v: want no primary, a recorded lost", v)
	}
	// The operator may force it, and is told what may be lost.
	res, err := n.members["b"].m.ForcePromote(context.Background(), "v", "b", "test: a is gone for good")
	if err != nil {
		t.Fatal(err)
	}
	if res.Note == "" {
		t.Fatal("forced promotion of an Outdated replica did not say what may be lost")
	}
	n.mu.Lock()
	n.acked = 0 // the forced promotion gives up a's writes, knowingly
	n.mu.Unlock()
	if p := n.waitServing(t, "a"); p != "b" {
		t.Fatalf("serving %s after the forced promotion", p)
	}
	n.assertSafe(t)
}

func TestPartitionFlapping(t *testing.T) {
	n := newSimNet(t, []string{"a", "b"}, []string{"w"}, "a")
	n.waitServing(t, "")
	ctx, cancel := context.WithCancel(context.Background())
	stop := n.writer(ctx)
	rng := rand.New(rand.NewPCG(1, 2))
	names := []string{"a", "b", "w"}
	for range 40 {
		x, y := names[rng.IntN(3)], names[rng.IntN(3)]
		switch {
		case x == y:
			n.heal()
		default:
			n.partition(x, y)
		}
		time.Sleep(time.Duration(rng.IntN(int(2 * testTiming.FailoverTimeout))))
	}
	n.heal()
	time.Sleep(10 * testTiming.FailoverTimeout)
	cancel()
	acked := stop()
	t.Logf("%d writes acknowledged; epochs %v", acked, n.epochs)
	n.waitServing(t, "")
	n.assertSafe(t)
}

func TestSwitchover(t *testing.T) {
	n := newSimNet(t, []string{"a", "b"}, []string{"w"}, "a")
	n.waitServing(t, "")
	ctx, cancel := context.WithCancel(context.Background())
	stop := n.writer(ctx)
	time.Sleep(50 * time.Millisecond)
	swctx, swcancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer swcancel()
	if err := n.members["a"].m.Switchover(swctx, "v", "b"); err != nil {
		t.Fatal(err)
	}
	// The leader saw it done; a applies the same log a moment later.
	deadline := time.Now().Add(10 * time.Second)
	for v := n.stateOf("a"); v.Primary != "b" || v.Epoch != 2; v = n.stateOf("a") {
		if time.Now().After(deadline) {
			t.Fatalf("after switchover: %+v", v)
		}
		time.Sleep(5 * time.Millisecond)
	}
	time.Sleep(50 * time.Millisecond)
	cancel()
	stop()
	// Refused: to a witness, to the primary itself, to an Outdated node.
	for _, target := range []string{"w", "b", "nobody"} {
		err := n.members["a"].m.Switchover(swctx, "v", target)
		var fe *FinalError
		if !errors.As(err, &fe) {
			t.Errorf("switchover to %s: %v, want a refusal", target, err)
		}
	}
	n.isolate("a")
	n.run(10 * testTiming.FailoverTimeout) // b outdates a
	err := n.members["b"].m.Switchover(swctx, "v", "a")
	if err == nil {
		t.Fatal("switchover to Outdated a was not refused")
	}
	t.Log(err)
	n.assertSafe(t)
}

// A primary that restarts comes back secondary at the epoch it served (a
// replica never resumes an epoch): it steps down in the cluster, and the
// arbiter promotes at the next epoch — the same node, preferred and
// UpToDate.
func TestRestartedPrimaryStepsDown(t *testing.T) {
	n := newSimNet(t, []string{"a", "b"}, []string{"w"}, "a")
	if p := n.waitServing(t, ""); p != "a" {
		t.Fatalf("first primary %s", p)
	}
	n.mu.Lock()
	n.members["a"].vol.primary = false // restarted: secondary, epoch kept
	n.mu.Unlock()
	deadline := time.Now().Add(20 * time.Second)
	for {
		v := n.stateOf("a")
		n.mu.Lock()
		serving := n.members["a"].vol.serving(time.Now())
		n.mu.Unlock()
		if v.Primary == "a" && v.Epoch == 2 && serving {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("restarted primary not promoted again: %+v", v)
		}
		time.Sleep(5 * time.Millisecond)
	}
	n.run(100 * time.Millisecond)
	n.assertSafe(t)
}

// With the manual failover policy the cluster records an isolated primary
// lost but promotes nobody; the operator's promote does, and only an
// UpToDate replica.
func TestManualFailover(t *testing.T) {
	n := newSimNetWith(t, []string{"a", "b"}, []string{"w"}, "a", nil, FailoverManual)
	// No automatic first promotion either: the operator picks a.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	deadline := time.Now().Add(10 * time.Second)
	for v := n.stateOf("b"); v == nil || v.Failover != FailoverManual || v.Disks["a"] != replica.UpToDate; v = n.stateOf("b") {
		if time.Now().After(deadline) {
			t.Fatalf("manual policy and a's report never committed: %+v", v)
		}
		time.Sleep(5 * time.Millisecond)
	}
	time.Sleep(4 * testTiming.FailoverTimeout)
	if v := n.stateOf("b"); v.Primary != "" {
		t.Fatalf("promoted %s by itself under the manual policy", v.Primary)
	}
	if err := n.members["b"].m.Promote(ctx, "v", "a"); err != nil {
		t.Fatal(err)
	}
	if p := n.waitServing(t, ""); p != "a" {
		t.Fatalf("serving %s", p)
	}
	n.isolate("a")
	time.Sleep(10 * testTiming.FailoverTimeout)
	v := n.stateOf("b")
	if v.Primary != "" || v.Lost != "a" {
		t.Fatalf("state %+v: want a recorded lost and nobody promoted", v)
	}
	if err := n.members["b"].m.Promote(ctx, "v", "b"); err != nil {
		t.Fatal(err)
	}
	if p := n.waitServing(t, "a"); p != "b" {
		t.Fatalf("serving %s", p)
	}
	n.assertSafe(t)
}

// A node started without state and outside the initial members waits until
// it is added, then registers itself; removal takes it out of the state and
// the Raft configuration; a primary cannot be removed.
func TestJoinAndRemoveMember(t *testing.T) {
	n := newSimNet(t, []string{"a", "b"}, []string{"w"}, "a")
	n.waitServing(t, "")
	_, trans := raft.NewInmemTransport("x")
	x := &simMember{name: "x", kind: Witness, trans: trans}
	n.mu.Lock()
	n.members["x"] = x
	n.mu.Unlock()
	n.connectAll()
	n.start(x, nil, "a") // no bootstrap: not a member yet
	time.Sleep(4 * testTiming.FailoverTimeout)
	if _, ok := n.members["a"].m.State().Nodes["x"]; ok {
		t.Fatal("x registered itself before it was added")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := n.members["b"].m.AddMember(ctx, "x", "x"); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(20 * time.Second)
	for n.members["a"].m.State().Nodes["x"].Kind != Witness {
		if time.Now().After(deadline) {
			t.Fatal("x did not register as a witness after it was added")
		}
		time.Sleep(5 * time.Millisecond)
	}
	err := n.members["x"].m.RemoveMember(ctx, "a", false, "")
	var ref *RefusedError
	if !errors.As(err, &ref) || ref.Rule != RuleRemovePrimary {
		t.Fatalf("removing the primary: %v", err)
	}
	if err := n.members["a"].m.RemoveMember(ctx, "x", false, "test"); err != nil {
		t.Fatal(err)
	}
	l := n.leader(t, "")
	if _, ok := n.members[l].m.State().Nodes["x"]; ok {
		t.Fatal("x still in the leader's state after its removal")
	}
	time.Sleep(4 * testTiming.FailoverTimeout) // x would register again now
	if _, ok := n.members[l].m.State().Nodes["x"]; ok {
		t.Fatal("x registered itself again after its removal")
	}
	f := n.members[l].m.raft.GetConfiguration()
	if err := f.Error(); err != nil || len(f.Configuration().Servers) != 3 {
		t.Fatalf("raft configuration after the removal: %v %v", f.Configuration().Servers, err)
	}
	n.assertSafe(t)
}
