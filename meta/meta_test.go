package meta

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	bolt "go.etcd.io/bbolt"
)

func openTemp(t *testing.T) (*DB, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), FileName)
	db, err := Open(path)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	return db, path
}

func TestNodeIDStableAndFileMode(t *testing.T) {
	db, path := openTemp(t)
	id := db.NodeID()
	if _, err := uuid.Parse(id); err != nil {
		t.Fatalf("node id %q: %v", id, err)
	}
	if db.Path() != path {
		t.Errorf("Path() = %q, want %q", db.Path(), path)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("mode %v, want 0600", fi.Mode().Perm())
	}
	db, err = Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if db.NodeID() != id {
		t.Errorf("node id changed across reopen: %q -> %q", id, db.NodeID())
	}
}

func TestEnsureVolume(t *testing.T) {
	db, path := openTemp(t)
	before := time.Now().Add(-time.Second)
	a, err := db.EnsureVolume("a", "/srv/a.img", 1<<30)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := uuid.Parse(a.UUID); err != nil {
		t.Errorf("uuid %q: %v", a.UUID, err)
	}
	if a.Name != "a" || a.Path != "/srv/a.img" || a.Size != 1<<30 || a.Created.Before(before) || a.Created.After(time.Now()) {
		t.Errorf("record %+v", a)
	}
	b, err := db.EnsureVolume("b", "/srv/b.img", 4096)
	if err != nil {
		t.Fatal(err)
	}
	if b.UUID == a.UUID {
		t.Error("two volumes share a UUID")
	}

	// Reopen: the same records come back.
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	db, err = Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	again, err := db.EnsureVolume("a", "/srv/a.img", 1<<30)
	if err != nil {
		t.Fatal(err)
	}
	if again != a {
		t.Errorf("EnsureVolume after reopen = %+v, want %+v", again, a)
	}

	// A moved backing file keeps the identity and records the new path.
	moved, err := db.EnsureVolume("a", "/srv/moved.img", 1<<30)
	if err != nil {
		t.Fatal(err)
	}
	if moved.UUID != a.UUID || moved.Path != "/srv/moved.img" {
		t.Errorf("after move %+v", moved)
	}
	if got, err := db.Volume("a"); err != nil || got.Path != "/srv/moved.img" {
		t.Errorf("Volume(a) = %+v, %v", got, err)
	}

	// A changed size is refused, naming both sizes.
	_, err = db.EnsureVolume("a", "/srv/moved.img", 2<<30)
	if !errors.Is(err, ErrSizeMismatch) {
		t.Fatalf("size change: %v, want ErrSizeMismatch", err)
	}
	for _, want := range []string{`"a"`, "1073741824", "2147483648"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not name %s", err, want)
		}
	}

	vols, err := db.Volumes()
	if err != nil {
		t.Fatal(err)
	}
	if len(vols) != 2 || vols[0].Name != "a" || vols[1] != b || vols[0].Path != "/srv/moved.img" {
		t.Errorf("Volumes() = %+v", vols)
	}
	if _, err := db.Volume("nope"); !errors.Is(err, ErrNoVolume) {
		t.Errorf("Volume(nope): %v", err)
	}
}

func TestEnsureVolumeBadInput(t *testing.T) {
	db, _ := openTemp(t)
	defer db.Close()
	tests := []struct {
		name string
		size int64
		want string
	}{
		{"", 1, "empty volume name"},
		{"v", -1, "negative size -1"},
	}
	for _, tt := range tests {
		if _, err := db.EnsureVolume(tt.name, "/p", tt.size); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("EnsureVolume(%q, %d) = %v, want %q", tt.name, tt.size, err, tt.want)
		}
	}
}

func TestSecondOpenFailsFast(t *testing.T) {
	db, path := openTemp(t)
	defer db.Close()
	start := time.Now()
	db2, err := Open(path)
	if err == nil {
		db2.Close()
		t.Fatal("second Open succeeded")
	}
	if el := time.Since(start); el > 5*time.Second {
		t.Errorf("second Open took %v", el)
	}
	if !errors.Is(err, ErrLocked) || !strings.Contains(err.Error(), "another blockrepd holds "+path) {
		t.Errorf("second Open: %v", err)
	}
}

func TestNewerFormatRefused(t *testing.T) {
	db, path := openTemp(t)
	db.Close()
	bdb, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	err = bdb.Update(func(tx *bolt.Tx) error { return tx.Bucket(bucketNode).Put(keyFormat, []byte("2")) })
	bdb.Close()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Open(path); err == nil || !strings.Contains(err.Error(), "format 2 is newer") {
		t.Errorf("Open of a newer format: %v", err)
	}
}

func TestOpenGarbage(t *testing.T) {
	path := filepath.Join(t.TempDir(), FileName)
	if err := os.WriteFile(path, []byte(strings.Repeat("not a bolt file ", 1024)), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(path); err == nil || !strings.Contains(err.Error(), path) {
		t.Errorf("Open garbage: %v", err)
	}
}

func TestDeleteVolume(t *testing.T) {
	db, err := Open(filepath.Join(t.TempDir(), FileName))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	first, err := db.EnsureVolume("vol0", "/srv/vol0.img", 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	if err := db.UpdateVolume("vol0", func(tx *VolumeTx) error { return tx.Put("k", []byte("v")) }); err != nil {
		t.Fatal(err)
	}
	if _, err := db.EnsureVolume("vol1", "/srv/vol1.img", 1<<20); err != nil {
		t.Fatal(err)
	}
	if err := db.DeleteVolume("vol0"); err != nil {
		t.Fatal(err)
	}
	if _, err := db.Volume("vol0"); !errors.Is(err, ErrNoVolume) {
		t.Fatalf("Volume after DeleteVolume: %v", err)
	}
	if _, err := db.Volume("vol1"); err != nil {
		t.Fatalf("the other volume: %v", err)
	}
	if err := db.DeleteVolume("vol0"); !errors.Is(err, ErrNoVolume) {
		t.Fatalf("second DeleteVolume: %v", err)
	}
	// The next EnsureVolume is a first: a new UUID, any size, no state.
	again, err := db.EnsureVolume("vol0", "/srv/vol0.img", 2<<20)
	if err != nil || again.UUID == first.UUID || again.Size != 2<<20 {
		t.Fatalf("EnsureVolume after DeleteVolume: %+v, %v (first %+v)", again, err, first)
	}
	_ = db.ViewVolume("vol0", func(tx *VolumeTx) error {
		if v := tx.Get("k"); v != nil {
			t.Errorf("state survived DeleteVolume: %q", v)
		}
		return nil
	})
}
