package bench

// This file is blockbench -raid: every RAID level of raid/ against a single
// file store on the same file system, in-process (the array is not wired
// into blockrepd yet, so there is no NBD server to drive with fio).

import (
	"context"
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

	"golang.org/x/sys/unix"

	"github.com/blockrep/blockrep/block"
	"github.com/blockrep/blockrep/raid"
)

// RaidConfig is one store measured by the RAID benchmark: the single file
// (Level 0) or an array of Members files.
type RaidConfig struct {
	Name    string
	Level   raid.Level // 0: a single raid.File, the reference
	Members int
	Copies  int // raid10 only
}

// RaidReference is the name of the reference configuration.
const RaidReference = "single file"

// DefaultRaidConfigs are the configurations of blockbench -raid, the
// reference first.
var DefaultRaidConfigs = []RaidConfig{
	{Name: RaidReference, Members: 1},
	{Name: "RAID1 ×2", Level: raid.Level1, Members: 2},
	{Name: "RAID1 ×3", Level: raid.Level1, Members: 3},
	{Name: "RAID10 4×2", Level: raid.Level10, Members: 4, Copies: 2},
	{Name: "RAID5 ×3", Level: raid.Level5, Members: 3},
	{Name: "RAID5 ×4", Level: raid.Level5, Members: 4},
	{Name: "RAID6 ×4", Level: raid.Level6, Members: 4},
}

// SelectRaidConfigs returns the reference and the DefaultRaidConfigs whose
// name contains one of the comma-separated substrings of only; all of them
// when only is empty.
func SelectRaidConfigs(only string) []RaidConfig {
	if strings.TrimSpace(only) == "" {
		return DefaultRaidConfigs
	}
	out := []RaidConfig{DefaultRaidConfigs[0]}
	for _, c := range DefaultRaidConfigs[1:] {
		for _, sub := range strings.Split(only, ",") {
			if sub = strings.TrimSpace(sub); sub != "" && strings.Contains(c.Name, sub) {
				out = append(out, c)
				break
			}
		}
	}
	return out
}

// Geometry returns the array geometry that gives the configuration a
// logical capacity of size bytes (rounded down to whole stripes), so that
// every configuration exposes the same address space to the workloads.
// The reference has none (ok is false).
func (c RaidConfig) Geometry(size, chunk int64) (g raid.Geometry, ok bool) {
	if c.Level == 0 {
		return raid.Geometry{}, false
	}
	g = raid.Geometry{Level: c.Level, Members: c.Members, ChunkSize: chunk, Copies: c.Copies}
	g.MemberSize = size / int64(g.DataMembers()) / chunk * chunk
	return g, true
}

// MemberSize is the size of each member file for a logical capacity of
// size bytes.
func (c RaidConfig) MemberSize(size, chunk int64) int64 {
	if g, ok := c.Geometry(size, chunk); ok {
		return g.MemberSize
	}
	return size
}

// Mirrors is the number of copies of every byte on a RAID 1 configuration
// or the reference (1); 0 for the others.
func (c RaidConfig) Mirrors() int {
	switch c.Level {
	case 0:
		return 1
	case raid.Level1:
		return c.Members
	}
	return 0
}

// RaidWorkload is one in-process job shape.
type RaidWorkload struct {
	Name       string
	Write      bool
	Random     bool
	BlockSize  int
	Throughput bool // judged by MiB/s (else IOPS)
}

// RaidWorkloads are the workloads of blockbench -raid.
var RaidWorkloads = []RaidWorkload{
	{Name: "1M sequential read", BlockSize: 1 << 20, Throughput: true},
	{Name: "1M sequential write", Write: true, BlockSize: 1 << 20, Throughput: true},
	{Name: "4K random read", Random: true, BlockSize: 4 << 10},
	{Name: "4K random write", Write: true, Random: true, BlockSize: 4 << 10},
}

// RaidReadWorkloads are the read workloads of RaidWorkloads.
func RaidReadWorkloads() []RaidWorkload {
	var out []RaidWorkload
	for _, w := range RaidWorkloads {
		if !w.Write {
			out = append(out, w)
		}
	}
	return out
}

// RaidResult is one run of one workload on one configuration.
type RaidResult struct {
	Ops     int64
	Bytes   int64
	Elapsed time.Duration // including the final Flush of a write run
	CPU     time.Duration // user+system CPU of the whole process during the run
}

// IOPS is requests per second.
func (r RaidResult) IOPS() float64 {
	if r.Elapsed <= 0 {
		return 0
	}
	return float64(r.Ops) / r.Elapsed.Seconds()
}

// MiBps is mebibytes per second.
func (r RaidResult) MiBps() float64 {
	if r.Elapsed <= 0 {
		return 0
	}
	return float64(r.Bytes) / (1 << 20) / r.Elapsed.Seconds()
}

// CPUPercent is the process's CPU use in percent of one core.
func (r RaidResult) CPUPercent() float64 {
	if r.Elapsed <= 0 {
		return 0
	}
	return 100 * r.CPU.Seconds() / r.Elapsed.Seconds()
}

// MedianRaid returns the run with the median throughput (bytes per
// second; IOPS orders the same within one workload).
func MedianRaid(runs []RaidResult) RaidResult {
	if len(runs) == 0 {
		return RaidResult{}
	}
	s := append([]RaidResult(nil), runs...)
	sort.Slice(s, func(i, j int) bool { return s[i].MiBps() < s[j].MiBps() })
	return s[len(s)/2]
}

// RaidCell is the median of one configuration on one workload.
type RaidCell struct {
	Config   RaidConfig
	Workload RaidWorkload
	Median   RaidResult
	Runs     []RaidResult
}

// describeRaid returns "N MiB/s (M IOPS)" or "M IOPS (N MiB/s)" by the
// workload's metric.
func describeRaid(w RaidWorkload, r RaidResult) string {
	if w.Throughput {
		return fmt.Sprintf("%.0f MiB/s (%.0f IOPS)", r.MiBps(), r.IOPS())
	}
	return fmt.Sprintf("%.0f IOPS (%.1f MiB/s)", r.IOPS(), r.MiBps())
}

func raidRatio(r, ref RaidResult) float64 {
	if ref.MiBps() == 0 {
		return 0
	}
	return r.MiBps() / ref.MiBps()
}

// WriteRaidTable prints one Markdown table per workload: every
// configuration's median, its ratio to the reference (the first
// configuration in cells for that workload) and the process CPU.
func WriteRaidTable(w io.Writer, cells []RaidCell) {
	for _, wl := range workloadsOf(cells) {
		fmt.Fprintf(w, "**%s**\n\n| configuration | median | ratio to single file | CPU (%% of one core) | runs (%s) |\n|---|---|---|---|---|\n", wl.Name, unitOf(wl))
		var ref RaidResult
		for _, c := range cells {
			if c.Workload.Name != wl.Name {
				continue
			}
			if c.Config.Level == 0 {
				ref = c.Median
			}
			fmt.Fprintf(w, "| %s | %s | %.2f× | %.0f%% | %s |\n", c.Config.Name, describeRaid(wl, c.Median), raidRatio(c.Median, ref), c.Median.CPUPercent(), runList(wl, c.Runs))
		}
		fmt.Fprintln(w)
	}
}

// WriteRaidScaling prints the "RAID1 read scaling" family: the read
// workloads on 1 (the single file), 2 and 3 mirrors, with the ratio to one.
func WriteRaidScaling(w io.Writer, cells []RaidCell) {
	fmt.Fprintf(w, "| mirrors | workload | median | ratio to 1 mirror | CPU (%% of one core) |\n|---|---|---|---|---|\n")
	for _, wl := range workloadsOf(cells) {
		if wl.Write {
			continue
		}
		var mirrors []RaidCell
		for _, c := range cells {
			if c.Workload.Name == wl.Name && c.Config.Mirrors() > 0 {
				mirrors = append(mirrors, c)
			}
		}
		sort.SliceStable(mirrors, func(i, j int) bool { return mirrors[i].Config.Mirrors() < mirrors[j].Config.Mirrors() })
		var one RaidResult
		for _, c := range mirrors {
			if c.Config.Mirrors() == 1 {
				one = c.Median
			}
			fmt.Fprintf(w, "| %d | %s | %s | %.2f× | %.0f%% |\n", c.Config.Mirrors(), wl.Name, describeRaid(wl, c.Median), raidRatio(c.Median, one), c.Median.CPUPercent())
		}
	}
}

func unitOf(w RaidWorkload) string {
	if w.Throughput {
		return "MiB/s"
	}
	return "IOPS"
}

func runList(w RaidWorkload, runs []RaidResult) string {
	s := ""
	for i, r := range runs {
		if i > 0 {
			s += ", "
		}
		if w.Throughput {
			s += fmt.Sprintf("%.0f", r.MiBps())
		} else {
			s += fmt.Sprintf("%.0f", r.IOPS())
		}
	}
	return s
}

func workloadsOf(cells []RaidCell) []RaidWorkload {
	var out []RaidWorkload
	seen := map[string]bool{}
	for _, c := range cells {
		if !seen[c.Workload.Name] {
			seen[c.Workload.Name] = true
			out = append(out, c.Workload)
		}
	}
	return out
}

// RaidOptions configure RunRaid.
type RaidOptions struct {
	Dir       string
	Size      int64 // logical capacity of every configuration
	ChunkSize int64
	Runtime   time.Duration
	Rounds    int
	Jobs      int
	// Warm keeps the page cache: every run starts after a sync with the
	// stores' data cached (the fill leaves it there), so the runs measure
	// the CPU cost of each level's code path. Otherwise the cache is
	// dropped before every run.
	Warm bool
	// Disks, when enabled, puts every member file (and the reference
	// file) on its own loop device whose reads this process may do only
	// at the given rate: separate disks of a known speed. Only reads are
	// capped (buffered writeback is not the writer's I/O to the kernel's
	// throttle), so the default workloads are then the read ones.
	Disks     DiskLimits
	Configs   []RaidConfig   // default DefaultRaidConfigs
	Workloads []RaidWorkload // default RaidWorkloads (RaidReadWorkloads with Disks)
	Out       io.Writer
	Progress  func(format string, args ...any)
}

// raidStore is one open configuration.
type raidStore struct {
	cfg   RaidConfig
	dev   block.Device
	files []*raid.File
}

func (s *raidStore) close() {
	if s.dev != nil && s.cfg.Level != 0 {
		s.dev.Close()
	}
	for _, f := range s.files {
		f.Close()
	}
}

// RunRaid creates every configuration's member files under a new directory
// in o.Dir, writes each store fully once, then runs every workload on every
// configuration o.Rounds times, rounds interleaved across configurations,
// dropping the page cache before each run unless o.Warm. It prints the tables to o.Out.
func RunRaid(ctx context.Context, o RaidOptions) error {
	if o.Configs == nil {
		o.Configs = DefaultRaidConfigs
	}
	if o.Workloads == nil {
		o.Workloads = RaidWorkloads
		if o.Disks.Enabled() {
			o.Workloads = RaidReadWorkloads()
		}
	}
	if o.Progress == nil {
		o.Progress = func(string, ...any) {}
	}
	if o.Jobs < 1 || o.Rounds < 1 || o.Runtime <= 0 {
		return fmt.Errorf("bench: raid: need jobs, rounds and runtime > 0")
	}
	if err := checkDiskCoverage(o); err != nil {
		return err
	}
	work, err := os.MkdirTemp(o.Dir, "blockbench-raid-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)

	var disks *throttledDisks
	if o.Disks.Enabled() {
		if disks, err = newThrottledDisks(o.Disks); err != nil {
			return err
		}
	}
	var stores []*raidStore
	defer func() {
		for _, s := range stores {
			s.close()
		}
		if disks != nil {
			if err := disks.close(); err != nil {
				o.Progress("cleanup: %v", err)
			}
		}
	}()
	for i, c := range o.Configs {
		s, err := openRaidStore(filepath.Join(work, fmt.Sprintf("c%d", i)), c, o.Size, o.ChunkSize, disks)
		if err != nil {
			return err
		}
		stores = append(stores, s)
		start := time.Now()
		if err := fillStore(ctx, s.dev, o.Jobs); err != nil {
			return fmt.Errorf("bench: raid: fill %s: %w", c.Name, err)
		}
		o.Progress("filled %s: %d × %d MiB members, %d MiB logical, in %.1fs", c.Name, len(s.files), c.MemberSize(o.Size, o.ChunkSize)>>20, s.dev.Size()>>20, time.Since(start).Seconds())
	}

	prepare := func() string { return dropCaches(stores) }
	if o.Warm {
		prepare = func() string {
			syscall.Sync()
			return "kept (sync only, warm cache)"
		}
	}
	dropMethod := prepare()
	where := o.Dir
	if disks != nil {
		where = fmt.Sprintf("%s, every file on its own loop device capped at %s", o.Dir, o.Disks)
	}
	fmt.Fprintf(o.Out, "blockbench -raid: %d configurations × %d workloads × %d rounds × %s, %d jobs, %d MiB logical per configuration, chunk %d KiB, in %s; page cache before each run: %s\n\n",
		len(o.Configs), len(o.Workloads), o.Rounds, o.Runtime, o.Jobs, o.Size>>20, o.ChunkSize>>10, where, dropMethod)

	runs := make(map[[2]int][]RaidResult)
	for r := 0; r < o.Rounds; r++ {
		for wi, wl := range o.Workloads {
			for ci, s := range stores {
				if err := ctx.Err(); err != nil {
					return err
				}
				prepare()
				res, err := runRaidWorkload(ctx, s.dev, wl, o.Jobs, o.Runtime, uint64(r*1000+wi*10+ci))
				if err != nil {
					return fmt.Errorf("bench: raid: %s on %s: %w", wl.Name, s.cfg.Name, err)
				}
				runs[[2]int{wi, ci}] = append(runs[[2]int{wi, ci}], res)
				o.Progress("round %d %s %s: %s, CPU %.0f%%", r+1, wl.Name, s.cfg.Name, describeRaid(wl, res), res.CPUPercent())
			}
		}
	}
	var cells []RaidCell
	for wi, wl := range o.Workloads {
		for ci, c := range o.Configs {
			rs := runs[[2]int{wi, ci}]
			cells = append(cells, RaidCell{Config: c, Workload: wl, Median: MedianRaid(rs), Runs: rs})
		}
	}
	WriteRaidTable(o.Out, cells)
	fmt.Fprintf(o.Out, "**RAID1 read scaling** (the same runs as above)\n\n")
	WriteRaidScaling(o.Out, cells)
	return nil
}

// checkDiskCoverage refuses throttled disks whose data a sequential run
// would read entirely: after one pass the rest of the run comes from the
// page cache and measures memory, not the disks (every member reading at
// the cap, the whole run long, must stay within one configuration's
// logical size).
func checkDiskCoverage(o RaidOptions) error {
	if o.Disks.ReadBPS <= 0 {
		return nil
	}
	widest := 1
	for _, c := range o.Configs {
		widest = max(widest, c.Members)
	}
	read := o.Disks.ReadBPS * int64(widest) * int64(o.Runtime/time.Millisecond) / 1000
	if read >= o.Size {
		return fmt.Errorf("bench: raid: -size %d MiB is too small for -disk-mbps %d over %s: %d members would read %d MiB in one run and the rest of it would come from the page cache; raise -size or lower -disk-mbps or -runtime",
			o.Size>>20, o.Disks.ReadBPS/1e6, o.Runtime, widest, read>>20)
	}
	return nil
}

// openRaidStore creates the configuration's member files (sparse) in dir
// prefix and assembles the store; with disks, each file is used through
// its own throttled loop device.
func openRaidStore(prefix string, c RaidConfig, size, chunk int64, disks *throttledDisks) (*raidStore, error) {
	s := &raidStore{cfg: c}
	msize := c.MemberSize(size, chunk)
	for m := 0; m < c.Members; m++ {
		path := fmt.Sprintf("%s-m%d.img", prefix, m)
		opts := raid.FileOptions{CreateSize: msize}
		if disks != nil {
			err := os.WriteFile(path, nil, 0o600)
			if err == nil {
				err = os.Truncate(path, msize)
			}
			if err == nil {
				path, err = disks.attach(path)
			}
			if err != nil {
				s.close()
				return nil, err
			}
			opts = raid.FileOptions{}
		}
		f, err := raid.OpenFile(path, opts)
		if err != nil {
			s.close()
			return nil, err
		}
		s.files = append(s.files, f)
	}
	g, ok := c.Geometry(size, chunk)
	if !ok {
		s.dev = s.files[0]
		return s, nil
	}
	devs := make([]block.Device, len(s.files))
	for i, f := range s.files {
		devs[i] = f
	}
	a, err := raid.NewArray(g, devs, raid.ArrayOptions{Name: c.Name})
	if err != nil {
		s.close()
		return nil, err
	}
	s.dev = a
	return s, nil
}

// fillStore writes the whole device once with non-zero data in 1 MiB
// requests (jobs writers), then flushes, so that reads hit allocated
// blocks and parity is consistent.
func fillStore(ctx context.Context, dev block.Device, jobs int) error {
	const bs = 1 << 20
	size := dev.Size()
	var next atomic.Int64
	var wg sync.WaitGroup
	errs := make([]error, jobs)
	for j := range jobs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf := make([]byte, bs)
			rng := rand.New(rand.NewPCG(uint64(j), 1))
			for i := range buf {
				buf[i] = byte(rng.Uint32() | 1)
			}
			for ctx.Err() == nil {
				off := next.Add(bs) - bs
				if off >= size {
					return
				}
				n := min(int64(bs), size-off)
				if err := dev.WriteAt(buf[:n], off, false); err != nil {
					errs[j] = err
					return
				}
			}
		}()
	}
	wg.Wait()
	if err := errors.Join(append(errs, ctx.Err())...); err != nil {
		return err
	}
	return dev.Flush()
}

// dropCaches writes back dirty pages and drops the page cache (as root),
// else asks the kernel to drop each member file's cached pages
// (fadvise DONTNEED, which drops only clean pages). It returns the method.
func dropCaches(stores []*raidStore) string {
	syscall.Sync()
	if err := os.WriteFile("/proc/sys/vm/drop_caches", []byte("3"), 0); err == nil {
		return "sync + drop_caches=3"
	}
	for _, s := range stores {
		for _, f := range s.files {
			if fd, err := os.Open(f.Path()); err == nil {
				unix.Fadvise(int(fd.Fd()), 0, 0, unix.FADV_DONTNEED)
				fd.Close()
			}
		}
	}
	return "sync + fadvise(DONTNEED) per member file (drop_caches not writable)"
}

// cpuTime is the process's user+system CPU time so far.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// runRaidWorkload runs wl on dev with jobs goroutines for runtime. A write
// run ends with a Flush, timed with it. Sequential jobs each walk their own
// 1/jobs of the device, wrapping around; random jobs pick block-aligned
// offsets uniformly over the whole device.
func runRaidWorkload(ctx context.Context, dev block.Device, wl RaidWorkload, jobs int, runtime time.Duration, seed uint64) (RaidResult, error) {
	bs := int64(wl.BlockSize)
	blocks := dev.Size() / bs
	per := blocks / int64(jobs)
	if per < 1 {
		return RaidResult{}, fmt.Errorf("device of %d bytes too small for %d jobs of %d-byte requests", dev.Size(), jobs, bs)
	}
	var ops atomic.Int64
	var stop atomic.Bool
	var wg sync.WaitGroup
	errs := make([]error, jobs)
	cpu0 := cpuTime()
	start := time.Now()
	timer := time.AfterFunc(runtime, func() { stop.Store(true) })
	defer timer.Stop()
	for j := range jobs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf := make([]byte, bs)
			rng := rand.New(rand.NewPCG(seed, uint64(j)))
			for i := range buf {
				buf[i] = byte(rng.Uint32() | 1)
			}
			base, k := int64(j)*per, int64(0)
			var n int64
			for !stop.Load() && ctx.Err() == nil {
				var off int64
				if wl.Random {
					off = rng.Int64N(blocks) * bs
				} else {
					off = (base + k) * bs
					if k++; k == per {
						k = 0
					}
				}
				var err error
				if wl.Write {
					err = dev.WriteAt(buf, off, false)
				} else {
					err = dev.ReadAt(buf, off)
				}
				if err != nil {
					errs[j] = err
					break
				}
				n++
			}
			ops.Add(n)
		}()
	}
	wg.Wait()
	if err := errors.Join(append(errs, ctx.Err())...); err != nil {
		return RaidResult{}, err
	}
	if wl.Write {
		if err := dev.Flush(); err != nil {
			return RaidResult{}, err
		}
	}
	res := RaidResult{Ops: ops.Load(), Elapsed: time.Since(start), CPU: cpuTime() - cpu0}
	res.Bytes = res.Ops * bs
	return res, nil
}
