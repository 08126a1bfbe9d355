package acceptloop

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/blockrep/blockrep/internal/flakynet"
	"github.com/blockrep/blockrep/internal/syncbuf"
)

// waitFor bounds every wait here; it is a bound on a hang, not a timing
// assertion.
const waitFor = 30 * time.Second

func TestTemporary(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want bool
	}{
		{flakynet.AcceptError(syscall.EMFILE), true},
		{flakynet.AcceptError(syscall.ENFILE), true},
		{flakynet.AcceptError(syscall.ENOBUFS), true},
		{flakynet.AcceptError(syscall.ENOMEM), true},
		{flakynet.AcceptError(syscall.ECONNABORTED), true},
		{flakynet.AcceptError(syscall.ECONNRESET), true},
		{flakynet.AcceptError(syscall.EPROTO), true},
		{flakynet.AcceptError(syscall.EPERM), true},
		{&net.OpError{Op: "accept", Net: "tcp", Err: os.ErrDeadlineExceeded}, true},
		{fmt.Errorf("wrapped: %w", syscall.EMFILE), true},
		{flakynet.AcceptError(syscall.EINVAL), false},
		{flakynet.AcceptError(syscall.EBADF), false},
		{&net.OpError{Op: "accept", Net: "tcp", Err: net.ErrClosed}, false},
		{errors.New("something else"), false},
		{nil, false},
	} {
		if got := Temporary(tc.err); got != tc.want {
			t.Errorf("Temporary(%v) = %v, want %v", tc.err, got, tc.want)
		}
	}
}

func TestBackoff(t *testing.T) {
	var b Backoff
	ms := time.Millisecond
	for i, want := range []time.Duration{5 * ms, 10 * ms, 20 * ms, 40 * ms, 80 * ms, 160 * ms, 320 * ms, 640 * ms, time.Second, time.Second} {
		if got := b.Next(); got != want {
			t.Fatalf("wait %d: %v, want %v", i+1, got, want)
		}
	}
	b.Reset()
	if got := b.Next(); got != 5*ms {
		t.Fatalf("after Reset: %v, want 5ms", got)
	}
}

func listen(t *testing.T) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	return ln
}

func textLogger(buf *syncbuf.Buffer) *slog.Logger {
	return slog.New(slog.NewTextHandler(buf, &slog.HandlerOptions{Level: slog.LevelInfo}))
}

// temporaryErrs are the errors the tests inject before a real connection.
func temporaryErrs() []error {
	return []error{
		flakynet.AcceptError(syscall.EMFILE), flakynet.AcceptError(syscall.ECONNABORTED),
		flakynet.AcceptError(syscall.ENFILE), flakynet.AcceptError(syscall.ENOBUFS),
		flakynet.AcceptError(syscall.ENOMEM), flakynet.AcceptError(syscall.EMFILE),
		&net.OpError{Op: "accept", Net: "tcp", Err: os.ErrDeadlineExceeded},
	}
}

func TestRetryServesAfterTemporaryErrors(t *testing.T) {
	errs := temporaryErrs()
	fl := flakynet.New(listen(t), errs...)
	var logs syncbuf.Buffer
	l := Retry(fl, textLogger(&logs), nil)
	cli, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	c, err := l.Accept()
	if err != nil {
		t.Fatalf("Accept: %v", err)
	}
	c.Close()
	if got := fl.Failed(); got != int64(len(errs)) {
		t.Errorf("%d of %d errors returned", got, len(errs))
	}
	out := logs.String()
	if n := strings.Count(out, "accept failed; retrying"); n != 1 {
		t.Errorf("%d records of failed accepts for %d failures within 10 s, want 1:\n%s", n, len(errs), out)
	}
	for _, want := range []string{"too many open files", "retry_in=5ms", "accepting connections again", fmt.Sprintf("failures=%d", len(errs))} {
		if !strings.Contains(out, want) {
			t.Errorf("log lacks %q:\n%s", want, out)
		}
	}

	// A later failure is logged at once again.
	fl.Fail(flakynet.AcceptError(syscall.ENFILE))
	cli2, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer cli2.Close()
	if c, err = l.Accept(); err != nil {
		t.Fatalf("Accept: %v", err)
	}
	c.Close()
	if out := logs.String(); strings.Count(out, "accept failed; retrying") != 2 || !strings.Contains(out, "too many open files in system") {
		t.Errorf("the second run of failures was not logged:\n%s", out)
	}
}

func TestRetryReturnsPermanentError(t *testing.T) {
	fl := flakynet.New(listen(t), flakynet.AcceptError(syscall.EMFILE), flakynet.AcceptError(syscall.EINVAL))
	l := Retry(fl, nil, nil)
	if _, err := l.Accept(); !errors.Is(err, syscall.EINVAL) {
		t.Fatalf("Accept: %v, want EINVAL", err)
	}
}

func TestRetryWaitEndsOnCloseAndStop(t *testing.T) {
	for _, how := range []string{"Close", "stop"} {
		t.Run(how, func(t *testing.T) {
			fl := flakynet.New(listen(t))
			for range 100 { // 100 s of waits
				fl.Fail(flakynet.AcceptError(syscall.EMFILE))
			}
			stop := make(chan struct{})
			l := Retry(fl, nil, stop)
			done := make(chan error, 1)
			go func() {
				_, err := l.Accept()
				done <- err
			}()
			for fl.Failed() < 2 {
				time.Sleep(time.Millisecond)
			}
			if how == "Close" {
				l.Close()
			} else {
				close(stop)
			}
			select {
			case err := <-done:
				if !errors.Is(err, net.ErrClosed) {
					t.Fatalf("Accept: %v, want net.ErrClosed", err)
				}
			case <-time.After(waitFor):
				t.Fatal("Accept kept waiting after " + how)
			}
		})
	}
}

func TestGate(t *testing.T) {
	a := func(ip string, port int) net.Addr { return &net.TCPAddr{IP: net.ParseIP(ip), Port: port} }
	var logs syncbuf.Buffer
	g := NewGate(3, 2, textLogger(&logs))
	r1, err := g.Admit(a("10.0.0.1", 1))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := g.Admit(a("10.0.0.1", 2)); err != nil {
		t.Fatal(err)
	}
	if _, err := g.Admit(a("10.0.0.1", 3)); err != ErrSourceBusy {
		t.Fatalf("third from one source: %v, want ErrSourceBusy", err)
	}
	if _, err := g.Admit(a("10.0.0.1", 4)); err != ErrSourceBusy {
		t.Fatalf("fourth from one source: %v, want ErrSourceBusy", err)
	}
	r3, err := g.Admit(a("10.0.0.2", 1))
	if err != nil {
		t.Fatalf("another source: %v", err)
	}
	if _, err := g.Admit(a("10.0.0.3", 1)); err != ErrBusy {
		t.Fatalf("beyond the total: %v, want ErrBusy", err)
	}
	if g.Pending() != 3 {
		t.Fatalf("Pending = %d, want 3", g.Pending())
	}
	r1()
	r1() // a second release gives back nothing more
	if g.Pending() != 2 {
		t.Fatalf("Pending after release = %d, want 2", g.Pending())
	}
	if _, err := g.Admit(a("10.0.0.1", 5)); err != nil {
		t.Fatalf("after a release: %v", err)
	}
	r3()
	out := logs.String()
	if n := strings.Count(out, "from one address"); n != 1 {
		t.Errorf("%d records of two per-source refusals, want 1:\n%s", n, out)
	}
	if n := strings.Count(out, "too many pending handshakes; closing"); n != 1 {
		t.Errorf("%d records of a total refusal, want 1:\n%s", n, out)
	}
}

// TestHTTPServerAcceptErrors checks what net/http's Server does with
// accept errors, which the control API relies on: it retries EMFILE and
// ENFILE by itself, but ends on ENOBUFS, ENOMEM and ECONNRESET, and on
// ECONNABORTED too when it comes as a TCP listener reports it (in an
// *os.SyscallError, which net.OpError.Temporary does not look into; Go's
// poller retries a real ECONNABORTED itself). Over a Retry listener it
// survives them all.
func TestHTTPServerAcceptErrors(t *testing.T) {
	for _, tc := range []struct {
		name     string
		errno    syscall.Errno
		retry    bool
		survives bool
	}{
		{"EMFILE", syscall.EMFILE, false, true},
		{"ENFILE", syscall.ENFILE, false, true},
		{"ECONNABORTED", syscall.ECONNABORTED, false, false},
		{"ECONNRESET", syscall.ECONNRESET, false, false},
		{"ENOBUFS", syscall.ENOBUFS, false, false},
		{"ENOMEM", syscall.ENOMEM, false, false},
		{"EMFILE over Retry", syscall.EMFILE, true, true},
		{"ECONNABORTED over Retry", syscall.ECONNABORTED, true, true},
		{"ECONNRESET over Retry", syscall.ECONNRESET, true, true},
		{"ENOBUFS over Retry", syscall.ENOBUFS, true, true},
		{"ENOMEM over Retry", syscall.ENOMEM, true, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var ln net.Listener = flakynet.New(listen(t), flakynet.AcceptError(tc.errno), flakynet.AcceptError(tc.errno))
			if tc.retry {
				ln = Retry(ln, nil, nil)
			}
			srv := &http.Server{
				Handler:  http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "ok") }),
				ErrorLog: slog.NewLogLogger(slog.DiscardHandler, slog.LevelWarn),
			}
			served := make(chan error, 1)
			go func() { served <- srv.Serve(ln) }()
			defer srv.Close()
			if !tc.survives {
				select {
				case err := <-served:
					if !errors.Is(err, tc.errno) {
						t.Fatalf("Serve returned %v, want %v", err, tc.errno)
					}
				case <-time.After(waitFor):
					t.Fatalf("Serve kept going after %v: net/http retries it now; Retry may not be needed", tc.errno)
				}
				return
			}
			ctx, cancel := context.WithTimeout(context.Background(), waitFor)
			defer cancel()
			req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+ln.Addr().String()+"/", nil)
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatalf("request after %v: %v", tc.errno, err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if string(body) != "ok" {
				t.Fatalf("body %q", body)
			}
		})
	}
}
