package cluster

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"

	"github.com/blockrep/blockrep/replica"
)

// Server is one member of a new cluster's initial Raft configuration.
type Server struct {
	Name    string
	Address string
}

// LocalVolume is a data node's replica of one volume, as its Member drives
// it: the member promotes and demotes it as the cluster state says and
// renews its lease with every heartbeat the leader grants.
type LocalVolume interface {
	// Name is the volume's name in the cluster.
	Name() string
	// Report says whether the replica serves as primary, at which epoch,
	// and its disk state.
	Report() LocalReport
	// Fresh reports whether the replica never held data.
	Fresh() bool
	// Promote makes the replica primary at epoch.
	Promote(epoch uint64) error
	// Demote makes it secondary; deposed says the cluster gave the volume
	// to another node while this one was cut off.
	Demote(deposed bool) error
	// SetLease lets the primary serve until until.
	SetLease(until time.Time)
}

// Remote is how a member reaches the leader: the control API over the
// authenticated transport in blockrepd, a router in tests. addr is the
// leader's Raft address.
type Remote interface {
	Heartbeat(ctx context.Context, addr raft.ServerAddress, r Report) (HeartbeatReply, error)
	Apply(ctx context.Context, addr raft.ServerAddress, c Command) (Result, error)
	Switchover(ctx context.Context, addr raft.ServerAddress, volume, target string) error
	ReadIndex(ctx context.Context, addr raft.ServerAddress) (uint64, error)
	AddMember(ctx context.Context, addr raft.ServerAddress, name, memberAddr string) error
	RemoveMember(ctx context.Context, addr raft.ServerAddress, name string, force bool, reason string) error
}

// HeartbeatReply is the leader's answer to a heartbeat.
type HeartbeatReply struct {
	// Leader is the leader's name.
	Leader string `json:"leader"`
	// Granted maps each volume the node is primary of to the epoch for
	// which the leader grants it a lease.
	Granted map[string]uint64 `json:"granted"`
	// ReadIndex is the leader's commit index when it confirmed its
	// leadership for this heartbeat: once the node has applied it, its
	// state was current at the heartbeat.
	ReadIndex uint64 `json:"read_index"`
}

// NotLeaderError is returned by a member asked to do what only the leader
// does; Leader names the leader it knows ("" if none).
type NotLeaderError struct {
	Leader string
}

func (e *NotLeaderError) Error() string {
	if e.Leader == "" {
		return "not the cluster leader (no leader known)"
	}
	return "not the cluster leader (the leader is " + e.Leader + ")"
}

// MemberConfig is everything a Member needs.
type MemberConfig struct {
	// Name and Kind are this node's; Name is also its Raft server ID.
	Name string
	Kind NodeKind
	// Timing is the cluster's failover timing (DefaultTiming if zero).
	Timing Timing
	// Raft plumbing: the transport (authenticated in blockrepd, in-memory
	// in tests) and the stores (bbolt in blockrepd).
	Transport   raft.Transport
	LogStore    raft.LogStore
	StableStore raft.StableStore
	Snapshots   raft.SnapshotStore
	// Bootstrap is the initial configuration of a new cluster. It is used
	// only when the stores hold no Raft state and this node is in it; a
	// node started without state and not in it waits to be added.
	Bootstrap []Server
	// Volumes are the replicas this (data) node holds.
	Volumes []LocalVolume
	// Initial names, per volume, the node whose blank replica becomes
	// the first data of a new volume (its preferred primary, else the
	// first of its data nodes by name); Preferred the configured
	// preferred primary ("" for none).
	Initial, Preferred map[string]string
	// Failover is, per volume, the configured failover policy
	// (FailoverAuto or FailoverManual; "" is auto).
	Failover map[string]string
	// Remote reaches the leader.
	Remote Remote
	Logger *slog.Logger
}

// Member is one node's membership in the cluster: its Raft instance and
// the cluster State it replicates, the leader's arbiter when it leads, the
// heartbeats that keep its primaries' leases, and the controller that makes
// its replicas follow the cluster state.
type Member struct {
	cfg  MemberConfig
	log  *slog.Logger
	fsm  *FSM
	raft *raft.Raft
	// notify receives raft's leadership changes.
	notify chan bool

	// kick wakes the heartbeat loop at once (after a promotion).
	kick chan struct{}

	mu      sync.Mutex
	arbiter *Arbiter // non-nil while leading, after the barrier
	leases  map[string]time.Time
	lastErr map[string]string // volume → last controller error
	// heard is the last heartbeat the leader answered: when it was sent
	// and the read index it carried; current is set once the node had
	// applied a leader's read index (it never is before, after a start).
	heard      time.Time
	heardIndex uint64
	current    bool
}

// Raft timings derived from the failover timing: an election starts after
// about 40% of the failover timeout without a leader, so a dead leader is
// replaced well within one failover timeout.
func raftConfig(name string, t Timing, logger *slog.Logger) *raft.Config {
	c := raft.DefaultConfig()
	c.LocalID = raft.ServerID(name)
	hb := max(t.FailoverTimeout*5/12, 50*time.Millisecond)
	c.HeartbeatTimeout = hb
	c.ElectionTimeout = hb
	c.LeaderLeaseTimeout = hb / 2
	c.CommitTimeout = 5 * time.Millisecond
	c.SnapshotThreshold = 1024
	c.Logger = hclog.New(&hclog.LoggerOptions{Name: "raft", Level: hclog.Warn, Output: slogWriter{logger}})
	return c
}

// slogWriter forwards hashicorp/raft's log lines to slog.
type slogWriter struct{ log *slog.Logger }

func (w slogWriter) Write(p []byte) (int, error) {
	w.log.Warn(strings.TrimSpace(string(p)), "component", "raft")
	return len(p), nil
}

var _ io.Writer = slogWriter{}

// NewMember starts the node's Raft instance (bootstrapping a new cluster
// if the configuration says so) and returns the member. Run drives it.
func NewMember(cfg MemberConfig) (*Member, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Timing == (Timing{}) {
		cfg.Timing = DefaultTiming()
	}
	if err := cfg.Timing.Validate(); err != nil {
		return nil, fmt.Errorf("cluster: %w", err)
	}
	if cfg.Name == "" {
		return nil, errors.New("cluster: no node name")
	}
	if cfg.Kind == Witness && len(cfg.Volumes) > 0 {
		return nil, fmt.Errorf("cluster: witness %s holds %d volumes; a witness holds no data", cfg.Name, len(cfg.Volumes))
	}
	log := cfg.Logger.With("component", "cluster")
	m := &Member{
		cfg: cfg, log: log, fsm: NewFSM(),
		notify:  make(chan bool, 16),
		kick:    make(chan struct{}, 1),
		leases:  map[string]time.Time{},
		lastErr: map[string]string{},
	}
	rc := raftConfig(cfg.Name, cfg.Timing, log)
	rc.NotifyCh = m.notify
	has, err := raft.HasExistingState(cfg.LogStore, cfg.StableStore, cfg.Snapshots)
	if err != nil {
		return nil, fmt.Errorf("cluster: reading raft state: %w", err)
	}
	if !has && slices.ContainsFunc(cfg.Bootstrap, func(s Server) bool { return s.Name == cfg.Name }) {
		var conf raft.Configuration
		for _, s := range cfg.Bootstrap {
			conf.Servers = append(conf.Servers, raft.Server{Suffrage: raft.Voter, ID: raft.ServerID(s.Name), Address: raft.ServerAddress(s.Address)})
		}
		if err := raft.BootstrapCluster(rc, cfg.LogStore, cfg.StableStore, cfg.Snapshots, cfg.Transport, conf); err != nil {
			return nil, fmt.Errorf("cluster: bootstrapping: %w", err)
		}
		log.Info("bootstrapped a new cluster", "members", len(conf.Servers))
	}
	r, err := raft.NewRaft(rc, m.fsm, cfg.LogStore, cfg.StableStore, cfg.Snapshots, cfg.Transport)
	if err != nil {
		return nil, fmt.Errorf("cluster: starting raft: %w", err)
	}
	m.raft = r
	return m, nil
}

// Run drives the member until ctx ends, then shuts Raft down.
func (m *Member) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	for _, loop := range []func(context.Context){m.leaderLoop, m.heartbeatLoop, m.controlLoop} {
		wg.Go(func() { loop(ctx) })
	}
	<-ctx.Done()
	wg.Wait()
	if err := m.raft.Shutdown().Error(); err != nil {
		return fmt.Errorf("cluster: raft shutdown: %w", err)
	}
	return nil
}

// Name returns the node's name.
func (m *Member) Name() string { return m.cfg.Name }

// State returns a copy of the replicated cluster state as this node has
// applied it.
func (m *Member) State() *State { return m.fsm.State() }

// Changed returns a channel closed at the next change of State.
func (m *Member) Changed() <-chan struct{} { return m.fsm.Changed() }

// Leader returns the leader's name and Raft address ("" when none known).
func (m *Member) Leader() (name string, addr raft.ServerAddress) {
	addr, id := m.raft.LeaderWithID()
	return string(id), addr
}

// IsLeader reports whether this node leads.
func (m *Member) IsLeader() bool { return m.raft.State() == raft.Leader }

// notLeader is the error of a call only the leader answers, naming the
// leader this node knows.
func (m *Member) notLeader() error {
	name, _ := m.Leader()
	return &NotLeaderError{Leader: name}
}

// leaderLoop runs the arbiter while this node leads.
func (m *Member) leaderLoop(ctx context.Context) {
	type term struct {
		stop context.CancelFunc
		done chan struct{}
	}
	var cur *term
	end := func() {
		if cur != nil {
			cur.stop()
			<-cur.done
			cur = nil
		}
	}
	defer end()
	for {
		select {
		case <-ctx.Done():
			return
		case leading := <-m.notify:
			end()
			if leading {
				lctx, stop := context.WithCancel(ctx)
				cur = &term{stop: stop, done: make(chan struct{})}
				go func(done chan struct{}) {
					defer close(done)
					m.lead(lctx)
				}(cur.done)
			}
		}
	}
}

// lead is the arbiter's loop for one term of leadership.
func (m *Member) lead(ctx context.Context) {
	defer func() {
		m.mu.Lock()
		m.arbiter = nil
		m.mu.Unlock()
	}()
	// The new leader's log entries are only applied after its first
	// commit: wait for them before judging the state.
	for {
		err := m.raft.Barrier(m.cfg.Timing.FailoverTimeout).Error()
		if err == nil {
			break
		}
		m.log.Warn("leader barrier", "err", err)
		select {
		case <-ctx.Done():
			return
		case <-time.After(m.cfg.Timing.HeartbeatInterval):
		}
	}
	since := time.Now()
	m.mu.Lock()
	m.arbiter = NewArbiter(m.cfg.Timing, since)
	m.mu.Unlock()
	m.log.Info("leading the cluster", "term", m.raft.Stats()["term"])
	tick := time.NewTicker(m.cfg.Timing.HeartbeatInterval / 4)
	defer tick.Stop()
	var lastTransfer time.Time
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		now := time.Now()
		s := m.fsm.State()
		members := m.configuration()
		m.mu.Lock()
		m.arbiter.SetMembers(members)
		cmds := m.arbiter.Decide(now, s)
		away := m.arbiter.WantsLeadershipAway(m.cfg.Name, s)
		alive := m.arbiter.Alive(now, s)
		m.mu.Unlock()
		for _, c := range cmds {
			res, err := m.applyLocal(ctx, c)
			if err != nil {
				m.log.Warn("arbiter decision not applied", "op", c.Op.String(), "volume", c.Volume, "node", c.Node, "epoch", c.Epoch, "err", err)
				break
			}
			m.log.Info("arbiter decision", "op", c.Op.String(), "volume", c.Volume, "node", c.Node, "epoch", c.Epoch, "reason", c.Reason, "note", res.Note)
		}
		if len(cmds) > 0 {
			continue // judge leadership on the state the decisions made
		}
		if away && now.Sub(since) > 2*m.cfg.Timing.FailoverTimeout && now.Sub(lastTransfer) > 10*time.Second {
			lastTransfer = now
			m.transferLeadership(s, alive)
		}
	}
}

// transferLeadership hands leadership to an alive voter that is no
// volume's primary, a witness first, so that the death of a primary never
// also costs an election before its failover.
func (m *Member) transferLeadership(s *State, alive map[string]bool) {
	f := m.raft.GetConfiguration()
	if f.Error() != nil {
		return
	}
	primaries := map[string]bool{}
	for _, v := range s.Volumes {
		primaries[v.Primary] = true
	}
	var best *raft.Server
	for _, srv := range f.Configuration().Servers {
		name := string(srv.ID)
		if name == m.cfg.Name || srv.Suffrage != raft.Voter || !alive[name] || primaries[name] {
			continue
		}
		if best == nil || s.Nodes[name].Kind == Witness && s.Nodes[string(best.ID)].Kind != Witness {
			best = &srv
		}
	}
	if best == nil {
		return
	}
	m.log.Info("handing leadership to a node that is no primary", "to", best.ID)
	if err := m.raft.LeadershipTransferToServer(best.ID, best.Address).Error(); err != nil {
		m.log.Warn("leadership transfer", "to", best.ID, "err", err)
	}
}

// applyLocal proposes c on this node, which must lead.
func (m *Member) applyLocal(ctx context.Context, c Command) (Result, error) {
	if c.Op == OpAddNode && !m.inConfiguration(c.Node) {
		// A node registers itself once it is a Raft member; one that was
		// just removed may still think it is.
		return Result{}, finalf("%s is not a member of the cluster's Raft configuration", c.Node)
	}
	f := m.raft.Apply(c.Encode(), timeoutOf(ctx, 5*time.Second))
	if err := f.Error(); err != nil {
		if errors.Is(err, raft.ErrNotLeader) || errors.Is(err, raft.ErrLeadershipLost) {
			return Result{}, m.notLeader()
		}
		return Result{}, fmt.Errorf("cluster: applying %v: %w", c.Op, err)
	}
	a, _ := f.Response().(Applied)
	return a.Result, a.Err
}

// Apply proposes c through the leader, wherever it is, and returns the
// outcome (a *RefusedError if the state refused it). It retries while
// there is no leader or the leader changes, until ctx ends. A command
// whose answer was lost may be applied twice; every command is such that
// the second one is refused or changes nothing.
func (m *Member) Apply(ctx context.Context, c Command) (Result, error) {
	var res Result
	err := m.onLeader(ctx, c.Op.String(), func(leader raft.ServerAddress) (err error) {
		if leader == "" {
			res, err = m.applyLocal(ctx, c)
		} else {
			res, err = m.cfg.Remote.Apply(ctx, leader, c)
		}
		return err
	})
	return res, err
}

// retryable reports whether an error from the leader (or the way to it)
// may go away with another try: no leader, a leader change, a transport
// error. A refusal or a failed switchover is an answer.
func retryable(err error) bool {
	var refused *RefusedError
	var final *FinalError
	return !errors.As(err, &refused) && !errors.As(err, &final)
}

// FinalError is an answer from the leader that another try would not
// change (a switchover refused, a member that cannot be removed).
type FinalError struct{ Msg string }

func (e *FinalError) Error() string { return e.Msg }

func finalf(format string, args ...any) error {
	return &FinalError{Msg: fmt.Sprintf(format, args...)}
}

// ReportPeerDisk commits, on behalf of this node as volume's primary at
// epoch, that peer's replica is disk (replica.Authority).
//
// A peer that holds no replica in the cluster state (a data node configured
// as a peer but not yet a member) can never be promoted, so there is
// nothing to record when it falls behind: that succeeds at once rather than
// hold the primary's writes forever. A node added later gets an
// Inconsistent replica, which is never promoted either.
func (m *Member) ReportPeerDisk(ctx context.Context, volume, peer string, epoch uint64, disk replica.DiskState) error {
	if v, ok := m.fsm.State().Volumes[volume]; ok && disk < replica.UpToDate {
		if _, member := v.Disks[peer]; !member {
			return nil
		}
	}
	_, err := m.Apply(ctx, Command{Op: OpSetDisk, Volume: volume, Node: peer, Epoch: epoch, Disk: disk, By: m.cfg.Name})
	return err
}

// Switchover moves volume's primary role to target ("" for the best other
// UpToDate node) with no loss: the arbiter demotes the primary once target
// is in sync, and promotes target once the old primary has stepped down.
// It returns when target is primary.
func (m *Member) Switchover(ctx context.Context, volume, target string) error {
	return m.onLeader(ctx, "switchover", func(leader raft.ServerAddress) error {
		if leader == "" {
			return m.HandleSwitchover(ctx, volume, target)
		}
		return m.cfg.Remote.Switchover(ctx, leader, volume, target)
	})
}

// Promote makes node primary of volume: by a switchover when the volume has
// a primary, else by promoting it at the next epoch (the operator's choice
// under the manual failover policy, or after a loss the arbiter could not
// repair). Either way only an UpToDate replica; ForcePromote for others.
func (m *Member) Promote(ctx context.Context, volume, node string) error {
	v, ok := m.fsm.State().Volumes[volume]
	if !ok {
		return finalf("no volume %q", volume)
	}
	if v.Primary != "" {
		return m.Switchover(ctx, volume, node)
	}
	_, err := m.Apply(ctx, Command{Op: OpPromote, Volume: volume, Node: node, Epoch: v.Epoch + 1, Reason: "promoted by the operator"})
	return err
}

// HandleSwitchover runs a switchover on the leader (see Switchover).
func (m *Member) HandleSwitchover(ctx context.Context, volume, target string) error {
	wait := timeoutOf(ctx, 30*time.Second)
	m.mu.Lock()
	a := m.arbiter
	if a == nil {
		m.mu.Unlock()
		return m.notLeader()
	}
	sw, err := a.Switchover(time.Now(), m.fsm.State(), volume, target, wait)
	m.mu.Unlock()
	if err != nil {
		return finalf("switchover refused: %v", err)
	}
	m.log.Info("switchover", "volume", volume, "from", sw.From, "to", sw.Target, "epoch", sw.Epoch)
	for {
		m.mu.Lock()
		done, serr, lost := sw.Done, sw.Err, m.arbiter != a
		m.mu.Unlock()
		switch {
		case done:
			return nil
		case serr != nil:
			return finalf("switchover of %s to %s failed: %v", volume, sw.Target, serr)
		case lost:
			return &NotLeaderError{}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("cluster: switchover of %s to %s: %w", volume, sw.Target, ctx.Err())
		case <-time.After(m.cfg.Timing.HeartbeatInterval / 4):
		}
	}
}

// ForcePromote promotes node to primary of volume even if its replica is
// Outdated or another node is recorded as primary (the operator asserts
// that it has stopped serving); reason is logged. The result says what may
// be lost.
func (m *Member) ForcePromote(ctx context.Context, volume, node, reason string) (Result, error) {
	s := m.fsm.State()
	v, ok := s.Volumes[volume]
	if !ok {
		return Result{}, fmt.Errorf("cluster: no volume %q", volume)
	}
	return m.Apply(ctx, Command{Op: OpPromote, Volume: volume, Node: node, Epoch: v.Epoch + 1, Force: true, Reason: reason})
}

// AddMember adds a node to the Raft configuration as a voter; the node adds
// itself to the cluster state when it hears from the leader.
func (m *Member) AddMember(ctx context.Context, name, addr string) error {
	return m.onLeader(ctx, "add member", func(leader raft.ServerAddress) error {
		if leader == "" {
			return m.HandleAddMember(ctx, name, addr)
		}
		return m.cfg.Remote.AddMember(ctx, leader, name, addr)
	})
}

// RemoveMember removes a node from the cluster state (refused if it is a
// primary, or holds a volume's last UpToDate replica without force) and
// then from the Raft configuration.
func (m *Member) RemoveMember(ctx context.Context, name string, force bool, reason string) error {
	return m.onLeader(ctx, "remove member", func(leader raft.ServerAddress) error {
		if leader == "" {
			return m.HandleRemoveMember(ctx, name, force, reason)
		}
		return m.cfg.Remote.RemoveMember(ctx, leader, name, force, reason)
	})
}

// onLeader calls fn with the leader's address ("" when this node leads)
// until it gives an answer: it retries while there is no leader, the
// leader changes or cannot be reached, until ctx ends. what names the call
// in the error, which then wraps both ctx's error and the last try's (a
// *NotLeaderError when no leader was known).
func (m *Member) onLeader(ctx context.Context, what string, fn func(leader raft.ServerAddress) error) error {
	for {
		name, addr := m.Leader()
		var err error
		switch {
		case name == m.cfg.Name:
			err = fn("")
		case addr != "":
			err = fn(addr)
		default:
			err = &NotLeaderError{}
		}
		if err == nil || !retryable(err) {
			return err
		}
		select {
		case <-ctx.Done():
			return &leaderError{what: what, ctxErr: ctx.Err(), last: err}
		case <-time.After(m.cfg.Timing.HeartbeatInterval / 4):
		}
	}
}

// leaderError is onLeader's error when ctx ended before a leader answered.
type leaderError struct {
	what         string
	ctxErr, last error
}

func (e *leaderError) Error() string {
	return fmt.Sprintf("cluster: %s: %v (last: %v)", e.what, e.ctxErr, e.last)
}

func (e *leaderError) Unwrap() []error { return []error{e.ctxErr, e.last} }

// HandleAddMember adds a voter; this node must lead.
func (m *Member) HandleAddMember(ctx context.Context, name, addr string) error {
	if name == "" || addr == "" {
		return finalf("add member: name and address are required")
	}
	if err := m.raft.AddVoter(raft.ServerID(name), raft.ServerAddress(addr), 0, timeoutOf(ctx, 10*time.Second)).Error(); err != nil {
		if errors.Is(err, raft.ErrNotLeader) {
			return &NotLeaderError{}
		}
		return finalf("add member %s at %s: %v", name, addr, err)
	}
	m.log.Info("member added", "name", name, "address", addr)
	return nil
}

// HandleRemoveMember removes a node; this node must lead. The cluster
// state is checked first (a primary, or the last UpToDate replica without
// force, cannot go), then the node leaves the Raft configuration, then the
// state: in that order it cannot register itself again in between.
func (m *Member) HandleRemoveMember(ctx context.Context, name string, force bool, reason string) error {
	if name == m.cfg.Name {
		return finalf("the leader cannot remove itself; remove %s from another member after leadership moved", name)
	}
	cmd := Command{Op: OpRemoveNode, Node: name, Force: force, Reason: reason}
	_, known := m.fsm.State().Nodes[name]
	if known {
		if _, err := m.fsm.State().Apply(cmd); err != nil {
			return err // refused: checked on a copy, nothing proposed
		}
	}
	if err := m.raft.RemoveServer(raft.ServerID(name), 0, timeoutOf(ctx, 10*time.Second)).Error(); err != nil {
		if errors.Is(err, raft.ErrNotLeader) {
			return &NotLeaderError{}
		}
		return finalf("remove member %s: %v", name, err)
	}
	if known {
		if _, err := m.applyLocal(ctx, cmd); err != nil {
			return err
		}
	}
	m.log.Info("member removed", "name", name, "reason", reason)
	return nil
}

// timeoutOf is what remains of ctx's deadline; def if it has none.
func timeoutOf(ctx context.Context, def time.Duration) time.Duration {
	if dl, ok := ctx.Deadline(); ok {
		return time.Until(dl)
	}
	return def
}

// HandleHeartbeat answers a node's heartbeat on the leader: it confirms
// the leadership with a quorum first, so a deposed leader grants nothing.
// The reply carries the read index of that confirmation.
func (m *Member) HandleHeartbeat(ctx context.Context, r Report) (HeartbeatReply, error) {
	at := time.Now()
	idx, err := m.HandleReadIndex(ctx)
	if err != nil {
		return HeartbeatReply{}, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.arbiter == nil {
		return HeartbeatReply{}, &NotLeaderError{}
	}
	return HeartbeatReply{Leader: m.cfg.Name, Granted: m.arbiter.Heartbeat(r, at, m.fsm.State()), ReadIndex: idx}, nil
}

// HandleReadIndex answers, on the leader, the index a read of the cluster
// state must have applied to be current (Raft's read index): the leader's
// commit index, which covers every command committed before the call. It
// answers only once the barrier of its term is applied (until then its
// commit index may miss entries the previous leader committed) and after
// confirming its leadership with a quorum, so a deposed leader that has not
// noticed yet answers nothing.
func (m *Member) HandleReadIndex(ctx context.Context) (uint64, error) {
	m.mu.Lock()
	ready := m.arbiter != nil
	m.mu.Unlock()
	if !ready {
		return 0, m.notLeader()
	}
	idx := m.raft.CommitIndex()
	if err := m.raft.VerifyLeader().Error(); err != nil {
		return 0, m.notLeader()
	}
	return idx, nil
}

// StaleError says that a member cannot confirm its cluster state is
// current: no leader answered its read barrier (no quorum, or an election
// under way), or it had not applied the leader's read index in time.
type StaleError struct {
	// Node is the member's name.
	Node string
	// NoQuorum is set when no leader gave a read index; Applied and
	// ReadIndex are then 0.
	NoQuorum bool
	// Applied is the Raft index the member had applied, ReadIndex the
	// leader's commit index it waited for.
	Applied, ReadIndex uint64
	// Cause is the last error of the read barrier.
	Cause error
}

func (e *StaleError) Error() string {
	if e.NoQuorum {
		why := "the leader did not answer: " + fmt.Sprint(e.Cause)
		if nl := (*NotLeaderError)(nil); errors.As(e.Cause, &nl) {
			why = "no leader known"
			if nl.Leader != "" {
				why = "the leader " + nl.Leader + " has not confirmed its leadership"
			}
		}
		return fmt.Sprintf("no quorum: cluster state on %s may be stale (%s)", e.Node, why)
	}
	return fmt.Sprintf("not caught up: cluster state on %s may be stale (applied index %d, the leader's commit index is %d)", e.Node, e.Applied, e.ReadIndex)
}

func (e *StaleError) Unwrap() error { return e.Cause }

// ReadBarrier waits until this member has applied every command the leader
// had committed when it was called: a state read afterwards is at least
// that new (linearizable, as Raft's ReadIndex). It fails with a
// *StaleError when no leader answers or the member has not caught up
// before ctx ends.
func (m *Member) ReadBarrier(ctx context.Context) error {
	var idx uint64
	err := m.onLeader(ctx, "read barrier", func(leader raft.ServerAddress) (err error) {
		if leader == "" {
			idx, err = m.HandleReadIndex(ctx)
		} else {
			idx, err = m.cfg.Remote.ReadIndex(ctx, leader)
		}
		return err
	})
	if err != nil {
		cause := err
		if le := (*leaderError)(nil); errors.As(err, &le) {
			cause = le.last
		}
		return &StaleError{Node: m.cfg.Name, NoQuorum: true, Cause: cause}
	}
	for {
		ok, next := m.applied(idx)
		if ok {
			break
		}
		var poll <-chan time.Time
		if next == nil {
			poll = time.After(appliedPoll)
		}
		select {
		case <-ctx.Done():
			return &StaleError{Node: m.cfg.Name, Applied: m.raft.AppliedIndex(), ReadIndex: idx, Cause: ctx.Err()}
		case <-next:
		case <-poll:
		}
	}
	m.mu.Lock()
	m.current = true
	m.mu.Unlock()
	return nil
}

// appliedPoll is how often applied is asked again while raft has not
// handed the log up to the index to the FSM: raft tells nobody when it
// does, and entries that are no commands never reach the FSM.
const appliedPoll = 2 * time.Millisecond

// applied reports whether the FSM has applied every command at or below
// the Raft index idx; if not, next is closed when that may have changed,
// or nil when only asking again later can tell.
//
// Raft's applied index counts the entries handed to the FSM, not those it
// has finished applying, and entries that are no commands (a term's no-op,
// barriers, configuration changes) never reach it: so once raft has
// handed up to idx, the last command at or below idx is found in the log
// and the FSM must have applied it (or restored a snapshot that holds
// it).
func (m *Member) applied(idx uint64) (ok bool, next <-chan struct{}) {
	if m.raft.AppliedIndex() < idx {
		return false, nil
	}
	last, next := m.fsm.LastCommand()
	if last >= idx {
		return true, nil
	}
	cmd, err := m.lastCommandAtOrBelow(idx, last)
	if err != nil {
		m.log.Warn("read barrier: reading the raft log", "index", idx, "err", err)
		return false, nil
	}
	if cmd <= last || cmd <= m.snapshotIndex() {
		return true, nil
	}
	return false, next
}

// lastCommandAtOrBelow returns the index of the last command in the log
// at or below idx and above floor (floor if there is none there), or, if
// the log is compacted before it finds one, the first index it lacks
// (below the last snapshot, which holds everything compacted).
func (m *Member) lastCommandAtOrBelow(idx, floor uint64) (uint64, error) {
	first, err := m.cfg.LogStore.FirstIndex()
	if err != nil {
		return 0, err
	}
	for i := idx; i > floor; i-- {
		if i < first {
			return i, nil
		}
		var l raft.Log
		if err := m.cfg.LogStore.GetLog(i, &l); err != nil {
			if errors.Is(err, raft.ErrLogNotFound) {
				return i, nil
			}
			return 0, err
		}
		if l.Type == raft.LogCommand {
			return i, nil
		}
	}
	return floor, nil
}

// snapshotIndex is the index of the last snapshot raft restored or took:
// the FSM holds every command at or below it.
func (m *Member) snapshotIndex() uint64 {
	n, _ := strconv.ParseUint(m.raft.Stats()["last_snapshot_index"], 10, 64)
	return n
}

// freshness says whether the state this member has applied was current at
// its last answered heartbeat ("" if so, within a failover timeout), else
// why it may be stale; caughtUp whether it ever was since the start.
func (m *Member) freshness() (stale string, caughtUp bool) {
	m.mu.Lock()
	heard, at := m.heard, m.heardIndex
	m.mu.Unlock()
	switch {
	case heard.IsZero():
		stale = fmt.Sprintf("no quorum: cluster state on %s may be stale (no heartbeat answered since the start)", m.cfg.Name)
	case time.Since(heard) > m.cfg.Timing.FailoverTimeout:
		stale = fmt.Sprintf("no quorum: cluster state on %s may be stale (last heartbeat answered %s ago)", m.cfg.Name, time.Since(heard).Round(time.Millisecond))
	default:
		if ok, _ := m.applied(at); !ok {
			stale = (&StaleError{Node: m.cfg.Name, Applied: m.raft.AppliedIndex(), ReadIndex: at}).Error()
		}
	}
	m.mu.Lock()
	if stale == "" {
		m.current = true
	}
	caughtUp = m.current
	m.mu.Unlock()
	return stale, caughtUp
}

// report is this node's heartbeat content. For a volume never promoted
// the disk is the node's claim (see claim), which the arbiter waits to see
// in the state before it picks the first primary.
func (m *Member) report() Report {
	s := m.fsm.State()
	r := Report{Node: m.cfg.Name, Volumes: map[string]LocalReport{}}
	for _, v := range m.cfg.Volumes {
		lr := v.Report()
		if vs, ok := s.Volumes[v.Name()]; !ok || !vs.Promoted {
			lr.Disk = m.claim(v, lr)
		}
		r.Volumes[v.Name()] = lr
	}
	return r
}

// claim is the disk state a node reports for its replica of a volume that
// was never promoted: its own, except that a blank replica is
// Inconsistent unless this node is the volume's designated first primary.
func (m *Member) claim(lv LocalVolume, lr LocalReport) replica.DiskState {
	if !lv.Fresh() {
		return lr.Disk
	}
	if m.cfg.Initial[lv.Name()] == m.cfg.Name {
		return replica.UpToDate
	}
	return replica.Inconsistent
}

// heartbeatLoop reports to the leader every heartbeat interval and renews
// the leases of this node's primaries with what the leader granted.
func (m *Member) heartbeatLoop(ctx context.Context) {
	tick := time.NewTicker(m.cfg.Timing.HeartbeatInterval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		case <-m.kick:
		}
		m.heartbeat(ctx)
	}
}

func (m *Member) heartbeat(ctx context.Context) {
	name, addr := m.Leader()
	if name == "" {
		return
	}
	r := m.report()
	hctx, cancel := context.WithTimeout(ctx, m.cfg.Timing.HeartbeatInterval)
	defer cancel()
	sent := time.Now()
	var reply HeartbeatReply
	var err error
	if name == m.cfg.Name {
		reply, err = m.HandleHeartbeat(hctx, r)
	} else {
		reply, err = m.cfg.Remote.Heartbeat(hctx, addr, r)
	}
	if err != nil {
		m.log.Debug("heartbeat", "leader", name, "err", err)
		return
	}
	m.mu.Lock()
	m.heard, m.heardIndex = sent, reply.ReadIndex
	m.mu.Unlock()
	until := sent.Add(m.cfg.Timing.Lease())
	for _, v := range m.cfg.Volumes {
		lr := r.Volumes[v.Name()]
		if e, ok := reply.Granted[v.Name()]; ok && lr.Primary && e == lr.Epoch {
			v.SetLease(until)
			m.mu.Lock()
			m.leases[v.Name()] = until
			m.mu.Unlock()
		}
	}
}

// kickHeartbeat makes the heartbeat loop send one now.
func (m *Member) kickHeartbeat() {
	select {
	case m.kick <- struct{}{}:
	default:
	}
}

// controlLoop makes the local replicas follow the cluster state: it
// registers the node and its volumes, reports its disks, promotes and
// demotes. It runs on every change of the state, and at each heartbeat
// interval (local disks change without the state changing).
func (m *Member) controlLoop(ctx context.Context) {
	tick := time.NewTicker(m.cfg.Timing.HeartbeatInterval)
	defer tick.Stop()
	for {
		changed := m.fsm.Changed()
		m.reconcile(ctx)
		select {
		case <-ctx.Done():
			return
		case <-changed:
		case <-tick.C:
		}
	}
}

// reconcile does one round of controlLoop.
func (m *Member) reconcile(ctx context.Context) {
	s := m.fsm.State()
	if name, _ := m.Leader(); name == "" {
		return
	}
	if _, ok := s.Nodes[m.cfg.Name]; !ok {
		if !m.inConfiguration(m.cfg.Name) {
			return // not (yet) a member: nothing to propose
		}
		m.propose(ctx, "", Command{Op: OpAddNode, Node: m.cfg.Name, Kind: m.cfg.Kind, Reason: "node joined"})
		return
	}
	for _, lv := range m.cfg.Volumes {
		m.setErr(lv.Name(), m.reconcileVolume(ctx, s, lv))
	}
}

func (m *Member) reconcileVolume(ctx context.Context, s *State, lv LocalVolume) error {
	name, me := lv.Name(), m.cfg.Name
	v, ok := s.Volumes[name]
	if !ok {
		m.propose(ctx, name, Command{Op: OpAddVolume, Volume: name, Reason: "volume configured on " + me})
		return nil
	}
	if _, ok := v.Disks[me]; !ok {
		return fmt.Errorf("the cluster holds no replica of %s on %s", name, me)
	}
	if want := m.cfg.Failover[name]; want != "" && want != FailoverAuto && v.Failover != want || want == FailoverAuto && v.Failover != "" {
		m.propose(ctx, name, Command{Op: OpSetFailover, Volume: name, Policy: want, Reason: "configured"})
	}
	if p := m.cfg.Preferred[name]; p != "" && v.Preferred == "" {
		if _, ok := v.Disks[p]; ok {
			m.propose(ctx, name, Command{Op: OpSetPreferred, Volume: name, Node: p, Reason: "configured"})
		}
	}
	lr := lv.Report()
	switch {
	case !v.Promoted:
		// Before the first promotion each node tells what data it has;
		// a blank volume starts from its designated first primary.
		if want := m.claim(lv, lr); v.Disks[me] != want {
			m.propose(ctx, name, Command{Op: OpSetDisk, Volume: name, Node: me, By: me, Epoch: v.Epoch, Disk: want, Reason: "initial report"})
		}
	case v.Primary != me && !lr.Primary && lr.Disk < v.Disks[me]:
		// The local disk fell below what the cluster believes (a resync
		// started, an invalidate, a clean leave): say so at once, it
		// shrinks the promotion candidates.
		m.propose(ctx, name, Command{Op: OpSetDisk, Volume: name, Node: me, By: me, Epoch: v.Epoch, Disk: lr.Disk, Reason: "local disk " + lr.Disk.String()})
	}
	if v.Primary == "" && lr.Epoch > v.Epoch {
		// This replica saw a newer epoch than the cluster's (before the
		// cluster existed): the next promotion must be newer still.
		m.propose(ctx, name, Command{Op: OpRaiseEpoch, Volume: name, Node: me, Epoch: lr.Epoch, Reason: "local epoch"})
	}
	switch {
	case v.Primary == me && !lr.Primary && v.Epoch <= lr.Epoch:
		// Recorded primary at an epoch this replica already served, but
		// not serving: it restarted. A replica never resumes an epoch;
		// stepping down lets the arbiter promote at the next one (this
		// node again, if it is still the best choice).
		m.propose(ctx, name, Command{Op: OpDemote, Volume: name, Node: me, Epoch: v.Epoch, Reason: "restarted: not serving epoch " + strconv.FormatUint(v.Epoch, 10)})
	case v.Primary == me && !lr.Primary:
		if err := lv.Promote(v.Epoch); err != nil {
			return fmt.Errorf("promote %s at epoch %d: %w", name, v.Epoch, err)
		}
		m.log.Info("promoted by the cluster", "volume", name, "epoch", v.Epoch)
		m.kickHeartbeat()
	case lr.Primary && v.Primary != me:
		deposed := v.Lost == me || v.Epoch > lr.Epoch
		if err := lv.Demote(deposed); err != nil {
			return fmt.Errorf("demote %s: %w", name, err)
		}
		m.log.Info("demoted by the cluster", "volume", name, "epoch", v.Epoch, "primary", orNobody(v.Primary), "deposed", deposed)
		m.kickHeartbeat() // a switchover waits for this node's word that it stepped down
	}
	return nil
}

// propose applies c, logging a failure; a refusal is normal (another node
// or an earlier round got there first).
func (m *Member) propose(ctx context.Context, volume string, c Command) {
	actx, cancel := context.WithTimeout(ctx, m.cfg.Timing.FailoverTimeout)
	defer cancel()
	if _, err := m.Apply(actx, c); err != nil {
		var refused *RefusedError
		if errors.As(err, &refused) {
			m.log.Debug("proposal refused", "op", c.Op.String(), "volume", volume, "err", err)
			return
		}
		m.log.Warn("proposal failed", "op", c.Op.String(), "volume", volume, "err", err)
	}
}

// configuration returns the names of the Raft configuration's servers
// (nil if it cannot be read).
func (m *Member) configuration() []string {
	f := m.raft.GetConfiguration()
	if f.Error() != nil {
		return nil
	}
	var names []string
	for _, srv := range f.Configuration().Servers {
		names = append(names, string(srv.ID))
	}
	return names
}

// inConfiguration reports whether node is in the Raft configuration as
// this node knows it.
func (m *Member) inConfiguration(node string) bool {
	return slices.Contains(m.configuration(), node)
}

func (m *Member) setErr(volume string, err error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if err == nil {
		delete(m.lastErr, volume)
		return
	}
	if m.lastErr[volume] != err.Error() {
		m.log.Warn("cluster control", "volume", volume, "err", err)
	}
	m.lastErr[volume] = err.Error()
}

// MemberStatus is a member's view of the cluster, for blockctl.
type MemberStatus struct {
	Name   string `json:"name"`
	Kind   string `json:"kind"`
	Raft   string `json:"raft"` // Leader, Follower, Candidate, Shutdown
	Leader string `json:"leader"`
	Term   string `json:"term"`
	// Members is the Raft configuration, with what the leader last heard
	// (only on the leader).
	Members []MemberInfo `json:"members"`
	// State is the replicated cluster state as applied here.
	State *State `json:"state"`
	// Leases maps each volume this node is primary of to its lease's end.
	Leases map[string]time.Time `json:"leases,omitempty"`
	// Errors maps a volume to the last error of its control loop.
	Errors map[string]string `json:"errors,omitempty"`
	// Stale is empty when State is known current: Status sets it from
	// the last heartbeat (State held every command the leader had
	// committed then); blockrepd's status from a read barrier at the time
	// of the call (ReadBarrier). Otherwise it says why State may be stale
	// ("no quorum: ...", "not caught up: ...").
	Stale string `json:"stale,omitempty"`
	// CaughtUp is set once the node has been current since it started:
	// before, State may be an old snapshot's or empty.
	CaughtUp bool `json:"caught_up"`
	// AppliedIndex is the Raft index this node has applied.
	AppliedIndex uint64 `json:"applied_index"`
}

// MemberInfo is one member of the Raft configuration.
type MemberInfo struct {
	Name     string `json:"name"`
	Address  string `json:"address"`
	Voter    bool   `json:"voter"`
	Kind     string `json:"kind,omitempty"`
	Alive    *bool  `json:"alive,omitempty"`
	LastSeen string `json:"last_seen,omitempty"`
}

// Status returns the member's view of the cluster as applied here, with
// no call to the leader: Stale says whether it was current at the last
// heartbeat.
func (m *Member) Status() MemberStatus {
	st := m.status()
	st.Stale, st.CaughtUp = m.freshness()
	return st
}

// StatusAfter is the member's view of the cluster right after a read
// barrier that returned barrier (see ReadBarrier): current if it
// succeeded, else Stale says why not.
func (m *Member) StatusAfter(barrier error) MemberStatus {
	st := m.status()
	if barrier != nil {
		st.Stale = barrier.Error()
	} else {
		st.CaughtUp = true
	}
	return st
}

// status is Status without the freshness.
func (m *Member) status() MemberStatus {
	applied := m.raft.AppliedIndex()
	s := m.fsm.State()
	leader, _ := m.Leader()
	st := MemberStatus{
		Name: m.cfg.Name, Kind: m.cfg.Kind.String(), Raft: m.raft.State().String(),
		Leader: leader, Term: m.raft.Stats()["term"], State: s, AppliedIndex: applied,
	}
	m.mu.Lock()
	var alive map[string]bool
	var heard map[string]time.Time
	if m.arbiter != nil {
		alive = m.arbiter.Alive(time.Now(), s)
		heard = m.arbiter.LastHeard()
	}
	if len(m.leases) > 0 {
		st.Leases = maps.Clone(m.leases)
	}
	if len(m.lastErr) > 0 {
		st.Errors = maps.Clone(m.lastErr)
	}
	st.CaughtUp = m.current
	m.mu.Unlock()
	if f := m.raft.GetConfiguration(); f.Error() == nil {
		for _, srv := range f.Configuration().Servers {
			mi := MemberInfo{Name: string(srv.ID), Address: string(srv.Address), Voter: srv.Suffrage == raft.Voter}
			if n, ok := s.Nodes[mi.Name]; ok {
				mi.Kind = n.Kind.String()
			}
			if alive != nil {
				a := alive[mi.Name]
				mi.Alive = &a
				if h, ok := heard[mi.Name]; ok {
					mi.LastSeen = time.Since(h).Round(time.Millisecond).String() + " ago"
				}
			}
			st.Members = append(st.Members, mi)
		}
	}
	return st
}
