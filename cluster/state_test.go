package cluster

import (
	"bytes"
	"errors"
	"reflect"
	"strings"
	"testing"

	"github.com/blockrep/blockrep/replica"
)

// sampleState builds a state with every field in use: two volumes, a
// primary, a preference, several disk states, a witness.
func sampleState(t *testing.T) *State {
	t.Helper()
	s := NewState()
	for _, c := range []Command{
		{Op: OpAddNode, Node: "node1", Kind: DataNode},
		{Op: OpAddNode, Node: "node2", Kind: DataNode},
		{Op: OpAddNode, Node: "w", Kind: Witness},
		{Op: OpAddVolume, Volume: "v1", Disk: replica.UpToDate},
		{Op: OpAddVolume, Volume: "v2"},
		{Op: OpSetPreferred, Volume: "v1", Node: "node2"},
		{Op: OpPromote, Volume: "v1", Node: "node1", Epoch: 1},
		{Op: OpOutdate, Volume: "v1", Node: "node2", Epoch: 1, By: "node1"},
		{Op: OpSetDisk, Volume: "v2", Node: "node2", Disk: replica.Diskless, By: "node2"},
	} {
		if _, err := s.Apply(c); err != nil {
			t.Fatalf("%+v: %v", c, err)
		}
	}
	return s
}

func TestMarshalRoundTrip(t *testing.T) {
	s := sampleState(t)
	b1 := mustMarshal(s)
	var got State
	if err := got.UnmarshalBinary(b1); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(&got, s) {
		t.Fatalf("round trip differs:\ngot  %+v\nwant %+v", got, *s)
	}
	if b2 := mustMarshal(&got); !bytes.Equal(b1, b2) {
		t.Fatalf("re-encoding differs:\n%s\n%s", b1, b2)
	}
	// Deterministic: the same state built again encodes identically (map
	// iteration order must not leak into the bytes).
	for range 20 {
		if b := mustMarshal(sampleState(t)); !bytes.Equal(b1, b) {
			t.Fatalf("encoding not deterministic:\n%s\n%s", b1, b)
		}
	}
	// The zero State and an empty NewState encode alike.
	if a, b := mustMarshal(&State{}), mustMarshal(NewState()); !bytes.Equal(a, b) {
		t.Fatalf("zero state %s, empty state %s", a, b)
	}
}

func TestUnmarshalRefuses(t *testing.T) {
	good := string(mustMarshal(sampleState(t)))
	cases := map[string]string{
		"not json":      "{",
		"trailing data": good + "{}",
		"version":       strings.Replace(good, `"version":1`, `"version":2`, 1),
		"unknown field": strings.Replace(good, `"version":1`, `"version":1,"leader":"x"`, 1),
		"null volume":   strings.Replace(good, `"v2":{`, `"v3":null,"v2":{`, 1),
		// Check failures: the primary is not UpToDate; a replica on the witness.
		"primary outdated": strings.Replace(good, `"node1":"UpToDate"`, `"node1":"Outdated"`, 1),
		"witness replica":  strings.Replace(good, `"disks":{"node1":"UpToDate"`, `"disks":{"w":"UpToDate","node1":"UpToDate"`, 1),
	}
	for name, data := range cases {
		if data == good {
			t.Fatalf("%s: the edit did not apply to %s", name, good)
		}
		s := sampleState(t)
		if err := s.UnmarshalBinary([]byte(data)); err == nil {
			t.Errorf("%s: accepted %s", name, data)
		}
		if string(mustMarshal(s)) != good {
			t.Errorf("%s: failed UnmarshalBinary changed the state", name)
		}
	}
}

func TestCloneIndependent(t *testing.T) {
	s := sampleState(t)
	want := mustMarshal(s)
	c := s.Clone()
	if !reflect.DeepEqual(c, s) {
		t.Fatalf("clone differs")
	}
	c.Nodes["x"] = Node{Name: "x", Kind: DataNode}
	c.Volumes["v3"] = &VolumeState{Name: "v3"}
	c.Volumes["v1"].Primary = "node2"
	c.Volumes["v1"].Epoch = 9
	c.Volumes["v1"].Disks["node2"] = replica.UpToDate
	delete(c.Volumes["v2"].Disks, "node1")
	if got := mustMarshal(s); !bytes.Equal(got, want) {
		t.Fatalf("changing the clone changed the original:\n%s\n%s", got, want)
	}
	// And the other way round.
	c = s.Clone()
	wantC := mustMarshal(c)
	s.Volumes["v1"].Disks["node1"] = replica.Outdated
	s.Volumes["v1"].Preferred = ""
	delete(s.Nodes, "w")
	if got := mustMarshal(c); !bytes.Equal(got, wantC) {
		t.Fatalf("changing the original changed the clone")
	}
}

// TestCheckCatches breaks each invariant Check verifies in turn.
func TestCheckCatches(t *testing.T) {
	if err := sampleState(t).Check(); err != nil {
		t.Fatalf("sample state: %v", err)
	}
	cases := map[string]func(s *State){
		"node key mismatch":     func(s *State) { s.Nodes["node9"] = Node{Name: "node8", Kind: DataNode} },
		"node kind invalid":     func(s *State) { s.Nodes["node9"] = Node{Name: "node9"} },
		"volume key mismatch":   func(s *State) { s.Volumes["v9"] = &VolumeState{Name: "v8"} },
		"replica on witness":    func(s *State) { s.Volumes["v2"].Disks["w"] = replica.Inconsistent },
		"replica on unknown":    func(s *State) { s.Volumes["v2"].Disks["ghost"] = replica.Inconsistent },
		"disk state invalid":    func(s *State) { s.Volumes["v2"].Disks["node1"] = replica.UpToDate + 1 },
		"primary witness":       func(s *State) { s.Volumes["v1"].Primary = "w" },
		"primary unknown":       func(s *State) { s.Volumes["v1"].Primary = "ghost" },
		"primary no replica":    func(s *State) { delete(s.Volumes["v1"].Disks, "node1") },
		"primary outdated":      func(s *State) { s.Volumes["v1"].Disks["node1"] = replica.Outdated },
		"primary inconsistent":  func(s *State) { s.Volumes["v1"].Disks["node1"] = replica.Inconsistent },
		"primary at epoch 0":    func(s *State) { s.Volumes["v1"].Epoch = 0 },
		"preferred witness":     func(s *State) { s.Volumes["v1"].Preferred = "w" },
		"preferred no replica":  func(s *State) { s.Volumes["v1"].Preferred = "ghost" },
		"primary not data node": func(s *State) { s.Nodes["node1"] = Node{Name: "node1", Kind: Witness} },
	}
	for name, breakIt := range cases {
		s := sampleState(t)
		breakIt(s)
		if err := s.Check(); err == nil {
			t.Errorf("%s: Check accepted it", name)
		}
	}
}

// TestMalformedCommands: commands no rule of the cluster can judge are
// refused as malformed, changing nothing.
func TestMalformedCommands(t *testing.T) {
	cases := map[string]Command{
		"zero op":               {},
		"unknown op":            {Op: 77, Volume: "v1", Node: "node1"},
		"add-node no name":      {Op: OpAddNode, Kind: DataNode},
		"add-node zero kind":    {Op: OpAddNode, Node: "node9"},
		"add-node invalid kind": {Op: OpAddNode, Node: "node9", Kind: Witness + 1},
		"add-volume no name":    {Op: OpAddVolume},
		"add-volume bad disk":   {Op: OpAddVolume, Volume: "v9", Disk: replica.UpToDate + 1},
		"set-disk bad disk":     {Op: OpSetDisk, Volume: "v1", Node: "node2", Epoch: 1, By: "node1", Disk: replica.UpToDate + 1},
	}
	for name, c := range cases {
		s := sampleState(t)
		want := mustMarshal(s)
		_, err := s.Apply(c)
		var ref *RefusedError
		if !errors.As(err, &ref) || ref.Rule != RuleMalformed {
			t.Errorf("%s: got %v, want a %s refusal", name, err, RuleMalformed)
		}
		if !bytes.Equal(mustMarshal(s), want) {
			t.Errorf("%s: state changed", name)
		}
	}
}

func TestCommandEncoding(t *testing.T) {
	c := Command{Op: OpPromote, Volume: "v1", Node: "node2", Epoch: 7, Disk: replica.Outdated,
		By: "node1", Force: true, Reason: "drill", Kind: Witness}
	got, err := DecodeCommand(c.Encode())
	if err != nil || got != c {
		t.Fatalf("round trip: %+v, %v", got, err)
	}
	for _, bad := range []string{`{"op":5,"leader":"x"}`, `{"op":5}{}`, `[`} {
		if _, err := DecodeCommand([]byte(bad)); err == nil {
			t.Errorf("decoded %s", bad)
		}
	}
	for o := OpAddNode; o <= OpPrimaryLost; o++ {
		if p, err := ParseOp(o.String()); err != nil || p != o {
			t.Errorf("ParseOp(%q) = %v, %v", o.String(), p, err)
		}
	}
	if _, err := ParseOp("Op(0)"); err == nil {
		t.Errorf("ParseOp accepted the zero op's name")
	}
}
