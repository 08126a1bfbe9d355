package node

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/blockrep/blockrep/api"
	"github.com/blockrep/blockrep/events"
)

// eventHistory is how many events the node keeps for blockctl events.
const eventHistory = 4096

// observeEvery is how often the node compares its state with the last
// observation to publish what changed.
const observeEvery = 100 * time.Millisecond

var _ api.EventSource = (*Node)(nil)

// Events implements api.EventSource.
func (n *Node) Events() *events.Bus { return n.bus }

// CurrentEvents implements api.EventSource: the state as last observed.
func (n *Node) CurrentEvents() []events.Event { return n.watcher.Current() }

// hooks converts the configured hooks.
func (n *Node) hooks() []events.Hook {
	var hs []events.Hook
	for _, h := range n.cfg.Hooks {
		hs = append(hs, events.Hook{On: h.On, Command: h.Command, Timeout: h.Timeout})
	}
	return hs
}

// watchEvents publishes the node's state changes until ctx ends, and runs
// the hooks on them.
func (n *Node) watchEvents(ctx context.Context) {
	runner := events.NewRunner(n.hooks(), n.log.With("component", "hooks"))
	sub := n.bus.Subscribe(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		runner.Serve(ctx, sub)
	}()
	tick := time.NewTicker(observeEvery)
	defer tick.Stop()
	for {
		n.watcher.Observe(n.facts(ctx))
		select {
		case <-ctx.Done():
			<-done
			return
		case <-tick.C:
		}
	}
}

// facts flattens the node's status into what the watcher compares.
func (n *Node) facts(ctx context.Context) []events.Fact {
	st, err := n.status(ctx, false)
	if err != nil {
		return nil
	}
	return statusFacts(n.cfg.Node.Name, st)
}

// statusFacts flattens the status st of node me; it is apart from facts so
// that the flattening can be tested on statuses no running node would be
// in.
func statusFacts(me string, st api.Status) []events.Fact {
	var fs []events.Fact
	add := func(kind, volume, peer, value, detail string) {
		fs = append(fs, events.Fact{Kind: kind, Node: me, Volume: volume, Peer: peer, Value: value, Detail: detail})
	}
	for _, v := range st.Volumes {
		// A RAID volume is often standalone: its array is watched whether
		// or not it replicates.
		if rs := v.RAID; rs != nil {
			fs = append(fs, raidFacts(me, v.Name, rs)...)
		}
		r := v.Replication
		if r == nil {
			continue
		}
		add(events.KindRole, v.Name, "", r.Role, "epoch "+strconv.FormatUint(r.Epoch, 10))
		add(events.KindDisk, v.Name, "", r.Disk, r.DiskFailed)
		if r.DiskFailed != "" {
			add(events.KindIOError, v.Name, "", "failed", r.DiskFailed)
		} else {
			add(events.KindIOError, v.Name, "", "ok", "")
		}
		add(events.KindEpoch, v.Name, "", strconv.FormatUint(r.Epoch, 10), "")
		if r.Role == "primary" && st.Cluster != nil {
			lease := "held"
			if r.Fenced {
				lease = "lost"
			}
			add(events.KindLease, v.Name, "", lease, "")
		}
		for _, p := range r.Peers {
			add(events.KindConnection, v.Name, p.Name, string(p.Connection), p.LastError)
			add(events.KindPeerDisk, v.Name, p.Name, p.Disk, "")
			if strings.Contains(p.LastError, "split brain") {
				add(events.KindSplitBrain, v.Name, p.Name, "detected", p.LastError)
			}
			if p.Resync != nil {
				add(events.KindResync, v.Name, p.Name, p.Resync.Kind, fmt.Sprintf("%d of %d bytes", p.Resync.DoneBytes, p.Resync.TotalBytes))
			}
		}
	}
	if c := st.Cluster; c != nil {
		state := "current"
		if c.Stale != "" {
			state = "stale"
		}
		fs = append(fs, events.Fact{Kind: events.KindClusterState, Node: me, Value: state, Detail: c.Stale})
		fs = append(fs, events.Fact{Kind: events.KindLeader, Node: me, Value: c.Leader, Detail: "term " + c.Term})
		for _, m := range c.Members {
			kind := "nonvoter"
			if m.Voter {
				kind = "voter"
			}
			fs = append(fs, events.Fact{Kind: events.KindMember, Node: me, Peer: m.Name, Value: kind, Detail: m.Address})
		}
		// Before it caught up once, the state is a snapshot's or empty:
		// "primary none" would be a lie.
		if c.State != nil && c.CaughtUp {
			for name, v := range c.State.Volumes {
				primary := v.Primary
				if primary == "" {
					primary = "none"
				}
				fs = append(fs, events.Fact{Kind: events.KindPrimary, Node: me, Volume: name, Value: primary, Detail: "epoch " + strconv.FormatUint(v.Epoch, 10)})
			}
		}
	}
	return fs
}

// raidFacts flattens the status rs of volume's array, like the events
// mdadm --monitor reports.
func raidFacts(me, volume string, rs *api.RAIDStatus) []events.Fact {
	inSync := 0
	for _, m := range rs.Members {
		if m.State == "in_sync" {
			inSync++
		}
	}
	fs := []events.Fact{{Kind: events.KindRAIDHealth, Node: me, Volume: volume, Value: rs.Health,
		Detail: fmt.Sprintf("%s, %d of %d members in sync", rs.Level, inSync, len(rs.Members))}}
	for _, m := range rs.Members {
		detail := m.Path
		if detail == "" {
			detail = "empty slot"
		}
		if m.Error != "" {
			detail += ": " + m.Error
		}
		fs = append(fs, events.Fact{Kind: events.KindRAIDMember, Node: me, Volume: volume,
			Peer: "member" + strconv.Itoa(m.Index), Value: m.State, Detail: detail})
	}
	op, detail := "idle", ""
	if p := rs.Progress; p != nil {
		// The bytes done stay out of the value: they change on every
		// observation of a running operation, and each change would be an
		// event.
		op = p.Op + "-" + p.State
		what := "check"
		switch {
		case p.Op == "rebuild":
			what = "member " + strconv.Itoa(p.Member)
		case p.Repair:
			what = "repair"
		}
		detail = fmt.Sprintf("%s, %d of %d bytes", what, p.DoneBytes, p.TotalBytes)
		if p.Error != "" {
			detail += ": " + p.Error
		}
		// A scrub over has its findings in the detail, for a hook on
		// raid-op to alert on mismatches: the node shows a scrub as
		// running until it has stored them (raidVolume.status).
		if s := rs.Scrub; p.Op == "scrub" && p.State != "running" && s != nil {
			sep := ": "
			if p.Error != "" {
				sep = "; "
			}
			detail += sep + scrubFindings(s)
		}
	}
	fs = append(fs, events.Fact{Kind: events.KindRAIDOp, Node: me, Volume: volume, Value: op, Detail: detail})
	return fs
}

// scrubFindings renders what a scrub found: "0 mismatches", "2
// mismatches, 2 repaired", with the read errors and skipped stripes when
// there were any.
func scrubFindings(s *api.RAIDScrubResult) string {
	out := fmt.Sprintf("%d mismatches", s.Mismatches)
	if s.Repair {
		out += fmt.Sprintf(", %d repaired", s.Repaired)
	}
	if s.ReadErrors > 0 {
		out += fmt.Sprintf(", %d read errors", s.ReadErrors)
	}
	if s.Skipped > 0 {
		out += fmt.Sprintf(", %d stripes skipped", s.Skipped)
	}
	return out
}
