package e2e

import (
	"bytes"
	"encoding/json"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestHABlankStoreNeverUpToDate runs issue 11's repro on a two-data-node +
// witness cluster, in its order: 8 MiB written through NBD on node1 and
// acknowledged on both, node2 stopped, its backing file deleted, node2
// started, node1 killed with SIGKILL, node2's export read, node1 started.
//
// A store that no longer holds what meta.db records must never come up
// UpToDate. The missing file is refused with a message naming its path (it
// is not silently re-created); after the documented way out for a replaced
// disk (truncate -s SIZE PATH: a blank store), node2 comes up Inconsistent
// and gets a full sync from node1 before anything can promote it. After
// the failover node2 serves every acknowledged byte — never zeros — and
// node1 rejoins without being resynced from a blank copy.
func TestHABlankStoreNeverUpToDate(t *testing.T) {
	const size = 32 * MiB
	c := startHA(t, haOptions{Size: size})
	n1, n2 := c.N1, c.N2

	data := randomBytes(8*MiB, 1111)
	cl := dialNBD(t, n1)
	for off := 0; off < len(data); off += 1 * MiB {
		if err := cl.WriteAt(data[off:off+1*MiB], int64(off), true); err != nil {
			t.Fatalf("write at %d on node1: %v", off, err)
		}
	}
	if err := cl.Flush(); err != nil {
		t.Fatal(err)
	}
	cl.Close()
	c.waitPair(t, n1, n2) // protocol C: acknowledged on both

	n2.Stop()
	path := n2.VolumePath(clusterVolume)
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}

	// The missing store is refused, naming the path; nothing is created.
	out := runDaemonExpectFailure(t, n2.ConfigPath, n2.ControlSocket, 1)
	if !strings.Contains(out, path) {
		t.Errorf("the refusal does not name the missing store %s", path)
	}
	if !strings.Contains(out, "truncate -s") {
		t.Errorf("the refusal does not give the way out for a replaced disk (truncate -s SIZE PATH)")
	}
	if _, err := os.Stat(path); err == nil {
		t.Errorf("the refused start created %s", path)
		os.Remove(path)
	}

	// The way out the README gives for a replaced disk: a blank store of
	// the volume's size.
	must(t, "truncate", "-s", strconv.FormatInt(size, 10), path)
	n2.Start()
	if st := storeStatus(t, n2, clusterVolume); st.Opened != "Inconsistent" || st.Identity != "protected" {
		t.Errorf("node2's blank store opened %q (identity %q), want Inconsistent: %s", st.Opened, st.Identity, st.Reason)
	}
	// The full sync from node1 ends with node2 UpToDate and in sync.
	s := c.waitPair(t, n1, n2)
	if p := s.repl().peer("node2"); p == nil || !strings.Contains(p.Decision, "full") {
		t.Errorf("node1's connect decision for node2's blank store: %+v; want a full sync", p)
	}

	n1.Kill9()
	waitHA(t, n2, "node2 promoted by the cluster", func(s *haStatusJSON) bool {
		v := s.clusterVolume()
		return s.repl().Role == "primary" && !s.repl().Fenced && v != nil && v.Primary == "node2"
	})
	checkVolumeData(t, n2, data, "node2 after the failover")

	n1.Start()
	c.waitPair(t, n2, n1)
	checkVolumeData(t, n2, data, "node2 after node1 rejoined")
	n1.Stop()
	n2.Stop()
	c.W.Stop()
	sameVolumes(t, n2, n1)
	if got := readRange(t, n1.VolumePath(clusterVolume), 0, int64(len(data))); !bytes.Equal(got, data) {
		t.Errorf("node1's store after the rejoin does not hold the acknowledged writes")
	}
}

// checkVolumeData reads len(want) bytes from offset 0 of d's clusterVolume
// export and fails the test, naming the first differing MiB, unless they
// equal want.
func checkVolumeData(t *testing.T, d *daemon, want []byte, where string) {
	t.Helper()
	cl := dialNBD(t, d)
	defer cl.Close()
	got := make([]byte, len(want))
	for off := 0; off < len(want); off += 1 * MiB {
		end := min(off+1*MiB, len(want))
		if err := cl.ReadAt(got[off:end], int64(off)); err != nil {
			t.Fatalf("%s: read at %d: %v", where, off, err)
		}
	}
	if bytes.Equal(got, want) {
		return
	}
	for off := 0; off < len(want); off += 1 * MiB {
		end := min(off+1*MiB, len(want))
		if !bytes.Equal(got[off:end], want[off:end]) {
			zeros := bytes.Count(got[off:end], []byte{0}) == end-off
			t.Fatalf("%s: the MiB at %d differs from what was acknowledged (all zeros: %v)", where, off, zeros)
		}
	}
}

// readRange returns length bytes of the file at path from offset off.
func readRange(t *testing.T, path string, off, length int64) []byte {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b := make([]byte, length)
	if _, err := f.ReadAt(b, off); err != nil {
		t.Fatalf("%s: read %d bytes at %d: %v", path, length, off, err)
	}
	return b
}

// storeStatusJSON is the store part of a volume's status.
type storeStatusJSON struct {
	Identity   string `json:"identity"`
	StoreUUID  string `json:"store_uuid"`
	Generation string `json:"generation"`
	Opened     string `json:"opened"`
	Reason     string `json:"reason"`
	Gone       string `json:"gone"`
}

// storeStatus returns the store status of volume name on d.
func storeStatus(t *testing.T, d *daemon, name string) *storeStatusJSON {
	t.Helper()
	_, raw, err := d.statusQuiet()
	if err != nil {
		t.Fatalf("%s: status: %v\n%s", d.spec.Name, err, raw)
	}
	var st struct {
		Volumes []struct {
			Name  string           `json:"name"`
			Store *storeStatusJSON `json:"store"`
		} `json:"volumes"`
	}
	if err := json.Unmarshal([]byte(raw), &st); err != nil {
		t.Fatal(err)
	}
	for _, v := range st.Volumes {
		if v.Name == name && v.Store != nil {
			return v.Store
		}
	}
	t.Fatalf("%s: no store status for volume %s in\n%s", d.spec.Name, name, raw)
	return nil
}

// TestStandaloneStoreRecovery runs the README's way out for a standalone
// volume whose store is gone: blockrepd refuses to start, naming the path
// and the command; blockrepd -config FILE -forget-volume vol0 drops the
// record; the next start initialises the volume again (here a new blank
// store, since size is set), and serves it.
func TestStandaloneStoreRecovery(t *testing.T) {
	tool(t, "nbdinfo")
	d := startDaemon(t, daemonSpec{Volumes: []volumeSpec{{Name: "vol0", Size: 16 * MiB}}})
	path := d.VolumePath("vol0")
	d.Stop()
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	out := runDaemonExpectFailure(t, d.ConfigPath, d.ControlSocket, 1)
	for _, want := range []string{path, "blockrepd -config " + d.ConfigPath + " -forget-volume vol0"} {
		if !strings.Contains(out, want) {
			t.Errorf("the refusal does not say %q", want)
		}
	}
	must(t, blockrepdBin, "-config", d.ConfigPath, "-forget-volume", "vol0")
	d.Start()
	if st := storeStatus(t, d, "vol0"); st.Opened != "Initialise" {
		t.Errorf("after -forget-volume the store opened %q, want Initialise", st.Opened)
	}
	checkInt(t, "export-size after -forget-volume", nbdinfo(t, d.URI("vol0")).Size, 16*MiB)
}

// TestHABlankStoreFailoverDuringFullSync is the repro's order with the
// primary killed while the blank store's full sync is still running (the
// resync is capped at 2 MiB/s, so it takes about 4 s): the cluster promotes nobody — node2 is
// Inconsistent — and node2's export serves no data rather than zeros.
// node1 comes back as the primary, and the sync completes from it.
func TestHABlankStoreFailoverDuringFullSync(t *testing.T) {
	const size = 8 * MiB
	c := startHA(t, haOptions{Size: size, ResyncRate: "2MiB"})
	n1, n2 := c.N1, c.N2
	data := randomBytes(4*MiB, 2222)
	cl := dialNBD(t, n1)
	if err := cl.WriteAt(data, 0, true); err != nil {
		t.Fatal(err)
	}
	cl.Close()
	c.waitPair(t, n1, n2)

	n2.Stop()
	path := n2.VolumePath(clusterVolume)
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	must(t, "truncate", "-s", strconv.FormatInt(size, 10), path)
	n2.Start()
	waitHA(t, n2, "node2 a full-sync target of node1", func(s *haStatusJSON) bool {
		p := s.repl().peer("node1")
		return s.repl().Disk == "Inconsistent" && p != nil && p.Connection == "SyncTarget"
	})
	start := time.Now()
	n1.Kill9()
	s := waitHA(t, n2, "the cluster to see node1 lost", func(s *haStatusJSON) bool {
		v := s.clusterVolume()
		return v != nil && v.Lost == "node1"
	})
	if r, v := s.repl(), s.clusterVolume(); r.Role == "primary" || v.Primary == "node2" || r.Disk != "Inconsistent" {
		t.Fatalf("node1 lost during node2's full sync: node2 %s %s, cluster primary %q; want node2 an Inconsistent secondary, not promoted", r.Role, r.Disk, v.Primary)
	}
	rc := dialNBD(t, n2)
	buf := make([]byte, 1*MiB)
	if err := rc.ReadAt(buf, 0); err == nil {
		t.Errorf("node2's Inconsistent export served a read (all zeros: %v)", bytes.Count(buf, []byte{0}) == len(buf))
	}
	rc.Close()
	t.Logf("%v after the kill: the cluster saw node1 lost, node2 stays an Inconsistent secondary", time.Since(start).Round(time.Millisecond))

	n1.Start()
	c.waitPair(t, n1, n2)
	t.Logf("%v after the kill: node1 primary again, node2 in sync", time.Since(start).Round(time.Millisecond))
	checkVolumeData(t, n2, data, "node2 after the sync from the returning node1")
	checkVolumeData(t, n1, data, "node1 after its return")
}
