package bench

// This file is blockbench -nfs: blockrep's NFSv3 server (nfsexport/, run
// in a process of its own) against nfs-ganesha with its VFS FSAL, each
// serving a loop-mounted file system of the same type and size, driven by
// the same Go client (nfsclient.go) with several connections and calls in
// flight, rows and servers interleaved in one run.

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sync/errgroup"
)

// The servers blockbench -nfs compares, by the names NFSOptions.Servers
// takes.
const (
	NFSGanesha  = "ganesha"
	NFSBlockrep = "blockrep"
)

// NFSWorkload is what one row's run does.
type NFSWorkload int

// The workloads of the NFS rows.
const (
	// NFSSeqWrite writes the big file anew (REMOVE + CREATE untimed) in
	// 1 MiB UNSTABLE WRITEs, then COMMITs it; MiB/s, COMMIT included.
	NFSSeqWrite NFSWorkload = iota
	// NFSSeqRead reads the big file in 1 MiB READs; MiB/s.
	NFSSeqRead
	// NFSRandRead reads 4 KiB blocks at random offsets of the big file for
	// the run time; IOPS.
	NFSRandRead
	// NFSRandWrite writes 4 KiB blocks UNSTABLE at random offsets of the
	// big file for the run time, then COMMITs; IOPS, COMMIT included.
	NFSRandWrite
	// NFSSmallRead does LOOKUP + GETATTR + READ of every small file;
	// files/s.
	NFSSmallRead
	// NFSSmallCreate does CREATE + WRITE (UNSTABLE) + COMMIT + REMOVE of
	// as many new files as there are small files; files/s.
	NFSSmallCreate
)

// NFSRow is one row of the NFS table.
type NFSRow struct {
	Name     string
	Workload NFSWorkload
	// Cold drops the page cache (sync + drop_caches) before each run.
	Cold bool
	// Warm makes an untimed pass of the workload first, so that the timed
	// pass finds the page cache and the server's caches filled.
	Warm bool
	// Target is the ratio blockrep / ganesha the row should reach.
	Target float64
}

// NFSRows are the rows of blockbench -nfs, in the order they run.
var NFSRows = []NFSRow{
	{Name: "1M sequential write (UNSTABLE + COMMIT)", Workload: NFSSeqWrite, Target: 1.0},
	{Name: "1M sequential read (cold cache)", Workload: NFSSeqRead, Cold: true, Target: 1.0},
	{Name: "4K random read (cold cache)", Workload: NFSRandRead, Cold: true, Target: 1.0},
	{Name: "4K random write (UNSTABLE + COMMIT)", Workload: NFSRandWrite, Target: 1.0},
	{Name: "small files LOOKUP+GETATTR+READ (cold cache)", Workload: NFSSmallRead, Cold: true, Target: 1.5},
	{Name: "small files LOOKUP+GETATTR+READ (warm cache)", Workload: NFSSmallRead, Warm: true, Target: 1.5},
	{Name: "small files CREATE+WRITE+COMMIT+REMOVE", Workload: NFSSmallCreate, Target: 1.0},
}

// SelectNFSRows returns the NFSRows whose name contains (case-insensitive)
// one of the comma-separated substrings of only; all of them when only is
// empty, an empty (not nil) list when none matches.
func SelectNFSRows(only string) []NFSRow {
	if strings.TrimSpace(only) == "" {
		return NFSRows
	}
	out := []NFSRow{} // not nil: NFSOptions takes nil for all rows
	for _, r := range NFSRows {
		for _, sub := range strings.Split(only, ",") {
			if sub = strings.TrimSpace(sub); sub != "" && strings.Contains(strings.ToLower(r.Name), strings.ToLower(sub)) {
				out = append(out, r)
				break
			}
		}
	}
	return out
}

// Unit is what the row's figure counts.
func (r NFSRow) Unit() string {
	switch r.Workload {
	case NFSSeqWrite, NFSSeqRead:
		return "MiB/s"
	case NFSRandRead, NFSRandWrite:
		return "IOPS"
	}
	return "files/s"
}

// NFSResult is one run of one row on one server.
type NFSResult struct {
	Ops     int64 // requests (I/O rows) or files (small-file rows)
	Bytes   int64 // data read or written
	Elapsed time.Duration
	// ClientCPU is blockbench's CPU time (user + system) during the run,
	// ServerCPU the server process's.
	ClientCPU, ServerCPU time.Duration
}

// Value is the row's figure (higher is better): MiB/s for the sequential
// rows, operations or files per second for the others.
func (r NFSResult) Value(row NFSRow) float64 {
	if r.Elapsed <= 0 {
		return 0
	}
	if row.Unit() == "MiB/s" {
		return float64(r.Bytes) / (1 << 20) / r.Elapsed.Seconds()
	}
	return float64(r.Ops) / r.Elapsed.Seconds()
}

// cpuPercent is cpu in percent of one core over the run.
func (r NFSResult) cpuPercent(cpu time.Duration) float64 {
	if r.Elapsed <= 0 {
		return 0
	}
	return 100 * cpu.Seconds() / r.Elapsed.Seconds()
}

// MedianNFS returns the run with the median figure (the upper middle one
// of an even count), the zero result for no runs.
func MedianNFS(row NFSRow, runs []NFSResult) NFSResult {
	if len(runs) == 0 {
		return NFSResult{}
	}
	s := append([]NFSResult(nil), runs...)
	sort.SliceStable(s, func(i, j int) bool { return s[i].Value(row) < s[j].Value(row) })
	return s[len(s)/2]
}

// NFSComparison is one row's runs on both servers; either may have none
// (the server was not measured).
type NFSComparison struct {
	Row               NFSRow
	Ganesha, Blockrep []NFSResult
}

// Ratio is blockrep's median over ganesha's; 0 when either is missing.
func (c NFSComparison) Ratio() float64 {
	g := MedianNFS(c.Row, c.Ganesha).Value(c.Row)
	b := MedianNFS(c.Row, c.Blockrep).Value(c.Row)
	if g == 0 || b == 0 {
		return 0
	}
	return b / g
}

// describeNFS formats a median with its unit; "—" for no runs.
func describeNFS(row NFSRow, runs []NFSResult) string {
	if len(runs) == 0 {
		return "—"
	}
	return fmt.Sprintf("%.0f %s", MedianNFS(row, runs).Value(row), row.Unit())
}

func nfsRunList(row NFSRow, runs []NFSResult) string {
	if len(runs) == 0 {
		return "—"
	}
	var parts []string
	for _, r := range runs {
		parts = append(parts, fmt.Sprintf("%.0f", r.Value(row)))
	}
	return strings.Join(parts, ", ")
}

func nfsCPU(runs []NFSResult, row NFSRow, server bool) string {
	if len(runs) == 0 {
		return "—"
	}
	m := MedianNFS(row, runs)
	if server {
		return fmt.Sprintf("%.0f%%", m.cpuPercent(m.ServerCPU))
	}
	return fmt.Sprintf("%.0f%%", m.cpuPercent(m.ClientCPU))
}

// WriteNFSTable prints the comparisons as a Markdown table: each server's
// median and every run, the ratio blockrep / ganesha against the row's
// target, and the client's and each server's CPU (in % of one core) in the
// median run. ganeshaName heads ganesha's column.
func WriteNFSTable(w io.Writer, ganeshaName string, cs []NFSComparison) {
	fmt.Fprintf(w, "| row | %s | blockrep | ratio | target | runs (%s; blockrep) | client CPU (%s / blockrep) | server CPU (%s / blockrep) |\n", ganeshaName, ganeshaName, ganeshaName, ganeshaName)
	fmt.Fprintln(w, "|---|---|---|---|---|---|---|---|")
	for _, c := range cs {
		ratio, target := "—", fmt.Sprintf("≥ %.1f×", c.Row.Target)
		if r := c.Ratio(); r > 0 {
			ratio = fmt.Sprintf("%.2f×", r)
			if r >= c.Row.Target {
				target += " met"
			} else {
				target += " MISSED"
			}
		}
		fmt.Fprintf(w, "| %s | %s | %s | %s | %s | %s; %s | %s / %s | %s / %s |\n", c.Row.Name,
			describeNFS(c.Row, c.Ganesha), describeNFS(c.Row, c.Blockrep), ratio, target,
			nfsRunList(c.Row, c.Ganesha), nfsRunList(c.Row, c.Blockrep),
			nfsCPU(c.Ganesha, c.Row, false), nfsCPU(c.Blockrep, c.Row, false),
			nfsCPU(c.Ganesha, c.Row, true), nfsCPU(c.Blockrep, c.Row, true))
	}
}

// NFSOptions configure RunNFS. Zero fields take the defaults of
// blockbench's flags (NFSOptions.withDefaults).
type NFSOptions struct {
	Dir    string // where the work directory (images, mounts, logs) goes
	FSType string // "ext4" or "xfs"
	// FSSize is each server's file system size; 0 is NFSFSSize of the
	// options.
	FSSize int64
	// FileSize is the big file's size (sequential and random rows).
	FileSize int64
	// Files small files of MinFile to MaxFile bytes, in Dirs directories.
	Files, Dirs      int
	MinFile, MaxFile int
	// Runtime is the length of a random-I/O run.
	Runtime time.Duration
	Rounds  int
	// Conns connections per server, Depth calls in flight on each.
	Conns, Depth int
	// Servers are the servers measured, of NFSGanesha and NFSBlockrep
	// (default both).
	Servers []string
	Rows    []NFSRow // default NFSRows
	// Self is the blockbench binary, re-executed with -nfs-serve-dir to
	// run blockrep's server (default os.Executable).
	Self string
	// Ganesha and Rpcbind are the binaries (found in PATH, /usr/sbin and
	// /sbin when bare names; default ganesha.nfsd and rpcbind).
	Ganesha, Rpcbind string
	// ServerCPUProfile, if set, is where blockrep's server process writes
	// a CPU profile of its whole life (go tool pprof).
	ServerCPUProfile string
	Out              io.Writer
	Progress         func(format string, args ...any)
}

// The defaults of NFSOptions: the sizes and counts of issue 13.
const (
	DefaultNFSFileSize = 1 << 30
	DefaultNFSFiles    = 10000
	DefaultNFSDirs     = 100
	DefaultNFSMinFile  = 4 << 10
	DefaultNFSMaxFile  = 64 << 10
	DefaultNFSConns    = 4
	DefaultNFSDepth    = 8
)

// nfsBlock is the request size of the sequential rows; nfsSmallBlock that
// of the random rows.
const (
	nfsBlock      = 1 << 20
	nfsSmallBlock = 4 << 10
)

func (o NFSOptions) withDefaults() NFSOptions {
	if o.FSType == "" {
		o.FSType = "ext4"
	}
	if o.FileSize == 0 {
		o.FileSize = DefaultNFSFileSize
	}
	if o.Files == 0 {
		o.Files = DefaultNFSFiles
	}
	if o.Dirs == 0 {
		o.Dirs = DefaultNFSDirs
	}
	if o.MinFile == 0 {
		o.MinFile = DefaultNFSMinFile
	}
	if o.MaxFile == 0 {
		o.MaxFile = DefaultNFSMaxFile
	}
	if o.Runtime == 0 {
		o.Runtime = 5 * time.Second
	}
	if o.Rounds == 0 {
		o.Rounds = 3
	}
	if o.Conns == 0 {
		o.Conns = DefaultNFSConns
	}
	if o.Depth == 0 {
		o.Depth = DefaultNFSDepth
	}
	if len(o.Servers) == 0 {
		o.Servers = []string{NFSGanesha, NFSBlockrep}
	}
	if o.Rows == nil {
		o.Rows = NFSRows
	}
	if o.Ganesha == "" {
		o.Ganesha = "ganesha.nfsd"
	}
	if o.Rpcbind == "" {
		o.Rpcbind = "rpcbind"
	}
	if o.FSSize == 0 {
		o.FSSize = NFSFSSize(o.FileSize, o.Files, o.MaxFile)
	}
	if o.Out == nil {
		o.Out = io.Discard
	}
	if o.Progress == nil {
		o.Progress = func(string, ...any) {}
	}
	return o
}

// NFSFSSize is the file system size that holds the big file, the small
// files and the new files of the create row in flight, with room for the
// file system's own metadata (and at least xfs's minimum of 300 MiB),
// rounded up to whole MiB.
func NFSFSSize(fileSize int64, files, maxFile int) int64 {
	need := fileSize + int64(files)*int64(maxFile+4096)*5/4 + fileSize/8 + 256<<20
	need = max(need, 512<<20)
	return (need + 1<<20 - 1) &^ (1<<20 - 1)
}

// validate checks the options after withDefaults, naming the flag that is
// wrong.
func (o NFSOptions) validate() error {
	switch {
	case o.FSType != "ext4" && o.FSType != "xfs":
		return fmt.Errorf("bench: nfs: -nfs-fs %q: want ext4 or xfs", o.FSType)
	case o.FileSize < nfsBlock || o.FileSize%nfsBlock != 0:
		return fmt.Errorf("bench: nfs: -nfs-file-size %d: want a positive multiple of 1 MiB", o.FileSize)
	case o.Files < 1 || o.Dirs < 1 || o.Dirs > o.Files:
		return fmt.Errorf("bench: nfs: -nfs-files %d, -nfs-dirs %d: want at least one file and one directory, no more directories than files", o.Files, o.Dirs)
	case o.MinFile < 1 || o.MaxFile < o.MinFile || o.MaxFile > nfsBlock:
		return fmt.Errorf("bench: nfs: small files of %d to %d bytes: want 1 ≤ min ≤ max ≤ 1 MiB", o.MinFile, o.MaxFile)
	case o.Rounds < 1 || o.Conns < 1 || o.Depth < 1 || o.Runtime <= 0:
		return fmt.Errorf("bench: nfs: -rounds %d, -nfs-conns %d, -nfs-depth %d, -runtime %s: all must be positive", o.Rounds, o.Conns, o.Depth, o.Runtime)
	case len(o.Rows) == 0:
		return errors.New("bench: nfs: -rows selects no row")
	}
	if min := o.FileSize + int64(o.Files)*int64(o.MaxFile+4096) + 64<<20; o.FSSize < min {
		return fmt.Errorf("bench: nfs: -size %d MiB is too small for a %d MiB file and %d files of up to %d KiB: want at least %d MiB",
			o.FSSize>>20, o.FileSize>>20, o.Files, o.MaxFile>>10, (min+1<<20-1)>>20)
	}
	seen := map[string]bool{}
	for _, s := range o.Servers {
		if s != NFSGanesha && s != NFSBlockrep {
			return fmt.Errorf("bench: nfs: -nfs-servers: %q is neither %s nor %s", s, NFSGanesha, NFSBlockrep)
		}
		if seen[s] {
			return fmt.Errorf("bench: nfs: -nfs-servers: %s named twice", s)
		}
		seen[s] = true
	}
	return nil
}

// Small files: file i is dirName(i % dirs)/fileName(i), of smallFileSize
// bytes; the create row's files are newName(i) in the same directories.

func nfsDirName(i int) string  { return fmt.Sprintf("d%03d", i) }
func nfsFileName(i int) string { return fmt.Sprintf("f%06d", i) }
func nfsNewName(i int) string  { return fmt.Sprintf("n%06d", i) }

// nfsBigFile is the name of the big file in the export's root.
const nfsBigFile = "big"

// smallFileSize is the size of small file i: spread uniformly over
// [minSize, maxSize] by a hash of i, so that the setup and the client agree
// without a table.
func smallFileSize(i, minSize, maxSize int) int {
	x := uint64(i)*0x9e3779b97f4a7c15 + 0x632be59bd9b4e019
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	x ^= x >> 31
	return minSize + int(x%uint64(maxSize-minSize+1))
}

// The data pattern: every 4 KiB block of a file starts with a 16-byte
// stamp, the file's tag (0 for the big file, i+1 for small file i) and the
// block's offset, so that a read can tell it got the bytes it asked for
// (not zeros, not another block, not another file); the rest is non-zero
// filler.
const stampSize = 16

// fillPattern fills buf as the bytes at offset off of the file tagged tag
// (off a multiple of 4 KiB).
func fillPattern(buf []byte, tag, off uint64) {
	for i := range buf {
		buf[i] = byte(i*7+i>>12) | 1
	}
	stampPattern(buf, tag, off)
}

// stampPattern writes only the stamps of a buffer already filled by
// fillPattern (the filler does not change with the offset).
func stampPattern(buf []byte, tag, off uint64) {
	var st [stampSize]byte
	for b := 0; b < len(buf); b += nfsSmallBlock {
		binary.BigEndian.PutUint64(st[0:], tag)
		binary.BigEndian.PutUint64(st[8:], off+uint64(b))
		copy(buf[b:], st[:])
	}
}

// checkPattern checks the stamps of data read at offset off (a multiple of
// 4 KiB) of the file tagged tag.
func checkPattern(data []byte, tag, off uint64) error {
	var st [stampSize]byte
	for b := 0; b < len(data); b += nfsSmallBlock {
		binary.BigEndian.PutUint64(st[0:], tag)
		binary.BigEndian.PutUint64(st[8:], off+uint64(b))
		n := min(stampSize, len(data)-b)
		if string(data[b:b+n]) != string(st[:n]) {
			return fmt.Errorf("data at offset %d of file %d is not what was written there (stamp %x, want %x)", off+uint64(b), tag, data[b:b+n], st[:n])
		}
	}
	return nil
}

// populate writes the big file and the small files into the file system
// mounted at root, directly, and syncs: both servers start from the same
// files, and the read rows can run without the write row.
func populate(ctx context.Context, root string, o NFSOptions) error {
	f, err := os.OpenFile(filepath.Join(root, nfsBigFile), os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o644)
	if err != nil {
		return err
	}
	buf := make([]byte, nfsBlock)
	fillPattern(buf, 0, 0)
	for off := int64(0); off < o.FileSize && ctx.Err() == nil; off += nfsBlock {
		stampPattern(buf, 0, uint64(off))
		if _, err := f.WriteAt(buf, off); err != nil {
			f.Close()
			return err
		}
	}
	if err := f.Close(); err != nil {
		return err
	}
	for d := 0; d < o.Dirs; d++ {
		if err := os.Mkdir(filepath.Join(root, nfsDirName(d)), 0o755); err != nil {
			return err
		}
	}
	for i := 0; i < o.Files && ctx.Err() == nil; i++ {
		n := smallFileSize(i, o.MinFile, o.MaxFile)
		stampPattern(buf[:n], uint64(i)+1, 0)
		if err := os.WriteFile(filepath.Join(root, nfsDirName(i%o.Dirs), nfsFileName(i)), buf[:n], 0o644); err != nil {
			return err
		}
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	syscall.Sync()
	return nil
}

// nfsTarget is one server under test, as the client sees it.
type nfsTarget struct {
	name      string // NFSGanesha or NFSBlockrep
	proc      *Server
	nfsAddr   string
	mountAddr string
	path      string // the export's MOUNT path
	conns     []*rpcConn
	root, big []byte
	dirs      [][]byte
	// bufs are the write buffers of the call slots (conns × depth, 1 MiB
	// each, filled by fillPattern outside the timing; a writer only
	// restamps the part it sends).
	bufs [][]byte
}

func (t *nfsTarget) close() {
	for _, c := range t.conns {
		c.close()
	}
	t.conns = nil
}

// connect mounts the export (retrying while the server starts: ganesha
// opens its MOUNT port after its NFS port), opens the connections and
// looks up the big file and the directories.
func (t *nfsTarget) connect(ctx context.Context, o NFSOptions) error {
	deadline := time.Now().Add(30 * time.Second)
	for {
		err := t.mount(ctx)
		if err == nil {
			break
		}
		if t.exited() != nil || time.Now().After(deadline) || ctx.Err() != nil {
			return t.failed(err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
	for range o.Conns {
		c, err := dialRPC(ctx, t.nfsAddr)
		if err != nil {
			return t.failed(err)
		}
		t.conns = append(t.conns, c)
	}
	for range o.Conns * o.Depth {
		b := make([]byte, nfsBlock)
		fillPattern(b, 0, 0)
		t.bufs = append(t.bufs, b)
	}
	c := t.conns[0]
	rtmax, wtmax, err := c.fsinfo(ctx, t.root)
	if err != nil {
		return t.failed(err)
	}
	if rtmax < nfsBlock || wtmax < nfsBlock {
		return t.failed(fmt.Errorf("FSINFO: rtmax %d, wtmax %d: the rows need 1 MiB READs and WRITEs", rtmax, wtmax))
	}
	if t.big, _, err = c.lookup(ctx, t.root, nfsBigFile); err != nil {
		return t.failed(err)
	}
	t.dirs = make([][]byte, o.Dirs)
	for d := range t.dirs {
		if t.dirs[d], _, err = c.lookup(ctx, t.root, nfsDirName(d)); err != nil {
			return t.failed(err)
		}
	}
	return nil
}

func (t *nfsTarget) mount(ctx context.Context) error {
	mctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	c, err := dialRPC(mctx, t.mountAddr)
	if err != nil {
		return err
	}
	defer c.close()
	t.root, err = c.mount(mctx, t.path)
	return err
}

// exited says how the server's process ended, nil while it runs (or when
// the target has no process of its own, as in tests).
func (t *nfsTarget) exited() error {
	if t.proc == nil {
		return nil
	}
	return t.proc.Exited()
}

// failed names the server in err and, if its process has exited, says
// so with the end of its log.
func (t *nfsTarget) failed(err error) error {
	if exited := t.exited(); exited != nil {
		return fmt.Errorf("bench: nfs: %s: %w (%v; log:\n%s)", t.name, err, exited, t.proc.LogTail(20))
	}
	return fmt.Errorf("bench: nfs: %s: %w", t.name, err)
}

// parallel runs work once per call slot (depth per connection), all at
// once; the first error cancels the others and is returned.
func (t *nfsTarget) parallel(ctx context.Context, depth int, work func(ctx context.Context, c *rpcConn, slot int) error) error {
	g, gctx := errgroup.WithContext(ctx)
	for i := 0; i < len(t.conns)*depth; i++ {
		c := t.conns[i%len(t.conns)]
		g.Go(func() error { return work(gctx, c, i) })
	}
	return g.Wait()
}

// verifier tracks the write verifier of one run: every WRITE and the
// COMMIT must return the same one, else the server restarted during the
// run and what was written UNSTABLE may be lost.
type verifier struct {
	mu   sync.Mutex
	set  bool
	verf [8]byte
}

func (v *verifier) check(verf [8]byte, what string) error {
	v.mu.Lock()
	defer v.mu.Unlock()
	if !v.set {
		v.set, v.verf = true, verf
		return nil
	}
	if verf != v.verf {
		return fmt.Errorf("%s returned write verifier %x, earlier calls %x: the server restarted during the run", what, verf, v.verf)
	}
	return nil
}

// runRow runs one row once on t.
func (t *nfsTarget) runRow(ctx context.Context, row NFSRow, o NFSOptions, seed uint64) (NFSResult, error) {
	if row.Workload == NFSSeqWrite {
		// A new file: the write allocates as a copy onto the export does.
		if err := t.conns[0].remove(ctx, t.root, nfsBigFile); err != nil && !errors.Is(err, nfs3ErrNoEnt) {
			return NFSResult{}, t.failed(err)
		}
		fh, err := t.conns[0].create(ctx, t.root, nfsBigFile, 0o644)
		if err != nil {
			return NFSResult{}, t.failed(err)
		}
		t.big = fh
	}
	if row.Warm {
		if _, err := t.runWorkload(ctx, row, o, seed); err != nil {
			return NFSResult{}, t.failed(err)
		}
	}
	// Start with no dirty pages: writeback left over from the previous run
	// would slow whichever server runs next.
	syscall.Sync()
	if row.Cold {
		if err := dropPageCache(); err != nil {
			return NFSResult{}, err
		}
	}
	srv0, err := procCPU(t.proc.PID())
	if err != nil {
		return NFSResult{}, t.failed(err)
	}
	cpu0 := cpuTime()
	start := time.Now()
	res, err := t.runWorkload(ctx, row, o, seed)
	if err != nil {
		return NFSResult{}, t.failed(err)
	}
	res.Elapsed = time.Since(start)
	res.ClientCPU = cpuTime() - cpu0
	srv1, err := procCPU(t.proc.PID())
	if err != nil {
		return NFSResult{}, t.failed(err)
	}
	res.ServerCPU = srv1 - srv0
	return res, nil
}

// runWorkload does the row's calls and counts them; the caller times it.
func (t *nfsTarget) runWorkload(ctx context.Context, row NFSRow, o NFSOptions, seed uint64) (NFSResult, error) {
	var ops, bytes atomic.Int64
	var verf verifier
	var err error
	switch row.Workload {
	case NFSSeqWrite, NFSSeqRead:
		chunks := o.FileSize / nfsBlock
		var next atomic.Int64
		err = t.parallel(ctx, o.Depth, func(ctx context.Context, c *rpcConn, slot int) error {
			buf := t.bufs[slot]
			for {
				k := next.Add(1) - 1
				if k >= chunks {
					return nil
				}
				off := uint64(k * nfsBlock)
				if row.Workload == NFSSeqWrite {
					stampPattern(buf, 0, off)
					if err := t.writeChecked(ctx, c, t.big, off, buf, &verf); err != nil {
						return err
					}
				} else {
					n, _, err := c.read(ctx, t.big, off, nfsBlock, func(data []byte) error { return checkPattern(data, 0, off) })
					if err != nil {
						return err
					}
					if n != nfsBlock {
						return fmt.Errorf("READ of %d bytes at %d of a %d-byte file returned %d", nfsBlock, off, o.FileSize, n)
					}
				}
				ops.Add(1)
				bytes.Add(nfsBlock)
			}
		})
		if err == nil && row.Workload == NFSSeqWrite {
			err = t.commitChecked(ctx, t.conns[0], t.big, &verf)
		}
	case NFSRandRead, NFSRandWrite:
		blocks := o.FileSize / nfsSmallBlock
		deadline := time.Now().Add(o.Runtime)
		err = t.parallel(ctx, o.Depth, func(ctx context.Context, c *rpcConn, slot int) error {
			rng := rand.New(rand.NewPCG(seed, uint64(slot)))
			buf := t.bufs[slot][:nfsSmallBlock]
			for time.Now().Before(deadline) {
				off := uint64(rng.Int64N(blocks) * nfsSmallBlock)
				if row.Workload == NFSRandWrite {
					stampPattern(buf, 0, off)
					if err := t.writeChecked(ctx, c, t.big, off, buf, &verf); err != nil {
						return err
					}
				} else {
					n, _, err := c.read(ctx, t.big, off, nfsSmallBlock, func(data []byte) error { return checkPattern(data, 0, off) })
					if err != nil {
						return err
					}
					if n != nfsSmallBlock {
						return fmt.Errorf("READ of %d bytes at %d returned %d", nfsSmallBlock, off, n)
					}
				}
				ops.Add(1)
				bytes.Add(nfsSmallBlock)
			}
			return nil
		})
		if err == nil && row.Workload == NFSRandWrite {
			err = t.commitChecked(ctx, t.conns[0], t.big, &verf)
		}
	case NFSSmallRead, NFSSmallCreate:
		var next atomic.Int64
		err = t.parallel(ctx, o.Depth, func(ctx context.Context, c *rpcConn, slot int) error {
			buf := t.bufs[slot][:o.MaxFile]
			for {
				i := int(next.Add(1) - 1)
				if i >= o.Files {
					return nil
				}
				size := smallFileSize(i, o.MinFile, o.MaxFile)
				dir := t.dirs[i%o.Dirs]
				var err error
				if row.Workload == NFSSmallRead {
					err = t.readSmall(ctx, c, dir, i, size, o.MaxFile)
				} else {
					stampPattern(buf[:size], uint64(i)+1, 0)
					err = t.createSmall(ctx, c, dir, nfsNewName(i), buf[:size])
				}
				if err != nil {
					return err
				}
				ops.Add(1)
				bytes.Add(int64(size))
			}
		})
	default:
		return NFSResult{}, fmt.Errorf("row %q: unknown workload %d", row.Name, row.Workload)
	}
	if err != nil {
		return NFSResult{}, err
	}
	return NFSResult{Ops: ops.Load(), Bytes: bytes.Load()}, nil
}

// writeChecked writes data UNSTABLE and checks that the server took it
// all and kept its verifier.
func (t *nfsTarget) writeChecked(ctx context.Context, c *rpcConn, fh []byte, off uint64, data []byte, verf *verifier) error {
	n, _, v, err := c.write(ctx, fh, off, data, unstable)
	if err != nil {
		return err
	}
	if int(n) != len(data) {
		return fmt.Errorf("WRITE of %d bytes at %d: the server wrote %d", len(data), off, n)
	}
	return verf.check(v, "WRITE")
}

// commitChecked commits the whole file and checks the verifier against
// the writes'.
func (t *nfsTarget) commitChecked(ctx context.Context, c *rpcConn, fh []byte, verf *verifier) error {
	v, err := c.commit(ctx, fh, 0, 0)
	if err != nil {
		return err
	}
	return verf.check(v, "COMMIT")
}

// readSmall is the web-host pattern for small file i: LOOKUP, GETATTR,
// READ of the whole file (one call: maxFile ≤ 1 MiB).
func (t *nfsTarget) readSmall(ctx context.Context, c *rpcConn, dir []byte, i, size, maxFile int) error {
	name := nfsFileName(i)
	fh, attr, err := c.lookup(ctx, dir, name)
	if err != nil {
		return err
	}
	if attr.Type != 0 && attr.Size != uint64(size) {
		return fmt.Errorf("LOOKUP %s: size %d, want %d", name, attr.Size, size)
	}
	if attr, err = c.getattr(ctx, fh); err != nil {
		return err
	}
	if attr.Type != 1 || attr.Size != uint64(size) {
		return fmt.Errorf("GETATTR %s: type %d size %d, want a regular file (1) of %d bytes", name, attr.Type, attr.Size, size)
	}
	n, eof, err := c.read(ctx, fh, 0, uint32(maxFile), func(data []byte) error { return checkPattern(data, uint64(i)+1, 0) })
	if err != nil {
		return err
	}
	if n != size || (!eof && n < maxFile) {
		return fmt.Errorf("READ %s: %d bytes (eof %v), want all %d", name, n, eof, size)
	}
	return nil
}

// createSmall creates name in dir, writes data UNSTABLE, commits and
// removes the file.
func (t *nfsTarget) createSmall(ctx context.Context, c *rpcConn, dir []byte, name string, data []byte) error {
	fh, err := c.create(ctx, dir, name, 0o644)
	if err != nil {
		return err
	}
	var verf verifier
	if err := t.writeChecked(ctx, c, fh, 0, data, &verf); err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	if err := t.commitChecked(ctx, c, fh, &verf); err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	return c.remove(ctx, dir, name)
}

// dropPageCache writes back dirty pages and drops the page cache, dentries
// and inodes (root).
func dropPageCache() error {
	syscall.Sync()
	if err := os.WriteFile("/proc/sys/vm/drop_caches", []byte("3"), 0); err != nil {
		return fmt.Errorf("bench: nfs: drop caches: %w", err)
	}
	return nil
}

// clockTicks is the unit of /proc/PID/stat's CPU times (USER_HZ, 100 on
// every Linux architecture Go supports).
const clockTicks = 100

// parseProcStatCPU returns utime + stime from the contents of
// /proc/PID/stat. The command name (field 2) may hold spaces and
// parentheses, so fields are counted after its last ")".
func parseProcStatCPU(stat []byte) (time.Duration, error) {
	s := string(stat)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0, fmt.Errorf("no command name in %.60q", s)
	}
	// Fields after the name start at field 3 (state); utime and stime are
	// fields 14 and 15.
	f := strings.Fields(s[i+1:])
	if len(f) < 13 {
		return 0, fmt.Errorf("%d fields after the command name in %.60q, want at least 13", len(f), s)
	}
	var ticks int64
	for _, v := range f[11:13] {
		var n int64
		if _, err := fmt.Sscan(v, &n); err != nil {
			return 0, fmt.Errorf("CPU time %q: %w", v, err)
		}
		ticks += n
	}
	return time.Duration(ticks) * time.Second / clockTicks, nil
}

// procCPU is process pid's CPU time (all its threads, user + system).
func procCPU(pid int) (time.Duration, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	return parseProcStatCPU(data)
}
