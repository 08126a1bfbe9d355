package api

import (
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"time"

	"github.com/blockrep/blockrep/internal/unixsock"
	"github.com/blockrep/blockrep/nbd"
)

// SocketMode is the permission of the control socket: only the daemon's
// user (root) may control it.
const SocketMode = 0o600

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
func NewServer(src StatusSource, logger *slog.Logger) *http.Server {
	return &http.Server{
		Handler:           NewHandler(src),
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       10 * time.Second,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       time.Minute,
		ErrorLog:          slog.NewLogLogger(logger.Handler(), slog.LevelWarn),
	}
}

// NewHandler returns the handler of the control API routes.
func NewHandler(src StatusSource) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("/v1/status", method(http.MethodGet, func(w http.ResponseWriter, r *http.Request) {
		st, err := src.Status(r.Context())
		if err != nil {
			writeError(w, http.StatusInternalServerError, "status: "+err.Error())
			return
		}
		for i := range st.Volumes {
			if st.Volumes[i].Clients == nil {
				st.Volumes[i].Clients = []nbd.ClientInfo{}
			}
		}
		if st.Volumes == nil {
			st.Volumes = []VolumeStatus{}
		}
		writeJSON(w, http.StatusOK, st)
	}))
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, fmt.Sprintf("no such route: %s %s", r.Method, r.URL.Path))
	})
	return mux
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
