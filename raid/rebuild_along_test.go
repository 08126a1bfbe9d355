package raid

import (
	"context"
	"math/rand/v2"
	"testing"

	"github.com/blockrep/blockrep/block/blocktest"
)

// TestRebuildTogether: members replaced together are rebuilt in one pass
// over the sources. The first Rebuild writes every replacement, so the
// second one reads nothing and only turns its member in sync; the data
// and the redundancy are whole afterwards. Without it, the second pass
// reads every stripe again.
func TestRebuildTogether(t *testing.T) {
	for _, cfg := range []struct {
		name     string
		g        Geometry
		replaced [2]int
	}{
		{"raid6", Geometry{Level: Level6, Members: 5, ChunkSize: 4096, MemberSize: 32 * 4096}, [2]int{1, 3}},
		{"raid1", Geometry{Level: Level1, Members: 3, ChunkSize: 4096, MemberSize: 32 * 4096}, [2]int{0, 2}},
		{"raid10", Geometry{Level: Level10, Members: 6, Copies: 3, ChunkSize: 4096, MemberSize: 32 * 4096}, [2]int{3, 5}},
	} {
		t.Run(cfg.name, func(t *testing.T) {
			a, devs := newTestArray(t, cfg.g)
			model := fillArrayRandom(t, a, rand.New(rand.NewPCG(7, 7)))
			for _, i := range cfg.replaced {
				if err := a.Fail(i); err != nil {
					t.Fatal(err)
				}
			}
			fresh := make(map[int]*faultDev)
			for _, i := range cfg.replaced {
				fresh[i] = newFaultDev(cfg.g.MemberSize)
				if err := a.Replace(i, fresh[i]); err != nil {
					t.Fatal(err)
				}
			}
			reads := func() (n int64) {
				for i, d := range devs {
					if i != cfg.replaced[0] && i != cfg.replaced[1] {
						n += d.Calls(blocktest.OpRead)
					}
				}
				return n
			}
			before := reads()
			first, second := cfg.replaced[0], cfg.replaced[1]
			if err := a.Rebuild(context.Background(), first, RebuildOptions{}); err != nil {
				t.Fatal(err)
			}
			onePass := reads() - before
			if got := a.members[second].rebuilt.Load(); got != cfg.g.MemberSize {
				t.Fatalf("member %d rebuilt to %d along with member %d, want %d", second, got, first, cfg.g.MemberSize)
			}
			if err := a.Rebuild(context.Background(), second, RebuildOptions{}); err != nil {
				t.Fatal(err)
			}
			if more := reads() - before - onePass; more != 0 {
				t.Fatalf("the second rebuild read %d chunks again (the first read %d)", more, onePass)
			}
			checkOptimal(t, a)
			checkModel(t, a, model)
			verifyMembers(t, a)
		})
	}
}
