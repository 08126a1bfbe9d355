package bench

import (
	"bytes"
	"strings"
	"testing"
	"time"
)

func TestNFSRows(t *testing.T) {
	names := map[string]bool{}
	workloads := map[NFSWorkload]int{}
	for _, r := range NFSRows {
		if names[r.Name] {
			t.Errorf("duplicate row %q", r.Name)
		}
		names[r.Name] = true
		workloads[r.Workload]++
		if r.Cold && r.Warm {
			t.Errorf("%s: both cold and warm", r.Name)
		}
		want := map[NFSWorkload]string{NFSSeqWrite: "MiB/s", NFSSeqRead: "MiB/s", NFSRandRead: "IOPS", NFSRandWrite: "IOPS", NFSSmallRead: "files/s", NFSSmallCreate: "files/s"}[r.Workload]
		if r.Unit() != want {
			t.Errorf("%s: unit %q, want %q", r.Name, r.Unit(), want)
		}
		// Issue 13's targets: ≥ 1.0× everywhere, ≥ 1.5× on small-file reads.
		wantTarget := 1.0
		if r.Workload == NFSSmallRead {
			wantTarget = 1.5
		}
		if r.Target != wantTarget {
			t.Errorf("%s: target %v, want %v", r.Name, r.Target, wantTarget)
		}
	}
	for w := NFSSeqWrite; w <= NFSSmallCreate; w++ {
		if workloads[w] == 0 {
			t.Errorf("no row of workload %d", w)
		}
	}
	if NFSRows[0].Workload != NFSSeqWrite {
		t.Errorf("first row %q: the sequential write must run first (it makes the file the next rows read)", NFSRows[0].Name)
	}
	if workloads[NFSSmallRead] != 2 {
		t.Errorf("%d small-file read rows, want a cold and a warm one", workloads[NFSSmallRead])
	}
}

func TestSelectNFSRows(t *testing.T) {
	names := func(rs []NFSRow) string {
		var s []string
		for _, r := range rs {
			s = append(s, r.Name)
		}
		return strings.Join(s, "|")
	}
	if got := SelectNFSRows(" "); len(got) != len(NFSRows) {
		t.Errorf("empty selection: %s", names(got))
	}
	if got, want := names(SelectNFSRows("RANDOM, create")), "4K random read (cold cache)|4K random write (UNSTABLE + COMMIT)|small files CREATE+WRITE+COMMIT+REMOVE"; got != want {
		t.Errorf("got %s, want %s", got, want)
	}
	got := SelectNFSRows("nothing")
	if got == nil || len(got) != 0 {
		t.Errorf("no match: %#v, want an empty list (nil is all rows to NFSOptions)", got)
	}
	o := NFSOptions{Rows: got}.withDefaults()
	if err := o.validate(); err == nil || !strings.Contains(err.Error(), "-rows selects no row") {
		t.Errorf("options with no row: %v", err)
	}
}

func TestNFSResultMath(t *testing.T) {
	seq, rnd, small := NFSRows[0], NFSRows[2], NFSRows[6]
	r := NFSResult{Ops: 512, Bytes: 512 << 20, Elapsed: 2 * time.Second, ClientCPU: time.Second, ServerCPU: 3 * time.Second}
	if v := r.Value(seq); v != 256 {
		t.Errorf("MiB/s %v, want 256", v)
	}
	if v := r.Value(rnd); v != 256 {
		t.Errorf("IOPS %v, want 256", v)
	}
	if v := r.Value(small); v != 256 {
		t.Errorf("files/s %v, want 256", v)
	}
	if c, s := r.cpuPercent(r.ClientCPU), r.cpuPercent(r.ServerCPU); c != 50 || s != 150 {
		t.Errorf("CPU %v%% / %v%%, want 50 / 150", c, s)
	}
	if (NFSResult{Ops: 5}).Value(rnd) != 0 {
		t.Error("a run of no time has a figure")
	}
	runs := []NFSResult{
		{Ops: 300, Elapsed: time.Second},
		{Ops: 100, Elapsed: time.Second},
		{Ops: 200, Elapsed: time.Second},
		{Ops: 400, Elapsed: time.Second},
	}
	if m := MedianNFS(rnd, runs[:3]); m.Ops != 200 {
		t.Errorf("median of 3: %d, want 200", m.Ops)
	}
	if m := MedianNFS(rnd, runs); m.Ops != 300 {
		t.Errorf("median of 4: %d, want the upper middle 300", m.Ops)
	}
	if runs[0].Ops != 300 {
		t.Error("MedianNFS reordered its argument")
	}
	c := NFSComparison{Row: rnd, Ganesha: runs[:3], Blockrep: []NFSResult{{Ops: 300, Elapsed: time.Second}}}
	if r := c.Ratio(); r != 1.5 {
		t.Errorf("ratio %v, want 1.5", r)
	}
	c.Blockrep = nil
	if r := c.Ratio(); r != 0 {
		t.Errorf("ratio without blockrep %v, want 0", r)
	}
}

func TestWriteNFSTable(t *testing.T) {
	mk := func(ops int64, cpu time.Duration) NFSResult {
		return NFSResult{Ops: ops, Bytes: ops << 20, Elapsed: time.Second, ClientCPU: cpu, ServerCPU: 2 * cpu}
	}
	cs := []NFSComparison{
		{Row: NFSRows[0], Ganesha: []NFSResult{mk(400, 300*time.Millisecond), mk(500, 200*time.Millisecond)}, Blockrep: []NFSResult{mk(600, 100*time.Millisecond)}},
		{Row: NFSRows[4], Ganesha: []NFSResult{mk(1000, 500*time.Millisecond)}, Blockrep: []NFSResult{mk(1200, 400*time.Millisecond)}},
		{Row: NFSRows[6], Ganesha: []NFSResult{mk(900, 100*time.Millisecond)}},
	}
	var b bytes.Buffer
	WriteNFSTable(&b, "nfs-ganesha 4.3", cs)
	want := "| row | nfs-ganesha 4.3 | blockrep | ratio | target | runs (nfs-ganesha 4.3; blockrep) | client CPU (nfs-ganesha 4.3 / blockrep) | server CPU (nfs-ganesha 4.3 / blockrep) |\n" +
		"|---|---|---|---|---|---|---|---|\n" +
		"| 1M sequential write (UNSTABLE + COMMIT) | 500 MiB/s | 600 MiB/s | 1.20× | ≥ 1.0× met | 400, 500; 600 | 20% / 10% | 40% / 20% |\n" +
		"| small files LOOKUP+GETATTR+READ (cold cache) | 1000 files/s | 1200 files/s | 1.20× | ≥ 1.5× MISSED | 1000; 1200 | 50% / 40% | 100% / 80% |\n" +
		"| small files CREATE+WRITE+COMMIT+REMOVE | 900 files/s | — | — | ≥ 1.0× | 900; — | 10% / — | 20% / — |\n"
	if b.String() != want {
		t.Errorf("table:\n%s\nwant:\n%s", b.String(), want)
	}
}

func TestNFSOptionsDefaultsAndValidate(t *testing.T) {
	o := NFSOptions{}.withDefaults()
	if o.FileSize != 1<<30 || o.Files != 10000 || o.Dirs != 100 || o.MinFile != 4<<10 || o.MaxFile != 64<<10 || o.Conns != 4 || o.Depth != 8 || o.FSType != "ext4" {
		t.Fatalf("defaults %+v", o)
	}
	if len(o.Servers) != 2 || len(o.Rows) != len(NFSRows) {
		t.Fatalf("servers %v, %d rows", o.Servers, len(o.Rows))
	}
	// 1 GiB + 10 000 × 68 KiB × 5/4 + 128 MiB + 256 MiB = 2238.1 MiB,
	// rounded up to MiB.
	if o.FSSize != 2239<<20 {
		t.Errorf("default file system %d MiB, want 2239", o.FSSize>>20)
	}
	if err := o.validate(); err != nil {
		t.Fatalf("defaults invalid: %v", err)
	}
	if s := NFSFSSize(1<<20, 1, 4096); s != 512<<20 {
		t.Errorf("tiny file system %d MiB, want the 512 MiB floor (xfs needs 300)", s>>20)
	}
	for _, c := range []struct {
		name string
		mod  func(*NFSOptions)
		want string
	}{
		{"fs", func(o *NFSOptions) { o.FSType = "btrfs" }, "-nfs-fs"},
		{"file size", func(o *NFSOptions) { o.FileSize = 1<<20 + 1 }, "-nfs-file-size"},
		{"dirs", func(o *NFSOptions) { o.Dirs = o.Files + 1 }, "-nfs-dirs"},
		{"sizes", func(o *NFSOptions) { o.MinFile = 8 << 10; o.MaxFile = 4 << 10 }, "min ≤ max"},
		{"big small file", func(o *NFSOptions) { o.MaxFile = 2 << 20 }, "≤ 1 MiB"},
		{"depth", func(o *NFSOptions) { o.Depth = -1 }, "-nfs-depth"},
		{"too small", func(o *NFSOptions) { o.FSSize = 1 << 30 }, "-size 1024 MiB is too small"},
		{"server", func(o *NFSOptions) { o.Servers = []string{"knfsd"} }, `"knfsd"`},
		{"server twice", func(o *NFSOptions) { o.Servers = []string{NFSGanesha, NFSGanesha} }, "twice"},
		{"no rows", func(o *NFSOptions) { o.Rows = []NFSRow{} }, "no row"},
	} {
		o := NFSOptions{}.withDefaults()
		c.mod(&o)
		err := o.validate()
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: error %v, want one containing %q", c.name, err, c.want)
		}
	}
}

func TestSmallFileSize(t *testing.T) {
	lo, hi := 4<<10, 64<<10
	seenLow, seenHigh := false, false
	sum := 0
	for i := 0; i < 10000; i++ {
		n := smallFileSize(i, lo, hi)
		if n < lo || n > hi {
			t.Fatalf("file %d: %d bytes, outside [%d, %d]", i, n, lo, hi)
		}
		if n != smallFileSize(i, lo, hi) {
			t.Fatalf("file %d: size not deterministic", i)
		}
		seenLow = seenLow || n < lo+1024
		seenHigh = seenHigh || n > hi-1024
		sum += n
	}
	if !seenLow || !seenHigh {
		t.Errorf("sizes do not reach both ends of the range (low %v, high %v)", seenLow, seenHigh)
	}
	// Uniform: the mean is near the middle (34 KiB).
	if mean := sum / 10000; mean < 33<<10 || mean > 35<<10 {
		t.Errorf("mean size %d, want about %d", mean, (lo+hi)/2)
	}
	if smallFileSize(7, 100, 100) != 100 {
		t.Error("a one-value range")
	}
}

func TestPattern(t *testing.T) {
	buf := make([]byte, 3*nfsSmallBlock+10) // the last block is shorter than a stamp
	fillPattern(buf, 5, 8192)
	if err := checkPattern(buf, 5, 8192); err != nil {
		t.Fatal(err)
	}
	for i, b := range buf {
		if b == 0 && i%nfsSmallBlock >= stampSize {
			t.Fatalf("filler byte %d is zero", i)
		}
	}
	// A part read from a later block offset checks against its own offset.
	if err := checkPattern(buf[nfsSmallBlock:], 5, 8192+nfsSmallBlock); err != nil {
		t.Errorf("a read of the second block: %v", err)
	}
	for name, bad := range map[string]func() error{
		"other offset": func() error { return checkPattern(buf, 5, 0) },
		"other file":   func() error { return checkPattern(buf, 6, 8192) },
		"zeros":        func() error { return checkPattern(make([]byte, 100), 5, 8192) },
		"short stamp": func() error {
			b := append([]byte(nil), buf...)
			b[len(b)-1] ^= 0xff
			return checkPattern(b, 5, 8192)
		},
	} {
		if err := bad(); err == nil {
			t.Errorf("%s: checkPattern passed", name)
		}
	}
	// stampPattern on a filled buffer is fillPattern at the new offset.
	want := make([]byte, len(buf))
	fillPattern(want, 9, 1<<20)
	stampPattern(buf, 9, 1<<20)
	if !bytes.Equal(buf, want) {
		t.Error("restamped buffer differs from a freshly filled one")
	}
}

func TestParseProcStatCPU(t *testing.T) {
	// comm may contain spaces and parentheses; utime 250 and stime 50
	// ticks are fields 14 and 15.
	stat := "4242 (ganesha (x) y) S 1 4242 4242 0 -1 4194560 1000 0 0 0 250 50 0 0 20 0 12 0 100 1000000 500 18446744073709551615\n"
	d, err := parseProcStatCPU([]byte(stat))
	if err != nil || d != 3*time.Second {
		t.Fatalf("got %v, %v; want 3s", d, err)
	}
	for _, bad := range []string{"", "12 no paren S 1", "1 (x) S 1 2 3", "1 (x) S 1 2 3 4 5 6 7 8 9 10 u s"} {
		if _, err := parseProcStatCPU([]byte(bad)); err == nil {
			t.Errorf("%q parsed", bad)
		}
	}
}

func TestGaneshaConfig(t *testing.T) {
	c := GaneshaConfig(GaneshaParams{Path: "/var/tmp/x/mnt-ganesha", NFSPort: 20490, MNTPort: 20491, RecoveryDir: "/var/tmp/x/ganesha/recovery"})
	for _, want := range []string{
		"\tProtocols = 3;\n\tEnable_NLM = false;",
		"\tEnable_UDP = false;\n",
		"\tNFS_Port = 20490;\n\tMNT_Port = 20491;\n",
		"\tBind_addr = 127.0.0.1;\n",
		"\tRecoveryRoot = \"/var/tmp/x/ganesha/recovery\";\n",
		"\tPath = \"/var/tmp/x/mnt-ganesha\";\n\tPseudo = \"/var/tmp/x/mnt-ganesha\";\n",
		"\tTransports = TCP;\n",
		"\tAccess_Type = RW;\n\tSquash = No_Root_Squash;\n\tSecType = sys;\n",
		"\tFSAL {\n\t\tName = VFS;\n\t}\n",
	} {
		if !strings.Contains(c, want) {
			t.Errorf("config lacks %q:\n%s", want, c)
		}
	}
	if strings.Count(c, "{") != strings.Count(c, "}") {
		t.Errorf("unbalanced braces:\n%s", c)
	}
	if got := GaneshaName("NFS-Ganesha Release = V4.3\nganesha compiled on ...\n"); got != "nfs-ganesha 4.3" {
		t.Errorf("GaneshaName: %q", got)
	}
	if got := GaneshaName("ganesha.nfsd: unknown option"); got != "nfs-ganesha" {
		t.Errorf("GaneshaName without a version: %q", got)
	}
}

func TestMkfsArgs(t *testing.T) {
	if got := strings.Join(mkfsArgs("ext4", "/dev/loop9"), " "); got != "mkfs.ext4 -q -F -E lazy_itable_init=0,lazy_journal_init=0 /dev/loop9" {
		t.Errorf("ext4: %s", got)
	}
	if got := strings.Join(mkfsArgs("xfs", "/dev/loop9"), " "); got != "mkfs.xfs -q -f /dev/loop9" {
		t.Errorf("xfs: %s", got)
	}
}
