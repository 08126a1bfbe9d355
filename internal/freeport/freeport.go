// Package freeport picks loopback TCP ports for programs that must be told
// their port before they listen (a daemon's configuration), as the tests
// and blockbench do.
//
// Listening on port 0 and closing hands back a port of the kernel's
// ephemeral range, from which the kernel also takes the local port of
// every outgoing connection: on a busy machine one of those may take the
// port before the program binds it, which then fails with "address already
// in use". Pick takes ports from below the ephemeral range instead, where
// only another Pick can choose the same port, at random among thousands;
// and a Pick skips the ports any Pick on this machine chose in the last two
// minutes (a file per port in $TMPDIR/blockrep-freeport), since with many
// test processes choosing at once the same choice did happen.
package freeport

import (
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// reserveDir holds a file per port picked in the last reserveFor, by any
// process of this machine: Pick skips those ports, so that two test
// processes (or a test and blockbench) do not both choose one before
// either has bound it.
var reserveDir = filepath.Join(os.TempDir(), "blockrep-freeport")

// reserveFor is how long a picked port stays reserved: long enough for
// the program told it to start and bind it.
const reserveFor = 2 * time.Minute

// reserve records port as picked now in dir, and reports false if
// another pick reserved it less than reserveFor ago. Without a usable
// directory it reserves nothing and reports true (the listen check still
// applies).
func reserve(dir string, port int, now time.Time) bool {
	if err := os.MkdirAll(dir, 0o777); err != nil {
		return true
	}
	name := filepath.Join(dir, strconv.Itoa(port))
	for range 2 {
		f, err := os.OpenFile(name, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o666)
		if err == nil {
			f.Close()
			return true
		}
		if !os.IsExist(err) {
			return true
		}
		fi, err := os.Stat(name)
		if err != nil || now.Sub(fi.ModTime()) < reserveFor {
			return false
		}
		os.Remove(name) // stale: reserved long ago
	}
	return false
}

// Low is the lowest port Pick returns: above the ports that blockrep's
// documentation fixes (10809, 7789-7793) and the well-known services.
const Low = 20000

// ephemeralRange is where Linux keeps its ephemeral ports.
const ephemeralRange = "/proc/sys/net/ipv4/ip_local_port_range"

// defaultEphemeralLow is Linux's default start of the ephemeral range.
const defaultEphemeralLow = 32768

// Pick returns n distinct ports that 127.0.0.1 could listen on a moment
// ago, each below the ephemeral range (see the package doc) and picked by
// no other Pick on this machine in the last two minutes. Where that
// range leaves too little room below it, Pick falls back to ports the
// kernel chooses.
func Pick(n int) ([]int, error) {
	high := ephemeralLow()
	if high-Low < 1000 {
		return kernelPicked(n)
	}
	var ports []int
	var held []net.Listener
	defer func() {
		for _, l := range held {
			_ = l.Close()
		}
	}()
	for tries := 0; len(ports) < n; tries++ {
		if tries > 100*n+1000 {
			return nil, fmt.Errorf("freeport: no %d free ports in [%d, %d) after %d tries", n, Low, high, tries)
		}
		p := Low + rand.IntN(high-Low)
		l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(p)))
		if err != nil {
			continue // in use
		}
		if !reserve(reserveDir, p, time.Now()) {
			l.Close()
			continue // picked by another process a moment ago
		}
		held = append(held, l)
		ports = append(ports, p)
	}
	return ports, nil
}

// Addrs returns n "127.0.0.1:PORT" addresses from Pick.
func Addrs(n int) ([]string, error) {
	ports, err := Pick(n)
	if err != nil {
		return nil, err
	}
	addrs := make([]string, len(ports))
	for i, p := range ports {
		addrs[i] = net.JoinHostPort("127.0.0.1", strconv.Itoa(p))
	}
	return addrs, nil
}

// ephemeralLow is the first port of the ephemeral range.
func ephemeralLow() int {
	b, err := os.ReadFile(ephemeralRange)
	if err != nil {
		return defaultEphemeralLow
	}
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return defaultEphemeralLow
	}
	low, err := strconv.Atoi(f[0])
	if err != nil {
		return defaultEphemeralLow
	}
	return low
}

// kernelPicked returns n ports the kernel chose, held until all are.
func kernelPicked(n int) ([]int, error) {
	var ports []int
	var held []net.Listener
	defer func() {
		for _, l := range held {
			_ = l.Close()
		}
	}()
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("freeport: %w", err)
		}
		held = append(held, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}
