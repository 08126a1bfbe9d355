// Package bench compares blockrepd with a reference NBD server by running
// the same fio jobs (ioengine=nbd) against both, interleaved, in one run.
package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os/exec"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Metric says which number of a fio run a row is judged by.
type Metric int

// The metrics a row can be judged by.
const (
	IOPS Metric = iota
	Bandwidth
	Latency
)

// Row is one fio job shape.
type Row struct {
	Name       string
	RW         string // fio rw=
	BlockSize  string // fio bs=
	QueueDepth int
	Metric     Metric
	// Target is the ratio the row should reach (blockrepd over reference,
	// higher is better for every metric).
	Target float64
}

// DefaultRows are the rows of the foundation benchmark.
var DefaultRows = []Row{
	{Name: "4K random write QD32", RW: "randwrite", BlockSize: "4k", QueueDepth: 32, Metric: IOPS, Target: 1.2},
	{Name: "4K random read QD32", RW: "randread", BlockSize: "4k", QueueDepth: 32, Metric: IOPS, Target: 1.2},
	{Name: "1M sequential write QD8", RW: "write", BlockSize: "1m", QueueDepth: 8, Metric: Bandwidth, Target: 1.0},
	{Name: "4K random write QD1 latency", RW: "randwrite", BlockSize: "4k", QueueDepth: 1, Metric: Latency, Target: 1.0},
}

// Result is what one fio run measured.
type Result struct {
	IOPS      float64
	Bandwidth float64 // bytes per second
	MeanLat   time.Duration
	P99Lat    time.Duration
	// ClientCPU is fio's CPU use in percent of one core: near 100 the
	// client, not the server, limits the row.
	ClientCPU float64
}

// Value returns the number the metric judges; higher is better.
func (r Result) Value(m Metric) float64 {
	switch m {
	case Bandwidth:
		return r.Bandwidth
	case Latency:
		if r.MeanLat <= 0 {
			return 0
		}
		return 1 / r.MeanLat.Seconds()
	}
	return r.IOPS
}

// fioOutput is the part of fio's JSON output that Result needs.
type fioOutput struct {
	Jobs []struct {
		Error  int          `json:"error"`
		UsrCPU float64      `json:"usr_cpu"`
		SysCPU float64      `json:"sys_cpu"`
		Read   fioDirection `json:"read"`
		Write  fioDirection `json:"write"`
	} `json:"jobs"`
}

type fioDirection struct {
	IOPS  float64 `json:"iops"`
	BW    float64 `json:"bw_bytes"`
	LatNS struct {
		Mean       float64            `json:"mean"`
		Percentile map[string]float64 `json:"percentile"`
	} `json:"clat_ns"`
	TotalLatNS struct {
		Mean float64 `json:"mean"`
	} `json:"lat_ns"`
}

// ParseFio reads fio's --output-format=json output. fio may print warnings
// before the JSON document; they are skipped.
func ParseFio(out []byte) (Result, error) {
	start := strings.IndexByte(string(out), '{')
	if start < 0 {
		return Result{}, fmt.Errorf("bench: no JSON in fio output: %.200q", out)
	}
	var o fioOutput
	if err := json.Unmarshal(out[start:], &o); err != nil {
		return Result{}, fmt.Errorf("bench: fio output: %w", err)
	}
	if len(o.Jobs) != 1 {
		return Result{}, fmt.Errorf("bench: fio reported %d jobs, want 1", len(o.Jobs))
	}
	j := o.Jobs[0]
	if j.Error != 0 {
		return Result{}, fmt.Errorf("bench: fio job failed with error %d", j.Error)
	}
	d := j.Write
	if j.Read.IOPS > d.IOPS {
		d = j.Read
	}
	if d.IOPS == 0 {
		return Result{}, fmt.Errorf("bench: fio did no I/O")
	}
	r := Result{IOPS: d.IOPS, Bandwidth: d.BW, MeanLat: time.Duration(d.TotalLatNS.Mean), ClientCPU: j.UsrCPU + j.SysCPU}
	r.P99Lat = time.Duration(d.LatNS.Percentile["99.000000"])
	return r, nil
}

// FioArgs returns the fio command line for row against uri.
func FioArgs(uri string, row Row, size int64, runtime time.Duration) []string {
	return []string{
		"--name=" + strings.ReplaceAll(row.Name, " ", "_"),
		"--ioengine=nbd", "--uri=" + uri,
		"--rw=" + row.RW, "--bs=" + row.BlockSize,
		"--iodepth=" + strconv.Itoa(row.QueueDepth),
		"--size=" + strconv.FormatInt(size, 10),
		"--runtime=" + strconv.FormatFloat(runtime.Seconds(), 'f', -1, 64), "--time_based",
		"--randrepeat=0", "--norandommap",
		"--output-format=json",
	}
}

// RunFio runs one fio job.
func RunFio(ctx context.Context, fio, uri string, row Row, size int64, runtime time.Duration) (Result, error) {
	return runFio(ctx, fio, row.Name, uri, FioArgs(uri, row, size, runtime))
}

// runFio runs fio with args; label names the job in errors.
func runFio(ctx context.Context, fio, label, uri string, args []string) (Result, error) {
	cmd := exec.CommandContext(ctx, fio, args...)
	// On cancellation let fio stop its job processes itself; SIGKILL
	// would orphan them.
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGTERM) }
	cmd.WaitDelay = 5 * time.Second
	out, err := cmd.Output()
	if err != nil {
		var stderr string
		if ee, ok := err.(*exec.ExitError); ok {
			stderr = string(ee.Stderr)
		}
		return Result{}, fmt.Errorf("bench: fio %s on %s: %v: %s", label, uri, err, stderr)
	}
	return ParseFio(out)
}

// Median returns the run with the median value of metric m.
func Median(runs []Result, m Metric) Result {
	if len(runs) == 0 {
		return Result{}
	}
	s := append([]Result(nil), runs...)
	sort.Slice(s, func(i, j int) bool { return s[i].Value(m) < s[j].Value(m) })
	return s[len(s)/2]
}

// Comparison is one row measured on the reference and on blockrepd.
type Comparison struct {
	Row       Row
	Reference Result
	Blockrep  Result
}

// Ratio is blockrepd over the reference on the row's metric; above 1 means
// blockrepd is faster.
func (c Comparison) Ratio() float64 {
	ref := c.Reference.Value(c.Row.Metric)
	if ref == 0 {
		return 0
	}
	return c.Blockrep.Value(c.Row.Metric) / ref
}

func describe(r Result, m Metric) string {
	switch m {
	case Bandwidth:
		return fmt.Sprintf("%.0f MiB/s", r.Bandwidth/(1<<20))
	case Latency:
		return fmt.Sprintf("%.1f µs (p99 %.0f)", float64(r.MeanLat)/1e3, float64(r.P99Lat)/1e3)
	}
	return fmt.Sprintf("%.0f IOPS", r.IOPS)
}

// WriteTable prints the comparisons as a Markdown table.
func WriteTable(w io.Writer, refName string, cs []Comparison) {
	fmt.Fprintf(w, "| row | %s | blockrepd | ratio | target | fio CPU (%s / blockrepd) |\n|---|---|---|---|---|---|\n", refName, refName)
	for _, c := range cs {
		verdict := "met"
		if c.Ratio() < c.Row.Target {
			verdict = "MISSED"
		}
		fmt.Fprintf(w, "| %s | %s | %s | %.2f× | ≥ %.1f× %s | %.0f%% / %.0f%% |\n", c.Row.Name,
			describe(c.Reference, c.Row.Metric), describe(c.Blockrep, c.Row.Metric), c.Ratio(), c.Row.Target, verdict,
			c.Reference.ClientCPU, c.Blockrep.ClientCPU)
	}
}
