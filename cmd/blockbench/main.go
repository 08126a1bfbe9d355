// Command blockbench compares blockrepd with nbdkit's file plugin: the same
// fio jobs (ioengine=nbd) against both, on identical backing files, rounds
// interleaved so that machine noise hits both alike. It prints a Markdown
// table with ratios and blockrepd's memory use.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/blockrep/blockrep/bench"
)

func main() {
	blockrepd := flag.String("blockrepd", "", "blockrepd binary (default: next to blockbench, then $PATH)")
	nbdkit := flag.String("nbdkit", "nbdkit", "nbdkit binary")
	fio := flag.String("fio", "fio", "fio binary")
	dir := flag.String("dir", "/var/tmp", "directory for the backing files (both on the same file system)")
	size := flag.Int64("size", 1<<30, "backing file size in bytes")
	runtime := flag.Duration("runtime", 5*time.Second, "fio runtime per run")
	rounds := flag.Int("rounds", 3, "runs per row and server; the median is reported")
	only := flag.String("rows", "", "comma-separated substrings selecting rows (default all)")
	flag.Parse()

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, *blockrepd, *nbdkit, *fio, *dir, *size, *runtime, *rounds, *only); err != nil {
		fmt.Fprintln(os.Stderr, "blockbench:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, blockrepd, nbdkit, fio, dir string, size int64, runtime time.Duration, rounds int, only string) error {
	if blockrepd == "" {
		self, _ := os.Executable()
		blockrepd = filepath.Join(filepath.Dir(self), "blockrepd")
		if _, err := os.Stat(blockrepd); err != nil {
			blockrepd = "blockrepd"
		}
	}
	for _, tool := range []*string{&blockrepd, &nbdkit, &fio} {
		p, err := exec.LookPath(*tool)
		if err != nil {
			return fmt.Errorf("%s not found: %w", *tool, err)
		}
		*tool = p
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

	var rows []bench.Row
	for _, r := range bench.DefaultRows {
		if only == "" || matchesAny(r.Name, only) {
			rows = append(rows, r)
		}
	}
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

func matchesAny(name, list string) bool {
	for _, s := range strings.Split(list, ",") {
		if s != "" && strings.Contains(strings.ToLower(name), strings.ToLower(s)) {
			return true
		}
	}
	return false
}
