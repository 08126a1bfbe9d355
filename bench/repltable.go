package bench

import (
	"fmt"
	"io"
	"sort"
	"time"
)

// ReplComparison is one row measured on nbdkit, on blockrepd without peers
// and on a blockrepd primary replicating to a protocol-C secondary.
type ReplComparison struct {
	Row                               Row
	Reference, Standalone, Replicated Result
}

func ratio(a, b Result, m Metric) float64 {
	if b.Value(m) == 0 {
		return 0
	}
	return a.Value(m) / b.Value(m)
}

// VsReference is replicated over nbdkit on the row's metric (for latency,
// nbdkit's mean over the replicated mean): above 1 means replicated is
// faster.
func (c ReplComparison) VsReference() float64 { return ratio(c.Replicated, c.Reference, c.Row.Metric) }

// VsStandalone is replicated over standalone blockrepd, as VsReference.
func (c ReplComparison) VsStandalone() float64 {
	return ratio(c.Replicated, c.Standalone, c.Row.Metric)
}

// Met reports whether the row reaches its target; a row without a target
// (Target 0) always does.
func (c ReplComparison) Met() bool { return c.VsReference() >= c.Row.Target }

// WriteReplTable prints the comparisons as a Markdown table, then the
// latency that replication adds on each latency row.
func WriteReplTable(w io.Writer, cs []ReplComparison) {
	fmt.Fprintln(w, "| row | nbdkit file | blockrepd standalone | blockrepd replicated (C) | replicated / nbdkit | replicated / standalone | target (vs nbdkit) | fio CPU (nbdkit / standalone / replicated) |")
	fmt.Fprintln(w, "|---|---|---|---|---|---|---|---|")
	for _, c := range cs {
		target := "—"
		if c.Row.Target > 0 {
			verdict := "met"
			if !c.Met() {
				verdict = "**missed**"
			}
			target = fmt.Sprintf("≥ %.1f× %s", c.Row.Target, verdict)
		}
		fmt.Fprintf(w, "| %s | %s | %s | %s | %.2f× | %.2f× | %s | %.0f%% / %.0f%% / %.0f%% |\n", c.Row.Name,
			describe(c.Reference, c.Row.Metric), describe(c.Standalone, c.Row.Metric), describe(c.Replicated, c.Row.Metric),
			c.VsReference(), c.VsStandalone(), target,
			c.Reference.ClientCPU, c.Standalone.ClientCPU, c.Replicated.ClientCPU)
	}
	for _, c := range cs {
		if c.Row.Metric != Latency {
			continue
		}
		fmt.Fprintf(w, "\n%s: replication adds %+.1f µs mean and %+.0f µs p99 (replicated − standalone); replicated − nbdkit: %+.1f µs mean, %+.0f µs p99.\n", c.Row.Name,
			us(c.Replicated.MeanLat-c.Standalone.MeanLat), us(c.Replicated.P99Lat-c.Standalone.P99Lat),
			us(c.Replicated.MeanLat-c.Reference.MeanLat), us(c.Replicated.P99Lat-c.Reference.P99Lat))
	}
}

func us(d time.Duration) float64 { return float64(d) / 1e3 }

// ResyncRound is one round of the resync measurement: the same bytes
// written to the primary while its secondary was down, copied plainly, then
// resynced.
type ResyncRound struct {
	// Bytes is what was written to the primary while the secondary was down.
	Bytes int64
	// Kind, Total and Done are the resync's kind, total_bytes and
	// done_bytes; Sent is the growth of the primary's resync_bytes_sent.
	Kind        string
	Total, Done int64
	Sent        int64
	// Resync is the resync's own finished − started.
	Resync time.Duration
	// Wall is from starting the secondary to the primary reporting it
	// Connected and in sync.
	Wall time.Duration
	// TCPCopy and LocalCopy are the plain copies of the same bytes.
	TCPCopy, LocalCopy time.Duration
	// Write is the write of Bytes to the primary without its secondary.
	Write Result
}

func rate(n int64, d time.Duration) float64 {
	if d <= 0 {
		return 0
	}
	return float64(n) / d.Seconds()
}

// ResyncRate is Done over the resync's own duration, in bytes per second.
func (r ResyncRound) ResyncRate() float64 { return rate(r.Done, r.Resync) }

// WallRate is Bytes over the start-to-in-sync time.
func (r ResyncRound) WallRate() float64 { return rate(r.Bytes, r.Wall) }

// TCPRate and LocalRate are the plain copies' rates.
func (r ResyncRound) TCPRate() float64   { return rate(r.Bytes, r.TCPCopy) }
func (r ResyncRound) LocalRate() float64 { return rate(r.Bytes, r.LocalCopy) }

// MedianOf returns the median of f over rounds.
func MedianOf(rounds []ResyncRound, f func(ResyncRound) float64) float64 {
	if len(rounds) == 0 {
		return 0
	}
	v := make([]float64, len(rounds))
	for i, r := range rounds {
		v[i] = f(r)
	}
	sort.Float64s(v)
	return v[len(v)/2]
}

// ResyncTarget is the resync rate the benchmark expects, as a fraction of
// the plain TCP copy.
const ResyncTarget = 0.8

// WriteResyncTable prints the medians of the resync rounds as a Markdown
// table and the ratios. Each line shows the round with the median rate of
// that measure, its time and its rate.
func WriteResyncTable(w io.Writer, rounds []ResyncRound) {
	if len(rounds) == 0 {
		return
	}
	line := func(what string, rateOf func(ResyncRound) float64, timeOf func(ResyncRound) time.Duration) float64 {
		m := MedianOf(rounds, rateOf)
		for _, r := range rounds {
			if rateOf(r) == m {
				fmt.Fprintf(w, "| %s | %.2f s | %.0f MiB/s |\n", what, timeOf(r).Seconds(), m/(1<<20))
				break
			}
		}
		return m
	}
	r0 := rounds[0]
	fmt.Fprintf(w, "%d MiB written to the primary while the secondary was down; medians of %d rounds.\n\n", r0.Bytes>>20, len(rounds))
	fmt.Fprintln(w, "| measure | time | rate |\n|---|---|---|")
	resync := line(fmt.Sprintf("resync (%s), its own started → finished", r0.Kind), ResyncRound.ResyncRate, func(r ResyncRound) time.Duration { return r.Resync })
	line("resync, secondary start → primary sees it Connected and in sync", ResyncRound.WallRate, func(r ResyncRound) time.Duration { return r.Wall })
	tcp := line("plain copy over loopback TCP (1 MiB chunks, fdatasync)", ResyncRound.TCPRate, func(r ResyncRound) time.Duration { return r.TCPCopy })
	local := line("plain local copy (pread/pwrite 1 MiB, fdatasync)", ResyncRound.LocalRate, func(r ResyncRound) time.Duration { return r.LocalCopy })
	fmt.Fprintf(w, "| write of the same bytes to the primary alone (fio, 1M QD8) | | %.0f MiB/s |\n", MedianOf(rounds, func(r ResyncRound) float64 { return r.Write.Bandwidth })/(1<<20))
	verdict := "met"
	if tcp == 0 || resync/tcp < ResyncTarget {
		verdict = "**missed**"
	}
	var vsTCP, vsLocal float64
	if tcp > 0 {
		vsTCP = resync / tcp
	}
	if local > 0 {
		vsLocal = resync / local
	}
	fmt.Fprintf(w, "\nresync / plain TCP copy: %.2f× (target ≥ %.1f× %s); resync / local copy: %.2f×.\n", vsTCP, ResyncTarget, verdict, vsLocal)
	fmt.Fprintf(w, "\nper round (resync kind, done/total, resync bytes sent, resync rate vs TCP copy rate):")
	for _, r := range rounds {
		fmt.Fprintf(w, " [%s %d/%d MiB, sent %d MiB, %.0f vs %.0f MiB/s]", r.Kind, r.Done>>20, r.Total>>20, r.Sent>>20, r.ResyncRate()/(1<<20), r.TCPRate()/(1<<20))
	}
	fmt.Fprintln(w)
}

// Describe renders r's value on metric m as the tables do.
func Describe(r Result, m Metric) string { return describe(r, m) }
