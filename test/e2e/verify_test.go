package e2e

import (
	"os"
	"testing"
	"time"
)

// corruptBlock flips every bit of the first 64 bytes of the 4 KiB block at
// off in the file at path.
func corruptBlock(t *testing.T, path string, off int64) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b := make([]byte, 64)
	if _, err := f.ReadAt(b, off); err != nil {
		t.Fatal(err)
	}
	for i := range b {
		b[i] ^= 0xff
	}
	if _, err := f.WriteAt(b, off); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
}

// progressDone reports whether a resync or verify has finished since.
func progressDone(p *progressJSON, kind string, since time.Time) bool {
	return p != nil && p.Kind == kind && !p.Started.Before(since) && !p.Finished.IsZero()
}

// TestOnlineVerify corrupts one 4 KiB block of a secondary's backing file
// behind the daemon's back: an online verify on the primary finds exactly
// that block, and a resync repairs it. A second corrupted block is found
// and repaired by a checksum resync, which sends little more than the
// block.
func TestOnlineVerify(t *testing.T) {
	const size = 32 * MiB
	c := startCluster(t, clusterSpec{Nodes: 2, Size: size, Primary: 0})
	n1, n2 := c.Nodes[0], c.Nodes[1]
	waitInSync(t, n1, "node2")
	writeRegion(t, n1, 0, 8*MiB, 80)
	waitInSync(t, n1, "node2")

	// Corrupt a block while node2 is down, so that the daemon does not
	// know.
	restartCorrupted := func(off int64) {
		t.Helper()
		n2.Stop()
		corruptBlock(t, n2.VolumePath(clusterVolume), off)
		n2.Start()
		waitInSync(t, n1, "node2")
	}
	restartCorrupted(3*MiB + 5*4096)
	if volumeHash(t, n1) == volumeHash(t, n2) {
		t.Fatal("the corruption did not change node2's file")
	}

	start := time.Now()
	n1.Blockctl(t, "verify")
	p := waitPeer(t, n1, "node2", "verify finished", func(p *peerStatusJSON) bool {
		return progressDone(p.Verify, "verify", start.Add(-time.Second)) && p.Connection == "Connected"
	})
	t.Logf("verify: %+v; out of sync now %d bytes", *p.Verify, p.OutOfSyncBytes)
	if p.Verify.Error != "" || p.Verify.DoneBytes != size {
		t.Errorf("verify ended with error %q after %d of %d bytes", p.Verify.Error, p.Verify.DoneBytes, size)
	}
	if p.Verify.OutOfSyncBytes != 4096 || p.OutOfSyncBytes != 4096 {
		t.Errorf("verify found %d bytes out of sync (peer shows %d), want exactly the one 4096-byte block", p.Verify.OutOfSyncBytes, p.OutOfSyncBytes)
	}
	n1.Blockctl(t, "resync")
	waitInSync(t, n1, "node2")
	volumesEqual(t, n1.VolumePath(clusterVolume), n2.VolumePath(clusterVolume))

	// A checksum resync finds and repairs another corrupted block.
	restartCorrupted(6*MiB + 2*4096)
	sent0 := repl(t, n1).peer("node2").ResyncBytesSent
	start = time.Now()
	n1.Blockctl(t, "resync", "--checksum")
	p = waitPeer(t, n1, "node2", "checksum resync finished, in sync", func(p *peerStatusJSON) bool {
		return progressDone(p.Resync, "checksum", start.Add(-time.Second)) && inSync(p)
	})
	sent := p.ResyncBytesSent - sent0
	t.Logf("checksum resync: %+v; resync bytes sent %d", *p.Resync, sent)
	if p.Resync.Error != "" {
		t.Errorf("checksum resync ended with error %q", p.Resync.Error)
	}
	if p.Resync.OutOfSyncBytes != 4096 {
		t.Errorf("checksum resync found %d bytes differing, want 4096", p.Resync.OutOfSyncBytes)
	}
	if sent < 4096 || sent > size/64 {
		t.Errorf("checksum resync sent %d bytes of resync data for one differing block of a %d-byte volume", sent, int64(size))
	}
	volumesEqual(t, n1.VolumePath(clusterVolume), n2.VolumePath(clusterVolume))
}

// TestVerifyThenReconnect marks a block out of sync with an online verify
// and then, instead of an operator's resync, lets the link go down and come
// back (the secondary restarts). The pair is in the same generation, and
// the primary holds bits for the peer: the reconnect must copy that block
// (the primary starts a bitmap resync on its own after such a connect) and
// end in sync.
func TestVerifyThenReconnect(t *testing.T) {
	c := startCluster(t, clusterSpec{Nodes: 2, Size: 16 * MiB, Primary: 0})
	n1, n2 := c.Nodes[0], c.Nodes[1]
	waitInSync(t, n1, "node2")
	writeRegion(t, n1, 0, 4*MiB, 90)
	waitInSync(t, n1, "node2")
	n2.Stop()
	corruptBlock(t, n2.VolumePath(clusterVolume), 1*MiB)
	n2.Start()
	waitInSync(t, n1, "node2")
	start := time.Now()
	n1.Blockctl(t, "verify")
	p := waitPeer(t, n1, "node2", "verify finished", func(p *peerStatusJSON) bool {
		return progressDone(p.Verify, "verify", start.Add(-time.Second)) && p.Connection == "Connected"
	})
	if p.OutOfSyncBytes != 4096 {
		t.Fatalf("verify left %d bytes out of sync, want 4096", p.OutOfSyncBytes)
	}

	n2.Stop()
	n2.Start()
	waitInSync(t, n1, "node2")
	volumesEqual(t, n1.VolumePath(clusterVolume), n2.VolumePath(clusterVolume))
}
