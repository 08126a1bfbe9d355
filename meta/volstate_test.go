package meta

import (
	"bytes"
	"errors"
	"fmt"
	"testing"
)

func openVolume(t *testing.T) (*DB, string) {
	t.Helper()
	db, path := openTemp(t)
	if _, err := db.EnsureVolume("vol0", "/dev/null", 1<<20); err != nil {
		t.Fatal(err)
	}
	return db, path
}

func TestOpenKeepsSync(t *testing.T) {
	db, _ := openTemp(t)
	defer db.Close()
	if db.db.NoSync {
		t.Fatal("bbolt NoSync is set: UpdateVolume would not be durable on return")
	}
}

func TestVolumeTxUnknownVolume(t *testing.T) {
	db, _ := openTemp(t)
	defer db.Close()
	called := false
	fn := func(*VolumeTx) error { called = true; return nil }
	if err := db.UpdateVolume("nope", fn); !errors.Is(err, ErrNoVolume) {
		t.Errorf("UpdateVolume: err = %v, want ErrNoVolume", err)
	}
	if err := db.ViewVolume("nope", fn); !errors.Is(err, ErrNoVolume) {
		t.Errorf("ViewVolume: err = %v, want ErrNoVolume", err)
	}
	if called {
		t.Error("fn ran for an unknown volume")
	}
}

func TestVolumeTxKeyValueSurvivesReopen(t *testing.T) {
	db, path := openVolume(t)
	err := db.UpdateVolume("vol0", func(tx *VolumeTx) error {
		if got := tx.Get("a"); got != nil {
			t.Errorf("Get on empty state = %q", got)
		}
		if err := tx.Put("a", []byte("one")); err != nil {
			return err
		}
		if err := tx.Put("b", []byte("two")); err != nil {
			return err
		}
		return tx.Delete("b")
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	db, err = Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	err = db.ViewVolume("vol0", func(tx *VolumeTx) error {
		got := tx.Get("a")
		if string(got) != "one" {
			t.Errorf("Get(a) = %q, want one", got)
		}
		got[0] = 'X' // a copy: must not touch the database
		if string(tx.Get("a")) != "one" {
			t.Error("Get returned bbolt's memory, not a copy")
		}
		if tx.Get("b") != nil {
			t.Error("deleted key b still present")
		}
		if err := tx.Put("c", []byte("x")); err == nil {
			t.Error("Put in ViewVolume succeeded")
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	// The volume record itself is untouched by the sub-buckets.
	if _, err := db.Volume("vol0"); err != nil {
		t.Fatal(err)
	}
}

func TestVolumeTxErrorRollsBack(t *testing.T) {
	db, _ := openVolume(t)
	defer db.Close()
	boom := errors.New("boom")
	err := db.UpdateVolume("vol0", func(tx *VolumeTx) error {
		if err := tx.Put("k", []byte("v")); err != nil {
			return err
		}
		if err := tx.PutPage("s", 0, []byte("p")); err != nil {
			return err
		}
		return boom
	})
	if !errors.Is(err, boom) {
		t.Fatalf("err = %v, want boom", err)
	}
	_ = db.ViewVolume("vol0", func(tx *VolumeTx) error {
		if tx.Get("k") != nil || tx.Page("s", 0) != nil {
			t.Error("writes of a failed transaction are visible")
		}
		return nil
	})
}

func TestVolumeTxPages(t *testing.T) {
	db, _ := openVolume(t)
	defer db.Close()
	err := db.UpdateVolume("vol0", func(tx *VolumeTx) error {
		for i := range 3 {
			if err := tx.PutPage("bm.a", i, []byte{byte(i), 0xaa}); err != nil {
				return err
			}
		}
		if err := tx.PutPage("bm.b", 0, []byte("other")); err != nil {
			return err
		}
		if err := tx.PutPage("bm.a", -1, nil); err == nil {
			t.Error("PutPage(-1) succeeded")
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	err = db.UpdateVolume("vol0", func(tx *VolumeTx) error {
		for i := range 3 {
			if got, want := tx.Page("bm.a", i), []byte{byte(i), 0xaa}; !bytes.Equal(got, want) {
				t.Errorf("Page(bm.a, %d) = %x, want %x", i, got, want)
			}
		}
		if tx.Page("bm.a", 3) != nil || tx.Page("missing", 0) != nil {
			t.Error("missing page is not nil")
		}
		return tx.DeletePages("bm.a")
	})
	if err != nil {
		t.Fatal(err)
	}
	_ = db.ViewVolume("vol0", func(tx *VolumeTx) error {
		if tx.Page("bm.a", 0) != nil {
			t.Error("page survived DeletePages")
		}
		if string(tx.Page("bm.b", 0)) != "other" {
			t.Error("DeletePages removed another set")
		}
		return nil
	})
}

func TestVolumeTxRecords(t *testing.T) {
	db, _ := openVolume(t)
	defer db.Close()
	err := db.UpdateVolume("vol0", func(tx *VolumeTx) error {
		for seq := uint64(1); seq <= 5; seq++ {
			if err := tx.AppendRecord("al", seq, fmt.Appendf(nil, "r%d", seq)); err != nil {
				return err
			}
		}
		if err := tx.AppendRecord("al", 5, nil); !errors.Is(err, ErrRecordOrder) {
			t.Errorf("duplicate seq: err = %v, want ErrRecordOrder", err)
		}
		if err := tx.AppendRecord("al", 3, nil); !errors.Is(err, ErrRecordOrder) {
			t.Errorf("older seq: err = %v, want ErrRecordOrder", err)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	collect := func(after uint64) []string {
		var out []string
		err := db.ViewVolume("vol0", func(tx *VolumeTx) error {
			return tx.Records("al", after, func(seq uint64, rec []byte) error {
				out = append(out, fmt.Sprintf("%d:%s", seq, rec))
				return nil
			})
		})
		if err != nil {
			t.Fatal(err)
		}
		return out
	}
	if got := fmt.Sprint(collect(0)); got != "[1:r1 2:r2 3:r3 4:r4 5:r5]" {
		t.Errorf("Records(0) = %s", got)
	}
	if got := fmt.Sprint(collect(3)); got != "[4:r4 5:r5]" {
		t.Errorf("Records(3) = %s", got)
	}
	if got := collect(^uint64(0)); got != nil {
		t.Errorf("Records(max) = %v", got)
	}
	if err := db.UpdateVolume("vol0", func(tx *VolumeTx) error { return tx.TruncateRecords("al", 3) }); err != nil {
		t.Fatal(err)
	}
	if got := fmt.Sprint(collect(0)); got != "[4:r4 5:r5]" {
		t.Errorf("after TruncateRecords(3): %s", got)
	}
	stop := errors.New("stop")
	err = db.ViewVolume("vol0", func(tx *VolumeTx) error {
		return tx.Records("al", 0, func(uint64, []byte) error { return stop })
	})
	if !errors.Is(err, stop) {
		t.Errorf("Records did not return fn's error: %v", err)
	}
	if err := db.UpdateVolume("vol0", func(tx *VolumeTx) error { return tx.TruncateRecords("al", 100) }); err != nil {
		t.Fatal(err)
	}
	if got := collect(0); got != nil {
		t.Errorf("after TruncateRecords(100): %v", got)
	}
}
