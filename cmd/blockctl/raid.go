package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	"github.com/blockrep/blockrep/api"
	"github.com/blockrep/blockrep/replica"
)

// raidVolumeJSON is one element of `raid status -o json`: the volume's name
// and its api.RAIDStatus fields.
type raidVolumeJSON struct {
	Volume string `json:"volume"`
	*api.RAIDStatus
}

// raidCommand parses and runs `raid SUBCOMMAND ...`.
func raidCommand(t target, args []string, common commonFlags, stdout io.Writer) error {
	sub, args, common, err := parseGroup("raid", args, common)
	if err != nil {
		return err
	}
	switch sub {
	case "":
		return usagef("raid: name a subcommand: status, fail, remove, add, replace or scrub")
	case "help":
		return flag.ErrHelp
	case "status":
		pos, opts, err := parseArgs("raid status", args, common, statusKind, nil)
		if err != nil {
			return err
		}
		if len(pos) > 1 {
			return usagef("raid status: unexpected argument %q", pos[1])
		}
		return raidStatus(t, append(pos, "")[0], opts, stdout)
	}
	a, err := parseRAID(sub, args, common)
	if err != nil {
		return err
	}
	return runAction(t, a, stdout)
}

// parseMember parses a MEMBER argument.
func parseMember(cmd, s string) (int, error) {
	m, err := strconv.Atoi(s)
	if err != nil || m < 0 {
		return 0, usagef("%s: member %q is not a member index (0, 1, ...)", cmd, s)
	}
	return m, nil
}

// isSparePath tells the PATH of a hot spare from a MEMBER index in the
// argument of raid remove: an absolute path never parses as an integer.
func isSparePath(s string) bool {
	_, err := strconv.Atoi(s)
	return err != nil && strings.HasPrefix(s, "/")
}

// parseRAID parses the arguments of `raid fail|remove|add|replace|scrub`.
func parseRAID(sub string, args []string, common commonFlags) (action, error) {
	cmd := "raid " + sub
	var repair bool
	var define func(fs *flag.FlagSet)
	var want []string // the required arguments, by name
	switch sub {
	case "fail":
		want = []string{"MEMBER"}
	case "remove":
		want = []string{"MEMBER|PATH"}
	case "add":
		want = []string{"PATH"}
	case "replace":
		want = []string{"MEMBER", "PATH"}
	case "scrub":
		define = func(fs *flag.FlagSet) {
			fs.BoolVar(&repair, "repair", false, "rewrite what does not check out")
		}
	default:
		return action{}, usagef("raid: unknown subcommand %q (want status, fail, remove, add, replace or scrub)", sub)
	}
	pos, opts, err := parseArgs(cmd, args, common, actionKind, define)
	if err != nil {
		return action{}, err
	}
	if len(pos) < len(want) {
		return action{}, usagef("%s: missing %s", cmd, strings.Join(want[len(pos):], " and "))
	}
	if len(pos) > len(want)+1 {
		return action{}, usagef("%s: unexpected argument %q", cmd, pos[len(want)+1])
	}
	volume := append(pos[len(want):], "")[0]
	vol := volumeName(volume)
	a := action{command: cmd, opts: opts, timeoutHint: actionTimeoutHint}
	switch sub {
	case "remove":
		if isSparePath(pos[0]) {
			path := pos[0]
			a.what = fmt.Sprintf("remove spare %s from %s", path, vol)
			a.do = func(ctx context.Context, c *api.Client) (actionResult, error) {
				configured, err := c.RAIDRemoveSpare(ctx, volume, path)
				if err != nil {
					return actionResult{}, err
				}
				r := actionResult{done: true, line: fmt.Sprintf("spare %s removed from %s", path, vol)}
				if configured {
					r.note = "it is in raid_spares in the node's configuration, which adds it back at the next start: remove it there too"
					r.line += " (" + r.note + ")"
				}
				return r, nil
			}
			return a, nil
		}
		if _, err := strconv.Atoi(pos[0]); err != nil {
			return action{}, usagef("%s: %q is neither a member index (0, 1, ...) nor the absolute path of a spare", cmd, pos[0])
		}
		fallthrough
	case "fail":
		m, err := parseMember(cmd, pos[0])
		if err != nil {
			return action{}, err
		}
		a.what = fmt.Sprintf("%s member %d of %s", sub, m, vol)
		a.do = func(ctx context.Context, c *api.Client) (actionResult, error) {
			if sub == "fail" {
				return actionResult{}, c.RAIDFail(ctx, volume, m)
			}
			return actionResult{}, c.RAIDRemove(ctx, volume, m)
		}
	case "add":
		path := pos[0]
		a.what = fmt.Sprintf("add %s to %s", path, vol)
		what := a.what
		a.do = func(ctx context.Context, c *api.Client) (actionResult, error) {
			m, err := c.RAIDAdd(ctx, volume, path)
			if err != nil {
				return actionResult{}, err
			}
			r := actionResult{note: fmt.Sprintf("member %d, rebuilding", m)}
			if m < 0 {
				r.note = "no empty slot: a hot spare, taken into the slot of a member that fails"
			}
			r.line = what + ": requested (" + r.note + ")"
			return r, nil
		}
	case "replace":
		m, err := parseMember(cmd, pos[0])
		if err != nil {
			return action{}, err
		}
		path := pos[1]
		a.what = fmt.Sprintf("replace member %d of %s with %s", m, vol, path)
		what := a.what
		a.do = func(ctx context.Context, c *api.Client) (actionResult, error) {
			if err := c.RAIDReplace(ctx, volume, m, path); err != nil {
				return actionResult{}, err
			}
			return actionResult{note: "rebuilding", line: what + ": requested (rebuilding)"}, nil
		}
	case "scrub":
		a.what = "scrub " + vol
		if repair {
			a.what += " (repair)"
		}
		a.do = func(ctx context.Context, c *api.Client) (actionResult, error) {
			return actionResult{}, c.RAIDScrub(ctx, volume, repair)
		}
	}
	return a, nil
}

// raidStatus prints the RAID state of volume, or of every RAID volume when
// volume is "", as opts.output says (table or json).
func raidStatus(t target, volume string, opts options, stdout io.Writer) error {
	st, err := fetchStatus(t, "raid status", opts.timeout)
	if err != nil {
		return err
	}
	var vols []api.VolumeStatus
	switch {
	case volume != "":
		for _, v := range st.Volumes {
			if v.Name == volume {
				vols = append(vols, v)
			}
		}
		if len(vols) == 0 {
			return fmt.Errorf("no volume %q on node %s", volume, st.Node)
		}
		if vols[0].RAID == nil {
			return fmt.Errorf("volume %q is not on a RAID array", volume)
		}
	default:
		for _, v := range st.Volumes {
			if v.RAID != nil {
				vols = append(vols, v)
			}
		}
		if len(vols) == 0 {
			return fmt.Errorf("node %s has no RAID volume", st.Node)
		}
	}
	if opts.output == formatJSON {
		out := make([]raidVolumeJSON, len(vols))
		for i, v := range vols {
			out[i] = raidVolumeJSON{Volume: v.Name, RAIDStatus: v.RAID}
		}
		return writeJSON(stdout, out)
	}
	for i, v := range vols {
		if i > 0 {
			fmt.Fprintln(stdout)
		}
		if err := writeRAID(stdout, v.Name, v.RAID, time.Now()); err != nil {
			return err
		}
	}
	return nil
}

// writeRAID renders the array of volume name: a line for the array, a row
// per member, then lines for the running or last rebuild or scrub, the last
// scrub's findings, when the last scrub was and the next is due (from now),
// and what opening the array did.
func writeRAID(w io.Writer, name string, rs *api.RAIDStatus, now time.Time) error {
	shape := rs.Level + "  chunk " + humanSize(rs.ChunkSize)
	if rs.Copies > 0 {
		shape += fmt.Sprintf("  copies %d", rs.Copies)
	}
	if rs.BitmapRegion > 0 {
		shape += "  bitmap " + humanSize(rs.BitmapRegion)
	}
	fmt.Fprintf(w, "%s  %s  health %s  member size %s  uuid %s  events %d\n", name, shape, rs.Health, humanSize(rs.MemberSize), rs.UUID, rs.Events)
	rows := [][]string{{"MEMBER", "PATH", "STATE", "ERROR"}}
	for _, m := range rs.Members {
		state := m.State
		if m.CorrectedReadErrors > 0 {
			state += fmt.Sprintf(" (%d read errors corrected)", m.CorrectedReadErrors)
		}
		rows = append(rows, []string{strconv.Itoa(m.Index), orDash(m.Path), state, m.Error})
	}
	// Spares hold no slot: listed after the members, as mdadm --detail does.
	for _, p := range rs.Spares {
		rows = append(rows, []string{"-", p, "spare", ""})
	}
	if err := writeRows(w, rows); err != nil {
		return err
	}
	if line := raidProgressLine(rs.Progress); line != "" {
		fmt.Fprintf(w, "  %s\n", line)
	}
	if s := rs.Scrub; s != nil && (rs.Progress == nil || rs.Progress.Op != "scrub" || rs.Progress.State != "running") {
		kind := "check"
		if s.Repair {
			kind = "repair"
		}
		line := fmt.Sprintf("last scrub (%s): %d stripes, %d mismatches, %d repaired, %d read errors, %d skipped",
			kind, s.Stripes, s.Mismatches, s.Repaired, s.ReadErrors, s.Skipped)
		if s.Error != "" {
			line += ": stopped: " + s.Error
		}
		fmt.Fprintf(w, "  %s\n", line)
	}
	if line := scrubScheduleLine(rs, now); line != "" {
		fmt.Fprintf(w, "  %s\n", line)
	}
	if line := recoveryLine(rs.Recovery); line != "" {
		fmt.Fprintf(w, "  at open: %s\n", line)
	}
	return nil
}

// raidProgressLine describes a rebuild or scrub: a progress bar while it
// runs, its outcome after.
func raidProgressLine(p *api.RAIDProgress) string {
	if p == nil {
		return ""
	}
	what := "scrub"
	switch {
	case p.Op == "rebuild":
		what = fmt.Sprintf("rebuild of member %d", p.Member)
	case p.Repair:
		what = "scrub (repair)"
	}
	switch p.State {
	case "running":
		return what + " " + progressBar(&replica.Progress{
			DoneBytes: p.DoneBytes, TotalBytes: p.TotalBytes, BytesPerSecond: p.BytesPerSecond, ETASeconds: p.ETASeconds})
	case "done":
		return what + " done: " + humanSize(p.DoneBytes)
	}
	line := fmt.Sprintf("%s %s at %s of %s", what, p.State, humanSize(p.DoneBytes), humanSize(p.TotalBytes))
	if p.Error != "" {
		line += ": " + p.Error
	}
	return line
}

// scrubScheduleLine says when the last scrub completed and when the
// periodic one is next due: "scrub: last 2026-11-26 04:00 UTC, next in
// 29d23h", "..., next overdue by 2h5m (waits for an optimal, idle array)",
// "..., periodic scrub off"; "" from a daemon that reports neither.
func scrubScheduleLine(rs *api.RAIDStatus, now time.Time) string {
	if rs.LastScrub == nil && rs.NextScrub == nil {
		return ""
	}
	line := "scrub: last "
	if rs.LastScrub != nil {
		line += rs.LastScrub.UTC().Format("2006-01-02 15:04 UTC")
	} else {
		line += "unknown"
	}
	switch next := rs.NextScrub; {
	case next == nil:
		line += ", periodic scrub off"
	case next.After(now):
		line += ", next in " + humanDuration(next.Sub(now))
	default:
		line += ", next overdue by " + humanDuration(now.Sub(*next)) + " (waits for an optimal, idle array)"
	}
	return line
}

// recoveryLine describes what opening the array did; "" for a clean open.
func recoveryLine(r api.RAIDRecovery) string {
	var parts []string
	if r.Created {
		parts = append(parts, "created")
	}
	if r.Dirty {
		s := fmt.Sprintf("not shut down cleanly: %d dirty regions resynced (%s read)", r.DirtyRegions, humanSize(r.ResyncReadBytes))
		if r.BitmapCorrupt {
			s = "not shut down cleanly, write-intent bitmap unreadable: whole array resynced"
		}
		parts = append(parts, s)
	}
	if len(r.Resynced) > 0 {
		parts = append(parts, "stale members resynced from the bitmap: "+intList(r.Resynced))
	}
	if len(r.Rebuilding) > 0 {
		parts = append(parts, "members rebuilt in full: "+intList(r.Rebuilding))
	}
	return strings.Join(parts, "; ")
}

func intList(xs []int) string {
	s := make([]string, len(xs))
	for i, x := range xs {
		s[i] = strconv.Itoa(x)
	}
	return strings.Join(s, ", ")
}

// raidSummary is the one line `blockctl status` shows for a RAID volume.
func raidSummary(name string, rs *api.RAIDStatus) string {
	inSync := 0
	var faulty []string
	for _, m := range rs.Members {
		switch m.State {
		case "in_sync":
			inSync++
		case "faulty":
			faulty = append(faulty, strconv.Itoa(m.Index))
		}
	}
	line := fmt.Sprintf("%s  raid %s  health %s  members %d/%d in sync", name, rs.Level, rs.Health, inSync, len(rs.Members))
	if len(faulty) > 0 {
		line += "  faulty " + strings.Join(faulty, ",")
	}
	if len(rs.Spares) > 0 {
		line += fmt.Sprintf("  spares %d", len(rs.Spares))
	}
	if p := rs.Progress; p != nil && p.State == "running" {
		line += "  " + raidProgressLine(p)
	}
	return line
}
