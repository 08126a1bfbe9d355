package replica

import (
	"fmt"
	"sync"
	"testing"

	"github.com/blockrep/blockrep/internal/linktls"
	"github.com/blockrep/blockrep/internal/testpki"
	"github.com/blockrep/blockrep/replica/wire"
)

// benchProtections are the link protections the benchmarks compare.
var benchProtections = []wire.Protection{wire.ProtectNone, wire.ProtectMAC, wire.ProtectTLS}

// benchPair starts a connected primary and secondary with protection prot.
func benchPair(b *testing.B, prot wire.Protection) (p, s *testNode) {
	tcfg := func(tc *TransportConfig) { tc.Protection = prot }
	if prot == wire.ProtectTLS {
		ca := testpki.NewCA(b, "bench CA")
		tcfg = func(tc *TransportConfig) {
			cert, _, _ := ca.NodeCertificate(b, tc.Local)
			tc.Protection, tc.TLS = prot, linktls.New(cert, ca.Pool())
		}
	}
	c := newTestClusterWith(b, []Role{Primary, Secondary}, nil, tcfg)
	p, s = c.nodes[0], c.nodes[1]
	c.waitConnected(p, s)
	return p, s
}

// BenchmarkReplicatedWriteQD1 measures one 4 KiB protocol-C write at a
// time between two in-process volumes on loopback: the replication round
// trip without NBD or a client, per link protection.
func BenchmarkReplicatedWriteQD1(b *testing.B) {
	for _, prot := range benchProtections {
		b.Run(prot.String(), func(b *testing.B) {
			p, _ := benchPair(b, prot)
			buf := randBytes(4096)
			b.ResetTimer()
			for i := range b.N {
				if err := p.vol.WriteAt(buf, int64(i%4096)*4096, false); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkReplicatedWrite measures protocol-C writes from qd goroutines
// at once, per link protection and write size.
func BenchmarkReplicatedWrite(b *testing.B) {
	for _, size := range []int{4 << 10, 1 << 20} {
		qd := 32
		if size >= 1<<20 {
			qd = 8
		}
		for _, prot := range benchProtections {
			b.Run(fmt.Sprintf("%dK-QD%d/%v", size>>10, qd, prot), func(b *testing.B) {
				p, _ := benchPair(b, prot)
				buf := randBytes(size)
				slots := int64(testVolSize / size)
				b.SetBytes(int64(size))
				b.ResetTimer()
				var wg sync.WaitGroup
				var mu sync.Mutex
				next := 0
				for range qd {
					wg.Go(func() {
						for {
							mu.Lock()
							i := next
							next++
							mu.Unlock()
							if i >= b.N {
								return
							}
							if err := p.vol.WriteAt(buf, (int64(i)%slots)*int64(size), false); err != nil {
								b.Error(err)
								return
							}
						}
					})
				}
				wg.Wait()
			})
		}
	}
}
