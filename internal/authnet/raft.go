package authnet

import (
	"context"
	"net"
	"time"

	"github.com/hashicorp/raft"
)

// RaftStream is a hashicorp/raft StreamLayer over a Mux: the Raft
// transport's incoming streams are the Mux's ServiceRaft connections, and
// its outgoing streams are authenticated with Dial. Use it with
// raft.NewNetworkTransport.
//
// Raft addresses carry no node names, so Dial accepts any node of the
// cluster that holds the secret; Raft itself checks server IDs.
type RaftStream struct {
	ln  net.Listener
	cfg Config
}

var _ raft.StreamLayer = (*RaftStream)(nil)

// NewRaftStream takes m's ServiceRaft listener (so it must be called before
// m.Serve, and once per Mux) and dials with cfg, normally the Config m was
// made with.
func NewRaftStream(m *Mux, cfg Config) *RaftStream {
	return &RaftStream{ln: m.Listener(ServiceRaft), cfg: cfg}
}

// Accept waits for the next authenticated Raft connection (a *Conn).
func (s *RaftStream) Accept() (net.Conn, error) { return s.ln.Accept() }

// Close stops accepting Raft connections. The Mux keeps serving its other
// services; closing it is its owner's job.
func (s *RaftStream) Close() error { return s.ln.Close() }

// Addr returns the Mux's TCP address, which the Raft transport advertises
// as this node's address; listen on a concrete host, not a wildcard.
func (s *RaftStream) Addr() net.Addr { return s.ln.Addr() }

// Dial opens an authenticated Raft stream to address within timeout (zero
// or less: no limit but the Config's HandshakeTimeout, as with
// net.DialTimeout).
func (s *RaftStream) Dial(address raft.ServerAddress, timeout time.Duration) (net.Conn, error) {
	ctx := context.Background()
	if timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, timeout)
		defer cancel()
	}
	c, err := Dial(ctx, string(address), ServiceRaft, s.cfg, "")
	if err != nil {
		return nil, err // not a nil *Conn in a non-nil net.Conn
	}
	return c, nil
}
