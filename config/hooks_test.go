package config

import (
	"errors"
	"os"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestHooksGood(t *testing.T) {
	tests := []struct {
		name  string
		hooks string // appended to minimal (from line 9)
		want  []Hook
	}{
		{"none", "", nil},
		{"defaults", `
[[hook]]
on = ["role", "split-brain"]
command = ["/usr/local/bin/notify", "arg"]
`, []Hook{{On: []string{"role", "split-brain"}, Command: []string{"/usr/local/bin/notify", "arg"}, Timeout: 30 * time.Second}}},
		{"raid kinds", `
[[hook]]
on = ["raid-health"]
command = ["/usr/local/bin/raid-alert"]

[[hook]]
on = ["raid-member", "raid-op"]
command = ["/usr/local/bin/raid-log"]
`, []Hook{
			{On: []string{"raid-health"}, Command: []string{"/usr/local/bin/raid-alert"}, Timeout: 30 * time.Second},
			{On: []string{"raid-member", "raid-op"}, Command: []string{"/usr/local/bin/raid-log"}, Timeout: 30 * time.Second},
		}},
		{"all kinds, cleaned path, timeout, file order", `
[[hook]]
on = ["*"]
command = ["/usr/local//bin/../bin/log-event"]
timeout = "1s"

[[hook]]
on = ["disk", "peer-disk", "connection", "leader", "primary", "epoch", "lease", "resync", "member", "lost"]
command = ["/bin/true", "relative/args/are/fine", ""]
timeout = "10m"
`, []Hook{
			{On: []string{"*"}, Command: []string{"/usr/local/bin/log-event"}, Timeout: time.Second},
			{On: []string{"disk", "peer-disk", "connection", "leader", "primary", "epoch", "lease", "resync", "member", "lost"},
				Command: []string{"/bin/true", "relative/args/are/fine", ""}, Timeout: 10 * time.Minute},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, err := Parse([]byte(minimal+tt.hooks), "test.toml")
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(cfg.Hooks, tt.want) {
				t.Errorf("hooks:\n got %+v\nwant %+v", cfg.Hooks, tt.want)
			}
		})
	}
}

func TestHooksBad(t *testing.T) {
	// hook puts body in a [[hook]] table at line 10 (after minimal), so
	// that its first key is on line 11.
	hook := func(body string) string { return minimal + "\n[[hook]]\n" + body + "\n" }
	const okOn, okCmd = `on = ["role"]` + "\n", `command = ["/bin/notify"]` + "\n"
	tests := []struct {
		name    string
		toml    string
		want    string // the whole message of the only error
		wantKey string
	}{
		{"missing on", hook(okCmd), `config test.toml: line 10: hook.0.on is required: the event kinds the hook runs for ("role", "disk", "connection", "peer-disk", "leader", "primary", "epoch", "lease", "split-brain", "resync", "member", "raid-health", "raid-member", "raid-op", "io-error", "cluster-state", "lost", or "*" for all)`, "hook.0.on"},
		{"empty on", hook(okCmd + "on = []"), `config test.toml: line 12: hook.0.on is empty: give the event kinds`, "hook.0.on"},
		{"on not an array", hook(okCmd + `on = "role"`), `config test.toml: line 12: hook.0.on: want an array of strings, got string "role"`, "hook.0.on"},
		{"on element not a string", hook(okCmd + `on = ["role", 3]`), `config test.toml: line 12: hook.0.on.1: want a string, got integer 3`, "hook.0.on.1"},
		{"unknown kind", hook(okCmd + `on = ["role", "rol"]`), `config test.toml: line 12: hook.0.on.1: "rol" is not an event kind: want one of "role", "disk"`, "hook.0.on.1"},
		{"exists-end is no kind", hook(okCmd + `on = ["exists-end"]`), `config test.toml: line 12: hook.0.on.0: "exists-end" is not an event kind`, "hook.0.on.0"},
		{"star with others", hook(okCmd + `on = ["role", "*"]`), `config test.toml: line 12: hook.0.on.1: "*" already stands for every kind: give it alone`, "hook.0.on.1"},
		{"repeated kind", hook(okCmd + `on = ["role", "disk", "role"]`), `config test.toml: line 12: hook.0.on.2: "role" is listed twice (entries 0 and 2)`, "hook.0.on.2"},
		{"missing command", hook(okOn), `config test.toml: line 10: hook.0.command is required: the program and its arguments, e.g. ["/usr/local/bin/notify", "arg"]`, "hook.0.command"},
		{"empty command", hook(okOn + "command = []"), `config test.toml: line 12: hook.0.command is empty: give the program and its arguments`, "hook.0.command"},
		{"relative command", hook(okOn + `command = ["notify", "x"]`), `config test.toml: line 12: hook.0.command.0: "notify" is not an absolute path: hooks run without a shell or $PATH, give the program's absolute path`, "hook.0.command.0"},
		{"shell line as command", hook(okOn + `command = "/bin/notify arg"`), `config test.toml: line 12: hook.0.command: want an array of strings, got string "/bin/notify arg"`, "hook.0.command"},
		{"command element not a string", hook(okOn + `command = ["/bin/notify", true]`), `config test.toml: line 12: hook.0.command.1: want a string, got boolean true`, "hook.0.command.1"},
		{"timeout too short", hook(okOn + okCmd + `timeout = "500ms"`), `config test.toml: line 13: hook.0.timeout: "500ms" is out of range: want 1s to 10m`, "hook.0.timeout"},
		{"timeout too long", hook(okOn + okCmd + `timeout = "11m"`), `config test.toml: line 13: hook.0.timeout: "11m" is out of range: want 1s to 10m`, "hook.0.timeout"},
		{"timeout without unit", hook(okOn + okCmd + `timeout = 30`), `config test.toml: line 13: hook.0.timeout: integer 30 has no unit`, "hook.0.timeout"},
		{"unknown key", hook(okOn + okCmd + `shell = true`), `config test.toml: line 13: unknown key "hook.0.shell"`, "hook.0.shell"},
		{"second table", hook(okOn+okCmd) + "[[hook]]\non = [\"*\"]\ncommand = [\"./x\"]\n",
			`config test.toml: line 16: hook.1.command.0: "./x" is not an absolute path`, "hook.1.command.0"},
		{"not an array of tables", "hook = \"x\"\n" + minimal, `config test.toml: line 1: hook: want an array of tables ([[hook]]), got string "x"`, "hook"},
		{"a table, not an array of tables", minimal + "[hook]\n" + okOn + okCmd, `config test.toml: line 9: hook: want an array of tables ([[hook]]), got a table`, "hook"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, err := Parse([]byte(tt.toml), "test.toml")
			if err == nil {
				t.Fatalf("Parse succeeded: %+v", cfg.Hooks)
			}
			var errs []error
			if j, ok := err.(interface{ Unwrap() []error }); ok {
				errs = j.Unwrap()
			}
			if len(errs) != 1 {
				t.Fatalf("%d errors, want 1: %v", len(errs), err)
			}
			if !strings.HasPrefix(err.Error(), tt.want) {
				t.Errorf("error\n %s\ndoes not start with\n %s", err, tt.want)
			}
			var ce *Error
			if !errors.As(err, &ce) || ce.Key != tt.wantKey {
				t.Errorf("error key %q, want %q", ce.Key, tt.wantKey)
			}
		})
	}
}

func TestHookKinds(t *testing.T) {
	for _, k := range []string{"role", "disk", "connection", "peer-disk", "leader", "primary", "epoch", "lease", "split-brain", "resync", "member",
		"raid-health", "raid-member", "raid-op", "io-error", "lost"} {
		if !slices.Contains(HookKinds, k) {
			t.Errorf("HookKinds lacks %q", k)
		}
	}
	if slices.Contains(HookKinds, HookAllKinds) || slices.Contains(HookKinds, "exists-end") {
		t.Errorf("HookKinds = %q", HookKinds)
	}
}

// TestExampleHooksParse uncomments the example's settings, as
// TestExampleReplicationParses does, and checks the [[hook]] it documents.
func TestExampleHooksParse(t *testing.T) {
	data, err := os.ReadFile("../docs/blockrepd.example.toml")
	if err != nil {
		t.Fatal(err)
	}
	uncommented := regexp.MustCompile(`(?m)^#([a-z\[])`).ReplaceAll(data, []byte("$1"))
	cfg, err := Parse(uncommented, "example")
	if err != nil {
		t.Fatal(err)
	}
	want := []Hook{{On: []string{"role", "split-brain"}, Command: []string{"/usr/local/bin/blockrep-notify", "--mail", "ops@example.com"}, Timeout: 30 * time.Second}}
	if !reflect.DeepEqual(cfg.Hooks, want) {
		t.Errorf("hooks = %+v, want %+v", cfg.Hooks, want)
	}
	// Every kind a hook may ask for is explained in the example.
	for _, k := range HookKinds {
		if !strings.Contains(string(data), `"`+k+`"`) {
			t.Errorf("the example does not mention kind %q", k)
		}
	}
	for _, v := range []string{"EVENT", "SEQ", "TIME", "NODE", "VOLUME", "PEER", "OLD", "NEW", "DETAIL"} {
		if !strings.Contains(string(data), "BLOCKREP_"+v+" ") {
			t.Errorf("the example does not explain BLOCKREP_%s", v)
		}
	}
}
