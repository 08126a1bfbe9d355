// Command blockbench compares blockrepd with nbdkit's file plugin: the same
// fio jobs (ioengine=nbd) against both, on identical backing files, rounds
// interleaved so that machine noise hits both alike. It prints a Markdown
// table with ratios and blockrepd's memory use.
//
// With -replication it measures replication instead: nbdkit, a standalone
// blockrepd and a blockrepd primary with a protocol-C secondary side by
// side, then the resync of a secondary that was down against a plain copy
// of the same bytes (see docs/BENCHMARKS.md). -security none,mac,tls adds a
// replicated pair per link protection, measured in the same rounds.
//
// With -failover it measures automatic failover: two data nodes and a
// witness in one cluster; the primary is killed (SIGKILL) during writes,
// and the time until the other node acknowledges a write is reported.
//
// With -raid it measures the RAID levels of raid/ against a single file
// store on the same file system, in-process (the array is not wired into
// blockrepd yet): sequential 1 MiB and random 4 KiB reads and writes
// through block.Device, rounds interleaved across the configurations.
//
// With -nfs it measures blockrep's NFSv3 server (nfsexport/) against
// nfs-ganesha: each serves a loop-mounted file system of the same type and
// size, and the same Go client (several connections, calls in flight)
// runs sequential and random I/O on a big file and the web-host pattern on
// many small files against both (root). blockrep's server runs in a
// process of its own: blockbench started again with -nfs-serve-dir.
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime/pprof"
	"strings"
	"syscall"
	"time"

	"github.com/blockrep/blockrep/bench"
	"github.com/blockrep/blockrep/config"
)

func main() {
	blockrepd := flag.String("blockrepd", "", "blockrepd binary (default: next to blockbench, then $PATH)")
	nbdkit := flag.String("nbdkit", "nbdkit", "nbdkit binary")
	fio := flag.String("fio", "fio", "fio binary")
	dir := flag.String("dir", "/var/tmp", "directory for the backing files (both on the same file system)")
	size := sizeFlag(1 << 30)
	flag.Var(&size, "size", "backing file size: bytes or with a binary suffix (256MiB, 1GiB)")
	runtime := flag.Duration("runtime", 5*time.Second, "fio runtime per run")
	rounds := flag.Int("rounds", 3, "runs per row and server; the median is reported")
	only := flag.String("rows", "", "comma-separated substrings selecting rows (default all); with -raid, configurations by name (the single file is always measured)")
	replication := flag.Bool("replication", false, "measure replication: nbdkit, standalone and replicated blockrepd, then resync against a plain copy")
	resyncSize := sizeFlag(512 << 20)
	flag.Var(&resyncSize, "resync-size", "with -replication: bytes written while the secondary is down, then resynced; 0 skips the resync rounds (default 512MiB, at most half of -size)")
	syncTimeout := flag.Duration("sync-timeout", 10*time.Minute, "with -replication or -failover: longest wait for the secondary to be in sync")
	security := flag.String("security", "mac", "with -replication: comma-separated replication.security values (none, mac, tls) to measure side by side, one replicated pair each; ratios are to the first")
	failover := flag.Bool("failover", false, "measure failover: kill -9 the primary of a two-node cluster with a witness during writes, time until the other node acknowledges a write (-size default 64MiB)")
	failoverTimeout := flag.Duration("failover-timeout", config.DefaultFailoverTimeout, "with -failover: the cluster's failover_timeout")
	heartbeat := flag.Duration("heartbeat", config.DefaultHeartbeatInterval, "with -failover: the cluster's heartbeat_interval")
	raidMode := flag.Bool("raid", false, "measure the RAID levels in-process against a single file store: -size is every configuration's logical capacity (default 256MiB)")
	jobs := flag.Int("jobs", 4, "with -raid: concurrent requests (goroutines) per run")
	warm := flag.Bool("warm", false, "with -raid: keep the page cache between runs (sync only) instead of dropping it before each run")
	chunk := sizeFlag(64 << 10)
	flag.Var(&chunk, "chunk", "with -raid: the arrays' chunk size")
	diskIOPS := flag.Int64("disk-iops", 0, "with -raid: put every file on its own loop device capped at this many read IOPS (separate disks of a known speed; root; read workloads only)")
	diskMBps := flag.Int64("disk-mbps", 0, "with -raid: as -disk-iops, a cap of this many MB/s read per loop device")
	cpuProfile := flag.String("cpuprofile", "", "write a CPU profile of the whole run to this file (go tool pprof)")
	nfsMode := flag.Bool("nfs", false, "measure NFS: blockrep's NFSv3 server against nfs-ganesha, each on a loop-mounted file system of -size (default: enough for the files), driven by the same Go client (root)")
	nfsFS := flag.String("nfs-fs", "ext4", "with -nfs: the type of both file systems, ext4 or xfs")
	nfsFileSize := sizeFlag(bench.DefaultNFSFileSize)
	flag.Var(&nfsFileSize, "nfs-file-size", "with -nfs: the file of the sequential and random rows")
	nfsFiles := flag.Int("nfs-files", bench.DefaultNFSFiles, "with -nfs: files of the small-file rows")
	nfsDirs := flag.Int("nfs-dirs", bench.DefaultNFSDirs, "with -nfs: directories the small files are spread over")
	nfsMinFile, nfsMaxFile := sizeFlag(bench.DefaultNFSMinFile), sizeFlag(bench.DefaultNFSMaxFile)
	flag.Var(&nfsMinFile, "nfs-file-min", "with -nfs: smallest small file")
	flag.Var(&nfsMaxFile, "nfs-file-max", "with -nfs: largest small file (sizes are spread uniformly in between)")
	nfsConns := flag.Int("nfs-conns", bench.DefaultNFSConns, "with -nfs: TCP connections to each server")
	nfsDepth := flag.Int("nfs-depth", bench.DefaultNFSDepth, "with -nfs: calls in flight on each connection")
	nfsServers := flag.String("nfs-servers", bench.NFSGanesha+","+bench.NFSBlockrep, "with -nfs: the servers measured (comma-separated)")
	nfsQuick := flag.Bool("nfs-quick", false, "with -nfs: a quick run, -nfs-file-size 64MiB -nfs-files 1000 -nfs-dirs 10 -runtime 1s -rounds 1 unless given")
	nfsServerProfile := flag.String("nfs-server-cpuprofile", "", "with -nfs: blockrep's server process writes a CPU profile of its whole run to this file (go tool pprof)")
	ganesha := flag.String("ganesha", "ganesha.nfsd", "with -nfs: the nfs-ganesha binary")
	rpcbind := flag.String("rpcbind", "rpcbind", "with -nfs: the rpcbind binary, started if nothing serves port 111")
	// The blockrep server process of -nfs; hidden from -help.
	serveDir := flag.String(serveFlagPrefix+"dir", "", "internal: serve this directory over NFS (the -nfs server process)")
	serveListen := flag.String(serveFlagPrefix+"listen", "", "internal: the -nfs server process's address")
	serveProfile := flag.String(serveFlagPrefix+"cpuprofile", "", "internal: the -nfs server process's CPU profile")
	flag.Usage = usage
	flag.Parse()
	if *cpuProfile != "" {
		f, err := os.Create(*cpuProfile)
		if err != nil {
			fmt.Fprintln(os.Stderr, "blockbench:", err)
			os.Exit(2)
		}
		if err := pprof.StartCPUProfile(f); err != nil {
			fmt.Fprintln(os.Stderr, "blockbench:", err)
			os.Exit(2)
		}
		defer pprof.StopCPUProfile()
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	resyncSet, sizeSet := false, false
	set := map[string]bool{}
	flag.Visit(func(f *flag.Flag) {
		resyncSet = resyncSet || f.Name == "resync-size"
		sizeSet = sizeSet || f.Name == "size"
		set[f.Name] = true
	})
	if !resyncSet {
		resyncSize = min(resyncSize, size/2/(1<<20)*(1<<20))
	}
	var err error
	if *serveDir != "" {
		err = bench.ServeNFS(ctx, bench.NFSServeOptions{
			Dir: *serveDir, Listen: *serveListen, CPUProfile: *serveProfile,
			Logger: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})),
		})
	} else if *nfsMode {
		if *nfsQuick {
			quick := map[string]func(){
				"nfs-file-size": func() { nfsFileSize = 64 << 20 },
				"nfs-files":     func() { *nfsFiles = 1000 },
				"nfs-dirs":      func() { *nfsDirs = 10 },
				"runtime":       func() { *runtime = time.Second },
				"rounds":        func() { *rounds = 1 },
			}
			for name, apply := range quick {
				if !set[name] {
					apply()
				}
			}
		}
		o := bench.NFSOptions{
			Dir: *dir, FSType: *nfsFS, FileSize: int64(nfsFileSize),
			Files: *nfsFiles, Dirs: *nfsDirs, MinFile: int(nfsMinFile), MaxFile: int(nfsMaxFile),
			Runtime: *runtime, Rounds: *rounds, Conns: *nfsConns, Depth: *nfsDepth,
			Servers: strings.Split(*nfsServers, ","), Rows: bench.SelectNFSRows(*only),
			Ganesha: *ganesha, Rpcbind: *rpcbind, ServerCPUProfile: *nfsServerProfile,
			Out: os.Stdout,
			Progress: func(format string, args ...any) {
				fmt.Fprintf(os.Stderr, "blockbench: %s %s\n", time.Now().Format("15:04:05"), fmt.Sprintf(format, args...))
			},
		}
		if sizeSet {
			o.FSSize = int64(size)
		}
		err = bench.RunNFS(ctx, o)
	} else if *raidMode {
		if !sizeSet {
			size = 256 << 20
		}
		err = bench.RunRaid(ctx, bench.RaidOptions{
			Dir: *dir, Size: int64(size), ChunkSize: int64(chunk), Runtime: *runtime,
			Rounds: *rounds, Jobs: *jobs, Warm: *warm, Out: os.Stdout,
			Disks:   bench.DiskLimits{ReadIOPS: *diskIOPS, ReadBPS: *diskMBps * 1e6},
			Configs: bench.SelectRaidConfigs(*only),
			Progress: func(format string, args ...any) {
				fmt.Fprintf(os.Stderr, "blockbench: %s %s\n", time.Now().Format("15:04:05"), fmt.Sprintf(format, args...))
			},
		})
	} else if *failover {
		if !sizeSet {
			size = 64 << 20
		}
		err = runFailover(ctx, *blockrepd, *dir, int64(size), *rounds, *heartbeat, *failoverTimeout, *syncTimeout)
	} else if *replication {
		err = runReplication(ctx, replOptions{
			blockrepd: *blockrepd, nbdkit: *nbdkit, fio: *fio, dir: *dir,
			size: int64(size), runtime: *runtime, rounds: *rounds, only: *only,
			resyncSize: int64(resyncSize), syncTimeout: *syncTimeout,
			security: strings.Split(*security, ","),
		})
	} else {
		err = run(ctx, *blockrepd, *nbdkit, *fio, *dir, int64(size), *runtime, *rounds, *only)
	}
	if err != nil {
		if ctx.Err() != nil {
			fmt.Fprintln(os.Stderr, "blockbench: interrupted; servers stopped")
			os.Exit(1)
		}
		fmt.Fprintln(os.Stderr, "blockbench:", err)
		os.Exit(1)
	}
}

// serveFlagPrefix starts the names of the flags of -nfs's server process,
// which -help does not show.
const serveFlagPrefix = "nfs-serve-"

// usage prints the flags as flag.PrintDefaults does, without the internal
// ones of -nfs's server process.
func usage() {
	visible := flag.NewFlagSet(os.Args[0], flag.ContinueOnError)
	visible.SetOutput(flag.CommandLine.Output())
	flag.VisitAll(func(f *flag.Flag) {
		if !strings.HasPrefix(f.Name, serveFlagPrefix) {
			visible.Var(f.Value, f.Name, f.Usage)
		}
	})
	fmt.Fprintf(flag.CommandLine.Output(), "Usage of %s:\n", os.Args[0])
	visible.PrintDefaults()
}

// sizeFlag is a size in bytes, given as a byte count or with a binary
// suffix as in blockrepd's configuration.
type sizeFlag int64

func (s *sizeFlag) String() string { return config.FormatSize(int64(*s)) }

func (s *sizeFlag) Set(v string) error {
	n, err := config.ParseSize(v)
	if err != nil {
		return err
	}
	*s = sizeFlag(n)
	return nil
}

// findTools resolves blockrepd (default: next to blockbench, then $PATH)
// and the other tools to absolute paths.
func findTools(blockrepd *string, others ...*string) error {
	if *blockrepd == "" {
		self, _ := os.Executable()
		*blockrepd = filepath.Join(filepath.Dir(self), "blockrepd")
		if _, err := os.Stat(*blockrepd); err != nil {
			*blockrepd = "blockrepd"
		}
	}
	for _, tool := range append([]*string{blockrepd}, others...) {
		p, err := exec.LookPath(*tool)
		if err != nil {
			return fmt.Errorf("%s not found: %w", *tool, err)
		}
		*tool = p
	}
	return nil
}

func run(ctx context.Context, blockrepd, nbdkit, fio, dir string, size int64, runtime time.Duration, rounds int, only string) error {
	if err := findTools(&blockrepd, &nbdkit, &fio); err != nil {
		return err
	}
	work, err := os.MkdirTemp(dir, "blockbench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)

	refFile, brFile := filepath.Join(work, "nbdkit.img"), filepath.Join(work, "blockrepd.img")
	for _, f := range []string{refFile, brFile} {
		if err := bench.FillFile(f, size); err != nil {
			return err
		}
	}
	ref, err := bench.StartNbdkit(ctx, nbdkit, refFile, work)
	if err != nil {
		return err
	}
	defer ref.Stop()
	br, err := bench.StartBlockrepd(ctx, blockrepd, brFile, work)
	if err != nil {
		return err
	}
	defer br.Stop()

	rows := selectRows(bench.DefaultRows, only)
	fmt.Printf("blockbench: %d rows x %d rounds x %s, %d MiB backing files in %s\n", len(rows), rounds, runtime, size>>20, dir)
	var comps []bench.Comparison
	for _, row := range rows {
		var refRuns, brRuns []bench.Result
		for i := 0; i < rounds; i++ {
			for _, s := range []*bench.Server{ref, br} {
				// Start every run with no dirty pages: writeback left over
				// from the previous run would slow whichever server runs
				// next.
				syscall.Sync()
				res, err := bench.RunFio(ctx, fio, s.URI, row, size, runtime)
				if err != nil {
					return err
				}
				if s == ref {
					refRuns = append(refRuns, res)
				} else {
					brRuns = append(brRuns, res)
				}
			}
		}
		c := bench.Comparison{Row: row, Reference: bench.Median(refRuns, row.Metric), Blockrep: bench.Median(brRuns, row.Metric)}
		fmt.Fprintf(os.Stderr, "  %s: ratio %.2f\n", row.Name, c.Ratio())
		comps = append(comps, c)
	}
	fmt.Println()
	bench.WriteTable(os.Stdout, "nbdkit file", comps)
	_, hwm, err := br.RSS()
	if err != nil {
		return err
	}
	_, refHWM, _ := ref.RSS()
	fmt.Printf("\nblockrepd RSS after the runs: peak (VmHWM) %.1f MiB; nbdkit peak %.1f MiB\n", float64(hwm)/(1<<20), float64(refHWM)/(1<<20))
	return nil
}

// runFailover runs bench.RunFailover; timing equal to the daemon's
// defaults is left out of the configurations.
func runFailover(ctx context.Context, blockrepd, dir string, size int64, rounds int, heartbeat, failoverTimeout, syncTimeout time.Duration) error {
	if err := findTools(&blockrepd); err != nil {
		return err
	}
	if heartbeat == config.DefaultHeartbeatInterval && failoverTimeout == config.DefaultFailoverTimeout {
		heartbeat, failoverTimeout = 0, 0
	}
	return bench.RunFailover(ctx, bench.FailoverOptions{
		Blockrepd: blockrepd, Dir: dir, Size: size, Rounds: rounds,
		Heartbeat: heartbeat, FailoverTimeout: failoverTimeout, SyncTimeout: syncTimeout,
		Out: os.Stdout,
		Progress: func(format string, args ...any) {
			fmt.Fprintf(os.Stderr, "blockbench: %s %s\n", time.Now().Format("15:04:05.000"), fmt.Sprintf(format, args...))
		},
	})
}

// selectRows returns the rows matching only (all when only is empty).
func selectRows(all []bench.Row, only string) []bench.Row {
	var rows []bench.Row
	for _, r := range all {
		if only == "" || matchesAny(r.Name, only) {
			rows = append(rows, r)
		}
	}
	return rows
}

func matchesAny(name, list string) bool {
	for _, s := range strings.Split(list, ",") {
		if s != "" && strings.Contains(strings.ToLower(name), strings.ToLower(s)) {
			return true
		}
	}
	return false
}
