package node

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/blockrep/blockrep/config"
	"github.com/blockrep/blockrep/internal/nbdclient"
	"github.com/blockrep/blockrep/storeid"
)

// copyFile copies src to dst (a whole store, identity block included).
func copyFile(t *testing.T, src, dst string) {
	t.Helper()
	b, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(dst, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

// runOnce starts a node on cfg and stops it; it returns the status of its
// first volume's store.
func runOnce(t *testing.T, cfg *config.Config) string {
	t.Helper()
	n, stop := startNode(t, cfg)
	st, err := n.Status(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	return st.Volumes[0].Store.Opened
}

// TestStoreIdentityStandalone: a standalone volume whose store is not the
// one meta.db records — missing, blank, another volume's, a stale copy of
// itself — is refused with an error naming the store and the way out, and
// nothing is written to it; the store that was recorded is accepted again;
// -forget-volume (ForgetVolume) takes a replaced store as the volume's.
func TestStoreIdentityStandalone(t *testing.T) {
	dir := t.TempDir()
	cfg := testConfig(t, dir, "")
	path := cfg.Volumes[0].Path
	if got := runOnce(t, cfg); got != "Initialise" {
		t.Fatalf("first start: store %s, want Initialise", got)
	}
	if fi, err := os.Stat(path); err != nil || fi.Size() != volSize+storeid.BlockSize {
		t.Fatalf("the created store: %v, %v; want %d bytes (data and identity)", fi, err, volSize+storeid.BlockSize)
	}
	saved := filepath.Join(dir, "saved.img")
	copyFile(t, path, saved)
	if got := runOnce(t, cfg); got != "Accept" {
		t.Fatalf("second start: store %s, want Accept", got)
	}

	// A store of another node's volume of the same name.
	other := testConfig(t, t.TempDir(), "")
	runOnce(t, other)

	for _, tc := range []struct {
		name, want string
		setup      func(t *testing.T)
	}{
		{"missing", "is missing", func(t *testing.T) {
			if err := os.Remove(path); err != nil {
				t.Fatal(err)
			}
		}},
		{"blank", "carries no store identity", func(t *testing.T) {
			if err := os.Truncate(path, 0); err != nil {
				t.Fatal(err)
			}
			if err := os.Truncate(path, volSize+storeid.BlockSize); err != nil {
				t.Fatal(err)
			}
		}},
		{"foreign", "holds another volume", func(t *testing.T) { copyFile(t, other.Volumes[0].Path, path) }},
		// The store as it was before the second start: its generation is
		// older than meta.db's.
		{"stale", "stale copy", func(t *testing.T) { copyFile(t, saved, path) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			good := filepath.Join(dir, "good.img")
			copyFile(t, path, good)
			// Put back on a failure too, so the next case starts from the
			// recorded store (after an open it is at a newer generation
			// than good: only before that).
			restored := false
			defer func() {
				if !restored {
					copyFile(t, good, path)
				}
			}()
			tc.setup(t)
			before, _ := os.ReadFile(path)
			_, err := New(cfg, testLogger(t))
			if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), "-forget-volume vol0") {
				t.Fatalf("New: %v; want a refusal saying %q, naming %s and the way out", err, tc.want, path)
			}
			if after, _ := os.ReadFile(path); !bytes.Equal(before, after) {
				t.Errorf("the refused store was written to")
			}
			// The recorded store is accepted again.
			copyFile(t, good, path)
			restored = true
			if got := runOnce(t, cfg); got != "Accept" {
				t.Errorf("the recorded store put back: %s, want Accept", got)
			}
		})
	}

	// The way out: forget the volume, and the store it has now is its.
	if err := os.Truncate(path, 0); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(path, volSize); err != nil {
		t.Fatal(err)
	}
	if _, err := New(cfg, testLogger(t)); err == nil {
		t.Fatal("New on a blank store succeeded")
	}
	if err := ForgetVolume(cfg, "vol0", testLogger(t)); err != nil {
		t.Fatal(err)
	}
	if got := runOnce(t, cfg); got != "Initialise" {
		t.Fatalf("after ForgetVolume: %s, want Initialise", got)
	}
}

// TestStoreIdentityReplicatedInconsistent: a replicated volume whose store
// was replaced by a blank one (the way out for a replaced disk: truncate -s
// SIZE PATH) comes up Inconsistent with no generation: a full-sync target,
// never primary, and it stays so across a restart until a resync.
func TestStoreIdentityReplicatedInconsistent(t *testing.T) {
	dir := t.TempDir()
	secret := filepath.Join(dir, "secret")
	if err := os.WriteFile(secret, []byte("0123456789abcdef0123456789abcdef\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	addrs := freeAddrs(t, 2)
	cfg := testConfig(t, dir, `role = "primary"

[replication]
cluster = "t"
secret_file = "`+secret+`"
listen = "`+addrs[0]+`"
continue_alone = true

[[peer]]
name = "node2"
address = "`+addrs[1]+`"
`)
	path := cfg.Volumes[0].Path
	n, stop := startNode(t, cfg)
	c, err := nbdclient.Dial(context.Background(), n.NBDAddrs()[0].String(), "vol0")
	if err != nil {
		t.Fatal(err)
	}
	if err := c.WriteAt(bytes.Repeat([]byte{7}, 64<<10), 0, true); err != nil {
		t.Fatal(err)
	}
	c.Close()
	st, _ := n.Status(context.Background())
	if r := st.Volumes[0].Replication; r.Role != "primary" || r.Disk != "UpToDate" {
		t.Fatalf("first start: %s %s, want primary UpToDate", r.Role, r.Disk)
	}
	if err := stop(); err != nil {
		t.Fatal(err)
	}

	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	if _, err := New(cfg, testLogger(t)); err == nil || !strings.Contains(err.Error(), "truncate -s 1048576 "+path) {
		t.Fatalf("New with the store missing: %v; want the way out for a replaced disk", err)
	}
	if err := os.WriteFile(path, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(path, volSize); err != nil {
		t.Fatal(err)
	}
	for i, want := range []string{"Inconsistent", "Accept"} {
		n, stop := startNode(t, cfg)
		st, err := n.Status(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		v := st.Volumes[0]
		if v.Store.Opened != want || v.Replication.Disk != "Inconsistent" || v.Replication.Role != "secondary" {
			t.Errorf("start %d on the blank store: store %s, replica %s %s; want store %s, an Inconsistent secondary (role primary refused)",
				i+1, v.Store.Opened, v.Replication.Role, v.Replication.Disk, want)
		}
		if err := n.SetRole(context.Background(), "vol0", "primary", false); err == nil {
			t.Errorf("start %d: the Inconsistent replica was made primary", i+1)
		}
		if err := stop(); err != nil {
			t.Fatal(err)
		}
	}
	if fi, err := os.Stat(path); err != nil || fi.Size() != volSize+storeid.BlockSize {
		t.Errorf("the blank store did not grow to hold its identity: %v, %v", fi, err)
	}

	// A wiped store that still has room for the identity (a new disk of
	// the right size) is Inconsistent too.
	if err := os.Truncate(path, 0); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(path, volSize+storeid.BlockSize); err != nil {
		t.Fatal(err)
	}
	n, stop = startNode(t, cfg)
	if st, _ := n.Status(context.Background()); st.Volumes[0].Store.Opened != "Inconsistent" || st.Volumes[0].Replication.Disk != "Inconsistent" {
		t.Errorf("a wiped store: store %s, replica %s; want Inconsistent, Inconsistent", st.Volumes[0].Store.Opened, st.Volumes[0].Replication.Disk)
	}
	if err := stop(); err != nil {
		t.Fatal(err)
	}
}

// TestStoreGoneWhileServing: a store whose file is deleted, or replaced by
// another file, while the node serves it is detected by the periodic link
// check: every request fails with EIO from then on, and status says so.
func TestStoreGoneWhileServing(t *testing.T) {
	for _, how := range []string{"deleted", "replaced"} {
		t.Run(how, func(t *testing.T) {
			dir := t.TempDir()
			cfg := testConfig(t, dir, "")
			path := cfg.Volumes[0].Path
			n, stop := startNode(t, cfg)
			defer stop()
			c, err := nbdclient.Dial(context.Background(), n.NBDAddrs()[0].String(), "vol0")
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			data := bytes.Repeat([]byte{9}, 4096)
			if err := c.WriteAt(data, 0, true); err != nil {
				t.Fatal(err)
			}
			switch how {
			case "deleted":
				err = os.Remove(path)
			case "replaced":
				other := filepath.Join(dir, "other.img")
				if err := os.WriteFile(other, make([]byte, volSize+storeid.BlockSize), 0o600); err != nil {
					t.Fatal(err)
				}
				err = os.Rename(other, path)
			}
			if err != nil {
				t.Fatal(err)
			}
			deadline := time.Now().Add(30 * time.Second)
			var gone string
			for gone == "" {
				if time.Now().After(deadline) {
					t.Fatal("the store was not found gone within 30s")
				}
				time.Sleep(50 * time.Millisecond)
				st, err := n.Status(context.Background())
				if err != nil {
					t.Fatal(err)
				}
				gone = st.Volumes[0].Store.Gone
			}
			t.Logf("status: store gone: %s", gone)
			if err := c.WriteAt(data, 4096, false); !errors.Is(err, nbdclient.Errno(syscall.EIO)) {
				t.Errorf("a write after the store was %s: %v, want EIO", how, err)
			}
			if err := c.ReadAt(make([]byte, 4096), 0); !errors.Is(err, nbdclient.Errno(syscall.EIO)) {
				t.Errorf("a read after the store was %s: %v, want EIO", how, err)
			}
			if err := c.Flush(); err == nil {
				t.Errorf("a flush after the store was %s succeeded", how)
			}
		})
	}
}

// readStoreTrailer reads the identity block of a file store of volSize.
func readStoreTrailer(t *testing.T, path string) storeid.Trailer {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b := make([]byte, storeid.BlockSize)
	if _, err := f.ReadAt(b, volSize); err != nil {
		t.Fatal(err)
	}
	tr, found, err := storeid.Parse(b)
	if found != storeid.Valid {
		t.Fatalf("%s: identity block %v: %v", path, found, err)
	}
	return tr
}

// TestStoreIdentityGenerations: every writable open writes a new
// generation whose Prev is the one meta.db recorded, keeping the store
// UUID; a crash between writing the trailer and recording it in meta.db
// (simulated: a trailer one generation ahead) is accepted, and the next
// generation again follows what meta.db recorded.
func TestStoreIdentityGenerations(t *testing.T) {
	cfg := testConfig(t, t.TempDir(), "")
	path := cfg.Volumes[0].Path
	runOnce(t, cfg)
	t1 := readStoreTrailer(t, path)
	if t1.Prev != (uuid.UUID{}) || t1.Name != "vol0" || t1.Size != volSize {
		t.Fatalf("first identity %+v", t1)
	}
	if got := runOnce(t, cfg); got != "Accept" {
		t.Fatalf("second start: %s", got)
	}
	t2 := readStoreTrailer(t, path)
	if t2.Store != t1.Store || t2.Volume != t1.Volume || t2.Prev != t1.Gen || t2.Gen == t1.Gen {
		t.Fatalf("second identity %+v does not follow the first %+v", t2, t1)
	}

	// The crash: the trailer of a third open, never recorded.
	t3 := t2
	t3.Gen, t3.Prev = uuid.New(), t2.Gen
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt(t3.Marshal(), volSize); err != nil {
		t.Fatal(err)
	}
	f.Close()
	if got := runOnce(t, cfg); got != "Accept" {
		t.Fatalf("after a crash between the trailer and meta.db: %s, want Accept", got)
	}
	if t4 := readStoreTrailer(t, path); t4.Prev != t2.Gen || t4.Store != t1.Store {
		t.Fatalf("the identity after the crash %+v: Prev %s, want what meta.db recorded (%s)", t4, t4.Prev, t2.Gen)
	}
	if got := runOnce(t, cfg); got != "Accept" {
		t.Fatalf("the start after: %s, want Accept", got)
	}
}

// TestRAIDMemberGoneWhileServing: a member file of a RAID volume deleted
// while the node serves it is found by the same periodic check and failed:
// the array goes on degraded and every byte still reads back.
func TestRAIDMemberGoneWhileServing(t *testing.T) {
	cfg := raidConfig(t, t.TempDir())
	n, stop := startNode(t, cfg)
	defer stop()
	c, err := nbdclient.Dial(context.Background(), n.NBDAddrs()[0].String(), "vol0")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	data := bytes.Repeat([]byte("member gone "), 1<<14)[:1<<17]
	if err := c.WriteAt(data, 0, true); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(cfg.Volumes[0].RAID.Members[1]); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		st, err := n.Status(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if rs := st.Volumes[0].RAID; rs.Members[1].State == "faulty" && rs.Health == "degraded" {
			t.Logf("member 1: %s (%s); array %s", rs.Members[1].State, rs.Members[1].Error, rs.Health)
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the deleted member was not failed within 30s: %+v", st.Volumes[0].RAID)
		}
		time.Sleep(50 * time.Millisecond)
	}
	got := make([]byte, len(data))
	if err := c.ReadAt(got, 0); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("read from the degraded array: %v (equal %v)", err, bytes.Equal(got, data))
	}
}

// TestRAIDStoreBlanked: every member of a RAID volume blanked (all disks
// replaced): a standalone volume is refused, and no array is created on
// the blank members; a replicated one gets a new array that comes up
// Inconsistent, for a full sync.
func TestRAIDStoreBlanked(t *testing.T) {
	blank := func(t *testing.T, cfg *config.Config) {
		t.Helper()
		for _, m := range cfg.Volumes[0].RAID.Members {
			if err := os.Truncate(m, 0); err != nil {
				t.Fatal(err)
			}
			if err := os.Truncate(m, 5<<20); err != nil {
				t.Fatal(err)
			}
		}
	}
	t.Run("standalone", func(t *testing.T) {
		cfg := raidConfig(t, t.TempDir())
		runOnce(t, cfg)
		blank(t, cfg)
		_, err := New(cfg, testLogger(t))
		if err == nil || !strings.Contains(err.Error(), "holds an array superblock") || !strings.Contains(err.Error(), "-forget-volume vol0") {
			t.Fatalf("New on blank members: %v; want a refusal with the way out", err)
		}
		if holdsSuperblock(cfg.Volumes[0].RAID.Members[0]) {
			t.Errorf("the refused start created an array on the blank members")
		}
	})
	t.Run("replicated", func(t *testing.T) {
		dir := t.TempDir()
		secret := filepath.Join(dir, "secret")
		if err := os.WriteFile(secret, []byte("0123456789abcdef0123456789abcdef\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		addrs := freeAddrs(t, 2)
		cfg := raidConfigWith(t, dir, `raid_rebuild_rate = 0
role = "primary"

[replication]
cluster = "t"
secret_file = "`+secret+`"
listen = "`+addrs[0]+`"
continue_alone = true

[[peer]]
name = "node2"
address = "`+addrs[1]+`"`)
		n, stop := startNode(t, cfg)
		st, _ := n.Status(context.Background())
		if r := st.Volumes[0].Replication; r.Disk != "UpToDate" {
			t.Fatalf("first start: %s", r.Disk)
		}
		if err := stop(); err != nil {
			t.Fatal(err)
		}
		blank(t, cfg)
		n, stop = startNode(t, cfg)
		st, _ = n.Status(context.Background())
		v := st.Volumes[0]
		if v.Store.Opened != "Inconsistent" || v.Replication.Disk != "Inconsistent" || v.Replication.Role != "secondary" || !v.RAID.Recovery.Created {
			t.Errorf("on blank members: store %s, replica %s %s, array created %v; want a new array, Inconsistent secondary",
				v.Store.Opened, v.Replication.Role, v.Replication.Disk, v.RAID.Recovery.Created)
		}
		if err := stop(); err != nil {
			t.Fatal(err)
		}
	})
}
