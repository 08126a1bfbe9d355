package bench

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/blockrep/blockrep/api"
	"github.com/blockrep/blockrep/internal/nbdclient"
	"github.com/blockrep/blockrep/replica"
)

// FailoverOptions are the settings of RunFailover.
type FailoverOptions struct {
	Blockrepd string // absolute path
	Dir       string // the temporary directory goes under it
	Size      int64  // the volume's size
	Rounds    int
	// Heartbeat and FailoverTimeout override the cluster's timing; zero
	// keeps the daemon's default.
	Heartbeat, FailoverTimeout time.Duration
	// SyncTimeout bounds every wait for the cluster to be healthy (both
	// nodes in sync, a primary with a lease).
	SyncTimeout time.Duration
	// Out gets the tables; Progress, when not nil, what the run is doing.
	Out      io.Writer
	Progress func(format string, args ...any)
}

// Failover probing.
const (
	// ProbeInterval is how often the prober tries the other node.
	ProbeInterval = 5 * time.Millisecond
	// statusPoll is how often the survivor's status is polled during a
	// failover.
	statusPoll = 5 * time.Millisecond
	// probeBlock is the offset of the probes' 4 KiB blocks; the writer
	// stays below it.
	probeBlock = 32 << 20
	// writerSpan is the region the writer cycles through.
	writerSpan = 16 << 20
)

// failoverRun is the cluster of a RunFailover and what it needs to
// restart its members.
type failoverRun struct {
	o     FailoverOptions
	work  string
	fc    *FailoverCluster
	nodes [3]*Server // node1, node2, w; replaced on restart
}

func (r *failoverRun) progress(format string, args ...any) {
	if r.o.Progress != nil {
		r.o.Progress(format, args...)
	}
}

// RunFailover starts node1, node2 and a witness as one cluster, then
// o.Rounds times kills the primary with SIGKILL while a client writes to
// it and measures the time until the other node acknowledges a write;
// then it restarts the killed node and waits until it is in sync again.
// It prints the rounds and their statistics to o.Out. Every process and
// file it made is gone when it returns.
func RunFailover(ctx context.Context, o FailoverOptions) (err error) {
	if o.Rounds < 1 {
		return errors.New("bench: failover: at least one round")
	}
	if o.Size < 2*probeBlock {
		return fmt.Errorf("bench: failover: the volume needs at least %d MiB", 2*probeBlock>>20)
	}
	work, err := os.MkdirTemp(o.Dir, "blockbench-failover-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)
	fc, err := NewFailoverCluster(work, o.Size, o.Heartbeat, o.FailoverTimeout)
	if err != nil {
		return err
	}
	r := &failoverRun{o: o, work: work, fc: fc}
	defer r.stopAll()
	hb, ft := fc.Timing()
	r.progress("starting node1, node2 and witness w in %s (heartbeat_interval %s, failover_timeout %s)", work, hb, ft)
	for i := range fc.Nodes {
		if err := r.startMember(ctx, i); err != nil {
			return err
		}
	}
	defer func() {
		if err != nil && ctx.Err() == nil {
			for _, s := range r.nodes {
				if s != nil {
					err = fmt.Errorf("%w\n--- %s log (last 20 lines):\n%s", err, s.Name, s.LogTail(20))
				}
			}
		}
	}()
	began := time.Now()
	primary, leader, err := r.waitHealthy(ctx, -1)
	if err != nil {
		return err
	}
	r.progress("cluster ready after %.1f s: primary %s, secondary %s in sync, leader %s", time.Since(began).Seconds(), fc.Nodes[primary].Name, fc.Nodes[1-primary].Name, leader)

	var rounds []FailoverRound
	for i := 0; i < o.Rounds; i++ {
		rd, err := r.round(ctx, i, primary, leader)
		if err != nil {
			return fmt.Errorf("round %d: %w", i+1, err)
		}
		r.progress("round %d/%d: killed %s: %s primary after %s (status), first write after %s (%d probes); %s rejoined in %.2f s",
			i+1, o.Rounds, rd.Killed, rd.Survivor, rd.SaysPrimary.Round(time.Millisecond), rd.Failover.Round(time.Millisecond), rd.Attempts, rd.Killed, rd.Rejoin.Seconds())
		for _, e := range slices.Sorted(maps.Keys(rd.Refusals)) {
			r.progress("  %d probes failed: %s", rd.Refusals[e], e)
		}
		rounds = append(rounds, rd)
		primary = 1 - primary
		if i+1 < o.Rounds {
			if _, leader, err = r.waitHealthy(ctx, primary); err != nil {
				return err
			}
		}
	}
	fmt.Fprintf(o.Out, "blockbench -failover: %d rounds; node1, node2 (data, protocol C, %d MiB volume) and witness w on loopback; heartbeat_interval %s, failover_timeout %s\n\n",
		o.Rounds, o.Size>>20, hb, ft)
	WriteFailoverTables(o.Out, rounds, hb, ft)
	return nil
}

// startMember starts (or restarts) member i on its configuration.
func (r *failoverRun) startMember(ctx context.Context, i int) error {
	n := r.fc.Nodes[i]
	cfgPath := filepath.Join(r.work, n.Name+".toml")
	if err := os.WriteFile(cfgPath, []byte(r.fc.TOML(i)), 0o600); err != nil {
		return err
	}
	// start waits until the port accepts connections: the NBD port of a
	// data node, the cluster port of the witness (it serves no NBD).
	port := n.NBDPort
	if n.Witness {
		fmt.Sscanf(n.ClusterListen, "127.0.0.1:%d", &port)
	}
	s, err := start(ctx, n.Name, port, filepath.Join(r.work, n.Name+".log"), r.o.Blockrepd, "-config", cfgPath, "-log-level", "info")
	if err != nil {
		return err
	}
	s.Control = filepath.Join(n.DataDir, "control.sock")
	s.client = api.Dial(s.Control)
	r.nodes[i] = s
	return nil
}

// stopAll stops the members that run: the secondary first, so that the
// primary finds no node to hand its volume to and stops at once.
func (r *failoverRun) stopAll() {
	order := []int{1, 0, 2}
	if s := r.nodes[1]; s != nil && s.Exited() == nil {
		if st, err := r.status(context.Background(), 1); err == nil && role(st) == "primary" {
			order = []int{0, 1, 2}
		}
	}
	for _, i := range order {
		if s := r.nodes[i]; s != nil {
			s.Stop()
		}
	}
}

func (r *failoverRun) status(ctx context.Context, i int) (api.Status, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	return r.nodes[i].client.Status(ctx)
}

// role is the role of the status's only volume, "" if it has none.
func role(st api.Status) string {
	if len(st.Volumes) == 0 || st.Volumes[0].Replication == nil {
		return ""
	}
	return st.Volumes[0].Replication.Role
}

// healthy says what is still missing for data node p to be a primary
// with a lease and its peer in sync, the cluster recording both, and a
// leader that is not p; "" when nothing is. other is the other data node's
// status.
func (r *failoverRun) healthy(p int, stP, stS api.Status) (missing string, leaderOK bool) {
	pn, sn := r.fc.Nodes[p].Name, r.fc.Nodes[1-p].Name
	rp, rs := stP.Volumes[0].Replication, stS.Volumes[0].Replication
	switch {
	case rp == nil || rs == nil:
		return "no replication status", false
	case rp.Role != "primary" || rp.Fenced || rp.LeaseRemaining <= 0:
		return fmt.Sprintf("%s is %s (fenced %v, lease %d ms)", pn, rp.Role, rp.Fenced, rp.LeaseRemaining), false
	case len(rp.Peers) == 0 || !InSync(rp.Peers[0]):
		return fmt.Sprintf("%s's view of %s: %s", pn, sn, DescribePeer(rp.Peers[0])), false
	case rs.Role != "secondary" || rs.Disk != replica.UpToDate.String():
		return fmt.Sprintf("%s is %s, %s", sn, rs.Role, rs.Disk), false
	case stP.Cluster == nil || stP.Cluster.State == nil || stP.Cluster.State.Volumes[FailoverVolume] == nil:
		return "no cluster state", false
	}
	v := stP.Cluster.State.Volumes[FailoverVolume]
	if v.Primary != pn || v.Disks[sn] != replica.UpToDate {
		return fmt.Sprintf("the cluster records primary %q, %s %v", v.Primary, sn, v.Disks[sn]), false
	}
	return "", stP.Cluster.Leader != "" && stP.Cluster.Leader != pn
}

// waitHealthy waits until data node p (-1: either) is primary with a lease,
// the other node is in sync, and the cluster records both; then, for a
// while longer, until the leader is not the primary (the leader hands its
// leadership away from a primary by itself, so that a primary's death
// does not cost an election first). It returns the primary and the
// leader.
func (r *failoverRun) waitHealthy(ctx context.Context, p int) (int, string, error) {
	_, ft := r.fc.Timing()
	deadline := time.Now().Add(r.o.SyncTimeout)
	var leaderDeadline time.Time
	lastProgress := time.Now()
	var missing string
	for {
		cands := []int{p}
		if p < 0 {
			cands = []int{0, 1}
		}
		var errs []error
		for _, c := range cands {
			stP, err1 := r.status(ctx, c)
			stS, err2 := r.status(ctx, 1-c)
			if err := errors.Join(err1, err2); err != nil {
				errs = append(errs, err)
				continue
			}
			m, leaderOK := r.healthy(c, stP, stS)
			if m != "" {
				if p >= 0 || role(stP) == "primary" {
					missing = m
				}
				continue
			}
			if leaderOK {
				return c, stP.Cluster.Leader, nil
			}
			missing = fmt.Sprintf("%s leads the cluster and is primary", stP.Cluster.Leader)
			if leaderDeadline.IsZero() {
				// It hands leadership away 2 failover timeouts after it
				// took office, at most every 10 s.
				leaderDeadline = time.Now().Add(10*time.Second + 3*ft)
			} else if time.Now().After(leaderDeadline) {
				r.progress("note: %s still leads the cluster and is primary: its death costs an election first", stP.Cluster.Leader)
				return c, stP.Cluster.Leader, nil
			}
		}
		if len(errs) > 0 {
			missing = errors.Join(errs...).Error()
		}
		for _, s := range r.nodes {
			if err := s.Exited(); err != nil {
				return 0, "", fmt.Errorf("bench: %w while waiting for the cluster", err)
			}
		}
		if time.Now().After(deadline) {
			return 0, "", fmt.Errorf("bench: cluster not ready after %s: %s", r.o.SyncTimeout, missing)
		}
		if time.Since(lastProgress) >= 2*time.Second {
			r.progress("  waiting: %s", missing)
			lastProgress = time.Now()
		}
		select {
		case <-ctx.Done():
			return 0, "", ctx.Err()
		case <-time.After(PollInterval):
		}
	}
}

// writer writes 4 KiB FUA writes back to back on one connection until it
// fails, counting what was acknowledged.
type writer struct {
	c        *nbdclient.Client
	base     time.Time
	acks     atomic.Int64
	lastAck  atomic.Int64 // since base
	inflight atomic.Bool
	done     chan error
}

func startWriter(ctx context.Context, addr string) (*writer, error) {
	dctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	c, err := nbdclient.Dial(dctx, addr, FailoverVolume)
	if err != nil {
		return nil, err
	}
	if c.ReadOnly() {
		c.Close()
		return nil, fmt.Errorf("bench: the primary's export at %s is read-only", addr)
	}
	w := &writer{c: c, base: time.Now(), done: make(chan error, 1)}
	go func() {
		buf := make([]byte, 4096)
		for i := int64(0); ; i++ {
			buf[0], buf[1] = byte(i), byte(i>>8)
			w.inflight.Store(true)
			err := c.WriteAt(buf, (i*4096)%writerSpan, true)
			if err != nil {
				w.done <- err
				return
			}
			w.inflight.Store(false)
			w.acks.Add(1)
			w.lastAck.Store(int64(time.Since(w.base)))
		}
	}()
	return w, nil
}

// survivorWatch polls a node's status until stopped and records when it
// first said primary, and primary with a lease.
type survivorWatch struct {
	says, serving atomic.Int64 // UnixNano; 0 until seen
	stop          chan struct{}
	done          chan struct{}
}

func watchSurvivor(control string) *survivorWatch {
	sw := &survivorWatch{stop: make(chan struct{}), done: make(chan struct{})}
	c := api.Dial(control)
	go func() {
		defer close(sw.done)
		defer c.Close()
		tick := time.NewTicker(statusPoll)
		defer tick.Stop()
		for {
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			st, err := c.Status(ctx)
			cancel()
			now := time.Now().UnixNano()
			if err == nil && role(st) == "primary" {
				sw.says.CompareAndSwap(0, now)
				if rp := st.Volumes[0].Replication; !rp.Fenced && rp.LeaseRemaining > 0 {
					sw.serving.CompareAndSwap(0, now)
					return
				}
			}
			select {
			case <-sw.stop:
				return
			case <-tick.C:
			}
		}
	}()
	return sw
}

// probe connects to addr and writes one 4 KiB FUA block at off; nil when
// the write was acknowledged. A write the server holds (a primary waiting
// for its lease or a commit) is waited for up to wait.
func probe(ctx context.Context, addr string, block []byte, off int64, wait time.Duration) (*nbdclient.Client, error) {
	dctx, cancel := context.WithTimeout(ctx, time.Second)
	c, err := nbdclient.Dial(dctx, addr, FailoverVolume)
	cancel()
	if err != nil {
		return nil, err
	}
	res := make(chan error, 1)
	go func() { res <- c.WriteAt(block, off, true) }()
	t := time.NewTimer(wait)
	defer t.Stop()
	select {
	case err = <-res:
	case <-t.C:
		err = fmt.Errorf("no reply in %s", wait)
	case <-ctx.Done():
		err = ctx.Err()
	}
	if err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}

// round kills primary p while the writer writes to it, probes the other
// node until it acknowledges a write, then restarts p.
func (r *failoverRun) round(ctx context.Context, i, p int, leader string) (FailoverRound, error) {
	s := 1 - p
	victim, survivor := r.nodes[p], r.nodes[s]
	rd := FailoverRound{Killed: victim.Name, Survivor: survivor.Name, Leader: leader}
	_, ft := r.fc.Timing()
	vAddr := fmt.Sprintf("127.0.0.1:%d", r.fc.Nodes[p].NBDPort)
	sAddr := fmt.Sprintf("127.0.0.1:%d", r.fc.Nodes[s].NBDPort)

	w, err := startWriter(ctx, vAddr)
	if err != nil {
		return rd, err
	}
	defer w.c.Close()
	// Let the writes settle into their pace before the kill.
	warm := time.Now()
	for w.acks.Load() < 50 || time.Since(warm) < 300*time.Millisecond {
		select {
		case err := <-w.done:
			return rd, fmt.Errorf("bench: the writer failed before the kill: %w", err)
		case <-ctx.Done():
			return rd, ctx.Err()
		case <-time.After(10 * time.Millisecond):
		}
		if time.Since(warm) > 10*time.Second {
			return rd, fmt.Errorf("bench: only %d writes acknowledged in 10 s before the kill", w.acks.Load())
		}
	}
	sw := watchSurvivor(survivor.Control)
	defer func() {
		select {
		case <-sw.stop:
		default:
			close(sw.stop)
		}
		<-sw.done
	}()
	// Let the watcher's first request go out before the kill.
	time.Sleep(2 * statusPoll)

	r.progress("round %d: killing %s (pid %d) during its writes (%d acknowledged so far)", i+1, victim.Name, victim.PID(), w.acks.Load())
	t0 := time.Now()
	if err := syscall.Kill(victim.PID(), syscall.SIGKILL); err != nil {
		return rd, fmt.Errorf("bench: kill %s: %w", victim.Name, err)
	}
	rd.InFlight = w.inflight.Load()
	rd.Writes = int(w.acks.Load())
	if la := w.lastAck.Load(); la > 0 {
		rd.SinceAck = t0.Sub(w.base.Add(time.Duration(la)))
	}

	// Probe the survivor every ProbeInterval, a fresh connection each
	// time, until it acknowledges a write.
	block := bytes.Repeat([]byte{byte(i + 1)}, 4096)
	off := int64(probeBlock + i*4096)
	deadline := t0.Add(30*time.Second + 10*ft)
	var pc *nbdclient.Client
	for k := 1; ; k++ {
		rd.Attempts = k
		c, err := probe(ctx, sAddr, block, off, 10*time.Second+2*ft)
		if err == nil {
			rd.Failover = time.Since(t0)
			pc = c
			break
		}
		if rd.Refusals == nil {
			rd.Refusals = map[string]int{}
		}
		rd.Refusals[err.Error()]++
		if ctx.Err() != nil {
			return rd, ctx.Err()
		}
		if time.Now().After(deadline) {
			return rd, fmt.Errorf("bench: %s acknowledged no write %s after the kill (%d probes; last: %v)", survivor.Name, time.Since(t0).Round(time.Millisecond), k, err)
		}
		if e := survivor.Exited(); e != nil {
			return rd, fmt.Errorf("bench: %w during the failover", e)
		}
		if next := t0.Add(time.Duration(k) * ProbeInterval); time.Until(next) > 0 {
			time.Sleep(time.Until(next))
		}
	}
	// Outside the measure: the block reads back from the new primary.
	got := make([]byte, len(block))
	rerr := pc.ReadAt(got, off)
	pc.Close()
	if rerr != nil || !bytes.Equal(got, block) {
		return rd, fmt.Errorf("bench: the probe's block does not read back from %s (%v)", survivor.Name, rerr)
	}

	// The writer's connection ended with its server.
	select {
	case <-w.done:
	case <-time.After(10 * time.Second):
		return rd, errors.New("bench: the writer's connection to the killed primary did not end")
	}
	// The watcher: give it a moment to catch up if it has not seen the
	// promotion yet (it stops by itself once it saw a lease).
	stopAt := time.After(time.Second)
	for sw.serving.Load() == 0 {
		select {
		case <-stopAt:
		case <-time.After(statusPoll):
			continue
		}
		break
	}
	close(sw.stop)
	<-sw.done
	if t := sw.says.Load(); t > 0 {
		rd.SaysPrimary = time.Unix(0, t).Sub(t0)
	}
	if t := sw.serving.Load(); t > 0 {
		rd.Serving = time.Unix(0, t).Sub(t0)
	}
	if st, err := r.status(ctx, s); err == nil && len(st.Volumes) > 0 && st.Volumes[0].Replication != nil {
		rd.Epoch = st.Volumes[0].Replication.Epoch
	}

	// The daemon logs' view of the failover.
	rd.Marks = map[string]time.Duration{}
	for _, n := range r.nodes {
		data, err := os.ReadFile(n.LogPath)
		if err != nil {
			continue
		}
		for name, t := range ScanLogMarks(data, t0) {
			if d, ok := rd.Marks[name]; !ok || t.Sub(t0) < d {
				rd.Marks[name] = t.Sub(t0)
			}
		}
	}

	// Restart the killed node: it comes back as a secondary and resyncs.
	<-victim.done
	victim.Stop() // closes its log and client
	restart := time.Now()
	if err := r.startMember(ctx, p); err != nil {
		return rd, err
	}
	if _, _, err := r.waitHealthyPrimary(ctx, s); err != nil {
		return rd, err
	}
	rd.Rejoin = time.Since(restart)
	return rd, nil
}

// waitHealthyPrimary waits until s is a healthy primary with its peer in
// sync, without waiting for the leadership to move.
func (r *failoverRun) waitHealthyPrimary(ctx context.Context, s int) (api.Status, api.Status, error) {
	deadline := time.Now().Add(r.o.SyncTimeout)
	var missing string
	for {
		stP, err1 := r.status(ctx, s)
		stS, err2 := r.status(ctx, 1-s)
		if err := errors.Join(err1, err2); err != nil {
			missing = err.Error()
		} else if m, _ := r.healthy(s, stP, stS); m == "" {
			return stP, stS, nil
		} else {
			missing = m
		}
		for _, n := range r.nodes {
			if err := n.Exited(); err != nil {
				return api.Status{}, api.Status{}, fmt.Errorf("bench: %w while waiting for the rejoin", err)
			}
		}
		if time.Now().After(deadline) {
			return api.Status{}, api.Status{}, fmt.Errorf("bench: not in sync %s after the restart: %s", r.o.SyncTimeout, missing)
		}
		select {
		case <-ctx.Done():
			return api.Status{}, api.Status{}, ctx.Err()
		case <-time.After(PollInterval):
		}
	}
}
