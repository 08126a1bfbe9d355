package e2e

import (
	"bytes"
	"encoding/binary"
	"io"
	"net"
	"testing"
	"time"
)

// NBD protocol constants for the raw client below (the NBD spec's values).
const (
	nbdOptMagic     = 0x49484156454F5054 // "IHAVEOPT"
	nbdOptReplyMag  = 0x0003e889045565a9
	nbdOptGo        = 7
	nbdRepAck       = 1
	nbdRequestMagic = 0x25609513
	nbdCmdRead      = 0
	nbdCmdWrite     = 1
)

// holdingClient connects to export at addr with a raw NBD client, sends a
// 4 KiB write at off and then a 32 MiB read, and never reads a reply.
func holdingClient(t *testing.T, addr, export string, off uint64) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	_ = c.(*net.TCPConn).SetReadBuffer(4096)
	_ = c.SetDeadline(time.Now().Add(30 * time.Second))
	var greet [18]byte
	if _, err := io.ReadFull(c, greet[:]); err != nil {
		t.Fatalf("greeting: %v", err)
	}
	var b []byte
	b = binary.BigEndian.AppendUint32(b, 3) // fixed newstyle, no zeroes
	b = binary.BigEndian.AppendUint64(b, nbdOptMagic)
	b = binary.BigEndian.AppendUint32(b, nbdOptGo)
	b = binary.BigEndian.AppendUint32(b, uint32(4+len(export)+2))
	b = binary.BigEndian.AppendUint32(b, uint32(len(export)))
	b = append(b, export...)
	b = binary.BigEndian.AppendUint16(b, 0)
	if _, err := c.Write(b); err != nil {
		t.Fatal(err)
	}
	for {
		var h [20]byte
		if _, err := io.ReadFull(c, h[:]); err != nil {
			t.Fatalf("option reply: %v", err)
		}
		if binary.BigEndian.Uint64(h[:]) != nbdOptReplyMag {
			t.Fatalf("option reply magic %x", h[:8])
		}
		typ := binary.BigEndian.Uint32(h[12:])
		if _, err := io.CopyN(io.Discard, c, int64(binary.BigEndian.Uint32(h[16:]))); err != nil {
			t.Fatal(err)
		}
		if typ == nbdRepAck {
			break
		}
		if typ&(1<<31) != 0 {
			t.Fatalf("GO refused: reply type %#x", typ)
		}
	}
	req := func(cmd uint16, cookie, off uint64, length uint32) []byte {
		var r []byte
		r = binary.BigEndian.AppendUint32(r, nbdRequestMagic)
		r = binary.BigEndian.AppendUint16(r, 0)
		r = binary.BigEndian.AppendUint16(r, cmd)
		r = binary.BigEndian.AppendUint64(r, cookie)
		r = binary.BigEndian.AppendUint64(r, off)
		return binary.BigEndian.AppendUint32(r, length)
	}
	b = append(req(nbdCmdWrite, 1, off, 4096), bytes.Repeat([]byte{0xee}, 4096)...)
	b = append(b, req(nbdCmdRead, 2, 0, 32<<20)...)
	if _, err := c.Write(b); err != nil {
		t.Fatal(err)
	}
	_ = c.SetDeadline(time.Time{})
	return c
}

// TestNonReadingClients: eight NBD clients each send a 4 KiB write and a
// 32 MiB read (together the whole default max_inflight of 256 MiB) and
// never read a reply. Another client's 4 KiB writes and FLUSHes keep
// completing while the eight are connected, on a standalone node and on a
// replicated primary, and the eight are disconnected after
// nbd.reply_timeout.
func TestNonReadingClients(t *testing.T) {
	const replyTimeout = `reply_timeout = "2s"` + "\n"
	for _, tc := range []struct {
		name       string
		replicated bool
	}{{"standalone", false}, {"replicated", true}} {
		t.Run(tc.name, func(t *testing.T) {
			var d *daemon
			if tc.replicated {
				c := startCluster(t, clusterSpec{Nodes: 2, Size: 64 * MiB, Primary: 0, Configure: func(_ int, s *daemonSpec) {
					s.NBDExtra = replyTimeout
				}})
				d = c.Nodes[0]
				waitInSync(t, d, "node2")
			} else {
				d = startDaemon(t, daemonSpec{Volumes: []volumeSpec{{Name: clusterVolume, Size: 64 * MiB}}, NBDExtra: replyTimeout})
			}
			const holders = 8
			remotes := map[string]bool{}
			for i := range holders {
				c := holdingClient(t, d.Addr(), clusterVolume, uint64(i)*4096)
				remotes[c.LocalAddr().String()] = true
			}
			holding := func() int {
				n := 0
				for _, c := range status(t, d).volume(t, clusterVolume).Clients {
					if remotes[c.Remote] && c.Reads == 1 {
						n++
					}
				}
				return n
			}
			for deadline := time.Now().Add(waitTimeout); holding() != holders; time.Sleep(20 * time.Millisecond) {
				if time.Now().After(deadline) {
					t.Fatalf("only %d of %d holders' READs reached the server", holding(), holders)
				}
			}

			other := dialNBD(t, d)
			const rounds = 16
			done := make(chan error, 1)
			go func() {
				for i := range rounds {
					if err := other.WriteAt(bytes.Repeat([]byte{byte(i + 1)}, 4096), int64(40*MiB+i*4096), false); err != nil {
						done <- err
						return
					}
					if err := other.Flush(); err != nil {
						done <- err
						return
					}
				}
				done <- nil
			}()
			select {
			case err := <-done:
				if err != nil {
					t.Fatal(err)
				}
			case <-time.After(waitTimeout):
				t.Fatalf("the other client's %d writes and flushes did not complete while eight clients held their reads", rounds)
			}
			if n := holding(); n != holders {
				t.Fatalf("%d of %d holders still connected after the other client's writes and flushes: they did not complete while the holders held their READs", n, holders)
			}
			for deadline := time.Now().Add(waitTimeout); len(status(t, d).volume(t, clusterVolume).Clients) != 1; time.Sleep(50 * time.Millisecond) {
				if time.Now().After(deadline) {
					t.Fatalf("the holders were not disconnected after nbd.reply_timeout: %+v", status(t, d).volume(t, clusterVolume).Clients)
				}
			}
			if n := logCount(t, d, "evicting client"); n != holders {
				t.Errorf("%d eviction lines in the log, want %d", n, holders)
			}
			got := make([]byte, 4096)
			if err := other.ReadAt(got, 40*MiB+(rounds-1)*4096); err != nil || got[0] != rounds {
				t.Fatalf("read back: %v, first byte %d", err, got[0])
			}
		})
	}
}
