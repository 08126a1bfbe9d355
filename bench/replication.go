package bench

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/blockrep/blockrep/api"
	"github.com/blockrep/blockrep/replica"
)

// ReplicationRows are the rows of the replication benchmark. Targets are
// replicated (protocol C) over nbdkit; the latency row has none: it reports
// what replication adds to a synchronous 4K write.
var ReplicationRows = []Row{
	{Name: "4K random write QD32", RW: "randwrite", BlockSize: "4k", QueueDepth: 32, Metric: IOPS, Target: 0.7},
	{Name: "1M sequential write QD8", RW: "write", BlockSize: "1m", QueueDepth: 8, Metric: Bandwidth, Target: 0.8},
	{Name: "4K random write QD1 latency", RW: "randwrite", BlockSize: "4k", QueueDepth: 1, Metric: Latency},
}

// NodeConfig is the configuration of one blockrepd node of the benchmark:
// one volume, served on loopback. Without a peer the node is standalone.
type NodeConfig struct {
	Name    string // node.name
	DataDir string
	File    string // the volume's backing file
	NBDPort int

	// Replication; left empty for a standalone node.
	Cluster    string
	SecretFile string
	ReplListen string // replication.listen, host:port
	Peer       string // the peer's node.name
	PeerAddr   string // the peer's replication.listen
	Role       string // "primary" or "secondary"
	// Security is replication.security ("" leaves it out: "mac"); with
	// "tls" the three files are the node's certificate, key and the CA.
	Security               string
	TLSCert, TLSKey, TLSCA string
}

// TOML renders the configuration as blockrepd reads it.
func (c NodeConfig) TOML() string {
	var b strings.Builder
	fmt.Fprintf(&b, "[node]\nname = %q\ndata_dir = %q\n\n[nbd]\nlisten = [\"127.0.0.1:%d\"]\n", c.Name, c.DataDir, c.NBDPort)
	if c.Peer != "" {
		fmt.Fprintf(&b, "\n[replication]\ncluster = %q\nsecret_file = %q\nlisten = %q\nprotocol = \"C\"\n", c.Cluster, c.SecretFile, c.ReplListen)
		if c.Security != "" {
			fmt.Fprintf(&b, "security = %q\n", c.Security)
		}
		if c.TLSCert != "" {
			fmt.Fprintf(&b, "tls_cert = %q\ntls_key = %q\ntls_ca = %q\n", c.TLSCert, c.TLSKey, c.TLSCA)
		}
		fmt.Fprintf(&b, "\n[[peer]]\nname = %q\naddress = %q\n", c.Peer, c.PeerAddr)
	}
	fmt.Fprintf(&b, "\n[[volume]]\nname = \"bench\"\npath = %q\n", c.File)
	if c.Role != "" {
		fmt.Fprintf(&b, "role = %q\n", c.Role)
	}
	return b.String()
}

// startNode writes nc to cfgPath and starts blockrepd on it.
func startNode(ctx context.Context, name, blockrepd string, nc NodeConfig, cfgPath, logPath, logLevel string) (*Server, error) {
	if err := os.WriteFile(cfgPath, []byte(nc.TOML()), 0o600); err != nil {
		return nil, err
	}
	s, err := start(ctx, name, nc.NBDPort, logPath, blockrepd, "-config", cfgPath, "-log-level", logLevel)
	if err != nil {
		return nil, err
	}
	s.Control = filepath.Join(nc.DataDir, "control.sock")
	return s, nil
}

// StartNode starts a blockrepd node named name (used for its files in
// workDir: NAME.toml and NAME.log). It logs at info level, so that the log
// tells what replication did.
func StartNode(ctx context.Context, name, blockrepd string, nc NodeConfig, workDir string) (*Server, error) {
	return startNode(ctx, name, blockrepd, nc, filepath.Join(workDir, name+".toml"), filepath.Join(workDir, name+".log"), "info")
}

// ReplicatedPair is a primary and its protocol-C secondary on loopback.
type ReplicatedPair struct {
	Primary, Secondary NodeConfig
}

// NewReplicatedPair configures a primary serving primaryFile and a
// secondary holding secondaryFile, with free ports and a fresh 32-byte
// secret (mode 0600) in workDir. The primary's name sorts first, so it
// dials; a restarted secondary knocks and is dialed at once.
func NewReplicatedPair(workDir, primaryFile, secondaryFile string) (*ReplicatedPair, error) {
	ports := make([]int, 4)
	seen := map[int]bool{}
	for i := range ports {
		for {
			p, err := freePort()
			if err != nil {
				return nil, err
			}
			if !seen[p] {
				seen[p] = true
				ports[i] = p
				break
			}
		}
	}
	secret := make([]byte, 24)
	if _, err := rand.Read(secret); err != nil {
		return nil, err
	}
	// 24 random bytes in base64: 32 bytes of text, none of it whitespace
	// that blockrepd would trim.
	secretFile := filepath.Join(workDir, "cluster.secret")
	if err := os.WriteFile(secretFile, []byte(base64.StdEncoding.EncodeToString(secret)), 0o600); err != nil {
		return nil, err
	}
	pl, sl := fmt.Sprintf("127.0.0.1:%d", ports[2]), fmt.Sprintf("127.0.0.1:%d", ports[3])
	return &ReplicatedPair{
		Primary: NodeConfig{
			Name: "bench-primary", DataDir: filepath.Join(workDir, "primary"), File: primaryFile, NBDPort: ports[0],
			Cluster: "bench", SecretFile: secretFile, ReplListen: pl, Peer: "bench-secondary", PeerAddr: sl, Role: "primary",
		},
		Secondary: NodeConfig{
			Name: "bench-secondary", DataDir: filepath.Join(workDir, "secondary"), File: secondaryFile, NBDPort: ports[1],
			Cluster: "bench", SecretFile: secretFile, ReplListen: sl, Peer: "bench-primary", PeerAddr: pl, Role: "secondary",
		},
	}, nil
}

// PeerStatus returns the replication state of the node's first peer of its
// only volume, as `blockctl status -o json` shows it.
func (s *Server) PeerStatus(ctx context.Context) (replica.PeerStatus, error) {
	if s.Control == "" {
		return replica.PeerStatus{}, fmt.Errorf("bench: %s has no control socket", s.Name)
	}
	if s.client == nil {
		s.client = api.Dial(s.Control)
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	st, err := s.client.Status(ctx)
	if err != nil {
		return replica.PeerStatus{}, fmt.Errorf("bench: status of %s: %w", s.Name, err)
	}
	if len(st.Volumes) == 0 || st.Volumes[0].Replication == nil || len(st.Volumes[0].Replication.Peers) == 0 {
		return replica.PeerStatus{}, fmt.Errorf("bench: %s reports no replicated volume with a peer", s.Name)
	}
	return st.Volumes[0].Replication.Peers[0], nil
}

// InSync reports whether the primary's view of its peer is a connected,
// replicating, fully synced secondary with no resync running.
func InSync(p replica.PeerStatus) bool {
	return p.Connection == replica.Connected && p.Replicating && p.OutOfSyncBytes == 0 &&
		(p.Resync == nil || !p.Resync.Finished.IsZero())
}

// PollInterval is how often WaitInSync asks for the status.
const PollInterval = 50 * time.Millisecond

// WaitInSync polls the primary's status every PollInterval until its peer is
// InSync and, when after is not zero, a resync that started after it has
// finished. It returns the status seen and when it was seen. watch are the
// processes whose exit ends the wait early; progress, when not nil, is
// called about once a second with the latest status.
func WaitInSync(ctx context.Context, primary *Server, after time.Time, timeout time.Duration, watch []*Server, progress func(replica.PeerStatus)) (replica.PeerStatus, time.Time, error) {
	deadline := time.Now().Add(timeout)
	lastProgress := time.Now()
	var last replica.PeerStatus
	var lastErr error
	for {
		p, err := primary.PeerStatus(ctx)
		seen := time.Now()
		if err == nil {
			last, lastErr = p, nil
			ok := InSync(p)
			if ok && !after.IsZero() {
				ok = p.Resync != nil && p.Resync.Started.After(after)
			}
			if ok {
				return p, seen, nil
			}
		} else {
			lastErr = err
		}
		for _, s := range watch {
			if err := s.Exited(); err != nil {
				return last, seen, fmt.Errorf("bench: %w while waiting for the peer to be in sync; log:\n%s", err, s.LogTail(30))
			}
		}
		if ctx.Err() != nil {
			return last, seen, ctx.Err()
		}
		if seen.After(deadline) {
			var logs strings.Builder
			for _, s := range watch {
				fmt.Fprintf(&logs, "\n--- %s log (last 30 lines):\n%s", s.Name, s.LogTail(30))
			}
			return last, seen, fmt.Errorf("bench: peer not in sync after %s: last status %s (status error: %v)%s", timeout, DescribePeer(last), lastErr, logs.String())
		}
		if progress != nil && time.Since(lastProgress) >= time.Second {
			progress(last)
			lastProgress = time.Now()
		}
		select {
		case <-ctx.Done():
			return last, seen, ctx.Err()
		case <-time.After(PollInterval):
		}
	}
}

// DescribePeer renders a peer status in one line for progress and errors.
func DescribePeer(p replica.PeerStatus) string {
	s := fmt.Sprintf("connection %s, disk %s, replicating %v, out of sync %d MiB", p.Connection, p.Disk, p.Replicating, p.OutOfSyncBytes>>20)
	if r := p.Resync; r != nil {
		state := "running"
		if !r.Finished.IsZero() {
			state = "finished"
		}
		s += fmt.Sprintf(", %s resync %s %d/%d MiB", r.Kind, state, r.DoneBytes>>20, r.TotalBytes>>20)
		if r.Error != "" {
			s += " (error: " + r.Error + ")"
		}
	}
	if p.LastError != "" {
		s += ", last error: " + p.LastError
	}
	return s
}

// WaitDisconnected polls the primary until its peer is no longer connected.
func WaitDisconnected(ctx context.Context, primary *Server, timeout time.Duration) (replica.PeerStatus, error) {
	deadline := time.Now().Add(timeout)
	for {
		p, err := primary.PeerStatus(ctx)
		if err == nil && p.Connection != replica.Connected && p.Connection != replica.SyncSource {
			return p, nil
		}
		if time.Now().After(deadline) {
			return p, fmt.Errorf("bench: primary still sees its peer %s after %s (%v)", p.Connection, timeout, err)
		}
		select {
		case <-ctx.Done():
			return p, ctx.Err()
		case <-time.After(PollInterval):
		}
	}
}

// WriteRegion writes n bytes from offset 0 of uri with sequential 1 MiB
// writes at QD8 and a flush at the end.
func WriteRegion(ctx context.Context, fio, uri string, n int64) (Result, error) {
	return runFio(ctx, fio, "region write", uri, []string{
		"--name=region_write",
		"--ioengine=nbd", "--uri=" + uri,
		"--rw=write", "--bs=1m", "--iodepth=8",
		"--offset=0", fmt.Sprintf("--size=%d", n),
		"--end_fsync=1",
		"--output-format=json",
	})
}

// CopyChunk is the unit of the plain copies: a resync sends 1 MiB chunks too.
const CopyChunk = 1 << 20

// CopyTCP copies n bytes at offset off of src to the same offset of dst
// through a loopback TCP connection, in CopyChunk pieces, and fdatasyncs
// dst: the path a resync takes (read, send, receive, write) without the
// replication protocol. It returns the time from the first read to the end
// of the fdatasync.
func CopyTCP(ctx context.Context, src, dst string, off, n int64) (time.Duration, error) {
	in, err := os.Open(src)
	if err != nil {
		return 0, err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY, 0)
	if err != nil {
		return 0, err
	}
	defer out.Close()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			close(accepted)
			return
		}
		accepted <- c
	}()
	snd, err := (&net.Dialer{}).DialContext(ctx, "tcp", ln.Addr().String())
	if err != nil {
		return 0, err
	}
	defer snd.Close()
	rcv, ok := <-accepted
	if !ok {
		return 0, errors.New("bench: copy: accept failed")
	}
	defer rcv.Close()
	stop := context.AfterFunc(ctx, func() { snd.Close(); rcv.Close() })
	defer stop()

	begin := time.Now()
	sent := make(chan error, 1)
	go func() {
		buf := make([]byte, CopyChunk)
		for pos := off; pos < off+n; {
			m := min(int64(len(buf)), off+n-pos)
			if _, err := in.ReadAt(buf[:m], pos); err != nil {
				sent <- err
				return
			}
			if _, err := snd.Write(buf[:m]); err != nil {
				sent <- err
				return
			}
			pos += m
		}
		sent <- nil
	}()
	buf := make([]byte, CopyChunk)
	var rerr error
	for pos := off; pos < off+n; {
		m := min(int64(len(buf)), off+n-pos)
		if _, rerr = io.ReadFull(rcv, buf[:m]); rerr != nil {
			break
		}
		if _, rerr = out.WriteAt(buf[:m], pos); rerr != nil {
			break
		}
		pos += m
	}
	if rerr != nil {
		snd.Close()
		<-sent
		return 0, fmt.Errorf("bench: tcp copy: %w", rerr)
	}
	if err := <-sent; err != nil {
		return 0, fmt.Errorf("bench: tcp copy: send: %w", err)
	}
	if err := syscall.Fdatasync(int(out.Fd())); err != nil {
		return 0, fmt.Errorf("bench: tcp copy: fdatasync: %w", err)
	}
	return time.Since(begin), nil
}

// CopyLocal copies n bytes at offset off of src to the same offset of dst
// with pread and pwrite in CopyChunk pieces, and fdatasyncs dst: the
// tightest bound on a copy between the two files, with no network at all.
func CopyLocal(src, dst string, off, n int64) (time.Duration, error) {
	in, err := os.Open(src)
	if err != nil {
		return 0, err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY, 0)
	if err != nil {
		return 0, err
	}
	defer out.Close()
	begin := time.Now()
	buf := make([]byte, CopyChunk)
	for pos := off; pos < off+n; {
		m := min(int64(len(buf)), off+n-pos)
		if _, err := in.ReadAt(buf[:m], pos); err != nil {
			return 0, fmt.Errorf("bench: local copy: %w", err)
		}
		if _, err := out.WriteAt(buf[:m], pos); err != nil {
			return 0, fmt.Errorf("bench: local copy: %w", err)
		}
		pos += m
	}
	if err := syscall.Fdatasync(int(out.Fd())); err != nil {
		return 0, fmt.Errorf("bench: local copy: fdatasync: %w", err)
	}
	return time.Since(begin), nil
}
