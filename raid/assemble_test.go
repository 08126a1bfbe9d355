package raid

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"reflect"
	"slices"
	"strings"
	"testing"
)

var (
	planArray   = UUID{0xa1, 0xa2}
	planForeign = UUID{0xf1, 0xf2}
)

func planGeometry(l Level, members int) Geometry {
	return Geometry{Level: l, Members: members, ChunkSize: 64 * kib, MemberSize: 1 << 30}
}

// planDev returns a candidate holding role of an array of geometry g with the
// given event counter, every slot in sync and the array clean, after mods.
func planDev(path string, u UUID, g Geometry, role int, events uint64, mods ...func(*Superblock)) Found {
	sb := Superblock{
		Version: SuperblockVersion, ArrayUUID: u, Name: "arr", Geometry: g, Role: role,
		MemberUUID: UUID{byte(role + 2), byte(len(path))}, Events: events, State: ArrayClean,
		Members:    slices.Repeat([]SlotStatus{{State: SlotInSync}}, g.Members),
		DataOffset: DefaultDataOffset, BitmapOffset: DefaultBitmapOffset, BitmapSize: DefaultBitmapSize,
	}
	for _, m := range mods {
		m(&sb)
	}
	if err := sb.Validate(); err != nil {
		panic(err)
	}
	return Found{Path: path, SB: &sb}
}

func planDirty(sb *Superblock) { sb.State = ArrayDirty }

func planSlot(i int, s SlotState, off int64) func(*Superblock) {
	return func(sb *Superblock) { sb.Members[i] = SlotStatus{s, off} }
}

// planMembers returns candidates /dev/d0.. for every role of g at events, skipping
// the roles in skip.
func planMembers(g Geometry, events uint64, skip ...int) []Found {
	var f []Found
	for r := 0; r < g.Members; r++ {
		if !slices.Contains(skip, r) {
			f = append(f, planDev(fmt.Sprintf("/dev/d%d", r), planArray, g, r, events))
		}
	}
	return f
}

func TestPlan(t *testing.T) {
	r5, r6, r1, r10 := planGeometry(Level5, 4), planGeometry(Level6, 5), planGeometry(Level1, 3), planGeometry(Level10, 4)
	type want struct {
		status     AssemblyStatus
		states     string // one letter per role: I in sync, R rebuilding, S stale, M missing
		paths      []string
		dirty      bool
		resync     []int
		foreign    []string
		unused     []string
		unreadable []string
		spares     []string
		reasons    []string // substrings of the joined reasons
		err        string   // substring of the error; "" for none
	}
	for _, tc := range []struct {
		name  string
		found []Found
		want  []UUID
		w     want
	}{
		{
			name:  "clean raid5",
			found: planMembers(r5, 10),
			w:     want{status: AssemblyOptimal, states: "IIII", paths: []string{"/dev/d0", "/dev/d1", "/dev/d2", "/dev/d3"}},
		},
		{
			name:  "raid5 one missing",
			found: planMembers(r5, 10, 3),
			w:     want{status: AssemblyDegraded, states: "IIIM", paths: []string{"/dev/d0", "/dev/d1", "/dev/d2", ""}, reasons: []string{"role 3 missing: no device holds role 3"}},
		},
		{
			name: "raid5 one stale",
			found: append(planMembers(r5, 12, 1),
				planDev("/dev/d1", planArray, r5, 1, 9)),
			w: want{status: AssemblyDegraded, states: "ISII", paths: []string{"/dev/d0", "/dev/d1", "/dev/d2", "/dev/d3"}, resync: []int{1},
				reasons: []string{"role 1 stale: /dev/d1 missed updates: event counter 9 behind the array's 12; needs a resync"}},
		},
		{
			name: "foreign member ignored",
			found: append(planMembers(r5, 10),
				planDev("/dev/x", planForeign, r5, 0, 500)),
			w: want{status: AssemblyOptimal, states: "IIII", foreign: []string{"/dev/x"},
				reasons: []string{"/dev/x ignored: member of another array f1f20000-"}},
		},
		{
			name:  "raid5 two missing refused",
			found: planMembers(r5, 10, 1, 3),
			w: want{status: AssemblyRefused, states: "IMIM",
				err: "raid5 array a1a20000-0000-0000-0000-000000000000 cannot be assembled: 2 roles not in sync, raid5 tolerates 1 (role 1 missing, role 3 missing)"},
		},
		{
			name:  "raid5 missing plus stale refused",
			found: append(planMembers(r5, 10, 0, 2), planDev("/dev/d2", planArray, r5, 2, 7)),
			w:     want{status: AssemblyRefused, states: "MISI", resync: []int{2}, err: "(role 0 missing, role 2 stale)"},
		},
		{
			name:  "raid6 two missing degraded",
			found: planMembers(r6, 10, 0, 4),
			w:     want{status: AssemblyDegraded, states: "MIIIM"},
		},
		{
			name:  "raid6 three missing refused",
			found: planMembers(r6, 10, 0, 2, 4),
			w:     want{status: AssemblyRefused, states: "MIMIM", err: "3 roles not in sync, raid6 tolerates 2"},
		},
		{
			name: "duplicate role: fresher wins",
			found: append(planMembers(r5, 10, 0),
				planDev("/dev/old0", planArray, r5, 0, 8), planDev("/dev/new0", planArray, r5, 0, 10)),
			w: want{status: AssemblyOptimal, states: "IIII", paths: []string{"/dev/new0", "/dev/d1", "/dev/d2", "/dev/d3"}, unused: []string{"/dev/old0"},
				reasons: []string{"/dev/old0 not used: duplicate of role 0 (events 8); /dev/new0 (events 10) is fresher"}},
		},
		{
			name: "duplicate role: equal events, first by path",
			found: append(planMembers(r5, 10, 0),
				planDev("/dev/zz", planArray, r5, 0, 10), planDev("/dev/aa", planArray, r5, 0, 10)),
			w: want{status: AssemblyOptimal, states: "IIII", paths: []string{"/dev/aa", "/dev/d1", "/dev/d2", "/dev/d3"}, unused: []string{"/dev/zz"},
				reasons: []string{"is as fresh, first by path"}},
		},
		{
			name: "raid1 only one fresh",
			found: []Found{
				planDev("/dev/d0", planArray, r1, 0, 3), planDev("/dev/d1", planArray, r1, 1, 20, planSlot(0, SlotFaulty, 0), planSlot(2, SlotFaulty, 0)), planDev("/dev/d2", planArray, r1, 2, 3),
			},
			w: want{status: AssemblyDegraded, states: "SIS", resync: []int{0, 2}},
		},
		{
			name:  "raid1 all missing but one",
			found: planMembers(r1, 4, 0, 1),
			w:     want{status: AssemblyDegraded, states: "MMI"},
		},
		{
			name: "dirty raid5",
			found: []Found{
				planDev("/dev/d0", planArray, r5, 0, 11, planDirty), planDev("/dev/d1", planArray, r5, 1, 11, planDirty),
				planDev("/dev/d2", planArray, r5, 2, 11, planDirty), planDev("/dev/d3", planArray, r5, 3, 11, planDirty),
			},
			w: want{status: AssemblyOptimal, states: "IIII", dirty: true, reasons: []string{"not shut down cleanly (dirty): parity", "write hole"}},
		},
		{
			name: "dirty and degraded raid5",
			found: []Found{
				planDev("/dev/d0", planArray, r5, 0, 11, planDirty), planDev("/dev/d1", planArray, r5, 1, 11, planDirty), planDev("/dev/d2", planArray, r5, 2, 11, planDirty),
			},
			w: want{status: AssemblyDegraded, states: "IIIM", dirty: true, reasons: []string{"dirty and degraded"}},
		},
		{
			name:  "dirty raid1: only the freshest counts",
			found: []Found{planDev("/dev/d0", planArray, r1, 0, 5, planDirty), planDev("/dev/d1", planArray, r1, 1, 6), planDev("/dev/d2", planArray, r1, 2, 6)},
			w:     want{status: AssemblyDegraded, states: "SII", dirty: false, resync: []int{0}},
		},
		{
			name:  "raid10 one per group degraded",
			found: planMembers(r10, 10, 0, 3),
			w:     want{status: AssemblyDegraded, states: "MIIM"},
		},
		{
			name:  "raid10 whole group refused",
			found: planMembers(r10, 10, 2, 3),
			w:     want{status: AssemblyRefused, states: "IIMM", err: "no in-sync copy in mirror group 1 (roles 2-3)"},
		},
		{
			name: "rebuilding member resumes",
			found: []Found{
				planDev("/dev/d0", planArray, r5, 0, 10, planSlot(2, SlotRebuilding, 64*kib)), planDev("/dev/d1", planArray, r5, 1, 10, planSlot(2, SlotRebuilding, 64*kib)),
				planDev("/dev/d2", planArray, r5, 2, 10, planSlot(2, SlotRebuilding, 64*kib)), planDev("/dev/d3", planArray, r5, 3, 10, planSlot(2, SlotRebuilding, 64*kib)),
			},
			w: want{status: AssemblyDegraded, states: "IIRI", resync: []int{2}, reasons: []string{"rebuild resumes at member offset 65536"}},
		},
		{
			name: "member recorded faulty with current events",
			found: []Found{
				planDev("/dev/d0", planArray, r5, 0, 10, planSlot(1, SlotFaulty, 0)), planDev("/dev/d1", planArray, r5, 1, 10, planSlot(1, SlotFaulty, 0)),
				planDev("/dev/d2", planArray, r5, 2, 10, planSlot(1, SlotFaulty, 0)), planDev("/dev/d3", planArray, r5, 3, 10, planSlot(1, SlotFaulty, 0)),
			},
			w: want{status: AssemblyDegraded, states: "ISII", resync: []int{1}, reasons: []string{"/dev/d1 is recorded faulty by the array"}},
		},
		{
			name: "spare and unreadable devices",
			found: append(planMembers(r5, 10),
				planDev("/dev/spare", planArray, r5, RoleSpare, 10),
				Found{Path: "/dev/blank"},
				Found{Path: "/dev/broken", Err: errors.New("read /dev/broken: input/output error")}),
			w: want{status: AssemblyOptimal, states: "IIII", spares: []string{"/dev/spare"}, unreadable: []string{"/dev/blank", "/dev/broken"}},
		},
		{
			name: "geometry mismatch not used",
			found: append(planMembers(r5, 10, 3),
				planDev("/dev/d3", planArray, planGeometry(Level5, 5), 3, 9)),
			w: want{status: AssemblyDegraded, states: "IIIM", unused: []string{"/dev/d3"}, reasons: []string{"/dev/d3 not used: geometry"}},
		},
		{
			name:  "foreign majority needs want",
			found: append(planMembers(r5, 10, 2, 3), planDev("/dev/x0", planForeign, r1, 0, 1), planDev("/dev/x1", planForeign, r1, 1, 1)),
			w:     want{status: AssemblyRefused, err: "candidates belong to several arrays equally"},
		},
		{
			name:  "want picks the array",
			found: append(planMembers(r1, 10), planDev("/dev/x0", planForeign, r5, 0, 1), planDev("/dev/x1", planForeign, r5, 1, 1), planDev("/dev/x2", planForeign, r5, 2, 1), planDev("/dev/x3", planForeign, r5, 3, 1)),
			want:  []UUID{planArray},
			w:     want{status: AssemblyOptimal, states: "III", foreign: []string{"/dev/x0", "/dev/x1", "/dev/x2", "/dev/x3"}},
		},
		{
			name:  "wanted array absent",
			found: []Found{planDev("/dev/x0", planForeign, r1, 0, 1)},
			want:  []UUID{planArray},
			w:     want{status: AssemblyRefused, err: "no member of array a1a20000-0000-0000-0000-000000000000 among 1 candidate devices"},
		},
		{
			name:  "no superblocks",
			found: []Found{{Path: "/dev/a"}, {Path: "/dev/b"}},
			w:     want{status: AssemblyRefused, unreadable: []string{"/dev/a", "/dev/b"}, err: "no array superblock on any of 2 candidate devices"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a, err := Plan(tc.found, tc.want...)
			w := tc.w
			if w.err == "" && err != nil {
				t.Fatalf("Plan: %v", err)
			}
			if w.err != "" && (err == nil || !strings.Contains(err.Error(), w.err)) {
				t.Fatalf("Plan error = %v, want %q", err, w.err)
			}
			if a.Status != w.status {
				t.Errorf("Status = %v, want %v (reasons %q)", a.Status, w.status, a.Reasons)
			}
			var states strings.Builder
			var paths []string
			for i, r := range a.Roles {
				if r.Role != i {
					t.Errorf("Roles[%d].Role = %d", i, r.Role)
				}
				states.WriteByte("IRSM"[r.State])
				paths = append(paths, r.Path)
				if (r.State == RoleInSync) != (r.Reason == "") {
					t.Errorf("role %d %v with reason %q", i, r.State, r.Reason)
				}
			}
			if states.String() != w.states {
				t.Errorf("role states %q, want %q (reasons %q)", states.String(), w.states, a.Reasons)
			}
			if w.paths != nil && !slices.Equal(paths, w.paths) {
				t.Errorf("paths %q, want %q", paths, w.paths)
			}
			if a.Dirty != w.dirty {
				t.Errorf("Dirty = %v, want %v", a.Dirty, w.dirty)
			}
			if got := a.Resync(); !slices.Equal(got, w.resync) {
				t.Errorf("Resync = %v, want %v", got, w.resync)
			}
			pathsOf := func(c []Candidate) []string {
				var p []string
				for _, d := range c {
					p = append(p, d.Path)
				}
				return p
			}
			for _, l := range []struct {
				name      string
				got, want []string
			}{
				{"Foreign", pathsOf(a.Foreign), w.foreign},
				{"Unused", pathsOf(a.Unused), w.unused},
				{"Unreadable", pathsOf(a.Unreadable), w.unreadable},
				{"Spares", a.Spares, w.spares},
			} {
				if !slices.Equal(l.got, l.want) {
					t.Errorf("%s = %q, want %q", l.name, l.got, l.want)
				}
			}
			all := strings.Join(a.Reasons, "\n")
			for _, s := range w.reasons {
				if !strings.Contains(all, s) {
					t.Errorf("reasons %q lack %q", a.Reasons, s)
				}
			}
			if a.Status != AssemblyOptimal && len(a.Reasons) == 0 {
				t.Errorf("%v without reasons", a.Status)
			}
			if a.Status == AssemblyRefused && err == nil {
				t.Errorf("refused without an error")
			}
			// The plan does not depend on the order of the candidates.
			r := rand.New(rand.NewPCG(uint64(len(tc.found)), 7))
			for range 5 {
				shuffled := slices.Clone(tc.found)
				r.Shuffle(len(shuffled), func(i, j int) { shuffled[i], shuffled[j] = shuffled[j], shuffled[i] })
				b, err2 := Plan(shuffled, tc.want...)
				if !reflect.DeepEqual(a, b) || fmt.Sprint(err) != fmt.Sprint(err2) {
					t.Fatalf("shuffled candidates change the plan:\n%+v\n%+v", a, b)
				}
			}
		})
	}
}

func TestPlanTooManyWants(t *testing.T) {
	if _, err := Plan(planMembers(planGeometry(Level1, 2), 1), planArray, planForeign); err == nil || !strings.Contains(err.Error(), "at most one array UUID") {
		t.Errorf("Plan with two UUIDs: %v", err)
	}
}

// TestPlanRoundTripsSuperblocks plans from superblocks that went through
// Marshal and UnmarshalSuperblock, as assembly from disk does.
func TestPlanRoundTripsSuperblocks(t *testing.T) {
	var found []Found
	for i, f := range planMembers(planGeometry(Level6, 6), 77, 5) {
		b := f.SB.Marshal()
		if i == 1 {
			b[100] ^= 0x10 // damaged: unreadable, so role 1 is missing
		}
		sb, err := UnmarshalSuperblock(b)
		if err != nil {
			found = append(found, Found{Path: f.Path, Err: err})
			continue
		}
		found = append(found, Found{Path: f.Path, SB: &sb})
	}
	a, err := Plan(found)
	if err != nil || a.Status != AssemblyDegraded || a.Roles[1].State != RoleMissing || a.Roles[5].State != RoleMissing {
		t.Fatalf("Plan = %v, %+v", err, a)
	}
	if len(a.Unreadable) != 1 || !strings.Contains(a.Unreadable[0].Reason, "checksum mismatch") {
		t.Errorf("Unreadable = %+v", a.Unreadable)
	}
}
