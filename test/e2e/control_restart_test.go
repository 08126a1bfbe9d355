package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// restartRounds is how many times TestControlRightAfterRestart restarts a
// member.
const restartRounds = 50

// staleAnswers are the beginnings of the explicit answer of a member that
// cannot confirm its cluster state is current (exit status 3).
var staleAnswers = []string{"no quorum: cluster state on ", "not caught up: cluster state on "}

// TestControlRightAfterRestart restarts a member (the secondary data node,
// or the witness every third round) and at once, as soon as its control
// socket accepts a connection and with no sleep, asks it for status,
// promote and demote. Right after a start a member's Raft state is an old
// snapshot's or empty until it hears from the leader: every answer must be
// either correct (as the rest of the cluster knows the state) or the
// explicit "no quorum / not caught up" one (exit status 3), never one made
// from the empty state ("the cluster has 0 volumes").
func TestControlRightAfterRestart(t *testing.T) {
	c := startHA(t, haOptions{})
	primary, secondary := c.N1, c.N2
	epoch := c.waitPair(t, primary, secondary).repl().Epoch
	var stale, current, switched int
	for round := range restartRounds {
		m := secondary
		if round%3 == 2 {
			m = c.W
		}
		m.Kill9()
		m.StartUntilSocket()

		// status: current, or marked stale; never wrong.
		out, errOut, code := blockctlAnswer(t, m, "status", "-o", "json")
		if code != 0 {
			t.Fatalf("round %d: status on %s right after its start: exit %d: %s", round, m.spec.Name, code, errOut)
		}
		var st haStatusJSON
		var extra struct {
			Cluster struct {
				Stale    string `json:"stale"`
				CaughtUp bool   `json:"caught_up"`
			} `json:"cluster"`
		}
		if err := json.Unmarshal([]byte(out), &st); err != nil {
			t.Fatalf("round %d: status -o json: %v\n%s", round, err, out)
		}
		_ = json.Unmarshal([]byte(out), &extra)
		if s := extra.Cluster.Stale; s != "" {
			if !hasAnyPrefix(s, staleAnswers) {
				t.Fatalf("round %d: status on %s: cluster.stale %q does not say why", round, m.spec.Name, s)
			}
			stale++
		} else {
			v := st.clusterVolume()
			if v == nil || v.Primary != primary.spec.Name || v.Epoch != epoch || !extra.Cluster.CaughtUp {
				t.Fatalf("round %d: status on %s right after its start is not marked stale but says %+v (caught_up %v); the cluster's primary is %s at epoch %d",
					round, m.spec.Name, v, extra.Cluster.CaughtUp, primary.spec.Name, epoch)
			}
			current++
		}

		// promote the primary: it already is.
		out, errOut, code = blockctlAnswer(t, m, "promote", primary.spec.Name)
		switch {
		case code == 0 && strings.Contains(out, primary.spec.Name+" is primary of "+clusterVolume):
		case code == 1 && strings.Contains(errOut, primary.spec.Name+" is already primary of "+clusterVolume):
		case code == 3 && hasAnyPrefix(strings.TrimPrefix(errOut, "blockctl: blockrepd: promote: "), staleAnswers):
			stale++
		default:
			t.Fatalf("round %d: promote %s on %s right after its start: exit %d\nstdout: %s\nstderr: %s", round, primary.spec.Name, m.spec.Name, code, out, errOut)
		}

		// demote: a switchover to the secondary once it is in sync, or a
		// refusal because it is not yet.
		out, errOut, code = blockctlAnswer(t, m, "demote")
		switch {
		case code == 0 && strings.Contains(out, secondary.spec.Name+" is primary of "+clusterVolume):
			primary, secondary = secondary, primary
			switched++
		case code == 1 && strings.Contains(errOut, "switchover refused: ") && !strings.Contains(errOut, "no volume"):
		case code == 3 && hasAnyPrefix(strings.TrimPrefix(errOut, "blockctl: blockrepd: demote: "), staleAnswers):
			stale++
		default:
			t.Fatalf("round %d: demote on %s right after its start: exit %d\nstdout: %s\nstderr: %s", round, m.spec.Name, code, out, errOut)
		}

		epoch = c.waitPair(t, primary, secondary).repl().Epoch
	}
	t.Logf("%d rounds: %d answers marked stale or refused as not current, %d current status answers, %d switchovers by demote", restartRounds, stale, current, switched)

	// Without a quorum the primary says so, and does nothing.
	c.W.Kill9()
	secondary.Kill9()
	out, errOut, code := blockctlAnswer(t, primary, "status", "-o", "json")
	if code != 0 || !strings.Contains(out, `"stale": "no quorum: cluster state on `+primary.spec.Name+` may be stale`) {
		t.Fatalf("status on %s without quorum: exit %d, want 0 with the cluster marked stale (no quorum)\n%s%s", primary.spec.Name, code, out, errOut)
	}
	out, errOut, code = blockctlAnswer(t, primary, "status")
	if code != 0 || !strings.Contains(out, "STALE: no quorum: cluster state on "+primary.spec.Name+" may be stale") {
		t.Fatalf("status table on %s without quorum: exit %d, want the cluster section marked STALE\n%s%s", primary.spec.Name, code, out, errOut)
	}
	for _, args := range [][]string{{"demote"}, {"promote", secondary.spec.Name}} {
		out, errOut, code = blockctlAnswer(t, primary, args...)
		if code != 3 || !strings.Contains(errOut, "no quorum: cluster state on "+primary.spec.Name+" may be stale") {
			t.Fatalf("%s on %s without quorum: exit %d, want 3 and \"no quorum\"\nstdout: %s\nstderr: %s", args[0], primary.spec.Name, code, out, errOut)
		}
	}
}

// blockctlAnswer runs blockctl against d and returns its stdout, stderr
// and exit status.
func blockctlAnswer(t *testing.T, d *daemon, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	cmd := d.blockctlCmd(ctx, args...)
	var o, e strings.Builder
	cmd.Stdout, cmd.Stderr = &o, &e
	err := cmd.Run()
	var ee *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &ee) && ee.ExitCode() >= 0:
		code = ee.ExitCode()
	default:
		t.Fatalf("blockctl %s: %v", strings.Join(args, " "), err)
	}
	return o.String(), e.String(), code
}

func hasAnyPrefix(s string, prefixes []string) bool {
	for _, p := range prefixes {
		if strings.HasPrefix(s, p) {
			return true
		}
	}
	return false
}
