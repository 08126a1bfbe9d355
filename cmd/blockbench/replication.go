package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
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
}

// progress reports what the run is doing on stderr; the results go to
// stdout.
func progress(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "blockbench: %s %s\n", time.Now().Format("15:04:05"), fmt.Sprintf(format, args...))
}

func mib(n int64) float64 { return float64(n) / (1 << 20) }

// runReplication measures nbdkit, a standalone blockrepd and a replicated
// blockrepd primary side by side, then resyncs against plain copies.
func runReplication(ctx context.Context, o replOptions) (err error) {
	if err := findTools(&o.blockrepd, &o.nbdkit, &o.fio); err != nil {
		return err
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

	files := map[string]string{}
	for _, n := range []string{"nbdkit", "standalone", "primary", "secondary"} {
		files[n] = filepath.Join(work, n+".img")
	}
	progress("writing four identical %d MiB backing files in %s", o.size>>20, work)
	for _, n := range []string{"nbdkit", "standalone", "primary", "secondary"} {
		if err := bench.FillFile(files[n], o.size); err != nil {
			return err
		}
	}
	pair, err := bench.NewReplicatedPair(work, files["primary"], files["secondary"])
	if err != nil {
		return err
	}

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
	secondary, err := bench.StartNode(ctx, "secondary", o.blockrepd, pair.Secondary, work)
	if err != nil {
		return err
	}
	// secondary is replaced when it is restarted: stop the current one.
	defer func() { secondary.Stop() }()
	primary, err := bench.StartNode(ctx, "primary", o.blockrepd, pair.Primary, work)
	if err != nil {
		return err
	}
	defer primary.Stop()
	// Whatever fails below, say what replication looked like.
	defer func() {
		if err != nil && ctx.Err() == nil {
			if p, serr := primary.PeerStatus(context.Background()); serr == nil {
				err = fmt.Errorf("%w\nprimary's view of the secondary: %s", err, bench.DescribePeer(p))
			}
			err = fmt.Errorf("%w\n--- primary log (last 15 lines):\n%s\n--- secondary log (last 15 lines):\n%s",
				err, primary.LogTail(15), secondary.LogTail(15))
		}
	}()

	progress("waiting for the secondary's initial sync (primary: %s, secondary: %s)", primary.URI, secondary.URI)
	began := time.Now()
	st, seen, err := bench.WaitInSync(ctx, primary, time.Time{}, o.syncTimeout, []*bench.Server{primary, secondary},
		func(p replica.PeerStatus) { progress("  initial sync: %s", bench.DescribePeer(p)) })
	if err != nil {
		return err
	}
	initial := fmt.Sprintf("Initial sync of the secondary: none ran (in sync %.1f s after start)", seen.Sub(began).Seconds())
	if r := st.Resync; r != nil {
		d := r.Finished.Sub(r.Started)
		initial = fmt.Sprintf("Initial sync of the secondary: %s resync of %.0f MiB in %.2f s (%.0f MiB/s); in sync %.1f s after start.",
			r.Kind, mib(r.DoneBytes), d.Seconds(), mib(r.DoneBytes)/d.Seconds(), seen.Sub(began).Seconds())
	}
	progress("%s", initial)

	fmt.Printf("blockbench -replication: %d rows x %d rounds x %s, %d MiB backing files in %s; resync of %d MiB x %d rounds\n\n",
		len(rows), o.rounds, o.runtime, o.size>>20, o.dir, o.resyncSize>>20, o.rounds)

	servers := []*bench.Server{ref, standalone, primary}
	names := []string{"nbdkit", "standalone", "replicated"}
	var comps []bench.ReplComparison
	for _, row := range rows {
		runs := make([][]bench.Result, len(servers))
		for i := 0; i < o.rounds; i++ {
			for k, s := range servers {
				// As in the default mode: no dirty pages left over from
				// the previous run (the replicated run leaves twice as
				// many).
				syscall.Sync()
				var before replica.PeerStatus
				if s == primary {
					if before, err = primary.PeerStatus(ctx); err != nil {
						return err
					}
				}
				res, err := bench.RunFio(ctx, o.fio, s.URI, row, o.size, o.runtime)
				if err != nil {
					return err
				}
				if s == primary {
					// A run is only a replicated run if the secondary
					// stayed connected throughout: in sync after it, the
					// link never changed state, and the writes were sent.
					p, err := primary.PeerStatus(ctx)
					if err != nil {
						return err
					}
					if !bench.InSync(p) || !p.Since.Equal(before.Since) || p.BytesSent <= before.BytesSent {
						return fmt.Errorf("%s on the primary: the secondary did not stay connected and in sync: %s (connection changed at %s, before the run at %s)",
							row.Name, bench.DescribePeer(p), p.Since.Format(time.RFC3339Nano), before.Since.Format(time.RFC3339Nano))
					}
				}
				progress("%s, round %d/%d, %s: %s (fio CPU %.0f%%)", row.Name, i+1, o.rounds, names[k], bench.Describe(res, row.Metric), res.ClientCPU)
				runs[k] = append(runs[k], res)
			}
		}
		c := bench.ReplComparison{Row: row,
			Reference:  bench.Median(runs[0], row.Metric),
			Standalone: bench.Median(runs[1], row.Metric),
			Replicated: bench.Median(runs[2], row.Metric)}
		progress("%s: replicated / nbdkit %.2f, replicated / standalone %.2f", row.Name, c.VsReference(), c.VsStandalone())
		comps = append(comps, c)
	}

	peak := func(s *bench.Server) int64 {
		n, err := s.PeakRSS()
		if err != nil {
			progress("peak RSS of %s: %v", s.Name, err)
		}
		return n
	}
	refHWM, standaloneHWM, secondaryRowsHWM := peak(ref), peak(standalone), peak(secondary)
	// The resync rounds need neither: stop them so they take no memory or
	// CPU from the two nodes.
	ref.Stop()
	standalone.Stop()

	var resyncs []bench.ResyncRound
	var secondaryResyncHWM int64
	if o.resyncSize > 0 {
		scratch := filepath.Join(work, "copy.img")
		progress("writing the copy target %s (%d MiB)", scratch, o.size>>20)
		if err := bench.FillFile(scratch, o.size); err != nil {
			return err
		}
		for i := 0; i < o.rounds; i++ {
			r, err := resyncRound(ctx, o, pair, files["primary"], scratch, primary, &secondary, work)
			if err != nil {
				return fmt.Errorf("resync round %d: %w", i+1, err)
			}
			progress("resync round %d/%d: %s resync %.0f MiB in %.2f s = %.0f MiB/s (start to in sync %.2f s); TCP copy %.0f MiB/s, local copy %.0f MiB/s",
				i+1, o.rounds, r.Kind, mib(r.Done), r.Resync.Seconds(), r.ResyncRate()/(1<<20), r.Wall.Seconds(), r.TCPRate()/(1<<20), r.LocalRate()/(1<<20))
			resyncs = append(resyncs, r)
			secondaryResyncHWM = max(secondaryResyncHWM, peak(secondary))
		}
	}
	primaryHWM := peak(primary)

	fmt.Printf("%s\n\n", initial)
	fmt.Println("### Replicated writes")
	fmt.Println()
	bench.WriteReplTable(os.Stdout, comps)
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
