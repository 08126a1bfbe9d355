package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"reflect"
	"slices"
	"strings"
	"time"

	"github.com/blockrep/blockrep/internal/unixsock"
	"github.com/blockrep/blockrep/nbd"
	"github.com/blockrep/blockrep/replica"
)

// SocketMode is the permission of the control socket: only the daemon's
// user (root) may control it.
const SocketMode = 0o600

// maxRequest bounds the size of a request body: the bodies are a few short
// fields, so anything bigger is a mistake or an attack on the daemon's memory.
const maxRequest = 64 << 10

// Listen creates the control socket at path with mode SocketMode. A stale
// socket file left by a crashed daemon is replaced; if a daemon is listening
// on path, Listen fails with an error saying so. Closing the listener removes
// the socket file unless told otherwise.
func Listen(path string) (*unixsock.Listener, error) {
	l, err := unixsock.Listen(path, SocketMode)
	if err != nil {
		return nil, fmt.Errorf("control socket: %w (is another blockrepd running?)", err)
	}
	return l, nil
}

// NewServer returns an http.Server for the control API with timeouts suited
// to a local socket. logger receives the server's internal errors.
func NewServer(b Backend, logger *slog.Logger) *http.Server {
	return &http.Server{
		Handler:           NewHandler(b),
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       10 * time.Second,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       time.Minute,
		ErrorLog:          slog.NewLogLogger(logger.Handler(), slog.LevelWarn),
	}
}

// NewHandler returns the handler of the control API routes.
func NewHandler(b Backend) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("/v1/status", method(http.MethodGet, func(w http.ResponseWriter, r *http.Request) {
		st, err := b.Status(r.Context())
		if err != nil {
			writeError(w, http.StatusInternalServerError, "status: "+err.Error())
			return
		}
		for i := range st.Volumes {
			if st.Volumes[i].Clients == nil {
				st.Volumes[i].Clients = []nbd.ClientInfo{}
			}
			if rs := st.Volumes[i].Replication; rs != nil && rs.Peers == nil {
				// Copy rather than write through the source's pointer.
				cp := *rs
				cp.Peers = []replica.PeerStatus{}
				st.Volumes[i].Replication = &cp
			}
		}
		if st.Volumes == nil {
			st.Volumes = []VolumeStatus{}
		}
		writeJSON(w, http.StatusOK, st)
	}))
	// The paths name no method: method answers a wrong one with a JSON 405,
	// where a "POST ..." pattern would get the mux's plain-text one.
	mux.Handle("/v1/volumes/{volume}/connect", command("connect", func(ctx context.Context, volume string, req ConnectRequest) error {
		return b.Connect(ctx, volume, req.Peer, req.DiscardMyData)
	}))
	mux.Handle("/v1/volumes/{volume}/disconnect", command("disconnect", func(ctx context.Context, volume string, req PeerRequest) error {
		return b.Disconnect(ctx, volume, req.Peer)
	}))
	mux.Handle("/v1/volumes/{volume}/resync", command("resync", func(ctx context.Context, volume string, req ResyncRequest) error {
		mode := req.Mode
		if mode == "" {
			mode = resyncModes[0]
		}
		if !slices.Contains(resyncModes, mode) {
			return invalidf("mode %q is not one of %s", mode, strings.Join(resyncModes, ", "))
		}
		return b.Resync(ctx, volume, req.Peer, mode)
	}))
	mux.Handle("/v1/volumes/{volume}/verify", command("verify", func(ctx context.Context, volume string, req PeerRequest) error {
		return b.Verify(ctx, volume, req.Peer)
	}))
	mux.Handle("/v1/volumes/{volume}/invalidate", command("invalidate", func(ctx context.Context, volume string, _ InvalidateRequest) error {
		return b.Invalidate(ctx, volume)
	}))
	mux.Handle("/v1/volumes/{volume}/role", command("set role", func(ctx context.Context, volume string, req RoleRequest) error {
		if req.Role == "" {
			// No default: a role change is too consequential to guess.
			return invalidf("role is required: one of %s", strings.Join(roles, ", "))
		}
		if !slices.Contains(roles, req.Role) {
			return invalidf("role %q is not one of %s", req.Role, strings.Join(roles, ", "))
		}
		return b.SetRole(ctx, volume, req.Role, req.Force)
	}))
	mux.Handle("/v1/events", eventsHandler(b))
	clusterRoutes(mux, b)
	raidRoutes(mux, b)
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, fmt.Sprintf("no such route: %s %s", r.Method, r.URL.Path))
	})
	return mux
}

// command serves POST /v1/volumes/{volume}/...: it decodes the body into a
// Req and calls do with the volume ("" for OnlyVolume). name prefixes error
// messages.
func command[Req any](name string, do func(ctx context.Context, volume string, req Req) error) http.Handler {
	return call(name, func(ctx context.Context, volume string, req Req) (struct{}, error) {
		return struct{}{}, do(ctx, volume, req)
	})
}

// call is command for a call that answers with a Reply.
func call[Req, Reply any](name string, do func(ctx context.Context, volume string, req Req) (Reply, error)) http.Handler {
	return method(http.MethodPost, func(w http.ResponseWriter, r *http.Request) {
		volume := r.PathValue("volume")
		if volume == OnlyVolume {
			volume = ""
		}
		var req Req
		if err := decodeBody(w, r, &req); err != nil {
			var tooBig *http.MaxBytesError
			if errors.As(err, &tooBig) {
				writeError(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("%s: request body is over %d KiB", name, maxRequest>>10))
				return
			}
			writeError(w, http.StatusBadRequest, name+": "+err.Error())
			return
		}
		reply, err := do(r.Context(), volume, req)
		if err != nil {
			writeError(w, errorCode(err), name+": "+err.Error())
			return
		}
		writeJSON(w, http.StatusOK, reply)
	})
}

// decodeBody decodes r's JSON body into the struct v strictly: an unknown
// field, a second value or a body over maxRequest (an *http.MaxBytesError)
// is an error. An empty body leaves v as it is, so that a command whose
// fields all have defaults needs no body.
func decodeBody(w http.ResponseWriter, r *http.Request, v any) error {
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxRequest))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		if err == io.EOF {
			return nil
		}
		return bodyError(err, v)
	}
	if _, err := dec.Token(); err != io.EOF {
		if err != nil {
			return bodyError(err, v)
		}
		return invalidf("request body holds more than one JSON value")
	}
	return nil
}

// bodyError rewords a decoding error for the operator: it names the field
// at fault and, for an unknown field, the fields there are, without the Go
// type names encoding/json puts in its messages.
func bodyError(err error, v any) error {
	var typeErr *json.UnmarshalTypeError
	var tooBig *http.MaxBytesError
	switch {
	case errors.As(err, &tooBig):
		return err
	case errors.As(err, &typeErr) && typeErr.Field != "":
		return invalidf("request body: field %q is a JSON %s, want a %s", typeErr.Field, typeErr.Value, typeErr.Type)
	case errors.As(err, &typeErr):
		return invalidf("request body is a JSON %s, want an object", typeErr.Value)
	case strings.HasPrefix(err.Error(), "json: unknown field "):
		// encoding/json has no error type for this; its message is stable.
		field := strings.TrimPrefix(err.Error(), "json: unknown field ")
		known := jsonFields(v)
		if len(known) == 0 {
			return invalidf("request body: unknown field %s (this command takes none)", field)
		}
		return invalidf("request body: unknown field %s (known: %s)", field, strings.Join(known, ", "))
	}
	return invalidf("request body is not valid JSON: %s", strings.TrimPrefix(err.Error(), "json: "))
}

// jsonFields returns the JSON names of the fields of the struct *v.
func jsonFields(v any) []string {
	t := reflect.TypeOf(v).Elem()
	var names []string
	for f := range t.Fields() {
		if name, _, _ := strings.Cut(f.Tag.Get("json"), ","); name != "" && name != "-" {
			names = append(names, name)
		}
	}
	return names
}

// errorCode maps a Controller's error to its HTTP status code. The replica
// errors are mapped too, so that the node may return them unwrapped.
func errorCode(err error) int {
	switch {
	case errors.Is(err, ErrInvalid):
		return http.StatusBadRequest
	case errors.Is(err, ErrNotFound), errors.Is(err, replica.ErrUnknownPeer):
		return http.StatusNotFound
	case errors.Is(err, ErrConflict), errors.Is(err, replica.ErrState):
		return http.StatusConflict
	case errors.Is(err, ErrUnavailable):
		return http.StatusServiceUnavailable
	}
	return http.StatusInternalServerError
}

// invalidError is a bad argument found by the handler. It matches ErrInvalid
// without repeating ErrInvalid's text in the message.
type invalidError struct{ msg string }

func (e *invalidError) Error() string { return e.msg }
func (e *invalidError) Unwrap() error { return ErrInvalid }

func invalidf(format string, args ...any) error {
	return &invalidError{msg: fmt.Sprintf(format, args...)}
}

// method restricts h to one HTTP method (HEAD is allowed with GET).
func method(m string, h http.HandlerFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != m && !(m == http.MethodGet && r.Method == http.MethodHead) {
			w.Header().Set("Allow", m)
			writeError(w, http.StatusMethodNotAllowed, fmt.Sprintf("method %s not allowed on %s (use %s)", r.Method, r.URL.Path, m))
			return
		}
		h(w, r)
	})
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	body, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		code = http.StatusInternalServerError
		body, _ = json.Marshal(errorBody{Error: "encoding response: " + err.Error()})
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	_, _ = w.Write(append(body, '\n'))
}

func writeError(w http.ResponseWriter, code int, msg string) {
	writeJSON(w, code, errorBody{Error: msg})
}
