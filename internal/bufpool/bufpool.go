// Package bufpool hands out I/O buffers in power-of-two size classes, so that
// busy connections reuse memory instead of allocating a buffer per request.
package bufpool

import (
	"math/bits"
	"sync"
)

// Size classes: 4 KiB to 32 MiB.
const (
	minClass = 12
	maxClass = 25
)

// Pool is a set of buffer pools, one per size class. The zero Pool is ready
// to use; it is safe for concurrent use.
type Pool struct {
	classes [maxClass - minClass + 1]sync.Pool
}

func classOf(n int) int {
	if n <= 1<<minClass {
		return minClass
	}
	return bits.Len(uint(n - 1))
}

// Get returns a buffer of length n. Larger requests than the largest class
// get a buffer of their own that Put drops.
func (p *Pool) Get(n int) *[]byte {
	c := classOf(n)
	if c > maxClass {
		b := make([]byte, n)
		return &b
	}
	if v := p.classes[c-minClass].Get(); v != nil {
		b := v.(*[]byte)
		*b = (*b)[:n]
		return b
	}
	b := make([]byte, n, 1<<c)
	return &b
}

// Put returns a buffer obtained from Get. The caller must not use it again.
func (p *Pool) Put(b *[]byte) {
	c := classOf(cap(*b))
	if c < minClass || c > maxClass || cap(*b) != 1<<c {
		return
	}
	p.classes[c-minClass].Put(b)
}
