package node

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/blockrep/blockrep/api"
	"github.com/blockrep/blockrep/config"
	"github.com/blockrep/blockrep/internal/testpki"
	"github.com/blockrep/blockrep/meta"
	"github.com/blockrep/blockrep/nbd"
	"github.com/blockrep/blockrep/raid"
)

const volSize = 1 << 20

// testConfig returns a parsed configuration for a node in dir with one
// volume of volSize bytes, listening on a free TCP port and a unix socket.
func testConfig(t *testing.T, dir, extra string) *config.Config {
	t.Helper()
	text := fmt.Sprintf(`
[node]
name = "test-node"
data_dir = %[1]q
control_socket = %[2]q

[nbd]
listen = ["127.0.0.1:0", "unix:%[3]s"]

[[volume]]
name = "vol0"
path = %[4]q
size = "1MiB"
description = "test volume"
%[5]s
`, filepath.Join(dir, "data"), filepath.Join(dir, "ctl.sock"), filepath.Join(dir, "nbd.sock"), filepath.Join(dir, "vol0.img"), extra)
	cfg, err := config.Parse([]byte(text), "test.toml")
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type tWriter struct{ t *testing.T }

func (w tWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// startNode creates and runs a node; it returns the node, a function that
// stops it and returns Run's result.
func startNode(t *testing.T, cfg *config.Config) (*Node, func() error) {
	t.Helper()
	return startNodeLog(t, cfg, testLogger(t))
}

// startNodeLog is startNode with the node logging to log.
func startNodeLog(t *testing.T, cfg *config.Config, log *slog.Logger) (*Node, func() error) {
	t.Helper()
	n, err := New(cfg, log)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- n.Run(ctx) }()
	var stopped bool
	var runErr error
	stop := func() error {
		if !stopped {
			stopped = true
			cancel()
			select {
			case runErr = <-done:
			case <-time.After(40 * time.Second):
				t.Fatal("Run did not return after cancel")
			}
		}
		return runErr
	}
	t.Cleanup(func() { _ = stop() })
	return n, stop
}

func TestRunServesAndShutsDown(t *testing.T) {
	dir := t.TempDir()
	cfg := testConfig(t, dir, "")
	n, stop := startNode(t, cfg)

	st, err := api.Dial(cfg.Node.ControlSocket).Status(context.Background())
	if err != nil {
		t.Fatalf("Status: %v", err)
	}
	if st.Node != "test-node" || st.NodeID == "" || st.Version == "" || len(st.Volumes) != 1 {
		t.Fatalf("status %+v", st)
	}
	v := st.Volumes[0]
	if v.Name != "vol0" || v.Size != volSize || v.Path != cfg.Volumes[0].Path || v.UUID == "" || v.TLS != "optional" || v.BlockDevice || len(v.Clients) != 0 {
		t.Errorf("volume status %+v", v)
	}
	if fi, err := os.Stat(filepath.Join(cfg.Node.DataDir, meta.FileName)); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("meta.db: %v %v", fi, err)
	}

	// A client writes and reads over TCP and shows up in the status.
	c := dialNBD(t, "tcp", n.NBDAddrs()[0].String(), "vol0")
	data := bytes.Repeat([]byte("blockrep"), 512)
	c.write(0, data)
	if got := c.read(0, len(data)); !bytes.Equal(got, data) {
		t.Fatal("read back different data")
	}
	st, err = n.Status(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if cl := st.Volumes[0].Clients; len(cl) != 1 || cl[0].Writes != 1 || cl[0].Reads != 1 || cl[0].Export != "vol0" {
		t.Errorf("clients %+v", cl)
	}

	// The unix listener serves too, including the default export.
	u := dialNBD(t, "unix", cfg.NBD.Listen[1].Address, "")
	if got := u.read(0, len(data)); !bytes.Equal(got, data) {
		t.Fatal("unix client read different data")
	}

	// Shutdown with connected clients: they drain, Run returns nil, the
	// sockets are gone and the data is in the file.
	if err := stop(); err != nil {
		t.Fatalf("Run: %v", err)
	}
	for _, p := range []string{cfg.Node.ControlSocket, cfg.NBD.Listen[1].Address} {
		if _, err := os.Lstat(p); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s remains after shutdown: %v", p, err)
		}
	}
	img, err := os.ReadFile(cfg.Volumes[0].Path)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(img[:len(data)], data) {
		t.Error("written data is not in the backing file")
	}

	// Identities are stable across restarts.
	n2, stop2 := startNode(t, cfg)
	st2, err := n2.Status(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if st2.NodeID != st.NodeID || st2.Volumes[0].UUID != st.Volumes[0].UUID {
		t.Errorf("identities changed across restart: %s/%s -> %s/%s", st.NodeID, st.Volumes[0].UUID, st2.NodeID, st2.Volumes[0].UUID)
	}
	if err := stop2(); err != nil {
		t.Fatal(err)
	}
}

func TestSecondNodeOnSameDataDirFails(t *testing.T) {
	dir := t.TempDir()
	cfg := testConfig(t, dir, "")
	startNode(t, cfg)
	_, err := New(cfg, testLogger(t))
	if !errors.Is(err, meta.ErrLocked) || !strings.Contains(err.Error(), "another blockrepd holds") {
		t.Fatalf("second New: %v", err)
	}
	// The running node's control socket is untouched.
	if _, err := api.Dial(cfg.Node.ControlSocket).Status(context.Background()); err != nil {
		t.Errorf("first node unreachable after second New: %v", err)
	}
}

func TestControlSocketInUse(t *testing.T) {
	dir := t.TempDir()
	cfg := testConfig(t, dir, "")
	startNode(t, cfg)
	other := testConfig(t, t.TempDir(), "")
	other.Node.ControlSocket = cfg.Node.ControlSocket
	_, err := New(other, testLogger(t))
	if err == nil || !strings.Contains(err.Error(), "another process is listening") {
		t.Fatalf("New with a live control socket: %v", err)
	}
}

func TestNewFailureReleasesEverything(t *testing.T) {
	dir := t.TempDir()
	cfg := testConfig(t, dir, "")
	// An existing file of the wrong size makes the volume fail to open:
	// a configuration error found before anything is written.
	if err := os.WriteFile(cfg.Volumes[0].Path, make([]byte, 4096), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := New(cfg, testLogger(t))
	var cerr *config.Error
	if !errors.As(err, &cerr) || cerr.Key != "volume.0.size" || !strings.Contains(err.Error(), `volume "vol0"`) {
		t.Fatalf("New: %v, want a configuration error naming volume.0.size", err)
	}
	if _, err := os.Lstat(cfg.Node.ControlSocket); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("control socket exists after failed New: %v", err)
	}
	if _, err := os.Stat(filepath.Join(cfg.Node.DataDir, meta.FileName)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("meta.db exists after a refused first start: %v", err)
	}

	// A failure after meta.db was opened does not leave it locked.
	if err := os.Remove(cfg.Volumes[0].Path); err != nil {
		t.Fatal(err)
	}
	_, stop := startNode(t, cfg)
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(cfg.Volumes[0].Path); err != nil {
		t.Fatal(err)
	}
	if _, err := New(cfg, testLogger(t)); err == nil || !strings.Contains(err.Error(), cfg.Volumes[0].Path) {
		t.Fatalf("New with the store gone: %v, want a refusal naming %s", err, cfg.Volumes[0].Path)
	}
	db, err := meta.Open(filepath.Join(cfg.Node.DataDir, meta.FileName))
	if err != nil {
		t.Fatalf("meta after failed New: %v", err)
	}
	db.Close()
}

// TestVolumeSizeChangeRefused: a volume keeps its size for life. A file
// that grew still holds the identity where it was, and serves the same
// size; one truncated below it is refused (standalone: no peer has the
// data).
func TestVolumeSizeChangeRefused(t *testing.T) {
	dir := t.TempDir()
	cfg := testConfig(t, dir, "")
	_, stop := startNode(t, cfg)
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(cfg.Volumes[0].Path, 2*volSize); err != nil {
		t.Fatal(err)
	}
	cfg.Volumes[0].Size = 0 // use the file as it is
	n, stop := startNode(t, cfg)
	st, err := n.Status(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if v := st.Volumes[0]; v.Size != volSize || v.Store.Opened != "Accept" {
		t.Fatalf("after the file grew: size %d, store %+v; want %d, Accept", v.Size, v.Store, volSize)
	}
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(cfg.Volumes[0].Path, volSize/2); err != nil {
		t.Fatal(err)
	}
	_, err = New(cfg, testLogger(t))
	if err == nil || !strings.Contains(err.Error(), "truncated") || !strings.Contains(err.Error(), cfg.Volumes[0].Path) {
		t.Fatalf("New after the file was truncated: %v", err)
	}
}

func TestListenerErrorStopsNode(t *testing.T) {
	cfg := testConfig(t, t.TempDir(), "")
	n, err := New(cfg, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	// Break the TCP listener before Run: its Serve fails at once.
	n.nbdListeners[0] = brokenListener{n.nbdListeners[0]}
	done := make(chan error, 1)
	go func() { done <- n.Run(context.Background()) }()
	select {
	case err := <-done:
		if err == nil || !strings.Contains(err.Error(), "nbd listener") || !strings.Contains(err.Error(), "broken") {
			t.Fatalf("Run: %v", err)
		}
	case <-time.After(40 * time.Second):
		t.Fatal("Run did not stop after a listener error")
	}
	if _, err := os.Lstat(cfg.Node.ControlSocket); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("control socket remains: %v", err)
	}
}

type brokenListener struct{ net.Listener }

func (brokenListener) Accept() (net.Conn, error) { return nil, errors.New("broken") }

func TestNBDInfo(t *testing.T) {
	nbdinfo, err := exec.LookPath("nbdinfo")
	if err != nil {
		t.Skip("nbdinfo not installed")
	}
	cfg := testConfig(t, t.TempDir(), "")
	n, _ := startNode(t, cfg)
	for _, uri := range []string{
		"nbd://" + n.NBDAddrs()[0].String() + "/vol0",
		"nbd://" + n.NBDAddrs()[0].String(),
		"nbd+unix:///vol0?socket=" + cfg.NBD.Listen[1].Address,
	} {
		out, err := exec.Command(nbdinfo, "--size", uri).CombinedOutput()
		if err != nil || strings.TrimSpace(string(out)) != fmt.Sprint(volSize) {
			t.Errorf("nbdinfo --size %s: %v: %s", uri, err, out)
		}
	}
}

func TestExportFor(t *testing.T) {
	dev, err := raid.OpenFile(filepath.Join(t.TempDir(), "v.img"), raid.FileOptions{CreateSize: volSize})
	if err != nil {
		t.Fatal(err)
	}
	defer dev.Close()
	tests := []struct {
		name string
		vol  config.Volume
		want nbd.Export
	}{
		{"defaults", config.Volume{Name: "a", TLS: config.TLSOptional, BlockSizeMin: 512, BlockSizePreferred: 4096, BlockSizeMax: 32 << 20, MultiConn: true},
			nbd.Export{Name: "a", MinBlockSize: 512, PreferredBlockSize: 4096, MaxBlockSize: 32 << 20, MultiConn: true}},
		{"read-only, TLS required, no multi-conn", config.Volume{Name: "b", Description: "d", ReadOnly: true, TLS: config.TLSRequired, BlockSizeMin: 4096, BlockSizePreferred: 65536, BlockSizeMax: 1 << 20},
			nbd.Export{Name: "b", Description: "d", ReadOnly: true, RequireTLS: true, MinBlockSize: 4096, PreferredBlockSize: 65536, MaxBlockSize: 1 << 20}},
	}
	for _, tt := range tests {
		got := (&Node{cfg: &config.Config{}}).exportFor(&volume{cfg: tt.vol, store: dev})
		tt.want.Device = dev
		tt.want.InlineMax = InlineMaxLocal
		if !reflect.DeepEqual(*got, tt.want) {
			t.Errorf("%s: got %+v\nwant %+v", tt.name, *got, tt.want)
		}
	}
}

func TestClientsByExport(t *testing.T) {
	in := []nbd.ClientInfo{{ID: 1, Export: "a"}, {ID: 2, Export: "b"}, {ID: 3, Export: "a"}}
	got := clientsByExport(in)
	if len(got) != 2 || len(got["a"]) != 2 || got["a"][1].ID != 3 || got["b"][0].ID != 2 {
		t.Errorf("clientsByExport = %+v", got)
	}
}

func TestTLSConfig(t *testing.T) {
	dir := t.TempDir()
	cert, key, ca := writeCert(t, dir)
	junk := filepath.Join(dir, "junk.pem")
	if err := os.WriteFile(junk, []byte("not pem"), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name     string
		cfg      config.NBD
		wantNil  bool
		wantAuth tls.ClientAuthType
		wantErr  string
	}{
		{"off", config.NBD{}, true, 0, ""},
		{"server only", config.NBD{TLSCert: cert, TLSKey: key}, false, tls.NoClientCert, ""},
		{"client certificates", config.NBD{TLSCert: cert, TLSKey: key, TLSClientCA: ca}, false, tls.RequireAndVerifyClientCert, ""},
		{"missing cert", config.NBD{TLSCert: filepath.Join(dir, "nope.pem"), TLSKey: key}, false, 0, "loading tls_cert " + filepath.Join(dir, "nope.pem")},
		{"key does not match", config.NBD{TLSCert: cert, TLSKey: junk}, false, 0, "tls_key " + junk},
		{"missing CA", config.NBD{TLSCert: cert, TLSKey: key, TLSClientCA: filepath.Join(dir, "noca.pem")}, false, 0, "tls_client_ca"},
		{"CA without PEM", config.NBD{TLSCert: cert, TLSKey: key, TLSClientCA: junk}, false, 0, "tls_client_ca " + junk + " holds no PEM certificate"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tc, err := tlsConfig(tt.cfg)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if tt.wantNil {
				if tc != nil {
					t.Fatal("want nil tls.Config")
				}
				return
			}
			if tc.MinVersion != tls.VersionTLS13 || len(tc.Certificates) != 1 || tc.ClientAuth != tt.wantAuth {
				t.Errorf("tls.Config MinVersion %x certs %d auth %v", tc.MinVersion, len(tc.Certificates), tc.ClientAuth)
			}
		})
	}
}

func TestTLSRequiredVolume(t *testing.T) {
	dir := t.TempDir()
	cert, key, _ := writeCert(t, dir)
	cfg := testConfig(t, dir, "")
	cfg.NBD.TLSCert, cfg.NBD.TLSKey = cert, key
	cfg.Volumes[0].TLS = config.TLSRequired
	n, _ := startNode(t, cfg)
	st, err := n.Status(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if st.Volumes[0].TLS != "required" {
		t.Errorf("TLS %q", st.Volumes[0].TLS)
	}
	// Without STARTTLS the export is refused.
	c := rawNBD(t, "tcp", n.NBDAddrs()[0].String())
	if err := c.exportName("vol0"); err == nil {
		t.Error("export served without TLS")
	}
}

// writeCert writes a server certificate and its key, and the certificate
// of the CA that issued them, into dir.
func writeCert(t *testing.T, dir string) (cert, key, ca string) {
	t.Helper()
	pki := testpki.NewCA(t, "blockrep test CA")
	certPEM, keyPEM := pki.Issue(t, "blockrep test", x509.ExtKeyUsageServerAuth)
	cert, key, ca = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem"), filepath.Join(dir, "ca.pem")
	for path, b := range map[string][]byte{cert: certPEM, key: keyPEM, ca: pki.CertPEM} {
		if err := os.WriteFile(path, b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return cert, key, ca
}

// A minimal NBD client: fixed newstyle handshake with NBD_OPT_EXPORT_NAME
// and simple replies, enough to see the node serve.
const (
	nbdMagic      = 0x4e42444d41474943 // "NBDMAGIC"
	optMagic      = 0x49484156454f5054 // "IHAVEOPT"
	requestMagic  = 0x25609513
	simpleMagic   = 0x67446698
	optExportName = 1
	cmdRead       = 0
	cmdWrite      = 1
)

type nbdClient struct {
	t      *testing.T
	c      net.Conn
	handle uint64
}

func rawNBD(t *testing.T, network, addr string) *nbdClient {
	t.Helper()
	c, err := net.Dial(network, addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	_ = c.SetDeadline(time.Now().Add(20 * time.Second))
	var greet [18]byte
	if _, err := io.ReadFull(c, greet[:]); err != nil {
		t.Fatalf("greeting: %v", err)
	}
	if binary.BigEndian.Uint64(greet[0:]) != nbdMagic || binary.BigEndian.Uint64(greet[8:]) != optMagic {
		t.Fatalf("bad greeting %x", greet)
	}
	if _, err := c.Write(binary.BigEndian.AppendUint32(nil, 3)); err != nil { // FIXED_NEWSTYLE | NO_ZEROES
		t.Fatal(err)
	}
	return &nbdClient{t: t, c: c}
}

// exportName selects an export; an error means the server refused it.
func (c *nbdClient) exportName(name string) error {
	msg := binary.BigEndian.AppendUint64(nil, optMagic)
	msg = binary.BigEndian.AppendUint32(msg, optExportName)
	msg = binary.BigEndian.AppendUint32(msg, uint32(len(name)))
	msg = append(msg, name...)
	if _, err := c.c.Write(msg); err != nil {
		return err
	}
	var reply [10]byte // size, transmission flags (no zeroes)
	if _, err := io.ReadFull(c.c, reply[:]); err != nil {
		return err
	}
	if size := binary.BigEndian.Uint64(reply[:]); size != volSize {
		c.t.Fatalf("export size %d", size)
	}
	return nil
}

func dialNBD(t *testing.T, network, addr, export string) *nbdClient {
	t.Helper()
	c := rawNBD(t, network, addr)
	if err := c.exportName(export); err != nil {
		t.Fatalf("export %q: %v", export, err)
	}
	return c
}

func (c *nbdClient) request(cmd uint16, off uint64, length uint32, data []byte) []byte {
	c.t.Helper()
	c.handle++
	msg := binary.BigEndian.AppendUint32(nil, requestMagic)
	msg = binary.BigEndian.AppendUint16(msg, 0)
	msg = binary.BigEndian.AppendUint16(msg, cmd)
	msg = binary.BigEndian.AppendUint64(msg, c.handle)
	msg = binary.BigEndian.AppendUint64(msg, off)
	msg = binary.BigEndian.AppendUint32(msg, length)
	if _, err := c.c.Write(append(msg, data...)); err != nil {
		c.t.Fatal(err)
	}
	var hdr [16]byte
	if _, err := io.ReadFull(c.c, hdr[:]); err != nil {
		c.t.Fatalf("reply: %v", err)
	}
	if binary.BigEndian.Uint32(hdr[0:]) != simpleMagic || binary.BigEndian.Uint64(hdr[8:]) != c.handle {
		c.t.Fatalf("bad reply %x", hdr)
	}
	if e := binary.BigEndian.Uint32(hdr[4:]); e != 0 {
		c.t.Fatalf("NBD error %d", e)
	}
	if cmd != cmdRead {
		return nil
	}
	buf := make([]byte, length)
	if _, err := io.ReadFull(c.c, buf); err != nil {
		c.t.Fatal(err)
	}
	return buf
}

func (c *nbdClient) write(off uint64, data []byte) {
	c.request(cmdWrite, off, uint32(len(data)), data)
}

func (c *nbdClient) read(off uint64, n int) []byte { return c.request(cmdRead, off, uint32(n), nil) }

// TestNFSExportRefused: until the serving stack exists, a volume with an
// NFS export is refused at start with the key to remove, not ignored.
func TestNFSExportRefused(t *testing.T) {
	dir := t.TempDir()
	cfg := testConfig(t, dir, "[[volume.nfs]]\nnetworks = [\"10.0.0.0/24\"]\n")
	_, err := New(cfg, testLogger(t))
	if err == nil || !strings.Contains(err.Error(), "volume.0.nfs") || !strings.Contains(err.Error(), "not served yet") {
		t.Fatalf("New with an NFS export: %v, want a refusal naming volume.0.nfs", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "data", "meta.db")); !os.IsNotExist(err) {
		t.Fatalf("the refused start wrote meta.db: %v", err)
	}
}
