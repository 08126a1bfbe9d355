package rpc

import (
	"bytes"
	"errors"
	"io"
	"log/slog"
	"net"
	"testing"
	"time"
)

// FuzzServeStream feeds arbitrary bytes as a connection's whole stream: the
// server must not panic (a panic in any server goroutine fails the run), must
// close the connection after the input ends (reading to EOF is bounded by a
// deadline, so a hang fails), and must keep serving another connection.
// Seeds are in testdata/fuzz/FuzzServeStream; `go test` runs them.
func FuzzServeStream(f *testing.F) {
	f.Add(defaultCall(1, testProg, 1, 0).record())
	addr, _ := startServer(f, Config{MaxRecordSize: 4096, MaxCallsPerConn: 4, Logger: slog.New(slog.DiscardHandler)}, func(s *Server) {
		s.Register(testProg, 1, echoHandler)
		s.Register(testProg, 3, echoHandler)
	})
	f.Fuzz(func(t *testing.T, stream []byte) {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(failBound))
		// Write while reading, so that replies cannot fill the socket
		// buffers and stall both sides.
		werr := make(chan error, 1)
		go func() {
			_, err := c.Write(stream)
			if err == nil {
				err = c.(*net.TCPConn).CloseWrite()
			}
			werr <- err
		}()
		for {
			if _, err := ReadRecord(c, nil, 1<<20); err != nil {
				if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || isReset(err) {
					break
				}
				t.Fatalf("reading replies: %v (a hang shows as a timeout)", err)
			}
		}
		<-werr // the server may close first: a write error is fine

		good, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer good.Close()
		good.SetDeadline(time.Now().Add(failBound))
		if _, err := good.Write(defaultCall(9, testProg, 1, 0).record()); err != nil {
			t.Fatal(err)
		}
		rep, err := ReadRecord(good, nil, 1<<20)
		if want := words(9, 1, 0, 0, 0, 0); err != nil || !bytes.Equal(rep, want) {
			t.Fatalf("other connection: % x, %v; want % x", rep, err, want)
		}
	})
}

func isReset(err error) bool {
	var op *net.OpError
	return errors.As(err, &op) && !op.Timeout()
}
