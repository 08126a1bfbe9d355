package main

import (
	"bytes"
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/blockrep/blockrep/api"
)

// clusterBackend is a fakeBackend that is a cluster member: it records
// the cluster commands too, answers promote and demote with note, and with
// block waits for the request to be cancelled.
type clusterBackend struct {
	*fakeBackend
	note  string
	block bool
}

var _ api.ClusterController = (*clusterBackend)(nil)

func (b *clusterBackend) wait(ctx context.Context) {
	if b.block {
		<-ctx.Done()
	}
}

func (b *clusterBackend) Promote(ctx context.Context, volume, node string, force bool, reason string) (string, error) {
	b.wait(ctx)
	if err := b.record("Promote(%q, %q, %v, %q)", volume, node, force, reason); err != nil {
		return "", err
	}
	return b.note, nil
}

func (b *clusterBackend) Demote(ctx context.Context, volume string) (string, error) {
	b.wait(ctx)
	if err := b.record("Demote(%q)", volume); err != nil {
		return "", err
	}
	return b.note, nil
}

func (b *clusterBackend) AddMember(ctx context.Context, name, address string) error {
	return b.record("AddMember(%q, %q)", name, address)
}

func (b *clusterBackend) RemoveMember(ctx context.Context, name string, force bool, reason string) error {
	return b.record("RemoveMember(%q, %v, %q)", name, force, reason)
}

func TestClusterCommands(t *testing.T) {
	const forceWarning = "warning: node2 was promoted by force: writes only the other replicas held may be lost\n"
	tests := []struct {
		name      string
		args      []string
		note      string // the daemon's note
		cmdErr    error
		noCluster bool // the daemon has no [cluster]
		wantCode  int
		wantOut   string // all of stdout
		wantErr   string // substring of stderr
		wantUsage bool   // stderr shows the usage
		wantCall  string // the command the daemon got; "" for none
	}{
		{name: "promote", args: []string{"promote", "node2"}, note: "node2 is primary of vol0",
			wantOut: "node2 is primary of vol0\n", wantCall: `Promote("", "node2", false, "")`},
		{name: "promote volume", args: []string{"promote", "node2", "vol1"}, note: "node2 is primary of vol1",
			wantOut: "node2 is primary of vol1\n", wantCall: `Promote("vol1", "node2", false, "")`},
		{name: "promote forced", args: []string{"promote", "--force", "node2", "vol1", "--reason", "node1 burnt"},
			note:     "node2 is primary of vol1 (forced): node2 was Outdated: the writes since epoch 4 are lost",
			wantOut:  forceWarning + "node2 is primary of vol1 (forced): node2 was Outdated: the writes since epoch 4 are lost\n",
			wantCall: `Promote("vol1", "node2", true, "node1 burnt")`},
		{name: "promote forced default reason", args: []string{"promote", "node2", "-force"}, note: "node2 is primary of vol0 (forced)",
			wantOut: forceWarning + "node2 is primary of vol0 (forced)\n", wantCall: `Promote("", "node2", true, "")`},
		{name: "promote without a note", args: []string{"promote", "node2", "vol1"},
			wantOut: "promote node2 for vol1: done\n", wantCall: `Promote("vol1", "node2", false, "")`},
		{name: "promote with a timeout", args: []string{"promote", "node2", "--timeout", "5m"}, note: "ok",
			wantOut: "ok\n", wantCall: `Promote("", "node2", false, "")`},
		{name: "demote", args: []string{"demote", "vol0"}, note: "node3 is primary of vol0",
			wantOut: "node3 is primary of vol0\n", wantCall: `Demote("vol0")`},
		{name: "demote the only volume", args: []string{"demote"}, note: "node3 is primary of vol0",
			wantOut: "node3 is primary of vol0\n", wantCall: `Demote("")`},
		{name: "demote without a note", args: []string{"demote"},
			wantOut: "demote the only volume: done\n", wantCall: `Demote("")`},
		{name: "cluster add", args: []string{"cluster", "add", "node4", "10.0.0.4:7790"},
			wantOut: "added node4 (10.0.0.4:7790) to the cluster\n", wantCall: `AddMember("node4", "10.0.0.4:7790")`},
		{name: "cluster remove", args: []string{"cluster", "remove", "node3"},
			wantOut: "removed node3 from the cluster\n", wantCall: `RemoveMember("node3", false, "")`},
		{name: "cluster remove forced", args: []string{"cluster", "remove", "--force", "node3", "--reason", "disk gone"},
			wantOut: "removed node3 from the cluster (forced)\n", wantCall: `RemoveMember("node3", true, "disk gone")`},

		{name: "promote refused", args: []string{"promote", "node2", "--force"}, cmdErr: fmt.Errorf("node2 is Diskless: %w", api.ErrConflict), wantCode: 1,
			wantErr:  "blockctl: blockrepd: promote: node2 is Diskless: not possible in the current state (HTTP 409)\n",
			wantCall: `Promote("", "node2", true, "")`},
		{name: "demote unknown volume", args: []string{"demote", "vol9"}, cmdErr: fmt.Errorf("volume %q: %w", "vol9", api.ErrNotFound), wantCode: 1,
			wantErr: `blockctl: blockrepd: demote: volume "vol9": not found (HTTP 404)`, wantCall: `Demote("vol9")`},
		{name: "remove refused", args: []string{"cluster", "remove", "node1"}, cmdErr: fmt.Errorf("node1 is primary of vol0: %w", api.ErrConflict), wantCode: 1,
			wantErr: "blockctl: blockrepd: remove member: node1 is primary of vol0: not possible in the current state (HTTP 409)", wantCall: `RemoveMember("node1", false, "")`},
		{name: "add invalid", args: []string{"cluster", "add", "node4", "nowhere"}, cmdErr: fmt.Errorf("address %q: %w", "nowhere", api.ErrInvalid), wantCode: 1,
			wantErr: `blockctl: blockrepd: add member: address "nowhere": invalid argument (HTTP 400)`, wantCall: `AddMember("node4", "nowhere")`},
		{name: "not a cluster member", args: []string{"promote", "node2"}, noCluster: true, wantCode: 1,
			wantErr: "blockctl: blockrepd: this daemon is not a cluster member (no [cluster] table) (HTTP 404)"},

		{name: "promote needs a node", args: []string{"promote"}, wantCode: 2, wantErr: "promote: name the node to promote", wantUsage: true},
		{name: "promote extra argument", args: []string{"promote", "node2", "vol0", "x"}, wantCode: 2, wantErr: `promote: unexpected argument "x"`, wantUsage: true},
		{name: "reason without force", args: []string{"promote", "node2", "--reason", "why"}, wantCode: 2, wantErr: "promote: --reason goes with --force", wantUsage: true},
		{name: "bad timeout", args: []string{"promote", "node2", "--timeout", "0s"}, wantCode: 2, wantErr: "promote: --timeout 0s is not positive", wantUsage: true},
		{name: "demote takes no node", args: []string{"demote", "vol0", "node2"}, wantCode: 2, wantErr: `demote: unexpected argument "node2"`, wantUsage: true},
		{name: "demote has no force", args: []string{"demote", "--force"}, wantCode: 2, wantErr: "demote: flag provided but not defined: -force", wantUsage: true},
		{name: "cluster alone", args: []string{"cluster"}, wantCode: 2, wantErr: "cluster: give add or remove", wantUsage: true},
		{name: "cluster unknown", args: []string{"cluster", "join", "x"}, wantCode: 2, wantErr: `cluster: unknown subcommand "join"`, wantUsage: true},
		{name: "add needs an address", args: []string{"cluster", "add", "node4"}, wantCode: 2, wantErr: "cluster add: give the node's NAME and ADDRESS", wantUsage: true},
		{name: "add has no force", args: []string{"cluster", "add", "node4", "a:1", "--force"}, wantCode: 2, wantErr: "cluster add: flag provided but not defined: -force", wantUsage: true},
		{name: "remove needs a name", args: []string{"cluster", "remove"}, wantCode: 2, wantErr: "cluster remove: name the node to remove", wantUsage: true},
		{name: "remove reason without force", args: []string{"cluster", "remove", "node3", "--reason", "x"}, wantCode: 2,
			wantErr: "cluster remove: --reason goes with --force", wantUsage: true},
		{name: "help", args: []string{"promote", "-h"}, wantCode: 0, wantUsage: true},
		{name: "cluster help", args: []string{"cluster", "-h"}, wantCode: 0, wantUsage: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fb := &fakeBackend{cmdErr: tt.cmdErr}
			var b api.Backend = &clusterBackend{fakeBackend: fb, note: tt.note}
			if tt.noCluster {
				b = fb
			}
			checkRun(t, b, fb, tt.args, tt.wantCode, tt.wantOut, tt.wantErr, tt.wantUsage, tt.wantCall)
		})
	}
}

// TestSwitchoverTimeout: promote and demote wait up to their own
// --timeout, 60s by default where the other commands wait 10s, and say
// what a timeout means.
func TestSwitchoverTimeout(t *testing.T) {
	for _, cmd := range [][]string{{"promote", "node2"}, {"demote"}} {
		a, err := parseSwitchover(cmd[0], cmd[1:], commonFlags{})
		if err != nil || a.opts.timeout != 60*time.Second || a.opts.timeout <= requestTimeout {
			t.Errorf("%s: timeout %v, %v; want 60s", cmd[0], a.opts.timeout, err)
		}
		a, err = parseSwitchover(cmd[0], append(cmd[1:], "--timeout", "2m"), commonFlags{})
		if err != nil || a.opts.timeout != 2*time.Minute {
			t.Errorf("%s --timeout 2m: timeout %v, %v", cmd[0], a.opts.timeout, err)
		}
	}
	for _, args := range [][]string{{"add", "n", "a:1"}, {"remove", "n"}} {
		if a, err := parseCluster(args, commonFlags{}); err != nil || a.opts.timeout != requestTimeout {
			t.Errorf("cluster %s: timeout %v, %v; want %v", args[0], a.opts.timeout, err, requestTimeout)
		}
	}

	b := &clusterBackend{fakeBackend: &fakeBackend{}, block: true}
	sock := serve(t, b)
	for _, tt := range []struct{ args, want string }{
		{"promote node2 vol0 --timeout 200ms", "blockctl: promote node2 for vol0: no answer within 200ms (--timeout): the switchover may be unfinished; see blockctl status\n"},
		{"demote --timeout 200ms", "blockctl: demote the only volume: no answer within 200ms (--timeout): the switchover may be unfinished; see blockctl status\n"},
	} {
		var stdout, stderr bytes.Buffer
		start := time.Now()
		code := run(append([]string{"-s", sock}, strings.Fields(tt.args)...), &stdout, &stderr, noEnv)
		if code != 1 || stderr.String() != tt.want || stdout.Len() != 0 {
			t.Errorf("%s: exit %d, stdout %q, stderr %q; want 1 and %q", tt.args, code, stdout.String(), stderr.String(), tt.want)
		}
		if d := time.Since(start); d > 5*time.Second {
			t.Errorf("%s took %v", tt.args, d)
		}
	}
}

// TestUsageCluster: the usage documents the cluster commands and --node.
func TestUsageCluster(t *testing.T) {
	var stdout, stderr bytes.Buffer
	if code := run([]string{"help"}, &stdout, &stderr, noEnv); code != 0 {
		t.Fatalf("help: exit %d", code)
	}
	for _, s := range []string{
		"usage: blockctl [-s SOCKET | -c CONFIG] [--node HOST:PORT] [-o FORMAT] [--timeout DURATION] COMMAND [ARGS]",
		"\n  promote NODE [VOLUME] [--force [--reason TEXT]] [--timeout 60s]\n",
		"losing the writes only the other replicas held",
		"\n  demote [VOLUME] [--timeout 60s]\n",
		"\n  cluster add NAME ADDRESS\n",
		"\n  cluster remove NAME [--force [--reason TEXT]]\n",
		"\n  --node HOST:PORT\n",
		"\n  --secret-file PATH\n",
		"\n  --cluster NAME\n",
		"wait until the switchover is done, up to --timeout (default 60s)",
	} {
		if !strings.Contains(stderr.String(), s) {
			t.Errorf("usage lacks %q", s)
		}
	}
}
