package events

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"syscall"
	"time"
)

// Hook is a command run for the events of some kinds, like HAST's exec.
type Hook struct {
	// On lists the event kinds the hook runs for; "*" stands for every
	// kind.
	On []string
	// Command is the program and its arguments, run without a shell.
	Command []string
	// Timeout bounds one run; a hook still running then is killed, with
	// every process it started in its process group. Zero means
	// DefaultHookTimeout.
	Timeout time.Duration
}

// DefaultHookTimeout bounds a run of a Hook whose Timeout is zero.
const DefaultHookTimeout = 30 * time.Second

// hookOutputTail is how much of a failed hook's output is logged.
const hookOutputTail = 4 << 10

// hookWaitDelay is how long a killed hook's output may stay open (by a
// process that left the process group) before Runner stops waiting for it.
const hookWaitDelay = 2 * time.Second

// matches reports whether h runs for events of kind.
func (h Hook) matches(kind string) bool {
	return slices.Contains(h.On, kind) || slices.Contains(h.On, "*")
}

// Runner runs hooks for the events of a bus.
type Runner struct {
	hooks  []Hook
	logger *slog.Logger
}

// NewRunner returns a runner of hooks that logs to logger.
func NewRunner(hooks []Hook, logger *slog.Logger) *Runner {
	return &Runner{hooks: slices.Clone(hooks), logger: logger}
}

// Run subscribes to bus and runs the hooks for the events published from
// then on until ctx ends; see Serve.
func (r *Runner) Run(ctx context.Context, bus *Bus) {
	r.Serve(ctx, bus.Subscribe(ctx))
}

// Serve runs the hooks for the events of sub until ctx ends. (Subscribe
// before starting Serve's goroutine to hook every event from a known
// point.) Events are handled one at a time, in order, and the hooks of one
// event in the order given to NewRunner; Initial events run no hook, as
// hooks react to changes. A hook that fails or outlasts its Timeout is
// logged and does not stop the runner. A hook too slow for the event rate
// makes the runner fall behind; past the bus's history it gets a KindLost
// event, which hooks may ask for.
//
// A hook's environment is the daemon's plus BLOCKREP_EVENT (the kind),
// BLOCKREP_SEQ, BLOCKREP_TIME (RFC 3339 with nanoseconds), BLOCKREP_NODE,
// BLOCKREP_VOLUME, BLOCKREP_PEER, BLOCKREP_OLD, BLOCKREP_NEW and
// BLOCKREP_DETAIL, each empty when the event has no such field.
func (r *Runner) Serve(ctx context.Context, sub *Subscription) {
	for {
		e, err := sub.Next(ctx)
		if err != nil {
			return
		}
		if e.Initial {
			continue
		}
		for _, h := range r.hooks {
			if ctx.Err() != nil {
				return
			}
			if h.matches(e.Kind) {
				r.runHook(ctx, h, e)
			}
		}
	}
}

// Env returns the variables a hook for e gets on top of the daemon's
// environment, as "KEY=value" strings.
func Env(e Event) []string {
	return []string{
		"BLOCKREP_EVENT=" + e.Kind,
		"BLOCKREP_SEQ=" + strconv.FormatUint(e.Seq, 10),
		"BLOCKREP_TIME=" + e.Time.UTC().Format(time.RFC3339Nano),
		"BLOCKREP_NODE=" + e.Node,
		"BLOCKREP_VOLUME=" + e.Volume,
		"BLOCKREP_PEER=" + e.Peer,
		"BLOCKREP_OLD=" + e.Old,
		"BLOCKREP_NEW=" + e.New,
		"BLOCKREP_DETAIL=" + e.Detail,
	}
}

// runHook runs h for e and logs how it went.
func (r *Runner) runHook(ctx context.Context, h Hook, e Event) {
	timeout := h.Timeout
	if timeout <= 0 {
		timeout = DefaultHookTimeout
	}
	hctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	log := r.logger.With("hook", h.Command, "event", e.Kind, "seq", e.Seq)
	if len(h.Command) == 0 {
		log.Error("hook has no command")
		return
	}
	cmd := exec.CommandContext(hctx, h.Command[0], h.Command[1:]...)
	// A new process group, so that a timeout kills what the hook started
	// too (a shell script's children), not only the hook.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error {
		if err := syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL); err != nil {
			if errors.Is(err, syscall.ESRCH) {
				return os.ErrProcessDone
			}
			return err
		}
		return nil
	}
	cmd.WaitDelay = hookWaitDelay
	cmd.Env = append(os.Environ(), Env(e)...)
	out := &tailBuffer{max: hookOutputTail}
	cmd.Stdout, cmd.Stderr = out, out
	start := time.Now()
	err := cmd.Run()
	elapsed := time.Since(start).Round(time.Millisecond)
	var exitErr *exec.ExitError
	switch {
	case err == nil:
		log.Debug("hook done", "duration", elapsed)
	case errors.Is(hctx.Err(), context.DeadlineExceeded):
		log.Warn("hook timed out and was killed", "timeout", timeout, "output", string(out.Bytes()))
	case ctx.Err() != nil:
		log.Info("hook killed: the runner is stopping", "duration", elapsed)
	case errors.As(err, &exitErr):
		log.Warn("hook failed", "status", exitErr.ProcessState.String(), "exit_code", exitErr.ExitCode(),
			"duration", elapsed, "output", string(out.Bytes()))
	default:
		log.Warn("hook could not run", "error", err)
	}
}

// tailBuffer keeps the last max bytes written to it.
type tailBuffer struct {
	max int
	buf []byte
}

func (t *tailBuffer) Write(p []byte) (int, error) {
	n := len(p)
	if len(p) >= t.max {
		t.buf = append(t.buf[:0], p[len(p)-t.max:]...)
		return n, nil
	}
	if over := len(t.buf) + len(p) - t.max; over > 0 {
		t.buf = append(t.buf[:0], t.buf[over:]...)
	}
	t.buf = append(t.buf, p...)
	return n, nil
}

// Bytes returns what was kept.
func (t *tailBuffer) Bytes() []byte { return t.buf }
