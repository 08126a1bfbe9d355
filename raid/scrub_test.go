package raid

import (
	"bytes"
	"context"
	"math/rand/v2"
	"slices"
	"testing"
)

// TestScrubRAID6LocatesBadChunk corrupts one chunk of a RAID 6 stripe,
// data or parity, on every member in turn: the check names that member
// alone, and the repair restores the written data (recomputing the parity
// from the data, md's repair, would make a corrupted data chunk permanent).
func TestScrubRAID6LocatesBadChunk(t *testing.T) {
	g := Geometry{Level: Level6, Members: 5, ChunkSize: 4096, MemberSize: 8 * 4096}
	const s = 2
	for victim := range g.Members {
		a, devs := newTestArray(t, g)
		model := fillArrayRandom(t, a, rand.New(rand.NewPCG(3, uint64(victim))))
		info := g.Stripe(s)
		junk := bytes.Repeat([]byte{0x5A}, 300)
		if err := devs[victim].Mem.WriteAt(junk, info.Offset+1000, false); err != nil {
			t.Fatal(err)
		}
		res, err := a.Scrub(context.Background(), ScrubOptions{})
		if err != nil || res.Mismatches != 1 || res.Repaired != 0 || len(res.First) != 1 {
			t.Fatalf("member %d: check: %+v, %v", victim, res, err)
		}
		if got := res.First[0].Members; !slices.Equal(got, []int{victim}) {
			t.Fatalf("member %d corrupted (P=%d Q=%d): check blames %v", victim, info.P, info.Q, got)
		}
		res, err = a.Scrub(context.Background(), ScrubOptions{Repair: true})
		if err != nil || res.Mismatches != 1 || res.Repaired != 1 {
			t.Fatalf("member %d: repair: %+v, %v", victim, res, err)
		}
		if bytes.Equal(devs[victim].raw(info.Offset+1000, 300), junk) {
			t.Fatalf("member %d: the repair left the corrupted bytes", victim)
		}
		checkModel(t, a, model)
		verifyMembers(t, a)
	}
}

// TestScrubRAID6TwoBadChunks: with two wrong chunks in a stripe no single
// chunk can be blamed; the check names the parity members and a repair
// recomputes the parity, as md does.
func TestScrubRAID6TwoBadChunks(t *testing.T) {
	g := Geometry{Level: Level6, Members: 5, ChunkSize: 4096, MemberSize: 8 * 4096}
	a, devs := newTestArray(t, g)
	fillArrayRandom(t, a, rand.New(rand.NewPCG(5, 6)))
	info := g.Stripe(1)
	d0, d1 := g.dataMember(1, 0), g.dataMember(1, 1)
	for _, m := range []int{d0, d1} {
		if err := devs[m].Mem.WriteAt([]byte{1, 2, 3}, info.Offset+7, false); err != nil {
			t.Fatal(err)
		}
	}
	res, err := a.Scrub(context.Background(), ScrubOptions{Repair: true})
	if err != nil || res.Mismatches != 1 || res.Repaired != 1 {
		t.Fatalf("repair: %+v, %v", res, err)
	}
	if got, want := res.First[0].Members, []int{info.P, info.Q}; !slices.Equal(got, want) {
		t.Fatalf("two wrong data chunks: blamed %v, want the parity members %v", got, want)
	}
	verifyMembers(t, a)
}

// TestScrubDegraded: a RAID 6 missing one member still checks every
// stripe with the redundancy left and reports a wrong chunk without
// rewriting anything; a degraded RAID 5 has nothing to check with.
func TestScrubDegraded(t *testing.T) {
	g := Geometry{Level: Level6, Members: 5, ChunkSize: 4096, MemberSize: 8 * 4096}
	a, devs := newTestArray(t, g)
	fillArrayRandom(t, a, rand.New(rand.NewPCG(9, 10)))
	if err := a.Fail(4); err != nil {
		t.Fatal(err)
	}
	res, err := a.Scrub(context.Background(), ScrubOptions{})
	if err != nil || res.Stripes != g.Stripes() || res.Skipped != 0 || res.Mismatches != 0 {
		t.Fatalf("degraded RAID 6, clean: %+v, %v", res, err)
	}
	const s = 5
	victim := g.dataMember(s, 0)
	if victim == 4 {
		victim = g.dataMember(s, 1)
	}
	junk := []byte{0xAB, 0xCD}
	if err := devs[victim].Mem.WriteAt(junk, g.Stripe(s).Offset+99, false); err != nil {
		t.Fatal(err)
	}
	res, err = a.Scrub(context.Background(), ScrubOptions{Repair: true})
	if err != nil || res.Mismatches != 1 || res.Repaired != 0 || len(res.First) != 1 || res.First[0].Stripe != s {
		t.Fatalf("degraded RAID 6, one wrong chunk: %+v, %v", res, err)
	}
	if got := res.First[0].Members; slices.Contains(got, 4) || !slices.Contains(got, victim) {
		t.Fatalf("degraded mismatch names %v: want the in-sync members, %d among them, not the failed 4", got, victim)
	}
	if !bytes.Equal(devs[victim].raw(g.Stripe(s).Offset+99, 2), junk) {
		t.Fatal("a degraded mismatch was rewritten though the wrong chunk is unknown")
	}

	g5 := Geometry{Level: Level5, Members: 3, ChunkSize: 4096, MemberSize: 8 * 4096}
	a5, _ := newTestArray(t, g5)
	fillArrayRandom(t, a5, rand.New(rand.NewPCG(11, 12)))
	if err := a5.Fail(0); err != nil {
		t.Fatal(err)
	}
	res, err = a5.Scrub(context.Background(), ScrubOptions{})
	if err != nil || res.Stripes != 0 || res.Skipped != g5.Stripes() {
		t.Fatalf("degraded RAID 5: %+v, %v, want every stripe skipped", res, err)
	}
}
