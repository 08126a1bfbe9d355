package e2e

import (
	"encoding/json"
	"path/filepath"
	"testing"
)

// qemuMapEntry is one entry of qemu-img map --output=json.
type qemuMapEntry struct {
	Start   int64 `json:"start"`
	Length  int64 `json:"length"`
	Depth   int   `json:"depth"`
	Present *bool `json:"present"`
	Zero    bool  `json:"zero"`
	Data    bool  `json:"data"`
}

// TestQemuImg copies a raw image with holes into a volume and back out with
// qemu-img's own NBD client, compares the three, and checks that qemu-img
// map sees the holes through NBD_CMD_BLOCK_STATUS.
func TestQemuImg(t *testing.T) {
	tool(t, "qemu-img")
	tool(t, "nbdcopy")
	const size = 64 * MiB
	dir := t.TempDir()

	// Holes: [8MiB, 16MiB), [40MiB, 41MiB) and the last 4MiB.
	holes := [][2]int64{{8 * MiB, 16 * MiB}, {40 * MiB, 41 * MiB}, {60 * MiB, 64 * MiB}}
	img := filepath.Join(dir, "src.img")
	writeRandomFile(t, img, size, 1, holes...)
	// The volume starts out full of other data, so that the holes have
	// to be written (zeroed) rather than merely skipped.
	garbage := filepath.Join(dir, "garbage.img")
	writeRandomFile(t, garbage, size, 2)

	d := startDaemon(t, daemonSpec{Volumes: []volumeSpec{{Name: "vol0", Size: size}}})
	uri := d.URI("vol0")
	must(t, "nbdcopy", garbage, uri)

	must(t, "qemu-img", "convert", "-n", "-f", "raw", "-O", "raw", img, uri)
	out := filepath.Join(dir, "out.img")
	must(t, "qemu-img", "convert", "-f", "raw", "-O", "raw", uri, out)
	must(t, "qemu-img", "compare", "-f", "raw", "-F", "raw", img, out)
	must(t, "qemu-img", "compare", "-f", "raw", "-F", "raw", img, uri)
	filesEqual(t, img, out)
	if a, b := sha256File(t, img), volumeDataHash(t, d.VolumePath("vol0")); a != b {
		t.Errorf("volume backing file sha256 %s, source image %s", b, a)
	}
	// A different image must compare as different (exit 1), or the
	// comparisons above prove nothing.
	if _, _, err := run(t, "qemu-img", "compare", "-f", "raw", "-F", "raw", garbage, uri); exitCode(err) != 1 {
		t.Errorf("qemu-img compare of different images: %v, want exit status 1", err)
	}

	js := must(t, "qemu-img", "map", "--output=json", "-f", "raw", uri)
	var entries []qemuMapEntry
	if err := json.Unmarshal([]byte(js), &entries); err != nil {
		t.Fatalf("qemu-img map output does not parse: %v\n%s", err, js)
	}
	t.Logf("qemu-img map over NBD:\n%s", js)
	var covered int64
	for _, e := range entries {
		if e.Start != covered {
			t.Fatalf("qemu-img map: entry at %d, want %d (gap or overlap)", e.Start, covered)
		}
		covered += e.Length
	}
	if covered != size {
		t.Fatalf("qemu-img map covers %d bytes, want %d", covered, size)
	}
	inHole := func(off int64) bool {
		for _, h := range holes {
			if off >= h[0] && off < h[1] {
				return true
			}
		}
		return false
	}
	// Every entry must lie wholly inside a hole or wholly inside data, and
	// say so.
	for _, e := range entries {
		first, last := inHole(e.Start), inHole(e.Start+e.Length-1)
		switch {
		case first != last:
			t.Errorf("qemu-img map entry [%d, +%d) straddles a hole boundary", e.Start, e.Length)
		case first && (e.Data || !e.Zero):
			t.Errorf("qemu-img map entry [%d, +%d) lies in a hole but says data=%v zero=%v, want data=false zero=true", e.Start, e.Length, e.Data, e.Zero)
		case !first && (!e.Data || e.Zero):
			t.Errorf("qemu-img map entry [%d, +%d) lies in random data but says data=%v zero=%v, want data=true zero=false", e.Start, e.Length, e.Data, e.Zero)
		}
	}
}
