package nfsexport

import (
	"fmt"
	"net/netip"
	"time"

	"github.com/blockrep/blockrep/nfsexport/mount"
)

// The kinds of events, named like the kinds of package events (lower case,
// dash-separated) so that the daemon can publish them as they are.
const (
	// KindServing: a Serve call started serving; Detail names the
	// listener and the write verifier.
	KindServing = "nfs-serving"
	// KindMount: Client mounted Export (MOUNT MNT answered MNT3_OK).
	KindMount = "nfs-mount"
	// KindUnmount: Client unmounted Export (MOUNT UMNT or UMNTALL).
	KindUnmount = "nfs-unmount"
	// KindRefused: a MOUNT MNT of Client was refused; Export is the path it
	// asked for and Detail why (no such export, not in its networks), with
	// the count of refusals held back since the last event for the client.
	KindRefused = "nfs-refused"
)

// Event is something a Server tells its owner about (Config.OnEvent).
type Event struct {
	// Time is when it happened.
	Time time.Time `json:"time"`
	// Kind is one of the Kind constants.
	Kind string `json:"kind"`
	// Export is the export's MOUNT path (for KindRefused the path the
	// client asked for); empty for KindServing.
	Export string `json:"export,omitempty"`
	// Client is the client's address; the zero Addr for KindServing.
	Client netip.Addr `json:"client,omitzero"`
	// Detail is free text that explains the event.
	Detail string `json:"detail,omitempty"`
}

// String renders e on one line, for logs and tests.
func (e Event) String() string {
	s := e.Time.UTC().Format(time.RFC3339Nano) + " " + e.Kind
	if e.Export != "" {
		s += " export=" + e.Export
	}
	if e.Client.IsValid() {
		s += " client=" + e.Client.String()
	}
	if e.Detail != "" {
		s += fmt.Sprintf(" detail=%q", e.Detail)
	}
	return s
}

func (s *Server) event(e Event) {
	if s.onEvent == nil {
		return
	}
	if e.Time.IsZero() {
		e.Time = time.Now()
	}
	s.onEvent(e)
}

// refused reports a refused mount; the mount handler calls it at most once
// per client per mount.RefuseInterval.
func (s *Server) refused(r mount.Refusal) {
	detail := fmt.Sprintf("%v: %v", r.Status, r.Err)
	if r.Suppressed > 0 {
		detail += fmt.Sprintf(" (and %d more refusals of this client not reported since the last)", r.Suppressed)
	}
	s.event(Event{Time: r.Time, Kind: KindRefused, Export: r.Path, Client: r.Client, Detail: detail})
}

// callRefused reports an NFS call refused for the client's address (a
// client that skipped MOUNT, or kept a handle from when it was admitted).
func (s *Server) callRefused(path string, client netip.Addr, err error, suppressed int) {
	detail := fmt.Sprintf("NFS call: %v", err)
	if suppressed > 0 {
		detail += fmt.Sprintf(" (and %d more refusals of this client not reported since the last)", suppressed)
	}
	s.event(Event{Time: time.Now(), Kind: KindRefused, Export: path, Client: client, Detail: detail})
}
