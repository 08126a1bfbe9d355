package testrelay

import (
	"bufio"
	"io"
	"net"
	"strings"
	"testing"
)

// TestRelayForwardsAndRewrites: what serve writes is what the target
// reads, and the target's answer comes back through it.
func TestRelayForwardsAndRewrites(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		line, _ := bufio.NewReader(c).ReadString('\n')
		_, _ = io.WriteString(c, "got "+line)
	}()
	r := Start(t, ln.Addr().String(), func(in, out net.Conn) {
		go func() { _, _ = io.Copy(in, out) }()
		line, _ := bufio.NewReader(in).ReadString('\n')
		_, _ = io.WriteString(out, strings.ToUpper(line))
	})
	c, err := net.Dial("tcp", r.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := io.WriteString(c, "hello\n"); err != nil {
		t.Fatal(err)
	}
	got, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		t.Fatal(err)
	}
	if got != "got HELLO\n" {
		t.Fatalf("through the relay: %q, want %q", got, "got HELLO\n")
	}
}
