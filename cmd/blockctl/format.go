package main

import (
	"bytes"
	"fmt"
	"io"
	"maps"
	"math"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/blockrep/blockrep/api"
	"github.com/blockrep/blockrep/cluster"
	"github.com/blockrep/blockrep/replica"
)

// writeTable renders a status for people: a node line, one row per volume,
// a block per replicated volume, the cluster block of a cluster member, then
// one row per connected client. now dates the client ages, the verify
// results and the leases.
func writeTable(w io.Writer, st api.Status, now time.Time) error {
	fmt.Fprintf(w, "node %s  id %s  version %s  up %s\n\n", st.Node, st.NodeID, st.Version, humanDuration(st.Uptime()))

	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tSIZE\tRO\tTLS\tCLIENTS\tPATH")
	nclients := 0
	for _, v := range st.Volumes {
		nclients += len(v.Clients)
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%s\n", v.Name, humanSize(v.Size), yesNo(v.ReadOnly), v.TLS, len(v.Clients), v.Path)
	}
	if err := tw.Flush(); err != nil {
		return err
	}

	// A store that is gone, came up Inconsistent or carries no identity
	// gets a line; a store in order, none.
	storeLines := false
	for _, v := range st.Volumes {
		if line := storeLine(v.Name, v.Store); line != "" {
			if !storeLines {
				fmt.Fprintln(w)
				storeLines = true
			}
			fmt.Fprintln(w, line)
		}
	}

	raidLines := false
	for _, v := range st.Volumes {
		if v.RAID == nil {
			continue
		}
		if !raidLines {
			fmt.Fprintln(w)
			raidLines = true
		}
		fmt.Fprintln(w, raidSummary(v.Name, v.RAID))
	}

	for _, v := range st.Volumes {
		if v.Replication == nil {
			continue
		}
		fmt.Fprintln(w)
		if err := writeReplication(w, v.Name, v.Replication, now); err != nil {
			return err
		}
	}

	if st.Cluster != nil {
		fmt.Fprintln(w)
		if err := writeCluster(w, st.Cluster, now); err != nil {
			return err
		}
	}

	if nclients == 0 {
		_, err := fmt.Fprintln(w, "\nno clients connected")
		return err
	}
	fmt.Fprintln(w)
	fmt.Fprintln(tw, "ID\tVOLUME\tREMOTE\tTLS\tSINCE\tREADS\tWRITES\tBYTES R/W")
	for _, v := range st.Volumes {
		for _, c := range v.Clients {
			fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s ago\t%d\t%d\t%s/%s\n",
				c.ID, v.Name, c.Remote, yesNo(c.TLS), humanDuration(now.Sub(c.Since)),
				c.Reads, c.Writes, humanSize(int64(c.BytesRead)), humanSize(int64(c.BytesWritten)))
		}
	}
	return tw.Flush()
}

// barWidth is the width of a progress bar between its brackets: 5% a step.
const barWidth = 20

// writeReplication renders the replication state of the volume name: a line
// for the local side, a row per peer, then a line for each peer's last
// connect, last error, failed resync and verify.
func writeReplication(w io.Writer, name string, rs *replica.Status, now time.Time) error {
	fmt.Fprintf(w, "%s  role %s  disk %s  epoch %d  protocol %s  gen %s\n", name, rs.Role, rs.Disk, rs.Epoch, rs.Protocol, rs.Generation)
	if rs.DiskFailed != "" {
		fmt.Fprintf(w, "  local disk failed, detached (on_io_error): %s\n", rs.DiskFailed)
	}
	if rs.ContinueAlone {
		// The one setting that trades safety for availability: say so on
		// every status, not only in the configuration.
		who := "this primary acknowledges"
		if rs.Role != replica.Primary.String() {
			who = "as primary, this node would acknowledge"
		}
		fmt.Fprintf(w, "  warning: continue_alone is on: %s writes its peers may not have (unsafe without quorum)\n", who)
	}
	if len(rs.Peers) == 0 {
		_, err := fmt.Fprintln(w, "  no peers")
		return err
	}

	rows := [][]string{{"PEER", "CONNECTION", "ROLE", "DISK", "REPL", "OUT-OF-SYNC", "RESYNC"}}
	for _, p := range rs.Peers {
		resync := ""
		switch r := p.Resync; {
		case r == nil:
		case r.Finished.IsZero():
			resync = progressBar(r) + " (" + r.Kind + ")"
		case r.Error == "":
			resync = fmt.Sprintf("%s done %s: %s in %s", r.Kind, clock(r.Finished, now), humanSize(r.DoneBytes), humanDuration(r.Finished.Sub(r.Started)))
		}
		rows = append(rows, []string{p.Name, string(p.Connection), p.Role, p.Disk, yesNo(p.Replicating), humanSize(p.OutOfSyncBytes), resync})
	}
	if err := writeRows(w, rows); err != nil {
		return err
	}

	for _, p := range rs.Peers {
		if p.Decision != "" {
			fmt.Fprintf(w, "  %s: %s (last connect)\n", p.Name, p.Decision)
		}
		if p.LastError != "" {
			fmt.Fprintf(w, "  %s: %s (last error)\n", p.Name, p.LastError)
		}
		if p.Resync != nil && p.Resync.Error != "" {
			fmt.Fprintf(w, "  %s: %s resync failed: %s\n", p.Name, p.Resync.Kind, p.Resync.Error)
		}
		if p.Verify != nil {
			fmt.Fprintf(w, "  %s: %s\n", p.Name, verifyLine(p.Verify, now))
		}
	}
	return nil
}

// writeCluster renders a member's view of its cluster: a line for this
// node's Raft state, a row per member, a row per cluster volume, then a line
// per control-loop error. now dates the leases.
func writeCluster(w io.Writer, cs *cluster.MemberStatus, now time.Time) error {
	fmt.Fprintf(w, "cluster  node %s  kind %s  raft %s  leader %s  term %s\n",
		cs.Name, orDash(cs.Kind), orDash(cs.Raft), orNone(cs.Leader), orDash(cs.Term))
	if cs.Stale != "" {
		// Said before the state it qualifies, so that nobody acts on the
		// rows below without reading it.
		fmt.Fprintf(w, "  STALE: %s; the members and volumes below are as applied here (index %d) and may be out of date\n", cs.Stale, cs.AppliedIndex)
		if !cs.CaughtUp {
			fmt.Fprintln(w, "  this node has not caught up with the cluster since it started: its state may be an old snapshot's or empty")
		}
	}

	// Only the leader hears the heartbeats, so only its members have a
	// liveness: the columns are left out elsewhere.
	known := slices.ContainsFunc(cs.Members, func(m cluster.MemberInfo) bool { return m.Alive != nil })
	var rows [][]string
	if known {
		rows = append(rows, []string{"MEMBER", "ADDRESS", "KIND", "VOTER", "ALIVE", "LAST SEEN"})
	} else {
		rows = append(rows, []string{"MEMBER", "ADDRESS", "KIND", "VOTER"})
	}
	leaderAddr := ""
	for _, m := range cs.Members {
		if m.Name == cs.Leader {
			leaderAddr = m.Address
		}
		row := []string{m.Name, m.Address, orDash(m.Kind), yesNo(m.Voter)}
		if known {
			alive := "?"
			if m.Alive != nil {
				alive = yesNo(*m.Alive)
			}
			row = append(row, alive, orDash(m.LastSeen))
		}
		rows = append(rows, row)
	}
	if len(cs.Members) == 0 {
		fmt.Fprintln(w, "  no members: this node waits to be added (blockctl cluster add on a member)")
	} else if err := writeRows(w, rows); err != nil {
		return err
	}
	if !known && len(cs.Members) > 0 && cs.Leader != "" && cs.Leader != cs.Name {
		ask := ""
		if leaderAddr != "" {
			ask = ": blockctl --node " + leaderAddr + " status"
		}
		fmt.Fprintf(w, "  liveness: only the leader %s knows%s\n", cs.Leader, ask)
	}

	if cs.State != nil && len(cs.State.Volumes) > 0 {
		rows = [][]string{{"VOLUME", "PRIMARY", "EPOCH", "PREFERRED", "LOST", "LEASE", "DISKS"}}
		for _, name := range slices.Sorted(maps.Keys(cs.State.Volumes)) {
			v := cs.State.Volumes[name]
			if v == nil {
				continue
			}
			lease := "-"
			if v.Primary != "" && v.Primary == cs.Name {
				lease = "none"
				if until, ok := cs.Leases[name]; ok {
					lease = leaseLeft(until.Sub(now))
				}
			}
			var disks []string
			for _, n := range slices.Sorted(maps.Keys(v.Disks)) {
				disks = append(disks, n+" "+v.Disks[n].String())
			}
			rows = append(rows, []string{name, orDash(v.Primary), strconv.FormatUint(v.Epoch, 10),
				orDash(v.Preferred), orDash(v.Lost), lease, orDash(strings.Join(disks, ", "))})
		}
		if err := writeRows(w, rows); err != nil {
			return err
		}
	}

	for _, name := range slices.Sorted(maps.Keys(cs.Errors)) {
		fmt.Fprintf(w, "  %s: %s (control loop)\n", name, cs.Errors[name])
	}
	return nil
}

// writeRows writes rows as an indented table, without the padding
// tabwriter leaves after an empty last cell.
func writeRows(w io.Writer, rows [][]string) error {
	var buf bytes.Buffer
	tw := tabwriter.NewWriter(&buf, 0, 0, 2, ' ', 0)
	for _, r := range rows {
		fmt.Fprintln(tw, "  "+strings.Join(r, "\t"))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	for line := range strings.Lines(buf.String()) {
		if _, err := fmt.Fprintln(w, strings.TrimRight(line, " \n")); err != nil {
			return err
		}
	}
	return nil
}

// leaseLeft renders the time left on a primary's lease. Leases last about a
// second, so it keeps tenths of a second where humanDuration would not.
func leaseLeft(d time.Duration) string {
	switch {
	case d <= 0:
		return "expired"
	case d < time.Minute:
		return d.Round(10 * time.Millisecond).String()
	}
	return humanDuration(d)
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func orNone(s string) string {
	if s == "" {
		return "none"
	}
	return s
}

// verifyLine describes a running or finished verify.
func verifyLine(v *replica.Progress, now time.Time) string {
	diff := "in sync"
	if v.OutOfSyncBytes > 0 {
		diff = humanSize(v.OutOfSyncBytes) + " out of sync"
	}
	switch {
	case v.Finished.IsZero() && v.Error == "":
		return fmt.Sprintf("verify %s, %s so far", progressBar(v), diff)
	case v.Error != "":
		return fmt.Sprintf("verify failed %s: %s (%s up to %s)", clock(v.Finished, now), v.Error, diff, humanSize(v.DoneBytes))
	}
	return fmt.Sprintf("verify finished %s: %s", clock(v.Finished, now), diff)
}

// progressBar renders a resync or verify as "[=========>          ] 45%
// 210MiB/s ETA 3s", leaving out the rate and ETA when unknown.
func progressBar(p *replica.Progress) string {
	// Integer arithmetic rounds down, so that 100% means done (and 29%
	// stays 29%, where float64(29)/100*100 is 28.999...).
	var pct int64
	if p.TotalBytes > 0 {
		pct = min(max(p.DoneBytes, 0), p.TotalBytes) * 100 / p.TotalBytes
	}
	filled := int(pct * barWidth / 100)
	bar := strings.Repeat("=", filled)
	if filled < barWidth {
		bar += ">" + strings.Repeat(" ", barWidth-filled-1)
	}
	s := fmt.Sprintf("[%s] %d%%", bar, pct)
	if p.BytesPerSecond > 0 {
		s += " " + humanSize(int64(p.BytesPerSecond)) + "/s"
	}
	if p.ETASeconds > 0 {
		// Rounded up: humanDuration truncates, and "ETA 0s" on a transfer
		// still running reads as a hang.
		s += " ETA " + humanDuration(time.Duration(math.Ceil(p.ETASeconds))*time.Second)
	}
	return s
}

// clock renders t in now's time zone: the time of day when t is today, else
// the date too.
func clock(t, now time.Time) string {
	t = t.In(now.Location())
	if y, m, d := t.Date(); y == now.Year() && m == now.Month() && d == now.Day() {
		return t.Format("15:04:05")
	}
	return t.Format("2006-01-02 15:04:05")
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}

// humanSize renders bytes with binary units: exact values without a
// fraction ("1GiB"), others with one decimal ("1.5GiB"), small ones in bytes.
func humanSize(n int64) string {
	units := []string{"B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"}
	k := 0
	for k+1 < len(units) && n>>(10*(k+1)) > 0 {
		k++
	}
	div := int64(1) << (10 * k)
	if n%div == 0 {
		return strconv.FormatInt(n/div, 10) + units[k]
	}
	return strconv.FormatFloat(float64(n)/float64(div), 'f', 1, 64) + units[k]
}

// humanDuration renders an age with its two largest units: "45s", "3m12s",
// "2h5m", "3d4h".
func humanDuration(d time.Duration) string {
	if d < 0 {
		d = 0
	}
	s := int64(d / time.Second)
	switch {
	case s < 60:
		return fmt.Sprintf("%ds", s)
	case s < 3600:
		return fmt.Sprintf("%dm%ds", s/60, s%60)
	case s < 86400:
		return fmt.Sprintf("%dh%dm", s/3600, s%3600/60)
	default:
		return fmt.Sprintf("%dd%dh", s/86400, s%86400/3600)
	}
}

// storeLine says what is wrong with a volume's store, "" when nothing is.
func storeLine(name string, s *api.StoreStatus) string {
	switch {
	case s == nil:
		return ""
	case s.Gone != "":
		return fmt.Sprintf("store %s: GONE, every request fails: %s", name, s.Gone)
	case s.Opened == "Inconsistent":
		return fmt.Sprintf("store %s: opened Inconsistent (full sync from a peer): %s", name, s.Reason)
	case s.Identity == "unprotected":
		return fmt.Sprintf("store %s: no identity (a replaced store cannot be recognised): %s", name, s.Reason)
	}
	return ""
}
