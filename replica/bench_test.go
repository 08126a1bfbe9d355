package replica

import (
	"testing"
)

// BenchmarkReplicatedWriteQD1 measures one 4 KiB protocol-C write at a
// time between two in-process volumes on loopback: the replication round
// trip without NBD or a client.
func BenchmarkReplicatedWriteQD1(b *testing.B) {
	c := newTestCluster(b, []Role{Primary, Secondary}, nil)
	p, s := c.nodes[0], c.nodes[1]
	c.waitConnected(p, s)
	buf := randBytes(4096)
	b.ResetTimer()
	for i := range b.N {
		if err := p.vol.WriteAt(buf, int64(i%4096)*4096, false); err != nil {
			b.Fatal(err)
		}
	}
}
