package e2e

import (
	"bytes"
	"encoding/json"
	"os"
	"strconv"
	"strings"
	"testing"
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
