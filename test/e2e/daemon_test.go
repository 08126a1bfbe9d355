package e2e

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Timeouts of the daemon helper.
const (
	// readyTimeout bounds the wait for a starting daemon's control socket.
	readyTimeout = 20 * time.Second
	// stopTimeout is how long a daemon gets to exit after SIGTERM before it
	// is killed.
	stopTimeout = 15 * time.Second
	// portAttempts bounds the retries when the picked port is taken.
	portAttempts = 5
)

// volumeSpec is one [[volume]] of a generated configuration.
type volumeSpec struct {
	Name string
	// Size creates the backing file when missing; 0 leaves size out of the
	// configuration (the file must then exist).
	Size int64
	// Path defaults to <daemon dir>/<Name>.img.
	Path     string
	ReadOnly bool
	// TLS is "optional", "required" or "" (not written: the default).
	TLS string
	// MultiConn, when not nil, is written as multi_conn.
	MultiConn *bool
	// Description is shown to NBD clients.
	Description string
	// Role is written as role ("primary" or "secondary") when not empty.
	Role string
}

// daemonSpec is a generated configuration.
type daemonSpec struct {
	Volumes                      []volumeSpec
	TLSCert, TLSKey, TLSClientCA string
	// UnixListen adds a unix socket to nbd.listen (see daemon.NBDSocket).
	UnixListen bool
	// Name is node.name; "e2e" when empty.
	Name string
	// Replication, when not nil, is written as [replication], and Peers
	// as [[peer]] tables (see cluster_test.go).
	Replication *replicationSpec
	Peers       []peerSpec
	// NBDExtra is appended to the [nbd] table as is (TOML lines).
	NBDExtra string
}

// daemon is one blockrepd process and the state it keeps across restarts:
// the data directory, the volume files and the configuration.
type daemon struct {
	t    *testing.T
	spec daemonSpec

	Dir           string // data_dir, volume files, config, log
	ConfigPath    string
	LogPath       string
	ControlSocket string
	NBDSocket     string // set with spec.UnixListen
	Port          int    // NBD TCP port on 127.0.0.1

	// ConfigText, when set, renders the configuration instead of the
	// spec (for tables the spec does not cover, such as a RAID volume's).
	ConfigText func() string
	// ReadyTimeout, when set, replaces readyTimeout (creating an array
	// takes longer than opening a file).
	ReadyTimeout time.Duration

	cmd     *exec.Cmd
	exited  chan struct{}
	waitErr error
	starts  int
}

// startDaemon starts blockrepd with a configuration generated from spec and
// waits until its control socket answers blockctl status. The daemon is
// stopped with SIGTERM (and must exit 0) when the test ends; if the test
// failed, its log is printed.
func startDaemon(t *testing.T, spec daemonSpec) *daemon {
	t.Helper()
	d := newDaemon(t, spec)
	d.Start()
	return d
}

// newDaemon prepares a daemon like startDaemon but does not start it; the
// caller may set Port, then calls Start.
func newDaemon(t *testing.T, spec daemonSpec) *daemon {
	t.Helper()
	sockDir, err := os.MkdirTemp("", "br-")
	if err != nil {
		t.Fatal(err)
	}
	d := &daemon{
		t:             t,
		spec:          spec,
		Dir:           t.TempDir(),
		ControlSocket: filepath.Join(sockDir, "ctl.sock"),
	}
	d.ConfigPath = filepath.Join(d.Dir, "blockrepd.toml")
	d.LogPath = filepath.Join(d.Dir, "blockrepd.log")
	if spec.UnixListen {
		d.NBDSocket = filepath.Join(sockDir, "nbd.sock")
	}
	for i := range d.spec.Volumes {
		if d.spec.Volumes[i].Path == "" {
			d.spec.Volumes[i].Path = filepath.Join(d.Dir, d.spec.Volumes[i].Name+".img")
		}
	}
	// Registered first, so it runs last: after the cleanups of whatever
	// the test attached to the daemon (mounts, nbdfuse, clients).
	t.Cleanup(func() {
		if d.running() {
			d.Stop()
		}
		os.RemoveAll(sockDir)
		if t.Failed() {
			d.dumpLog()
		}
	})
	return d
}

// VolumePath returns the backing file of the named volume.
func (d *daemon) VolumePath(name string) string {
	for _, v := range d.spec.Volumes {
		if v.Name == name {
			return v.Path
		}
	}
	d.t.Fatalf("no volume %q in the daemon's configuration", name)
	return ""
}

// URI returns the plain NBD URI of an export over TCP.
func (d *daemon) URI(export string) string {
	return fmt.Sprintf("nbd://127.0.0.1:%d/%s", d.Port, export)
}

// Addr returns the NBD TCP address.
func (d *daemon) Addr() string {
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(d.Port))
}

// config renders the TOML configuration.
func (d *daemon) config() string {
	var b strings.Builder
	q := strconv.Quote
	name := d.spec.Name
	if name == "" {
		name = "e2e"
	}
	fmt.Fprintf(&b, "[node]\nname = %s\ndata_dir = %s\ncontrol_socket = %s\n\n",
		q(name), q(filepath.Join(d.Dir, "data")), q(d.ControlSocket))
	listen := []string{q(d.Addr())}
	if d.NBDSocket != "" {
		listen = append(listen, q("unix:"+d.NBDSocket))
	}
	fmt.Fprintf(&b, "[nbd]\nlisten = [%s]\n", strings.Join(listen, ", "))
	if d.spec.TLSCert != "" {
		fmt.Fprintf(&b, "tls_cert = %s\ntls_key = %s\n", q(d.spec.TLSCert), q(d.spec.TLSKey))
	}
	if d.spec.TLSClientCA != "" {
		fmt.Fprintf(&b, "tls_client_ca = %s\n", q(d.spec.TLSClientCA))
	}
	b.WriteString(d.spec.NBDExtra)
	for _, v := range d.spec.Volumes {
		fmt.Fprintf(&b, "\n[[volume]]\nname = %s\npath = %s\n", q(v.Name), q(v.Path))
		if v.Size != 0 {
			fmt.Fprintf(&b, "size = %d\n", v.Size)
		}
		if v.ReadOnly {
			b.WriteString("read_only = true\n")
		}
		if v.TLS != "" {
			fmt.Fprintf(&b, "tls = %s\n", q(v.TLS))
		}
		if v.Description != "" {
			fmt.Fprintf(&b, "description = %s\n", q(v.Description))
		}
		if v.MultiConn != nil {
			fmt.Fprintf(&b, "multi_conn = %t\n", *v.MultiConn)
		}
		if v.Role != "" {
			fmt.Fprintf(&b, "role = %s\n", q(v.Role))
		}
	}
	d.replicationConfig(&b)
	return b.String()
}

// Start starts the daemon (again) on the same data directory, volumes and
// configuration. It keeps the NBD port of the previous run unless that port
// is taken.
func (d *daemon) Start() {
	d.t.Helper()
	d.start(func(ctx context.Context) ([]byte, error) {
		return d.blockctlCmd(ctx, "status").CombinedOutput()
	})
}

// StartUntilSocket is Start, but it returns as soon as the control socket
// accepts a connection: the daemon may not have caught up with its peers
// or its cluster yet.
func (d *daemon) StartUntilSocket() {
	d.t.Helper()
	d.start(func(ctx context.Context) ([]byte, error) {
		c, err := (&net.Dialer{}).DialContext(ctx, "unix", d.ControlSocket)
		if err != nil {
			return nil, err
		}
		return nil, c.Close()
	})
}

// start starts the daemon and waits until ready succeeds.
func (d *daemon) start(ready func(ctx context.Context) ([]byte, error)) {
	d.t.Helper()
	if d.running() {
		d.t.Fatal("daemon already running")
	}
	for attempt := 1; ; attempt++ {
		if d.Port == 0 || attempt > 1 {
			d.Port = freePort(d.t)
		}
		err := d.startOnce(ready)
		if err == nil {
			return
		}
		if errors.Is(err, errAddrInUse) && attempt < portAttempts {
			d.t.Logf("port %d was taken, retrying with another", d.Port)
			continue
		}
		d.t.Fatalf("starting blockrepd: %v", err) // the cleanup prints the log
	}
}

var errAddrInUse = errors.New("address already in use")

func (d *daemon) startOnce(isReady func(ctx context.Context) ([]byte, error)) error {
	text := d.config
	if d.ConfigText != nil {
		text = d.ConfigText
	}
	if err := os.WriteFile(d.ConfigPath, []byte(text()), 0o600); err != nil {
		return err
	}
	ready := readyTimeout
	if d.ReadyTimeout > 0 {
		ready = d.ReadyTimeout
	}
	logf, err := os.OpenFile(d.LogPath, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	defer logf.Close()
	d.starts++
	fmt.Fprintf(logf, "===== e2e: start %d of blockrepd (nbd port %d) at %s =====\n", d.starts, d.Port, time.Now().Format(time.RFC3339Nano))

	cmd := exec.Command(blockrepdBin, "-config", d.ConfigPath)
	cmd.Stdout = logf
	cmd.Stderr = logf
	if err := cmd.Start(); err != nil {
		return err
	}
	d.cmd = cmd
	d.exited = make(chan struct{})
	d.waitErr = nil
	go func() {
		d.waitErr = cmd.Wait()
		close(d.exited)
	}()

	deadline := time.Now().Add(ready)
	for {
		select {
		case <-d.exited:
			log, _ := os.ReadFile(d.LogPath)
			if bytes.Contains(lastStart(log), []byte("address already in use")) {
				return errAddrInUse
			}
			return fmt.Errorf("blockrepd exited before it was ready: %v", d.waitErr)
		default:
		}
		ctx, cancel := context.WithTimeout(context.Background(), 8*time.Second)
		out, err := isReady(ctx)
		cancel()
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			d.kill()
			return fmt.Errorf("control socket %s did not answer within %v; last try: %v: %s", d.ControlSocket, ready, err, out)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// lastStart returns the part of the log written by the latest start.
func lastStart(log []byte) []byte {
	if i := bytes.LastIndex(log, []byte("===== e2e: start ")); i >= 0 {
		return log[i:]
	}
	return log
}

func (d *daemon) running() bool {
	if d.cmd == nil {
		return false
	}
	select {
	case <-d.exited:
		return false
	default:
		return true
	}
}

// Stop sends SIGTERM and waits for the daemon to exit; it fails the test
// unless the daemon exits with status 0 within stopTimeout (after which it
// is killed).
func (d *daemon) Stop() {
	d.t.Helper()
	if !d.running() {
		d.t.Fatal("Stop: daemon is not running")
	}
	start := time.Now()
	if err := d.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		d.t.Errorf("SIGTERM: %v", err)
	}
	select {
	case <-d.exited:
	case <-time.After(stopTimeout):
		d.kill()
		d.t.Errorf("blockrepd did not exit within %v of SIGTERM; killed it", stopTimeout)
		return
	}
	if d.waitErr != nil {
		d.t.Errorf("blockrepd exited with %v after SIGTERM (want status 0)", d.waitErr)
		return
	}
	d.t.Logf("blockrepd exited 0, %v after SIGTERM", time.Since(start).Round(time.Millisecond))
	if _, err := os.Stat(d.ControlSocket); err == nil {
		d.t.Errorf("control socket %s still exists after a clean shutdown", d.ControlSocket)
	}
}

// Kill9 kills the daemon with SIGKILL, as a crash would.
func (d *daemon) Kill9() {
	d.t.Helper()
	if !d.running() {
		d.t.Fatal("Kill9: daemon is not running")
	}
	d.kill()
	var ee *exec.ExitError
	if !errors.As(d.waitErr, &ee) || ee.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
		d.t.Fatalf("after SIGKILL: wait returned %v, want killed by SIGKILL", d.waitErr)
	}
}

func (d *daemon) kill() {
	_ = d.cmd.Process.Signal(syscall.SIGKILL)
	<-d.exited
}

// blockctlCmd returns a blockctl command aimed at this daemon.
func (d *daemon) blockctlCmd(ctx context.Context, args ...string) *exec.Cmd {
	return exec.CommandContext(ctx, blockctlBin, append([]string{"-s", d.ControlSocket}, args...)...)
}

// Blockctl runs blockctl against this daemon and returns its stdout; it
// fails t on a non-zero exit.
func (d *daemon) Blockctl(t *testing.T, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	return mustRun(t, d.blockctlCmd(ctx, args...))
}

func (d *daemon) dumpLog() {
	log, err := os.ReadFile(d.LogPath)
	if err != nil {
		d.t.Logf("blockrepd log %s: %v", d.LogPath, err)
		return
	}
	d.t.Logf("blockrepd log (%s):\n%s", d.LogPath, log)
}

// freePort returns a TCP port on 127.0.0.1 that was free a moment ago.
func freePort(t *testing.T) int {
	t.Helper()
	return freePorts(t, 1)[0]
}

func boolp(b bool) *bool { return &b }
