package config

import (
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/blockrep/blockrep/events"
)

// Hook is one [[hook]] table: a command blockrepd runs when an event of
// one of the kinds in On happens, like HAST's exec. The daemon runs hooks
// one at a time in the order of the events, and the hooks of one event in
// the order of the tables. The command gets the event in its environment:
// BLOCKREP_EVENT (the kind), BLOCKREP_SEQ, BLOCKREP_TIME, BLOCKREP_NODE,
// BLOCKREP_VOLUME, BLOCKREP_PEER, BLOCKREP_OLD, BLOCKREP_NEW and
// BLOCKREP_DETAIL.
type Hook struct {
	// On lists the event kinds the hook runs for, each one of HookKinds,
	// or HookAllKinds alone for every kind. Required, not empty, no
	// repeats.
	On []string
	// Command is the program and its arguments, run without a shell.
	// Required; Command[0] is an absolute path (cleaned). The configuration
	// does not check that the program exists: the daemon logs a hook it
	// cannot run.
	Command []string
	// Timeout bounds one run of the command; a command still running then
	// is killed with every process of its process group.
	Timeout time.Duration
}

// HookAllKinds in hook.on asks for every kind of event.
const HookAllKinds = "*"

// HookKinds are the event kinds a hook may ask for in hook.on (see the
// events package for what each means): "role", "disk", "connection",
// "peer-disk", "leader", "primary", "epoch", "lease", "split-brain",
// "resync", "member", "raid-health", "raid-member", "raid-op" (a RAID
// volume's array, its member slots and its rebuild or scrub), and "lost"
// (the hook runner fell so far behind that events were dropped).
var HookKinds = events.Kinds()

// Hook defaults and limits.
const (
	// DefaultHookTimeout, MinHookTimeout and MaxHookTimeout bound
	// hook.timeout.
	DefaultHookTimeout = 30 * time.Second
	MinHookTimeout     = time.Second
	MaxHookTimeout     = 10 * time.Minute
)

// decodeHooks decodes the [[hook]] tables.
func decodeHooks(ts []*table) []Hook {
	var hooks []Hook
	for _, t := range ts {
		hooks = append(hooks, decodeHook(t))
	}
	return hooks
}

// decodeHook decodes one [[hook]] table.
func decodeHook(t *table) Hook {
	h := Hook{Timeout: DefaultHookTimeout}
	_, onSet := t.m["on"]
	_, commandSet := t.m["command"]
	// A bad element of an array is reported by strings under its own key.
	errs := len(t.p.errs)
	t.strings("on", &h.On)
	onBad := len(t.p.errs) > errs
	errs = len(t.p.errs)
	t.strings("command", &h.Command)
	commandBad := len(t.p.errs) > errs
	t.duration("timeout", &h.Timeout, MinHookTimeout, MaxHookTimeout)
	t.unknown()

	kinds := make([]string, len(HookKinds))
	for i, k := range HookKinds {
		kinds[i] = strconv.Quote(k)
	}
	known := strings.Join(kinds, ", ")
	switch {
	case onBad:
	case !onSet:
		t.p.add(t.key("on"), "%s is required: the event kinds the hook runs for (%s, or %q for all)", t.key("on"), known, HookAllKinds)
	case len(h.On) == 0:
		t.p.add(t.key("on"), "%s is empty: give the event kinds the hook runs for (%s, or %q for all)", t.key("on"), known, HookAllKinds)
	default:
		seen := map[string]int{}
		for i, k := range h.On {
			key := t.key("on") + "." + strconv.Itoa(i)
			switch j, dup := seen[k]; {
			case k == HookAllKinds && len(h.On) > 1:
				t.p.add(key, "%s: %q already stands for every kind: give it alone", key, k)
			case k != HookAllKinds && !slices.Contains(HookKinds, k):
				t.p.add(key, "%s: %q is not an event kind: want one of %s, or %q for all", key, k, known, HookAllKinds)
			case dup:
				t.p.add(key, "%s: %q is listed twice (entries %d and %d)", key, k, j, i)
			default:
				seen[k] = i
			}
		}
	}
	switch {
	case commandBad:
	case !commandSet:
		t.p.add(t.key("command"), `%s is required: the program and its arguments, e.g. ["/usr/local/bin/notify", "arg"]`, t.key("command"))
	case len(h.Command) == 0:
		t.p.add(t.key("command"), `%s is empty: give the program and its arguments, e.g. ["/usr/local/bin/notify", "arg"]`, t.key("command"))
	case !filepath.IsAbs(h.Command[0]):
		key := t.key("command") + ".0"
		t.p.add(key, "%s: %q is not an absolute path: hooks run without a shell or $PATH, give the program's absolute path", key, h.Command[0])
	default:
		h.Command[0] = filepath.Clean(h.Command[0])
	}
	return h
}
