package main

import (
	"bytes"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/blockrep/blockrep/api"
)

// A member that cannot confirm its cluster state is current answers 503;
// blockctl says why and exits 3, for promote and demote alike.
func TestUnavailableExitsThree(t *testing.T) {
	stale := api.Unavailable(errors.New("no quorum: cluster state on node1 may be stale (no leader known)"))
	b := &clusterBackend{fakeBackend: &fakeBackend{cmdErr: stale}}
	sock := serve(t, b)
	for _, args := range [][]string{{"promote", "node2"}, {"demote"}} {
		var stdout, stderr bytes.Buffer
		code := run(append([]string{"-s", sock}, args...), &stdout, &stderr, noEnv)
		if code != exitUnavailable {
			t.Errorf("%s: exit %d, want %d; stderr %s", args[0], code, exitUnavailable, stderr.String())
		}
		if want := "no quorum: cluster state on node1 may be stale (no leader known) (HTTP 503)"; !strings.Contains(stderr.String(), want) {
			t.Errorf("%s: stderr %q does not contain %q", args[0], stderr.String(), want)
		}
	}
}

// A stale cluster section is marked before the state it qualifies, and
// one never caught up since the start says its state may be empty.
func TestWriteTableClusterStale(t *testing.T) {
	now := time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)
	for _, caughtUp := range []bool{true, false} {
		st := clusterStatus(now)
		st.Cluster.Stale = "no quorum: cluster state on node1 may be stale (no leader known)"
		st.Cluster.AppliedIndex = 42
		st.Cluster.CaughtUp = caughtUp
		var buf bytes.Buffer
		if err := writeTable(&buf, st, now); err != nil {
			t.Fatal(err)
		}
		out := buf.String()
		mark := strings.Index(out, "  STALE: no quorum: cluster state on node1 may be stale (no leader known); the members and volumes below are as applied here (index 42) and may be out of date\n")
		if mark < 0 || mark > strings.Index(out, "VOLUME") || mark > strings.Index(out, "MEMBER") {
			t.Fatalf("caught up %v: no STALE line before the members and volumes:\n%s", caughtUp, out)
		}
		if got := strings.Contains(out, "has not caught up with the cluster since it started"); got == caughtUp {
			t.Errorf("caught up %v: the not-caught-up line shown: %v\n%s", caughtUp, got, out)
		}
	}
	var buf bytes.Buffer
	if err := writeTable(&buf, clusterStatus(now), now); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(buf.String(), "STALE") {
		t.Errorf("a current cluster section is marked stale:\n%s", buf.String())
	}
}
