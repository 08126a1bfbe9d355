package e2e

import (
	"context"
	"encoding/json"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/blockrep/blockrep/internal/nbdclient"
)

// nbdcopyAt copies the file src into the export at uri starting at byte
// off, with nbdcopy writing through nbdkit's offset filter (nbdcopy itself
// always copies to offset 0), and flushes.
func nbdcopyAt(t *testing.T, src, uri string, off int64) {
	t.Helper()
	nbdkit := tool(t, "nbdkit")
	st, err := os.Stat(src)
	if err != nil {
		t.Fatal(err)
	}
	must(t, "nbdcopy", "--flush", "--", src,
		"[", nbdkit, "--exit-with-parent", "--filter=offset", "nbd", "uri="+uri,
		"offset="+strconv.FormatInt(off, 10), "range="+strconv.FormatInt(st.Size(), 10), "]")
}

// runFioVerify runs a short random-write job with crc32c verification over
// [off, off+size) of the export at uri.
func runFioVerify(t *testing.T, uri string, off, size int64) {
	t.Helper()
	tool(t, "fio")
	jsonOut := filepath.Join(t.TempDir(), "fio.json")
	stdout, stderr, err := run(t, "fio", "--name=repl-verify", "--output="+jsonOut, "--output-format=json",
		"--ioengine=nbd", "--uri="+uri,
		"--rw=randwrite", "--bsrange=4k-64k", "--bs_unaligned=0", "--iodepth=8",
		"--offset="+strconv.FormatInt(off, 10), "--size="+strconv.FormatInt(size, 10),
		"--verify=crc32c", "--do_verify=1", "--verify_fatal=1", "--verify_state_save=0")
	js, _ := os.ReadFile(jsonOut)
	if err != nil {
		t.Fatalf("fio: %v\nstdout:\n%s\nstderr:\n%s\njson:\n%s", err, stdout, stderr, js)
	}
	if m := verifyError.FindString(stdout + stderr); m != "" {
		t.Errorf("fio reported a verify error (%q):\n%s%s", m, stdout, stderr)
	}
	var res fioJSON
	if err := json.Unmarshal(js, &res); err != nil || len(res.Jobs) != 1 {
		t.Fatalf("fio JSON output (%v):\n%s", err, js)
	}
	j := res.Jobs[0]
	if j.Error != 0 || j.Write.IOBytes != size || j.Read.IOBytes != size {
		t.Errorf("fio: error %d, wrote %d, verified %d bytes; want 0, %d, %d", j.Error, j.Write.IOBytes, j.Read.IOBytes, size, size)
	}
}

// TestReplicationTwoNodes replicates a primary's writes (nbdcopy at an
// offset, then fio with verification) to a secondary: after a clean stop of
// both, the backing files are byte-identical. The secondary's export is
// read-only, and refused with secondary_nbd = "refuse".
func TestReplicationTwoNodes(t *testing.T) {
	tool(t, "nbdcopy")
	tool(t, "nbdinfo")
	tool(t, "fio")
	const size = 64 * MiB
	c := startCluster(t, clusterSpec{Nodes: 2, Size: size, Primary: 0})
	n1, n2 := c.Nodes[0], c.Nodes[1]
	r := waitInSync(t, n1, "node2")
	if r.Role != "primary" || r.Disk != "UpToDate" || r.Protocol != "C" {
		t.Errorf("node1: role %s disk %s protocol %s, want primary UpToDate C", r.Role, r.Disk, r.Protocol)
	}
	r2 := waitRepl(t, n2, "node2 secondary UpToDate, connected to the primary", func(r *replStatusJSON) bool {
		p := r.peer("node1")
		return r.Role == "secondary" && r.Disk == "UpToDate" && p != nil && p.Connection == "Connected" && p.Role == "primary"
	})
	t.Logf("node2 after the initial sync: %+v", r2)

	// 32 MiB of random data at 12 MiB.
	src := filepath.Join(t.TempDir(), "random.img")
	writeRandomFile(t, src, 32*MiB, 21)
	nbdcopyAt(t, src, n1.URI(clusterVolume), 12*MiB)
	if got, want := sha256Range(t, n1.VolumePath(clusterVolume), 12*MiB, 32*MiB), sha256File(t, src); got != want {
		t.Fatalf("primary's file at [12 MiB, 44 MiB): sha256 %s, want the source's %s", got, want)
	}
	// Random writes of 4 KiB to 64 KiB, verified, overlapping the copy.
	runFioVerify(t, n1.URI(clusterVolume), 40*MiB, 16*MiB)
	r = waitInSync(t, n1, "node2")
	if p := r.peer("node2"); p.BytesSent < 32*MiB {
		t.Errorf("node1 reports %d bytes sent to node2, want at least the 32 MiB copied", p.BytesSent)
	}

	// The secondary serves reads only, and what it serves is the data.
	info := nbdinfo(t, n2.URI(clusterVolume))
	checkBool(t, "is_read_only of the secondary's export", info.IsReadOnly, true)
	checkBool(t, "is_read_only of the primary's export", nbdinfo(t, n1.URI(clusterVolume)).IsReadOnly, false)
	// The server itself refuses a write to the secondary, whatever the
	// client believes.
	cl := dialNBD(t, n2)
	if !cl.ReadOnly() {
		t.Errorf("the secondary's export does not carry the read-only flag")
	}
	if err := cl.WriteAt(make([]byte, 4096), 12*MiB, false); err != nbdclient.Errno(1) {
		t.Errorf("a write to the secondary's export: %v, want EPERM", err)
	}
	cl.Close()
	out := filepath.Join(t.TempDir(), "from-secondary.img")
	must(t, "nbdcopy", n2.URI(clusterVolume), out)
	if got, want := sha256Range(t, out, 12*MiB, 28*MiB), sha256Range(t, src, 0, 28*MiB); got != want {
		t.Errorf("data read from the secondary at [12 MiB, 40 MiB): sha256 %s, want the source's %s", got, want)
	}

	// secondary_nbd = "refuse": the secondary turns NBD clients away.
	n2.Stop()
	n2.spec.Replication.SecondaryNBD = "refuse"
	n2.Start()
	waitInSync(t, n1, "node2")
	if stdout, stderr, err := run(t, "nbdinfo", n2.URI(clusterVolume)); err == nil {
		t.Errorf("nbdinfo on a secondary with secondary_nbd = \"refuse\" succeeded:\n%s", stdout)
	} else {
		t.Logf("nbdinfo on the refusing secondary failed as it should: %s", strings.TrimSpace(stderr))
	}

	// Both stop cleanly (everything flushed): the files are identical.
	n1.Stop()
	n2.Stop()
	h1, h2 := volumeHash(t, n1), volumeHash(t, n2)
	if h1 != h2 {
		volumesEqual(t, n1.VolumePath(clusterVolume), n2.VolumePath(clusterVolume))
		t.Fatalf("backing files differ: node1 %s, node2 %s", h1, h2)
	}
	t.Logf("both backing files: sha256 %s", h1)
}

// TestReplicationProtocols replicates with protocols A and B (the other
// tests use C): both ends report the protocol, and after verified random
// writes and a clean stop the backing files are identical.
func TestReplicationProtocols(t *testing.T) {
	tool(t, "fio")
	for _, proto := range []string{"A", "B"} {
		t.Run(proto, func(t *testing.T) {
			c := startCluster(t, clusterSpec{Nodes: 2, Size: 32 * MiB, Primary: 0, Protocol: proto})
			n1, n2 := c.Nodes[0], c.Nodes[1]
			waitInSync(t, n1, "node2")
			runFioVerify(t, n1.URI(clusterVolume), 0, 16*MiB)
			r := waitInSync(t, n1, "node2")
			if r2 := repl(t, n2); r.Protocol != proto || r2.Protocol != proto {
				t.Errorf("protocol %s on node1, %s on node2; want %s", r.Protocol, r2.Protocol, proto)
			}
			if p := r.peer("node2"); p.BytesSent < 16*MiB {
				t.Errorf("node1 sent %d bytes to node2, want at least the 16 MiB fio wrote", p.BytesSent)
			}
			n1.Stop()
			n2.Stop()
			sameVolumes(t, n1, n2)
		})
	}
}

// randomBytes returns n pseudo-random bytes from seed.
func randomBytes(n int, seed uint64) []byte {
	b := make([]byte, n)
	rng := rand.NewChaCha8([32]byte{byte(seed), byte(seed >> 8), byte(seed >> 16), 0x5a})
	_, _ = rng.Read(b)
	return b
}

// TestReplicationThreeNodes replicates one primary's writes to two
// secondaries (node2 and node3 each have node1 as their only peer): every
// write reaches both, and all three backing files end up identical.
func TestReplicationThreeNodes(t *testing.T) {
	tool(t, "nbdcopy")
	tool(t, "fio")
	c := startCluster(t, clusterSpec{Nodes: 3, Size: 64 * MiB, Primary: 0, Star: true})
	n1, n2, n3 := c.Nodes[0], c.Nodes[1], c.Nodes[2]
	waitInSync(t, n1, "node2", "node3")
	for _, d := range []*daemon{n2, n3} {
		waitRepl(t, d, "secondary UpToDate, connected to the primary", func(r *replStatusJSON) bool {
			p := r.peer("node1")
			return r.Role == "secondary" && r.Disk == "UpToDate" && p != nil && p.Connection == "Connected"
		})
	}
	threeNodeWrites(t, c)
}

// threeNodeWrites writes to node1 (nbdcopy of random data at 4 MiB, fio with
// verification) and checks that both secondaries got it, then stops every
// node and compares the backing files.
func threeNodeWrites(t *testing.T, c *cluster) {
	t.Helper()
	n1, n2, n3 := c.Nodes[0], c.Nodes[1], c.Nodes[2]
	src := filepath.Join(t.TempDir(), "random.img")
	writeRandomFile(t, src, 24*MiB, 31)
	nbdcopyAt(t, src, n1.URI(clusterVolume), 4*MiB)
	runFioVerify(t, n1.URI(clusterVolume), 24*MiB, 8*MiB)
	r := waitInSync(t, n1, "node2", "node3")
	for _, name := range []string{"node2", "node3"} {
		if p := r.peer(name); p.BytesSent < 24*MiB {
			t.Errorf("node1 reports %d bytes sent to %s, want at least the 24 MiB copied", p.BytesSent, name)
		}
	}
	for _, d := range []*daemon{n2, n3} {
		if got, want := sha256Range(t, d.VolumePath(clusterVolume), 4*MiB, 20*MiB), sha256Range(t, src, 0, 20*MiB); got != want {
			t.Errorf("%s at [4 MiB, 24 MiB): sha256 %s, want the source's %s", d.spec.Name, got, want)
		}
	}
	for _, d := range c.Nodes {
		d.Stop()
	}
	sameVolumes(t, n1, n2, n3)
	t.Logf("the three backing files are identical: sha256 %s", volumeHash(t, n1))
}

// TestReplicationThreeNodesJoin grows a running pair, node1 (primary) and
// node2, into a full mesh of three: node3, new and empty, has both as
// peers. node2 reaches node3 first (the link from node1 is held back by a
// blocked proxy until then) and gives it a full sync; then node1 reaches
// node3, which is now in node1's generation, with the blocks node1 wrote
// before node3 existed still marked for it. node3 must end in sync with
// the primary and receive every write.
func TestReplicationThreeNodesJoin(t *testing.T) {
	tool(t, "nbdcopy")
	tool(t, "fio")
	c := startCluster(t, clusterSpec{Nodes: 3, Size: 64 * MiB, Primary: 0, Deferred: []int{2}, Proxied: [][2]int{{0, 2}}})
	n1, n3 := c.Nodes[0], c.Nodes[2]
	px := c.proxy(0, 2)
	px.blocked.Store(true)
	waitInSync(t, n1, "node2")
	writeRegion(t, n1, 0, 2*MiB, 30) // node3 is not there: marked out of sync for it
	n3.Start()
	waitRepl(t, n3, "node3 synced from node2", func(r *replStatusJSON) bool {
		p := r.peer("node2")
		return r.Disk == "UpToDate" && p != nil && p.Connection == "Connected"
	})
	if got, want := sha256Range(t, n3.VolumePath(clusterVolume), 0, 2*MiB), sha256Range(t, n1.VolumePath(clusterVolume), 0, 2*MiB); got != want {
		t.Fatalf("node3 after its sync from node2 lacks the data written before it joined")
	}
	p := repl(t, n1).peer("node3")
	t.Logf("node1's view of node3 before the link opens: %s, %d bytes out of sync", p.Connection, p.OutOfSyncBytes)
	px.blocked.Store(false)
	r := waitInSync(t, n1, "node2", "node3")
	t.Logf("node1's link to node3: decision %q", r.peer("node3").Decision)
	threeNodeWrites(t, c)
}

// TestReplicationMeshStartup starts a new full-mesh cluster of three in the
// order a reboot of all machines may produce: the two secondaries come up
// before the primary. They meet while both are new (no data yet), which
// cannot be synced; once the primary has synced both, their link must come
// up, or the mesh silently lacks the link a failover to node2 needs to
// replicate to node3.
func TestReplicationMeshStartup(t *testing.T) {
	c := startCluster(t, clusterSpec{Nodes: 3, Size: 16 * MiB, Primary: 0, Deferred: []int{0}})
	n1, n2 := c.Nodes[0], c.Nodes[1]
	q := waitPeer(t, n2, "node3", "a first connect decision between the two new secondaries", func(p *peerStatusJSON) bool {
		return p.Decision != "" || p.Connection == "Connected"
	})
	t.Logf("node2's link to node3 before the primary starts: %s, decision %q, last_error %q", q.Connection, q.Decision, q.LastError)
	n1.Start()
	waitInSync(t, n1, "node2", "node3")
	waitRepl(t, n2, "node2's link to node3 Connected", func(r *replStatusJSON) bool {
		p := r.peer("node3")
		if p.Connection == "StandAlone" {
			// StandAlone never retries on its own.
			t.Fatalf("node2's link to node3 is StandAlone for good (%q), although both are now UpToDate in the same generation", p.LastError)
		}
		return p.Connection == "Connected"
	})
}

// writeScattered writes count random blocks of blockSize bytes through the
// Go NBD client, at every stride-th block-aligned slot of the volume from
// the start, and returns the bytes written. Every write must be
// acknowledged.
func writeScattered(t *testing.T, d *daemon, count int, blockSize, stride int64, seed uint64) int64 {
	t.Helper()
	c := dialNBD(t, d)
	buf := randomBytes(count*int(blockSize), seed)
	errs := make(chan error, count)
	sem := make(chan struct{}, 16)
	for i := 0; i < count; i++ {
		sem <- struct{}{}
		go func() {
			defer func() { <-sem }()
			off := int64(i) * stride * blockSize
			errs <- c.WriteAt(buf[int64(i)*blockSize:int64(i+1)*blockSize], off, false)
		}()
	}
	for i := 0; i < count; i++ {
		if err := <-errs; err != nil {
			t.Fatalf("scattered write on %s: %v", d.spec.Name, err)
		}
	}
	if err := c.Flush(); err != nil {
		t.Fatalf("flush on %s: %v", d.spec.Name, err)
	}
	c.Close()
	return int64(count) * blockSize
}

// writeRefusedScript tries one write and says how it ended.
const writeRefusedScript = `
import os, nbd
h = nbd.NBD()
h.connect_uri(os.environ["NBD_URI"])
try:
    h.pwrite(b"\x5a" * 65536, 0)
    print("write ok")
except nbd.Error as e:
    print("write failed errno=%s: %s" % (e.errno, e.string))
h.shutdown()
`

// TestReplicationResyncBytes measures, with a byte-counting proxy on the
// link, what a secondary that was away receives when it returns: the
// blocks written meanwhile and little else. It is away twice: stopped
// cleanly (SIGTERM), and killed (kill -9) while the primary, with
// continue_alone = true, goes on alone. With continue_alone = false the
// primary refuses writes while the killed secondary is gone.
func TestReplicationResyncBytes(t *testing.T) {
	tool(t, "nbdsh")
	const size = 64 * MiB
	const dirty = 16 * MiB // 256 writes of 64 KiB, at every 4th slot
	c := startCluster(t, clusterSpec{Nodes: 2, Size: size, Primary: 0, Proxied: [][2]int{{0, 1}}})
	n1, n2 := c.Nodes[0], c.Nodes[1]
	px := c.proxy(0, 1)
	waitInSync(t, n1, "node2")

	away := func(name string, leave func(), seed uint64) {
		t.Helper()
		leave()
		p := waitPeer(t, n1, "node2", "link down and node2 Outdated", func(p *peerStatusJSON) bool {
			return p.Connection != "Connected" && p.Disk == "Outdated"
		})
		t.Logf("%s: node1 sees node2 %s, %s (%s)", name, p.Connection, p.Disk, p.LastError)
		written := writeScattered(t, n1, 256, 64*1024, 4, seed)
		p = repl(t, n1).peer("node2")
		if p.OutOfSyncBytes != dirty || written != dirty {
			t.Errorf("%s: after writing %d bytes in 64 KiB blocks node1 has %d bytes out of sync for node2, want %d", name, written, p.OutOfSyncBytes, dirty)
		}
		up0, down0 := px.Counts()
		n2.Start()
		waitInSync(t, n1, "node2")
		waitRepl(t, n2, "node2 UpToDate and connected", func(r *replStatusJSON) bool {
			p := r.peer("node1")
			return r.Disk == "UpToDate" && p != nil && p.Connection == "Connected"
		})
		up1, down1 := px.Counts()
		sent := up1 - up0
		t.Logf("%s: resync of %d dirty bytes: %d bytes on the wire from node1 to node2 (%.4f x dirty), %d back",
			name, dirty, sent, float64(sent)/dirty, down1-down0)
		if sent > dirty*105/100 {
			t.Errorf("%s: %d bytes crossed the link from node1 to node2 for %d dirty bytes: more than 1.05 x", name, sent, dirty)
		}
		if sent < dirty {
			t.Errorf("%s: only %d bytes crossed the link from node1 to node2, fewer than the %d dirty bytes: was the proxy bypassed?", name, sent, dirty)
		}
		volumesEqual(t, n1.VolumePath(clusterVolume), n2.VolumePath(clusterVolume))
	}

	// 1. A clean leave: the primary goes on.
	away("SIGTERM", n2.Stop, 41)

	// 2. A secondary lost without a clean leave: with continue_alone off
	// the primary refuses writes while it is gone (EIO), and writes
	// nothing.
	n2.Kill9()
	waitPeer(t, n1, "node2", "link down after kill -9", func(p *peerStatusJSON) bool { return p.Connection != "Connected" })
	before := volumeHash(t, n1)
	out := strings.TrimSpace(nbdshSource(t, writeRefusedScript, "NBD_URI="+n1.URI(clusterVolume)))
	if !strings.HasPrefix(out, "write failed") || !(strings.Contains(out, "EIO") || strings.Contains(out, "errno=5:")) {
		t.Errorf("a write to the primary while its UpToDate secondary is lost (continue_alone = false): %q, want it refused with EIO (errno 5)", out)
	} else {
		t.Logf("the primary refused the write: %s", out)
	}
	if after := volumeHash(t, n1); after != before {
		t.Errorf("the refused write changed the primary's backing file")
	}
	if p := repl(t, n1).peer("node2"); p.OutOfSyncBytes != 0 {
		t.Errorf("after a refused write node1 has %d bytes out of sync for node2, want 0", p.OutOfSyncBytes)
	}
	n2.Start()
	waitInSync(t, n1, "node2")

	// 3. The same loss with continue_alone = true on the primary: it goes
	// on alone and the returning secondary gets a bitmap resync.
	n1.Stop()
	n1.spec.Replication.ContinueAlone = true
	n1.Start()
	r := waitInSync(t, n1, "node2")
	if !r.ContinueAlone || r.Role != "primary" {
		t.Fatalf("node1 after its restart: role %s, continue_alone %v; want primary, true", r.Role, r.ContinueAlone)
	}
	away("kill -9", n2.Kill9, 42)
}

// nbdshSource runs the Python source src under nbdsh and returns its
// stdout; it fails the test unless nbdsh exits 0.
func nbdshSource(t *testing.T, src string, env ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), defaultCmdTimeout)
	defer cancel()
	cmd := command(ctx, t, "nbdsh", "-n", "-c", "-")
	cmd.Env = append(cmd.Env, env...)
	cmd.Stdin = strings.NewReader(src)
	stdout, stderr, err := runCmd(t, cmd)
	if err != nil {
		t.Fatalf("nbdsh (%s): %v\nstdout:\n%s\nstderr:\n%s", strings.Join(env, " "), err, stdout, stderr)
	}
	return stdout
}
