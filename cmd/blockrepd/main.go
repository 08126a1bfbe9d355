// Command blockrepd is the blockrep daemon: it serves the volumes of one node
// over NBD and answers blockctl on its control socket.
//
// Usage:
//
//	blockrepd -config /etc/blockrep/node1.toml [-log-level info] [-log-format text]
//	blockrepd -c /etc/blockrep/node1.toml -forget-volume NAME
//
// -c PATH is the same as -config PATH, as blockctl -c names the same file;
// both with different paths is a command-line error. Every flag may be
// given with one dash or two (--config).
//
// -forget-volume removes a volume's record from meta.db and exits: the next
// start initialises the volume again from what its store holds (the way out
// when a standalone volume's store was replaced and is refused).
//
// SIGTERM or SIGINT shuts it down cleanly (NBD clients drain for up to 30 s,
// volumes are flushed); a second signal exits at once. Exit status: 0 after a
// clean shutdown, 1 on a runtime error (a store refused because it is not
// the one meta.db records among them), 2 on a bad command line or
// configuration, including one its environment refuses (a missing or short
// secret, a port in use, an existing backing file of another size): those
// are found before anything is written, and the error names the key.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"os/signal"
	"runtime"
	"syscall"

	"github.com/blockrep/blockrep/config"
	"github.com/blockrep/blockrep/internal/acceptloop"
	"github.com/blockrep/blockrep/internal/buildinfo"
	"github.com/blockrep/blockrep/internal/logging"
	"github.com/blockrep/blockrep/node"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("blockrepd", flag.ContinueOnError)
	fs.SetOutput(stderr)
	configPath := fs.String("config", "", "`path` of the node's TOML configuration (required; or -c)")
	configShort := fs.String("c", "", "`path` of the node's TOML configuration: the same as -config")
	logLevel := fs.String("log-level", "info", "log level: "+logging.Levels)
	logFormat := fs.String("log-format", "text", "log format: "+logging.Formats)
	version := fs.Bool("version", false, "print the version and exit")
	pprofAddr := fs.String("pprof", "", "serve net/http/pprof on this loopback `address` (for profiling; off by default)")
	forget := fs.String("forget-volume", "", "forget the `volume`'s record in meta.db (its generations, bitmaps and store identity) and exit; the next start initialises it again from what its store holds")
	fs.Usage = func() {
		fmt.Fprintln(fs.Output(), "usage: blockrepd -config PATH [-log-level LEVEL] [-log-format FORMAT] [-forget-volume NAME]")
		fmt.Fprintln(fs.Output(), "       (-c PATH is the same as -config PATH; a flag takes one dash or two)")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if *version {
		fmt.Fprintln(stdout, "blockrepd", buildinfo.Version())
		return 0
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "blockrepd: unexpected argument %q\n", fs.Arg(0))
		fs.Usage()
		return 2
	}
	path, err := configFlag(*configPath, *configShort)
	if err != nil {
		fmt.Fprintf(stderr, "blockrepd: %v\n", err)
		fs.Usage()
		return 2
	}
	logger, err := logging.New(stderr, *logLevel, *logFormat)
	if err != nil {
		fmt.Fprintf(stderr, "blockrepd: %v\n", err)
		return 2
	}
	cfg, err := config.Load(path)
	if err != nil {
		fmt.Fprintf(stderr, "blockrepd: %v\n", err)
		return 2
	}

	if *forget != "" {
		if err := node.ForgetVolume(cfg, *forget, logger); err != nil {
			fmt.Fprintf(stderr, "blockrepd: %v\n", err)
			return 1
		}
		return 0
	}

	// A connection's reader blocks in read(2) holding its P. With a single
	// P (GOMAXPROCS follows the CPU affinity, so one CPU gives one P) the
	// runtime hands that P off on every wait and sysmon polls every 20 µs;
	// a second P avoids both.
	if runtime.GOMAXPROCS(0) < 2 {
		runtime.GOMAXPROCS(2)
	}

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	// After the first signal, restore the default action: a second one
	// exits at once instead of waiting for the drain.
	context.AfterFunc(ctx, stop)

	n, err := node.New(cfg, logger)
	if err != nil {
		fmt.Fprintf(stderr, "blockrepd: %v\n", err)
		// A configuration its environment refuses (a secret, a port in
		// use, a store of the wrong size) is found before anything is
		// written, and is the configuration's error.
		if cerr := (*config.Error)(nil); errors.As(err, &cerr) {
			return 2
		}
		return 1
	}
	if *pprofAddr != "" {
		_, stopProfiler, err := serveProfiler(*pprofAddr)
		if err != nil {
			n.Close()
			fmt.Fprintf(stderr, "blockrepd: -pprof: %v\n", err)
			return 2
		}
		defer stopProfiler()
	}
	if err := n.Run(ctx); err != nil {
		fmt.Fprintf(stderr, "blockrepd: %v\n", err)
		return 1
	}
	return 0
}

// configFlag returns the configuration file named by -config (long) or
// its synonym -c (short): one is required, and both must name the same.
func configFlag(long, short string) (string, error) {
	switch {
	case long != "" && short != "" && long != short:
		return "", fmt.Errorf("-c %q and -config %q name different configuration files; give one", short, long)
	case long != "":
		return long, nil
	case short != "":
		return short, nil
	}
	return "", errors.New("-config PATH (or -c PATH) is required")
}

// serveProfiler serves the runtime profiles on addr, which must be a
// loopback address: profiles expose memory contents. It returns the address
// it listens on.
func serveProfiler(addr string) (bound string, stop func(), err error) {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return "", nil, err
	}
	if ip := net.ParseIP(host); host != "localhost" && (ip == nil || !ip.IsLoopback()) {
		return "", nil, fmt.Errorf("%q is not a loopback address", addr)
	}
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return "", nil, err
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	srv := &http.Server{Handler: mux}
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = srv.Serve(acceptloop.Retry(l, nil, nil)) // survives running out of descriptors
	}()
	return l.Addr().String(), func() {
		_ = srv.Close()
		<-done
	}, nil
}
