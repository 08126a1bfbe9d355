package nbd

import (
	"math/bits"
	"sync"
)

// bufPool hands out request buffers in power-of-two size classes so that a
// busy connection reuses memory instead of allocating a buffer per request.
type bufPool struct {
	classes [maxClass - minClass + 1]sync.Pool
}

const (
	minClass = 12 // 4 KiB
	maxClass = 25 // 32 MiB
)

func classOf(n int) int {
	if n <= 1<<minClass {
		return minClass
	}
	return bits.Len(uint(n - 1))
}

// get returns a buffer of length n. n must not exceed 1<<maxClass.
func (p *bufPool) get(n int) *[]byte {
	c := classOf(n)
	if v := p.classes[c-minClass].Get(); v != nil {
		b := v.(*[]byte)
		*b = (*b)[:n]
		return b
	}
	b := make([]byte, n, 1<<c)
	return &b
}

// put returns a buffer obtained from get.
func (p *bufPool) put(b *[]byte) {
	c := classOf(cap(*b))
	if c < minClass || c > maxClass || cap(*b) != 1<<c {
		return
	}
	p.classes[c-minClass].Put(b)
}
