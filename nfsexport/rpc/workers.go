package rpc

import (
	"sync"
	"sync/atomic"
	"time"
)

// maxIdleWorkers and workerIdle bound the goroutines kept waiting for the
// next call.
const (
	maxIdleWorkers = 128
	workerIdle     = 10 * time.Second
)

// workers runs calls on goroutines that outlive one call, so that a call
// starts on a stack already grown by the calls before it: a new goroutine
// starts small and copies its stack each time it grows, which cost 8% of
// the server's CPU in the NFS benchmark with a goroutine per call. A call
// goes to an idle worker if one waits, else to a new one; a worker waits
// for the next call up to workerIdle, and at most maxIdleWorkers wait.
// The Serve call that owns the workers waits for them (wg) after done.
type workers struct {
	tasks   chan func() // unbuffered: a send succeeds only if a worker waits
	idle    atomic.Int32
	maxIdle int32
	done    <-chan struct{}
	wg      sync.WaitGroup
}

// run runs task on a worker.
func (w *workers) run(task func()) {
	select {
	case w.tasks <- task:
		return
	default:
	}
	w.wg.Go(func() { w.loop(task) })
}

func (w *workers) loop(task func()) {
	var timer *time.Timer
	for {
		task()
		if w.idle.Add(1) > w.maxIdle {
			w.idle.Add(-1)
			return
		}
		if timer == nil {
			timer = time.NewTimer(workerIdle)
			defer timer.Stop()
		} else {
			timer.Reset(workerIdle)
		}
		select {
		case task = <-w.tasks:
			w.idle.Add(-1)
		case <-timer.C:
			w.idle.Add(-1)
			return
		case <-w.done:
			w.idle.Add(-1)
			return
		}
	}
}
