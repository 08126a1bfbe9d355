package e2e

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/blockrep/blockrep/api"
	"github.com/blockrep/blockrep/internal/nbdclient"
	"github.com/blockrep/blockrep/storeid"
)

// Geometry of the hot-spare test: RAID 5 over 3 sparse member files of
// 96 MiB and one spare. A member's first MiB is its superblock and bitmap
// area, so the array is 2 x 95 MiB and a rebuild copies 95 MiB of member
// bytes: at raidSpareRate that takes several seconds, long enough that fio
// is still writing while the spare is rebuilt (nothing below depends on
// that for correctness).
const (
	raidSpareMemberFile = 96 * MiB
	raidSpareRate       = 16 * MiB // raid_rebuild_rate, member bytes/s
	raidSpareFailed     = 1        // the member slot that is failed
	// raidSpareBS is fio's block size (fixed: with norandommap every
	// block fio rewrites is still verifiable).
	raidSpareBS   = 16 * 1024
	raidSpareJobs = 4
	// Deadlines, only to catch hangs.
	raidSpareWait = 90 * time.Second
)

// TestRAIDSpare is the operator's story of a hot spare: a member of a
// RAID 5 volume dies while a client writes and verifies through NBD, and
// the spare takes its place with no I/O error and no data loss.
//
// fio (nbd engine, 4 jobs at queue depth 8, random reads and writes,
// every write verified with crc32c through verify_backlog) runs in the
// background while `blockctl raid fail 1` fails member 1. The status must
// show the array degraded with the spare taken into slot 1 and rebuilt
// (seen rebuilding, or already in sync with the spare list empty), then
// optimal with the failed file gone from it. fio must exit 0 (no I/O
// error, nothing failed verification), a scrub must find no parity
// mismatch, and after a clean restart the array must assemble optimal
// with the spare still in slot 1, no spares left, and the volume's
// content unchanged (sha256 of the whole export before and after).
//
// A member is failed by the operator only, not by an I/O error: without
// root (dm-error, a loop device, a full file system) the only way to make
// a member file fail under the daemon is to truncate it, and that does not
// fail it. A read past the new end of file does fail, but the array
// serves it from parity and writes the data back (read-error repair),
// which succeeds and extends the file again: the member stays in sync, no
// spare is taken, and the parity chunks of the truncated range are left
// as holes that read back as zeroes (tried: truncating member 0 to 0 and
// reading the whole volume logged only "repaired read error from
// redundancy", the array stayed optimal, and a scrub then found 506 parity
// mismatches in 1520 stripes). A reconstruct-write (what a 3-member RAID 5
// uses for a one-chunk write) writes a chunk without reading it first,
// with the same effect. So truncation corrupts the member behind the
// array's back instead of exercising the spare.
func TestRAIDSpare(t *testing.T) {
	fioPath := tool(t, "fio")
	d := newDaemon(t, daemonSpec{})
	var members []string
	for i := 0; i < 3; i++ {
		members = append(members, filepath.Join(d.Dir, fmt.Sprintf("member%d.img", i)))
	}
	spare := filepath.Join(d.Dir, "spare0.img")
	failedPath := members[raidSpareFailed]
	startRAIDDaemon(t, d, func() string { return raidSpareConfig(d, members, []string{spare}) })

	st := raidVolStatus(t, d)
	if st.Level != "raid5" || st.Health != "optimal" || len(st.Members) != 3 {
		t.Fatalf("first start: level %q health %q %d members, want raid5 optimal 3 members", st.Level, st.Health, len(st.Members))
	}
	if !slices.Equal(st.Spares, []string{spare}) {
		t.Fatalf("first start: spares %q, want [%s]", st.Spares, spare)
	}
	for i, m := range st.Members {
		if m.Path != members[i] || m.State != "in_sync" {
			t.Fatalf("first start: member %d is %s at %q, want in_sync at %s", i, m.State, m.Path, members[i])
		}
	}
	size := 2*st.MemberSize - storeid.BlockSize // the last block holds the store identity
	t.Logf("array: raid5, member_size %d, chunk %d, export %d bytes, spare %s, raid_rebuild_rate %d", st.MemberSize, st.ChunkSize, size, filepath.Base(spare), raidSpareRate)

	// fio: each job on its own quarter of the volume, random reads and
	// writes of 16 KiB at queue depth 8; every write is read back and
	// checked (crc32c, verify_backlog) while the job runs, and the rest
	// of the backlog at its end; verify_fatal stops it at the first bad
	// block, and any I/O error fails the job (exit status not 0).
	// serialize_overlap keeps two requests to one block from being in
	// flight together. It runs until the trigger file appears (runtime
	// only catches a hang).
	region := size / raidSpareJobs / raidSpareBS * raidSpareBS
	dir := t.TempDir()
	trigger := filepath.Join(dir, "stop")
	jsonOut := filepath.Join(dir, "fio.json")
	fio := startVerifyingFio(t, fioPath, dir, []string{"--name=spare", "--thread",
		"--ioengine=nbd", "--uri=" + d.URI("vol0"),
		"--rw=randrw", "--rwmixread=30", "--bs=" + strconv.Itoa(raidSpareBS), "--iodepth=8",
		"--numjobs=" + strconv.Itoa(raidSpareJobs), "--size=" + strconv.FormatInt(region, 10), "--offset_increment=" + strconv.FormatInt(region, 10),
		"--norandommap=1", "--serialize_overlap=1",
		"--time_based", "--runtime=120",
		"--verify=crc32c", "--verify_backlog=128", "--verify_fatal=1", "--verify_state_save=0",
		"--trigger-file=" + trigger,
		"--output-format=json", "--output=" + jsonOut})
	waitWrites := func(what string, n uint64) uint64 {
		t.Helper()
		deadline := time.Now().Add(raidSpareWait)
		for {
			if w := fioWrites(t, d); w >= n {
				return w
			}
			fio.checkRunning(t)
			if time.Now().After(deadline) {
				t.Fatalf("%s: fio's writes did not reach %d within %v", what, n, raidSpareWait)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	w := waitWrites("before the failure", 2000)
	t.Logf("fio is writing: %d writes so far", w)

	// The disk dies.
	failedAt := time.Now()
	out := strings.TrimSpace(d.Blockctl(t, "raid", "fail", strconv.Itoa(raidSpareFailed), "vol0"))
	t.Logf("$ blockctl raid fail %d vol0: %s", raidSpareFailed, out)

	// Watch the spare take over: degraded while member 1 rebuilds onto
	// the spare, then optimal with the spare in sync in slot 1.
	var (
		sawDegraded, sawRebuilding, sawFaulty bool
		rebuildDone                           *api.RAIDProgress
		writesAtRebuild                       uint64
		polls                                 int
	)
	deadline := time.Now().Add(raidSpareWait)
	for {
		fio.checkRunning(t)
		st = raidVolStatus(t, d)
		polls++
		m := st.Members[raidSpareFailed]
		if st.Health == "degraded" {
			sawDegraded = true
		}
		if st.Health == "failed" {
			t.Fatalf("array failed after one member failure: %+v", st)
		}
		if m.State == "faulty" {
			sawFaulty = true
			if m.Path != failedPath && m.Path != "" {
				t.Errorf("member %d faulty at %q, want the failed file %s (before the spare is taken)", raidSpareFailed, m.Path, failedPath)
			}
		}
		for i, o := range st.Members {
			if i != raidSpareFailed && (o.State != "in_sync" || o.Path != members[i]) {
				t.Fatalf("member %d is %s at %q (%s), want in_sync at %s", i, o.State, o.Path, o.Error, members[i])
			}
		}
		if m.State == "rebuilding" {
			if m.Path != spare {
				t.Fatalf("member %d rebuilding at %q, want the spare %s", raidSpareFailed, m.Path, spare)
			}
			if len(st.Spares) != 0 {
				t.Errorf("member %d rebuilding onto the spare, but the spare list is still %q", raidSpareFailed, st.Spares)
			}
			if st.Health != "degraded" {
				t.Errorf("member %d rebuilding, health %q, want degraded", raidSpareFailed, st.Health)
			}
			if p := st.Progress; p != nil && p.Op == "rebuild" && p.State == "running" && p.Member == raidSpareFailed {
				if !sawRebuilding {
					writesAtRebuild = fioWrites(t, d)
					t.Logf("%v after the failure: member %d rebuilding onto %s, %d of %d bytes; %d fio writes so far",
						time.Since(failedAt).Round(time.Millisecond), raidSpareFailed, filepath.Base(spare), p.DoneBytes, p.TotalBytes, writesAtRebuild)
				}
				sawRebuilding = true
			}
		}
		if p := st.Progress; p != nil && p.Op == "rebuild" && p.Member == raidSpareFailed && p.State != "running" {
			if p.State != "done" {
				t.Fatalf("the rebuild of member %d ended %s: %s", raidSpareFailed, p.State, p.Error)
			}
			if st.Health == "optimal" {
				rebuildDone = p
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("the spare was not rebuilt into slot %d within %v of the failure; status: %+v", raidSpareFailed, raidSpareWait, st)
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Logf("%v after the failure: rebuild done (%d bytes, %.1f MiB/s average), health optimal; %d polls: saw faulty %v, degraded %v, rebuilding %v",
		time.Since(failedAt).Round(time.Millisecond), rebuildDone.TotalBytes, rebuildDone.BytesPerSecond/MiB, polls, sawFaulty, sawDegraded, sawRebuilding)
	if rebuildDone.DoneBytes != rebuildDone.TotalBytes || rebuildDone.TotalBytes != st.MemberSize {
		t.Errorf("rebuild done with %d of %d bytes, want the member size %d", rebuildDone.DoneBytes, rebuildDone.TotalBytes, st.MemberSize)
	}
	if !sawRebuilding && !sawDegraded {
		// Only possible if the whole rebuild fit between two polls.
		t.Errorf("never saw the array degraded nor member %d rebuilding after the failure", raidSpareFailed)
	}
	checkSpareTaken(t, st, members, spare, failedPath, "after the rebuild")

	// fio writes on for a while on the rebuilt array, then stops.
	waitWrites("after the rebuild", fioWrites(t, d)+1000)
	if err := os.WriteFile(trigger, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	fio.wait(t, raidSpareWait, jsonOut, raidSpareJobs)

	// Parity checks out everywhere, the rebuilt member included.
	sr := raidScrub(t, d)
	t.Logf("scrub: stripes %d skipped %d mismatches %d repaired %d read_errors %d", sr.Stripes, sr.Skipped, sr.Mismatches, sr.Repaired, sr.ReadErrors)
	if sr.Mismatches != 0 || sr.ReadErrors != 0 || sr.Repaired != 0 || sr.Error != "" || sr.Stripes <= 0 {
		t.Errorf("scrub after the rebuild: %+v, want stripes checked, no mismatch, no read error", *sr)
	}
	sum := exportSHA256(t, d, size)
	t.Logf("export sha256 before the restart: %s", sum)

	// A clean restart on the same configuration (which still names the
	// failed file as member 1 and the spare as a spare).
	d.Stop()
	startRAIDDaemon(t, d, func() string { return raidSpareConfig(d, members, []string{spare}) })
	if log, err := os.ReadFile(d.LogPath); err == nil {
		for _, line := range strings.Split(string(lastStart(log)), "\n") {
			if strings.Contains(line, "raid:") {
				t.Logf("restart log: %s", line)
			}
		}
	}
	st = raidVolStatus(t, d)
	t.Logf("after the restart: health %s, members %+v, spares %q, recovery %+v", st.Health, st.Members, st.Spares, st.Recovery)
	if st.Health != "optimal" {
		t.Errorf("after the restart: health %q, want optimal", st.Health)
	}
	if st.Recovery.Created || st.Recovery.Dirty || len(st.Recovery.Rebuilding) != 0 || len(st.Recovery.Resynced) != 0 {
		t.Errorf("after the restart: recovery %+v, want a clean open with nothing resynced or rebuilt", st.Recovery)
	}
	checkSpareTaken(t, st, members, spare, failedPath, "after the restart")
	if got := exportSHA256(t, d, size); got != sum {
		t.Errorf("after the restart the export's sha256 is %s, before it was %s", got, sum)
	}
}

// checkSpareTaken checks that spare is in sync in the failed member's slot,
// the other members in sync in theirs, no spare is left, and the failed
// file is nowhere in the status.
func checkSpareTaken(t *testing.T, st *api.RAIDStatus, members []string, spare, failedPath, when string) {
	t.Helper()
	if len(st.Members) != len(members) {
		t.Fatalf("%s: %d members, want %d", when, len(st.Members), len(members))
	}
	for i, m := range st.Members {
		want := members[i]
		if i == raidSpareFailed {
			want = spare
		}
		if m.Index != i || m.Path != want || m.State != "in_sync" {
			t.Errorf("%s: member %d is %s at %q (%s), want in_sync at %s", when, m.Index, m.State, m.Path, m.Error, want)
		}
		if m.Path == failedPath {
			t.Errorf("%s: the failed file %s is still member %d", when, failedPath, i)
		}
	}
	if len(st.Spares) != 0 {
		t.Errorf("%s: spares %q, want none (the only spare was taken)", when, st.Spares)
	}
	if slices.Contains(st.Spares, failedPath) {
		t.Errorf("%s: the failed file %s is listed as a spare", when, failedPath)
	}
}

// raidSpareConfig renders a configuration with vol0 on a RAID 5 array of
// members with hot spares, rebuilt at raidSpareRate.
func raidSpareConfig(d *daemon, members, spares []string) string {
	q := strconv.Quote
	quote := func(ps []string) string {
		out := make([]string, len(ps))
		for i, p := range ps {
			out[i] = q(p)
		}
		return strings.Join(out, ", ")
	}
	var b strings.Builder
	fmt.Fprintf(&b, "[node]\nname = \"e2e\"\ndata_dir = %s\ncontrol_socket = %s\n\n",
		q(filepath.Join(d.Dir, "data")), q(d.ControlSocket))
	fmt.Fprintf(&b, "[nbd]\nlisten = [%s]\n\n", q(d.Addr()))
	fmt.Fprintf(&b, "[[volume]]\nname = \"vol0\"\nsize = %d\nraid_level = \"raid5\"\nraid_members = [%s]\nraid_spares = [%s]\nraid_chunk_size = %d\nraid_rebuild_rate = %d\n",
		raidSpareMemberFile, quote(members), quote(spares), raidChunk, raidSpareRate)
	return b.String()
}

// raidVolStatus returns vol0's RAID status from blockctl raid status -o
// json vol0 (not logged: it is polled).
func raidVolStatus(t *testing.T, d *daemon) *api.RAIDStatus {
	t.Helper()
	out := quietBlockctl(t, d, "raid", "status", "-o", "json", "vol0")
	var vols []struct {
		Volume string `json:"volume"`
		api.RAIDStatus
	}
	if err := json.Unmarshal([]byte(out), &vols); err != nil {
		t.Fatalf("blockctl raid status -o json does not parse: %v\n%s", err, out)
	}
	if len(vols) != 1 || vols[0].Volume != "vol0" {
		t.Fatalf("blockctl raid status -o json vol0: %s", out)
	}
	return &vols[0].RAIDStatus
}

// fioWrites is the writes of vol0's clients so far.
func fioWrites(t *testing.T, d *daemon) uint64 {
	t.Helper()
	out := quietBlockctl(t, d, "status", "-o", "json")
	var st statusJSON
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		t.Fatalf("blockctl status -o json does not parse: %v\n%s", err, out)
	}
	var w uint64
	for _, c := range st.volume(t, "vol0").Clients {
		w += c.Writes
	}
	return w
}

// quietBlockctl is d.Blockctl without logging the command line, for the
// status polls.
func quietBlockctl(t *testing.T, d *daemon, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var stdout, stderr bytes.Buffer
	cmd := d.blockctlCmd(ctx, args...)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("%s: %v\nstdout:\n%s\nstderr:\n%s", strings.Join(cmd.Args, " "), err, stdout.String(), stderr.String())
	}
	return stdout.String()
}

// exportSHA256 reads the whole of vol0 through NBD and returns its sha256.
func exportSHA256(t *testing.T, d *daemon, size int64) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), raidSpareWait)
	defer cancel()
	c, err := nbdclient.Dial(ctx, d.Addr(), "vol0")
	if err != nil {
		t.Fatalf("NBD dial: %v", err)
	}
	defer c.Close()
	if c.Size != size {
		t.Fatalf("export size %d, want %d", c.Size, size)
	}
	h := sha256.New()
	buf := make([]byte, 4*MiB)
	for off := int64(0); off < c.Size; off += int64(len(buf)) {
		p := buf[:min(int64(len(buf)), c.Size-off)]
		if err := c.ReadAt(p, off); err != nil {
			t.Fatalf("NBD read at %d: %v", off, err)
		}
		h.Write(p)
	}
	return hex.EncodeToString(h.Sum(nil))
}

// verifyingFio is a fio run in the background that verifies what it
// writes.
type verifyingFio struct {
	cmd  *exec.Cmd
	done chan struct{} // closed when fio has exited; err is then set
	err  error
	out  bytes.Buffer
}

// startVerifyingFio starts fio with args in dir; cleanup kills it.
func startVerifyingFio(t *testing.T, fioPath, dir string, args []string) *verifyingFio {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	t.Cleanup(cancel)
	f := &verifyingFio{done: make(chan struct{})}
	f.cmd = exec.CommandContext(ctx, fioPath, args...)
	f.cmd.Dir = dir
	f.cmd.WaitDelay = 5 * time.Second
	f.cmd.Stdout, f.cmd.Stderr = &f.out, &f.out
	t.Logf("$ %s &", strings.Join(f.cmd.Args, " "))
	if err := f.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		f.err = f.cmd.Wait()
		close(f.done)
	}()
	t.Cleanup(func() {
		select {
		case <-f.done:
		default:
			_ = f.cmd.Process.Kill()
			<-f.done
		}
	})
	return f
}

// checkRunning fails the test if fio has exited.
func (f *verifyingFio) checkRunning(t *testing.T) {
	t.Helper()
	select {
	case <-f.done:
		t.Fatalf("fio ended early: %v\n%s", f.err, f.out.String())
	default:
	}
}

// wait waits for fio to exit and checks that it exited 0 with no verify
// error, and that each of its jobs wrote and verified data.
func (f *verifyingFio) wait(t *testing.T, timeout time.Duration, jsonOut string, jobs int) {
	t.Helper()
	select {
	case <-f.done:
	case <-time.After(timeout):
		t.Fatalf("fio did not exit within %v of its trigger file\n%s", timeout, f.out.String())
	}
	js, _ := os.ReadFile(jsonOut)
	if f.err != nil {
		t.Fatalf("fio: %v\n%s\n%s", f.err, f.out.String(), js)
	}
	if m := verifyError.FindString(f.out.String() + string(js)); m != "" {
		t.Errorf("fio reported a verify error (%q):\n%s", m, f.out.String())
	}
	if i := bytes.IndexByte(js, '{'); i >= 0 {
		js = js[i:] // fio may print a line before the JSON
	}
	var res haFioJSON
	if err := json.Unmarshal(js, &res); err != nil || len(res.Jobs) != jobs {
		t.Fatalf("fio JSON output (%v):\n%s", err, js)
	}
	var wIOs, rIOs, wBytes, rBytes int64
	for _, j := range res.Jobs {
		if j.Error != 0 || j.Write.IOBytes == 0 || j.Read.IOBytes == 0 {
			t.Errorf("fio job %s: error %d, wrote %d bytes, read %d; want no error and both", j.Name, j.Error, j.Write.IOBytes, j.Read.IOBytes)
		}
		wIOs += j.Write.TotalIOs
		rIOs += j.Read.TotalIOs
		wBytes += j.Write.IOBytes
		rBytes += j.Read.IOBytes
	}
	t.Logf("fio exited 0: %d writes (%d MiB), %d reads incl. verify (%d MiB), no verify error", wIOs, wBytes/MiB, rIOs, rBytes/MiB)
}
