package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/blockrep/blockrep/bench"
	"github.com/blockrep/blockrep/replica"
)

// replOptions are the flags of -replication.
type replOptions struct {
	blockrepd, nbdkit, fio, dir string
	size                        int64
	runtime                     time.Duration
	rounds                      int
	only                        string
	resyncSize                  int64
	syncTimeout                 time.Duration
	// security lists the replication.security values to compare: one
	// replicated pair each, measured side by side (the default, "mac",
	// alone otherwise).
	security []string
}

// progress reports what the run is doing on stderr; the results go to
// stdout.
func progress(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "blockbench: %s %s\n", time.Now().Format("15:04:05"), fmt.Sprintf(format, args...))
}

func mib(n int64) float64 { return float64(n) / (1 << 20) }

// replPair is one replicated pair of the run and its security.
type replPair struct {
	security           string
	cfg                *bench.ReplicatedPair
	primary, secondary *bench.Server
	work               string
}

// runReplication measures nbdkit, a standalone blockrepd and a replicated
// blockrepd primary side by side (with several -security values, one
// replicated pair each), then resyncs against plain copies.
func runReplication(ctx context.Context, o replOptions) (err error) {
	if err := findTools(&o.blockrepd, &o.nbdkit, &o.fio); err != nil {
		return err
	}
	if len(o.security) == 0 {
		o.security = []string{"mac"}
	}
	for i, s := range o.security {
		if !slices.Contains(bench.Securities, s) {
			return fmt.Errorf("-security %q: want a comma-separated list of %s", s, strings.Join(bench.Securities, ", "))
		}
		if slices.Contains(o.security[:i], s) {
			return fmt.Errorf("-security lists %q twice", s)
		}
	}
	switch {
	case o.rounds < 1:
		return errors.New("-rounds must be at least 1")
	case o.size <= 0 || o.size%(1<<20) != 0:
		return fmt.Errorf("-size %d: want a positive multiple of 1MiB", o.size)
	case o.resyncSize < 0 || o.resyncSize > o.size || o.resyncSize%(1<<20) != 0:
		return fmt.Errorf("-resync-size %d: want a multiple of 1MiB no larger than -size", o.resyncSize)
	}
	rows := selectRows(bench.ReplicationRows, o.only)
	work, err := os.MkdirTemp(o.dir, "blockbench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)

	// The main pair (the replicated column, the resync rounds) is the
	// "mac" one, the default, when it is measured, else the first; the
	// others, in their own directories, are measured beside it.
	main := 0
	if i := slices.Index(o.security, "mac"); i >= 0 && len(o.security) > 1 {
		main = i
	}
	files := map[string]string{}
	names := []string{"nbdkit", "standalone"}
	for _, s := range o.security {
		names = append(names, "primary-"+s, "secondary-"+s)
	}
	for _, n := range names {
		files[n] = filepath.Join(work, n+".img")
	}
	progress("writing %d identical %d MiB backing files in %s", len(names), o.size>>20, work)
	for _, n := range names {
		if err := bench.FillFile(files[n], o.size); err != nil {
			return err
		}
	}
	pairs := make([]*replPair, len(o.security))
	for i, s := range o.security {
		dir := work
		if len(o.security) > 1 {
			dir = filepath.Join(work, s)
			if err := os.Mkdir(dir, 0o700); err != nil {
				return err
			}
		}
		cfg, err := bench.NewReplicatedPair(dir, files["primary-"+s], files["secondary-"+s])
		if err != nil {
			return err
		}
		if err := cfg.Protect(s, dir); err != nil {
			return err
		}
		pairs[i] = &replPair{security: s, cfg: cfg, work: dir}
	}
	pair := pairs[main].cfg
	files["primary"], files["secondary"] = files["primary-"+o.security[main]], files["secondary-"+o.security[main]]

	ref, err := bench.StartNbdkit(ctx, o.nbdkit, files["nbdkit"], work)
	if err != nil {
		return err
	}
	defer ref.Stop()
	standalone, err := bench.StartBlockrepd(ctx, o.blockrepd, files["standalone"], work)
	if err != nil {
		return err
	}
	defer standalone.Stop()
	standalone.Name = "blockrepd standalone"
	for _, rp := range pairs {
		if rp.secondary, err = bench.StartNode(ctx, "secondary", o.blockrepd, rp.cfg.Secondary, rp.work); err != nil {
			return err
		}
		// secondary is replaced when it is restarted: stop the current one.
		defer func() { rp.secondary.Stop() }()
		if rp.primary, err = bench.StartNode(ctx, "primary", o.blockrepd, rp.cfg.Primary, rp.work); err != nil {
			return err
		}
		defer rp.primary.Stop()
		rp.primary.Name = "blockrepd replicated (" + rp.security + ")"
	}
	mp := pairs[main]
	primary := mp.primary
	// Whatever fails below, say what replication looked like.
	defer func() {
		if err != nil && ctx.Err() == nil {
			if p, serr := primary.PeerStatus(context.Background()); serr == nil {
				err = fmt.Errorf("%w\nprimary's view of the secondary: %s", err, bench.DescribePeer(p))
			}
			err = fmt.Errorf("%w\n--- primary log (last 15 lines):\n%s\n--- secondary log (last 15 lines):\n%s",
				err, primary.LogTail(15), mp.secondary.LogTail(15))
		}
	}()

	var st replica.PeerStatus
	var seen, began time.Time
	for i, rp := range pairs {
		progress("waiting for the secondary's initial sync (security %q; primary: %s, secondary: %s)", rp.security, rp.primary.URI, rp.secondary.URI)
		b := time.Now()
		s, sn, err := bench.WaitInSync(ctx, rp.primary, time.Time{}, o.syncTimeout, []*bench.Server{rp.primary, rp.secondary},
			func(p replica.PeerStatus) { progress("  initial sync: %s", bench.DescribePeer(p)) })
		if err != nil {
			return fmt.Errorf("security %q: %w\n--- primary log (last 15 lines):\n%s", rp.security, err, rp.primary.LogTail(15))
		}
		if r := s.Resync; r != nil {
			progress("security %q: initial %s resync of %.0f MiB at %.0f MiB/s", rp.security, r.Kind, mib(r.DoneBytes), mib(r.DoneBytes)/r.Finished.Sub(r.Started).Seconds())
		}
		if i == main {
			st, seen, began = s, sn, b
		}
	}
	initial := fmt.Sprintf("Initial sync of the secondary: none ran (in sync %.1f s after start)", seen.Sub(began).Seconds())
	if r := st.Resync; r != nil {
		d := r.Finished.Sub(r.Started)
		initial = fmt.Sprintf("Initial sync of the secondary: %s resync of %.0f MiB in %.2f s (%.0f MiB/s); in sync %.1f s after start.",
			r.Kind, mib(r.DoneBytes), d.Seconds(), mib(r.DoneBytes)/d.Seconds(), seen.Sub(began).Seconds())
	}
	progress("%s", initial)

	fmt.Printf("blockbench -replication: %d rows x %d rounds x %s, %d MiB backing files in %s; resync of %d MiB x %d rounds; replication.security %s (the replicated column: %q)\n\n",
		len(rows), o.rounds, o.runtime, o.size>>20, o.dir, o.resyncSize>>20, o.rounds, strings.Join(o.security, ", "), o.security[main])

	servers := []*bench.Server{ref, standalone}
	names = []string{"nbdkit", "standalone"}
	isPrimary := map[*bench.Server]bool{}
	for _, rp := range pairs {
		servers = append(servers, rp.primary)
		names = append(names, "replicated "+rp.security)
		isPrimary[rp.primary] = true
	}
	var comps []bench.ReplComparison
	var prots []bench.ProtComparison
	for _, row := range rows {
		runs := make([][]bench.Result, len(servers))
		for i := 0; i < o.rounds; i++ {
			for k, s := range servers {
				// As in the default mode: no dirty pages left over from
				// the previous run (the replicated run leaves twice as
				// many).
				syscall.Sync()
				var before replica.PeerStatus
				if isPrimary[s] {
					if before, err = s.PeerStatus(ctx); err != nil {
						return err
					}
				}
				res, err := bench.RunFio(ctx, o.fio, s.URI, row, o.size, o.runtime)
				if err != nil {
					return err
				}
				if isPrimary[s] {
					// A run is only a replicated run if the secondary
					// stayed connected throughout: in sync after it, the
					// link never changed state, and the writes were sent.
					p, err := s.PeerStatus(ctx)
					if err != nil {
						return err
					}
					if !bench.InSync(p) || !p.Since.Equal(before.Since) || p.BytesSent <= before.BytesSent {
						return fmt.Errorf("%s on %s: the secondary did not stay connected and in sync: %s (connection changed at %s, before the run at %s)",
							row.Name, s.Name, bench.DescribePeer(p), p.Since.Format(time.RFC3339Nano), before.Since.Format(time.RFC3339Nano))
					}
				}
				progress("%s, round %d/%d, %s: %s (fio CPU %.0f%%)", row.Name, i+1, o.rounds, names[k], bench.Describe(res, row.Metric), res.ClientCPU)
				runs[k] = append(runs[k], res)
			}
		}
		c := bench.ReplComparison{Row: row,
			Reference:  bench.Median(runs[0], row.Metric),
			Standalone: bench.Median(runs[1], row.Metric),
			Replicated: bench.Median(runs[2+main], row.Metric)}
		progress("%s: replicated / nbdkit %.2f, replicated / standalone %.2f", row.Name, c.VsReference(), c.VsStandalone())
		comps = append(comps, c)
		pc := bench.ProtComparison{Row: row, Securities: o.security}
		for i := range pairs {
			pc.Results = append(pc.Results, bench.Median(runs[2+i], row.Metric))
		}
		prots = append(prots, pc)
	}

	peak := func(s *bench.Server) int64 {
		n, err := s.PeakRSS()
		if err != nil {
			progress("peak RSS of %s: %v", s.Name, err)
		}
		return n
	}
	refHWM, standaloneHWM, secondaryRowsHWM := peak(ref), peak(standalone), peak(mp.secondary)
	// The resync rounds need neither, nor the other pairs: stop them so
	// they take no memory or CPU from the two nodes.
	ref.Stop()
	standalone.Stop()
	for i, rp := range pairs {
		if i != main {
			rp.primary.Stop()
			rp.secondary.Stop()
		}
	}

	var resyncs []bench.ResyncRound
	var secondaryResyncHWM int64
	if o.resyncSize > 0 {
		scratch := filepath.Join(work, "copy.img")
		progress("writing the copy target %s (%d MiB)", scratch, o.size>>20)
		if err := bench.FillFile(scratch, o.size); err != nil {
			return err
		}
		for i := 0; i < o.rounds; i++ {
			r, err := resyncRound(ctx, o, pair, files["primary"], scratch, primary, &mp.secondary, mp.work)
			if err != nil {
				return fmt.Errorf("resync round %d: %w", i+1, err)
			}
			progress("resync round %d/%d: %s resync %.0f MiB in %.2f s = %.0f MiB/s (start to in sync %.2f s); TCP copy %.0f MiB/s, local copy %.0f MiB/s",
				i+1, o.rounds, r.Kind, mib(r.Done), r.Resync.Seconds(), r.ResyncRate()/(1<<20), r.Wall.Seconds(), r.TCPRate()/(1<<20), r.LocalRate()/(1<<20))
			resyncs = append(resyncs, r)
			secondaryResyncHWM = max(secondaryResyncHWM, peak(mp.secondary))
		}
	}
	primaryHWM := peak(primary)

	fmt.Printf("%s\n\n", initial)
	fmt.Println("### Replicated writes")
	fmt.Println()
	bench.WriteReplTable(os.Stdout, comps)
	if len(pairs) > 1 {
		fmt.Println()
		fmt.Println("### Link protection (replication.security), same rows and rounds")
		fmt.Println()
		bench.WriteProtTable(os.Stdout, prots)
	}
	if len(resyncs) > 0 {
		fmt.Println()
		fmt.Println("### Resync vs a plain copy")
		fmt.Println()
		bench.WriteResyncTable(os.Stdout, resyncs)
	}
	fmt.Println()
	fmt.Printf("blockrepd peak RSS (VmHWM): primary %.1f MiB over the whole run; secondary %.1f MiB over the initial sync and the rows", mib(primaryHWM), mib(secondaryRowsHWM))
	if len(resyncs) > 0 {
		fmt.Printf(", %.1f MiB at most over a restart and its resync", mib(secondaryResyncHWM))
	}
	fmt.Printf("; standalone blockrepd %.1f MiB; nbdkit %.1f MiB.\n", mib(standaloneHWM), mib(refHWM))
	return nil
}

// resyncRound stops the secondary, writes o.resyncSize bytes to the
// primary, copies the same bytes plainly from the primary's file to scratch
// (over loopback TCP, then locally), restarts the secondary (replacing
// *secondary) and times its resync.
func resyncRound(ctx context.Context, o replOptions, pair *bench.ReplicatedPair, primaryFile, scratch string, primary *bench.Server, secondary **bench.Server, work string) (bench.ResyncRound, error) {
	r := bench.ResyncRound{Bytes: o.resyncSize}
	progress("resync: stopping the secondary")
	(*secondary).Stop()
	if _, err := bench.WaitDisconnected(ctx, primary, 30*time.Second); err != nil {
		return r, err
	}
	syscall.Sync()
	progress("resync: writing %d MiB to the primary alone", o.resyncSize>>20)
	w, err := bench.WriteRegion(ctx, o.fio, primary.URI, o.resyncSize)
	if err != nil {
		return r, err
	}
	r.Write = w
	syscall.Sync()
	before, err := primary.PeerStatus(ctx)
	if err != nil {
		return r, err
	}
	progress("resync: primary's view of the secondary: %s", bench.DescribePeer(before))
	if before.OutOfSyncBytes != o.resyncSize {
		progress("resync: note: %d MiB out of sync, %d MiB written", before.OutOfSyncBytes>>20, o.resyncSize>>20)
	}

	syscall.Sync()
	if r.TCPCopy, err = bench.CopyTCP(ctx, primaryFile, scratch, 0, o.resyncSize); err != nil {
		return r, err
	}
	syscall.Sync()
	if r.LocalCopy, err = bench.CopyLocal(primaryFile, scratch, 0, o.resyncSize); err != nil {
		return r, err
	}
	progress("resync: plain copies: TCP %.2f s, local %.2f s; starting the secondary", r.TCPCopy.Seconds(), r.LocalCopy.Seconds())

	syscall.Sync()
	t0 := time.Now()
	s, err := bench.StartNode(ctx, "secondary", o.blockrepd, pair.Secondary, work)
	if err != nil {
		return r, err
	}
	*secondary = s
	st, seen, err := bench.WaitInSync(ctx, primary, t0, o.syncTimeout, []*bench.Server{primary, s},
		func(p replica.PeerStatus) { progress("  resync: %s", bench.DescribePeer(p)) })
	if err != nil {
		return r, err
	}
	r.Wall = seen.Sub(t0)
	r.Kind, r.Total, r.Done = st.Resync.Kind, st.Resync.TotalBytes, st.Resync.DoneBytes
	r.Resync = st.Resync.Finished.Sub(st.Resync.Started)
	r.Sent = st.ResyncBytesSent - before.ResyncBytesSent
	return r, nil
}
