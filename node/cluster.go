package node

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/hashicorp/raft"
	raftboltdb "github.com/hashicorp/raft-boltdb/v2"

	"github.com/blockrep/blockrep/api"
	"github.com/blockrep/blockrep/cluster"
	"github.com/blockrep/blockrep/config"
	"github.com/blockrep/blockrep/internal/authnet"
	"github.com/blockrep/blockrep/replica"
)

// membership is the node's part in the cluster: the Raft member, the
// authenticated listener it shares with the TCP control API, and the Raft
// stores.
type membership struct {
	member    *cluster.Member
	mux       *authnet.Mux
	auth      authnet.Config
	transport *raft.NetworkTransport
	store     *raftboltdb.BoltStore
	remote    *cluster.HTTPRemote
	ctl       *http.Server
	// authority lets the replicas commit through the member, which is
	// made after them.
	authority *memberAuthority
}

// memberAuthority is the replica.Authority of a clustered node's volumes.
type memberAuthority struct {
	m atomic.Pointer[cluster.Member]
}

func (a *memberAuthority) ReportPeerDisk(ctx context.Context, volume, peer string, epoch uint64, disk replica.DiskState) error {
	m := a.m.Load()
	if m == nil {
		return errors.New("cluster membership not started yet")
	}
	return m.ReportPeerDisk(ctx, volume, peer, epoch, disk)
}

// clusterVolume is a replica as the cluster member drives it.
type clusterVolume struct {
	name string
	v    *replica.Volume
}

func (c clusterVolume) Name() string { return c.name }

func (c clusterVolume) Report() cluster.LocalReport {
	l := c.v.Local()
	return cluster.LocalReport{Primary: l.Role == replica.Primary, Epoch: l.Epoch, Disk: l.Disk, Failed: l.Failed}
}

func (c clusterVolume) Fresh() bool { return c.v.Local().Fresh }

// Promote runs on the cluster's word, which may promote an Outdated disk
// (an operator's forced promotion): force follows it.
func (c clusterVolume) Promote(epoch uint64) error { return c.v.Promote(epoch, true) }
func (c clusterVolume) Demote(deposed bool) error  { return c.v.Demote(deposed) }
func (c clusterVolume) SetLease(until time.Time)   { c.v.SetLease(until) }

// remoteDrain bounds the wait for control calls over the cluster port at
// shutdown.
const remoteDrain = 500 * time.Millisecond

// raftDir is where a node keeps its Raft log and snapshots.
func raftDir(cfg *config.Config) string { return filepath.Join(cfg.Node.DataDir, "raft") }

// joinCluster opens the Raft stores and the authenticated listener and
// makes the member, its links protected by sec; the replicas are open (their Authority is
// n.membership.authority).
func (n *Node) joinCluster(secret []byte, sec linkProtection) error {
	cc := n.cfg.Cluster
	ms := n.membership
	var err error
	ms.auth = authnet.Config{Cluster: cc.Name, NodeID: n.cfg.Node.Name, Secret: secret, Logger: n.log, Protection: sec.prot, TLS: sec.tls}
	if err := os.MkdirAll(raftDir(n.cfg), 0o700); err != nil {
		return fmt.Errorf("cluster: %w", err)
	}
	if ms.store, err = raftboltdb.New(raftboltdb.Options{Path: filepath.Join(raftDir(n.cfg), "raft.db")}); err != nil {
		return fmt.Errorf("cluster: raft store: %w", err)
	}
	logw := raftLogWriter{n.log}
	snaps, err := raft.NewFileSnapshotStore(raftDir(n.cfg), 2, logw)
	if err != nil {
		return fmt.Errorf("cluster: raft snapshots: %w", err)
	}
	ln, err := net.Listen("tcp", cc.Listen)
	if err != nil {
		return fmt.Errorf("cluster.listen %s: %w", cc.Listen, err)
	}
	if ms.mux, err = authnet.NewMux(ln, ms.auth); err != nil {
		_ = ln.Close()
		return fmt.Errorf("cluster: %w", err)
	}
	ms.transport = raft.NewNetworkTransport(authnet.NewRaftStream(ms.mux, ms.auth), 3, 10*time.Second, logw)
	ms.remote = cluster.NewHTTPRemote(func(ctx context.Context, addr string) (net.Conn, error) {
		return authnet.Dial(ctx, addr, authnet.ServiceControl, ms.auth, "")
	})
	kind := cluster.DataNode
	if n.cfg.Witness() {
		kind = cluster.Witness
	}
	mc := cluster.MemberConfig{
		Name: n.cfg.Node.Name, Kind: kind,
		Timing:    cluster.Timing{HeartbeatInterval: cc.HeartbeatInterval, FailoverTimeout: cc.FailoverTimeout},
		Transport: ms.transport, LogStore: ms.store, StableStore: ms.store, Snapshots: snaps,
		Initial: map[string]string{}, Preferred: map[string]string{}, Failover: map[string]string{},
		Remote: ms.remote,
		Logger: n.log,
	}
	for _, m := range cc.Members {
		mc.Bootstrap = append(mc.Bootstrap, cluster.Server{Name: m.Name, Address: m.Address})
	}
	for _, v := range n.volumes {
		mc.Volumes = append(mc.Volumes, clusterVolume{name: v.cfg.Name, v: v.repl})
		mc.Preferred[v.cfg.Name] = v.cfg.PreferredPrimary
		mc.Failover[v.cfg.Name] = string(v.cfg.Failover)
		mc.Initial[v.cfg.Name] = initialPrimary(n.cfg, v.cfg)
	}
	if ms.member, err = cluster.NewMember(mc); err != nil {
		return err
	}
	ms.authority.m.Store(ms.member)
	mux := http.NewServeMux()
	mux.Handle(cluster.RPCPrefix, ms.member.Handler())
	mux.Handle("/", api.NewHandler(n))
	ms.ctl = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second, ErrorLog: slog.NewLogLogger(n.log.Handler(), slog.LevelWarn)}
	return nil
}

// initialPrimary is the node whose blank replica becomes a new volume's
// first data: the preferred primary, else the first data node by name.
func initialPrimary(cfg *config.Config, v config.Volume) string {
	if v.PreferredPrimary != "" {
		return v.PreferredPrimary
	}
	names := []string{cfg.Node.Name}
	for _, p := range cfg.Peers {
		names = append(names, p.Name)
	}
	return slices.Min(names)
}

// runCluster serves the cluster until ctx ends; it returns when everything
// it started has stopped. If the cluster port's listener fails for good
// before, its error goes to failed at once (and not into the result), so
// that the node can stop in order.
func (n *Node) runCluster(ctx context.Context, failed chan<- error) error {
	ms := n.membership
	errs := make(chan error, 3)
	go func() {
		err := ms.mux.Serve(ctx)
		if err != nil && ctx.Err() == nil {
			n.log.Error("cluster listener failed: other nodes cannot reach this one", "addr", ms.mux.Addr().String(), "err", err)
			failed <- fmt.Errorf("cluster.listen: %w", err)
			err = nil
		}
		errs <- err
	}()
	go func() { errs <- ms.member.Run(ctx) }()
	go func() {
		err := ms.ctl.Serve(ms.mux.Listener(authnet.ServiceControl))
		if errors.Is(err, http.ErrServerClosed) || errors.Is(err, net.ErrClosed) {
			err = nil
		}
		errs <- err
	}()
	n.log.Info("cluster listening", "addr", ms.mux.Addr().String())
	<-ctx.Done()
	// Remote calls are retried by their callers: no need to wait long for
	// them, nor for the idle connections net/http keeps for 5 s.
	sctx, cancel := context.WithTimeout(context.Background(), remoteDrain)
	defer cancel()
	if ms.ctl.Shutdown(sctx) != nil {
		_ = ms.ctl.Close()
	}
	var all []error
	for range 3 {
		if err := <-errs; err != nil && !errors.Is(err, context.Canceled) {
			all = append(all, err)
		}
	}
	ms.remote.Close()
	return errors.Join(all...)
}

// handOver moves the primary role of this node's volumes to another node
// before it stops, so that clients wait for a switchover rather than a
// failover timeout. Best effort, bounded by d.
func (n *Node) handOver(d time.Duration) {
	ms := n.membership
	if ms == nil || ms.member == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	for _, v := range n.volumes {
		if v.repl == nil || v.repl.Role() != replica.Primary || !inSyncPeer(v.repl.Status()) {
			continue // nobody to hand it to: the failover timeout will do
		}
		if err := ms.member.Switchover(ctx, v.cfg.Name, ""); err != nil {
			n.log.Warn("no switchover before stopping: the cluster fails over after the timeout", "volume", v.cfg.Name, "err", err)
			continue
		}
		n.log.Info("switched over before stopping", "volume", v.cfg.Name)
	}
}

// inSyncPeer reports whether a peer is connected, receiving the writes and
// recorded UpToDate by the cluster: one a switchover can go to at once.
func inSyncPeer(st replica.Status) bool {
	for _, p := range st.Peers {
		if p.Connection == replica.Connected && p.Replicating && p.ClusterDisk == replica.UpToDate.String() {
			return true
		}
	}
	return false
}

// closeCluster closes what joinCluster opened (after runCluster returned,
// or instead of it).
func (n *Node) closeCluster() error {
	ms := n.membership
	if ms == nil {
		return nil
	}
	var errs []error
	if ms.mux != nil {
		_ = ms.mux.Close()
	}
	if ms.transport != nil {
		_ = ms.transport.Close()
	}
	if ms.store != nil {
		if err := ms.store.Close(); err != nil {
			errs = append(errs, fmt.Errorf("cluster: raft store: %w", err))
		}
	}
	return errors.Join(errs...)
}

// raftLogWriter forwards the log lines of raft's transport and snapshot
// store to slog.
type raftLogWriter struct{ log *slog.Logger }

func (w raftLogWriter) Write(p []byte) (int, error) {
	w.log.Info(strings.TrimSpace(string(p)), "component", "raft")
	return len(p), nil
}

var _ io.Writer = raftLogWriter{}

// readBarrier waits, within ctx and at most readBarrierWait, until the
// member's cluster state holds every command the leader had committed at
// the call (cluster.Member.ReadBarrier). A control call that reads the
// state makes it first: a member just started, cut off or behind answers
// "no quorum" or "not caught up" (api.ErrUnavailable) rather than from an
// empty or stale state.
func (n *Node) readBarrier(ctx context.Context, m *cluster.Member) error {
	ctx, cancel := context.WithTimeout(ctx, n.readBarrierWait())
	defer cancel()
	if err := m.ReadBarrier(ctx); err != nil {
		return api.Unavailable(err)
	}
	return nil
}

// readBarrierWait bounds a read barrier: two failover timeouts (long
// enough for a restarted member to hear from the leader, or for an
// election), at most maxReadBarrierWait, so that an operator without
// quorum hears so well within blockctl's 10 s.
func (n *Node) readBarrierWait() time.Duration {
	return min(2*n.cfg.Cluster.FailoverTimeout, maxReadBarrierWait)
}

// maxReadBarrierWait caps readBarrierWait.
const maxReadBarrierWait = 5 * time.Second

// clusterVolumeName resolves "" to the only volume the cluster knows. The
// caller has made a read barrier.
func (n *Node) clusterVolumeName(volume string) (string, error) {
	if volume != "" {
		return volume, nil
	}
	names := slices.Sorted(maps.Keys(n.membership.member.State().Volumes))
	if len(names) != 1 {
		return "", fmt.Errorf("%w: name a volume: the cluster has %d (%s)", api.ErrInvalid, len(names), strings.Join(names, ", "))
	}
	return names[0], nil
}

// member is the node's cluster member; nil without [cluster].
func (n *Node) member() *cluster.Member {
	if n.membership == nil {
		return nil
	}
	return n.membership.member
}

func (n *Node) clustered() (*cluster.Member, error) {
	if n.member() == nil {
		return nil, fmt.Errorf("%w: node %s is not a cluster member (no [cluster] table)", api.ErrConflict, n.cfg.Node.Name)
	}
	return n.membership.member, nil
}

// clusterError maps the cluster's refusals to the API's error classes: a
// refusal is a conflict; a call that found no leader before its time ran
// out is unavailable (no quorum), as a read barrier that failed.
func clusterError(err error) error {
	var ref *cluster.RefusedError
	var fin *cluster.FinalError
	var nl *cluster.NotLeaderError
	switch {
	case err == nil:
		return nil
	case errors.As(err, &ref), errors.As(err, &fin):
		return fmt.Errorf("%w: %w", api.ErrConflict, err)
	case errors.As(err, &nl):
		return api.Unavailable(fmt.Errorf("no quorum: %w", err))
	}
	return err
}

// clusteredCurrent is clustered, then a read barrier: for the calls that
// read the cluster state.
func (n *Node) clusteredCurrent(ctx context.Context) (*cluster.Member, error) {
	m, err := n.clustered()
	if err != nil {
		return nil, err
	}
	return m, n.readBarrier(ctx, m)
}

// Promote implements api.ClusterController: a graceful switchover to node,
// or with force an immediate promotion whatever its disk (an Outdated one
// loses what only the others had; the result says what).
func (n *Node) Promote(ctx context.Context, volume, node string, force bool, reason string) (string, error) {
	m, err := n.clusteredCurrent(ctx)
	if err != nil {
		return "", err
	}
	if volume, err = n.clusterVolumeName(volume); err != nil {
		return "", err
	}
	if node == "" {
		return "", fmt.Errorf("%w: name the node to promote", api.ErrInvalid)
	}
	if !force {
		if err := m.Promote(ctx, volume, node); err != nil {
			return "", clusterError(err)
		}
		return fmt.Sprintf("%s is primary of %s", node, volume), nil
	}
	if strings.TrimSpace(reason) == "" {
		reason = "forced by the operator (blockctl promote --force)"
	}
	n.log.Warn("forced promotion", "volume", volume, "node", node, "reason", reason)
	res, err := m.ForcePromote(ctx, volume, node, reason)
	if err != nil {
		return "", clusterError(err)
	}
	note := fmt.Sprintf("%s is primary of %s (forced)", node, volume)
	if res.Note != "" {
		note += ": " + res.Note
	}
	return note, nil
}

// Demote implements api.ClusterController: a graceful switchover to the
// best other UpToDate node.
func (n *Node) Demote(ctx context.Context, volume string) (string, error) {
	m, err := n.clusteredCurrent(ctx)
	if err != nil {
		return "", err
	}
	if volume, err = n.clusterVolumeName(volume); err != nil {
		return "", err
	}
	old := m.State().Volumes[volume].Primary
	if err := m.Switchover(ctx, volume, ""); err != nil {
		return "", clusterError(err)
	}
	// The leader saw the switchover done; this node may apply the
	// promotion a moment later. Name the new primary once it has.
	for {
		changed := m.Changed()
		if p := m.State().Volumes[volume].Primary; p != "" && p != old {
			return fmt.Sprintf("%s is primary of %s", p, volume), nil
		}
		select {
		case <-ctx.Done():
			return fmt.Sprintf("%s is no longer primary of %s", old, volume), nil
		case <-changed:
		}
	}
}

// AddMember implements api.ClusterController.
func (n *Node) AddMember(ctx context.Context, name, address string) error {
	m, err := n.clustered()
	if err != nil {
		return err
	}
	return clusterError(m.AddMember(ctx, name, address))
}

// RemoveMember implements api.ClusterController.
func (n *Node) RemoveMember(ctx context.Context, name string, force bool, reason string) error {
	m, err := n.clustered()
	if err != nil {
		return err
	}
	if force && strings.TrimSpace(reason) == "" {
		reason = "forced by the operator (blockctl cluster remove --force)"
	}
	return clusterError(m.RemoveMember(ctx, name, force, reason))
}
