// Package freeport picks loopback TCP ports for programs that must be told
// their port before they listen (a daemon's configuration), as the tests
// and blockbench do.
//
// Listening on port 0 and closing hands back a port of the kernel's
// ephemeral range, from which the kernel also takes the local port of
// every outgoing connection: on a busy machine one of those may take the
// port before the program binds it, which then fails with "address already
// in use". Pick takes ports from below the ephemeral range instead, where
// only another Pick can choose the same port, at random among thousands.
package freeport

import (
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"strconv"
	"strings"
)

// Low is the lowest port Pick returns: above the ports that blockrep's
// documentation fixes (10809, 7789-7793) and the well-known services.
const Low = 20000

// ephemeralRange is where Linux keeps its ephemeral ports.
const ephemeralRange = "/proc/sys/net/ipv4/ip_local_port_range"

// defaultEphemeralLow is Linux's default start of the ephemeral range.
const defaultEphemeralLow = 32768

// Pick returns n distinct ports that 127.0.0.1 could listen on a moment
// ago, each below the ephemeral range (see the package doc). Where that
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
