package e2e

import (
	"path/filepath"
	"strings"
	"testing"
)

// TestNbdcopy copies a sparse image into a volume and back out with nbdcopy
// over TCP and over the unix socket, with one and with several
// connections, and compares SHA-256 sums. Copying out with extents (the
// default) trusts the server's block status: a data range reported as a
// hole would come out as zeroes and change the sum.
func TestNbdcopy(t *testing.T) {
	tool(t, "nbdcopy")
	tool(t, "nbdinfo")
	const size = 128 * MiB
	dir := t.TempDir()
	holes := [][2]int64{{MiB, 3 * MiB}, {64 * MiB, 96 * MiB}, {127 * MiB, 128 * MiB}}
	src := filepath.Join(dir, "src.img")
	writeRandomFile(t, src, size, 3, holes...)
	garbage := filepath.Join(dir, "garbage.img")
	writeRandomFile(t, garbage, size, 4)
	want := sha256File(t, src)

	d := startDaemon(t, daemonSpec{
		Volumes:    []volumeSpec{{Name: "vol0", Size: size}, {Name: "frag", Size: 16 * MiB}},
		UnixListen: true,
	})
	tcp := d.URI("vol0")
	unix := "nbd+unix:///vol0?socket=" + d.NBDSocket

	// Fill the volume with other data first, so that the copy must zero
	// the holes.
	must(t, "nbdcopy", garbage, tcp)
	if got := volumeDataHash(t, d.VolumePath("vol0")); got != sha256File(t, garbage) {
		t.Fatalf("after copying in garbage.img the backing file's sha256 is %s", got)
	}

	// In, with a final flush, over four connections (multi-conn).
	must(t, "nbdcopy", "--flush", "-C", "4", src, tcp)
	if got := volumeDataHash(t, d.VolumePath("vol0")); got != want {
		t.Errorf("backing file sha256 %s after nbdcopy --flush, want %s (source)", got, want)
	}

	for _, c := range []struct {
		name string
		args []string
	}{
		{"tcp-extents-multiconn", []string{"-C", "4", tcp}},
		{"tcp-no-extents-1conn", []string{"-C", "1", "--no-extents", tcp}},
		{"unix-extents", []string{unix}},
		{"unix-synchronous", []string{"--synchronous", unix}},
	} {
		out := filepath.Join(dir, c.name+".img")
		args := append(append([]string{}, c.args...), out)
		must(t, "nbdcopy", args...)
		if got := sha256File(t, out); got != want {
			t.Errorf("nbdcopy out (%s): sha256 %s, want %s", c.name, got, want)
		}
	}

	// Copy in over the unix socket with --flush and synchronous requests,
	// from a second image, and read it back over TCP.
	src2 := filepath.Join(dir, "src2.img")
	writeRandomFile(t, src2, size, 5, [2]int64{10 * MiB, 20 * MiB})
	must(t, "nbdcopy", "--flush", "--synchronous", src2, unix)
	out2 := filepath.Join(dir, "out2.img")
	must(t, "nbdcopy", tcp, out2)
	if got, want2 := sha256File(t, out2), sha256File(t, src2); got != want2 {
		t.Errorf("second image round trip: sha256 %s, want %s", got, want2)
	}

	// A finely fragmented image: 4 KiB of data, 4 KiB of hole, 4096
	// extents in all, more than the server puts in one block status
	// reply, so clients have to ask again and again.
	var frag [][2]int64
	for off := int64(0); off < 16*MiB; off += 8192 {
		frag = append(frag, [2]int64{off + 4096, off + 8192})
	}
	fragSrc := filepath.Join(dir, "frag.img")
	writeRandomFile(t, fragSrc, 16*MiB, 7, frag...)
	fragURI := d.URI("frag")
	must(t, "nbdcopy", fragSrc, fragURI)
	fragOut := filepath.Join(dir, "frag-out.img")
	must(t, "nbdcopy", fragURI, fragOut)
	if got, want := sha256File(t, fragOut), sha256File(t, fragSrc); got != want {
		t.Errorf("fragmented image round trip: sha256 %s, want %s", got, want)
	}
	totals := must(t, "nbdinfo", "--map", "--totals", fragURI)
	if !strings.Contains(totals, "8388608  50.0%   0 data") || !strings.Contains(totals, "8388608  50.0%   3 hole,zero") {
		t.Errorf("nbdinfo --map --totals of the fragmented volume: want 8 MiB data and 8 MiB hole,zero, got:\n%s", totals)
	}

	// An image larger than the volume is refused, and the volume keeps
	// its contents.
	larger := filepath.Join(dir, "larger.img")
	writeRandomFile(t, larger, size+MiB, 6)
	if _, stderr, err := run(t, "nbdcopy", larger, tcp); err == nil {
		t.Errorf("nbdcopy of a larger image into the volume succeeded")
	} else {
		t.Logf("nbdcopy refused the larger image: %s", strings.TrimSpace(stderr))
	}
	if got, want2 := volumeDataHash(t, d.VolumePath("vol0")), sha256File(t, src2); got != want2 {
		t.Errorf("after the refused copy the backing file's sha256 is %s, want %s", got, want2)
	}
}
