package e2e

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strconv"
	"testing"
)

const MiB = 1 << 20

// nbdinfoExport is the part of one "exports" entry of nbdinfo --json that
// the tests check.
type nbdinfoExport struct {
	ExportName         string   `json:"export-name"`
	Description        string   `json:"description"`
	Size               *int64   `json:"export-size"`
	Contexts           []string `json:"contexts"`
	IsReadOnly         *bool    `json:"is_read_only"`
	CanCache           *bool    `json:"can_cache"`
	CanDF              *bool    `json:"can_df"`
	CanFastZero        *bool    `json:"can_fast_zero"`
	CanFlush           *bool    `json:"can_flush"`
	CanFUA             *bool    `json:"can_fua"`
	CanMultiConn       *bool    `json:"can_multi_conn"`
	CanTrim            *bool    `json:"can_trim"`
	CanZero            *bool    `json:"can_zero"`
	BlockSizeMinimum   *int64   `json:"block_size_minimum"`
	BlockSizePreferred *int64   `json:"block_size_preferred"`
	BlockSizeMaximum   *int64   `json:"block_size_maximum"`
}

type nbdinfoJSON struct {
	Protocol   string          `json:"protocol"`
	TLS        bool            `json:"TLS"`
	Structured bool            `json:"structured"`
	Exports    []nbdinfoExport `json:"exports"`
}

// nbdinfo runs nbdinfo --json on uri and decodes the one export it shows.
func nbdinfo(t *testing.T, uri string) nbdinfoExport {
	t.Helper()
	out := must(t, "nbdinfo", "--json", uri)
	var info nbdinfoJSON
	if err := json.Unmarshal([]byte(out), &info); err != nil {
		t.Fatalf("nbdinfo --json output does not parse: %v\n%s", err, out)
	}
	if info.Protocol != "newstyle-fixed" || !info.Structured {
		t.Errorf("protocol %q structured %v, want newstyle-fixed with structured replies", info.Protocol, info.Structured)
	}
	if len(info.Exports) != 1 {
		t.Fatalf("nbdinfo shows %d exports, want 1:\n%s", len(info.Exports), out)
	}
	return info.Exports[0]
}

func checkBool(t *testing.T, name string, got *bool, want bool) {
	t.Helper()
	switch {
	case got == nil:
		t.Errorf("nbdinfo: %s missing, want %v", name, want)
	case *got != want:
		t.Errorf("nbdinfo: %s = %v, want %v", name, *got, want)
	}
}

func checkInt(t *testing.T, name string, got *int64, want int64) {
	t.Helper()
	switch {
	case got == nil:
		t.Errorf("nbdinfo: %s missing, want %d", name, want)
	case *got != want:
		t.Errorf("nbdinfo: %s = %d, want %d", name, *got, want)
	}
}

// TestNbdinfo checks what a writable and a read-only volume advertise, and
// that the server itself (not only the client) refuses writes to the
// read-only one with EPERM.
func TestNbdinfo(t *testing.T) {
	tool(t, "nbdinfo")
	tool(t, "nbdsh")

	// The read-only volume's file exists beforehand with known content.
	roPath := filepath.Join(t.TempDir(), "ro.img")
	writeRandomFile(t, roPath, 16*MiB, 7)
	d := startDaemon(t, daemonSpec{Volumes: []volumeSpec{
		{Name: "vol0", Size: 64 * MiB, Description: "the first volume"},
		{Name: "ro", Path: roPath, ReadOnly: true},
		{Name: "single", Size: 1 * MiB, MultiConn: boolp(false)},
	}})

	e := nbdinfo(t, d.URI("vol0"))
	if e.ExportName != "vol0" {
		t.Errorf("export-name %q, want vol0", e.ExportName)
	}
	checkInt(t, "export-size", e.Size, 64*MiB)
	checkBool(t, "is_read_only", e.IsReadOnly, false)
	checkBool(t, "can_flush", e.CanFlush, true)
	checkBool(t, "can_fua", e.CanFUA, true)
	checkBool(t, "can_trim", e.CanTrim, true)
	checkBool(t, "can_zero", e.CanZero, true)
	checkBool(t, "can_fast_zero", e.CanFastZero, true)
	checkBool(t, "can_multi_conn", e.CanMultiConn, true)
	checkBool(t, "can_cache", e.CanCache, true)
	checkBool(t, "can_df", e.CanDF, true)
	checkInt(t, "block_size_minimum", e.BlockSizeMinimum, 512)
	checkInt(t, "block_size_preferred", e.BlockSizePreferred, 4096)
	checkInt(t, "block_size_maximum", e.BlockSizeMaximum, 32*MiB)
	if len(e.Contexts) != 1 || e.Contexts[0] != "base:allocation" {
		t.Errorf("contexts %q, want [base:allocation]", e.Contexts)
	}

	if e.Description != "the first volume" {
		t.Errorf("description %q, want \"the first volume\"", e.Description)
	}
	if e := nbdinfo(t, d.URI("single")); e.CanMultiConn == nil || *e.CanMultiConn {
		t.Errorf("volume with multi_conn = false: can_multi_conn %v, want false", e.CanMultiConn)
	}

	// The export list names every volume.
	out := must(t, "nbdinfo", "--list", "--json", "nbd://"+d.Addr())
	var list nbdinfoJSON
	if err := json.Unmarshal([]byte(out), &list); err != nil {
		t.Fatalf("nbdinfo --list --json: %v\n%s", err, out)
	}
	names := map[string]bool{}
	for _, x := range list.Exports {
		names[x.ExportName] = true
	}
	if len(list.Exports) != 3 || !names["vol0"] || !names["ro"] || !names["single"] {
		t.Errorf("nbdinfo --list shows %v, want vol0, ro and single", names)
	}
	// With three volumes and no default_export, the empty export name is
	// refused.
	if _, _, err := run(t, "nbdinfo", "nbd://"+d.Addr()); err == nil {
		t.Errorf("nbdinfo with the empty export name succeeded; no default export is configured")
	}

	ro := nbdinfo(t, d.URI("ro"))
	checkInt(t, "export-size (ro)", ro.Size, 16*MiB)
	checkBool(t, "is_read_only (ro)", ro.IsReadOnly, true)
	checkBool(t, "can_trim (ro)", ro.CanTrim, false)
	checkBool(t, "can_zero (ro)", ro.CanZero, false)
	checkBool(t, "can_flush (ro)", ro.CanFlush, true)

	// nbdinfo --size and --is read-only agree.
	if out := must(t, "nbdinfo", "--size", d.URI("vol0")); out != strconv.Itoa(64*MiB)+"\n" {
		t.Errorf("nbdinfo --size = %q, want %d", out, 64*MiB)
	}
	if _, _, err := run(t, "nbdinfo", "--is", "read-only", d.URI("ro")); err != nil {
		t.Errorf("nbdinfo --is read-only on the read-only volume: %v, want exit 0", err)
	}
	if _, _, err := run(t, "nbdinfo", "--is", "read-only", d.URI("vol0")); exitCode(err) != 2 {
		t.Errorf("nbdinfo --is read-only on the writable volume: %v, want exit status 2 (false)", err)
	}

	// Writes to the read-only volume: refused by the server with EPERM,
	// contents unchanged.
	want := sha256File(t, roPath)
	runNbdsh(t, "readonly.py", "NBD_URI="+d.URI("ro"))
	if got := sha256File(t, roPath); got != want {
		t.Errorf("read-only volume's file changed: sha256 %s, was %s", got, want)
	}
	if st, err := os.Stat(roPath); err != nil || st.Size() != 16*MiB {
		t.Errorf("read-only volume's file: %v, size %d", err, st.Size())
	}
}
