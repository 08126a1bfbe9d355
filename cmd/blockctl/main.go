// Command blockctl controls a running blockrepd through its control socket.
//
// Usage:
//
//	blockctl [-s SOCKET | -c CONFIG] status [-o table|json]
//
// The socket is -s, else the control_socket of the configuration named by
// -c, else $BLOCKREP_SOCKET, else the control_socket of
// /etc/blockrep/blockrepd.toml when that file exists, else
// /run/blockrep/blockrepd.sock. Exit status:
// 0 on success, 1 when the daemon cannot be reached or fails, 2 on a bad
// command line.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/blockrep/blockrep/api"
	"github.com/blockrep/blockrep/config"
)

// DefaultSocket is the control socket used when nothing else names one.
const DefaultSocket = "/run/blockrep/blockrepd.sock"

// DefaultConfig is the configuration file read for the socket when nothing
// else names one and the file exists.
const DefaultConfig = "/etc/blockrep/blockrepd.toml"

// EnvSocket is the environment variable that names the control socket.
const EnvSocket = "BLOCKREP_SOCKET"

// requestTimeout bounds one request to the daemon.
const requestTimeout = 10 * time.Second

const usage = `usage: blockctl [-s SOCKET | -c CONFIG] COMMAND [ARGS]

commands:
  status [-o table|json]   show the node, its volumes and connected clients

options:
  -s SOCKET   control socket of blockrepd (default $` + EnvSocket + `, else the one
              in ` + DefaultConfig + `, else ` + DefaultSocket + `)
  -c CONFIG   read the control socket from blockrepd's configuration file
`

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr, os.Getenv))
}

// usageError is a command-line error: run prints it with the usage and
// exits with status 2.
type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

func usagef(format string, args ...any) error {
	return &usageError{msg: fmt.Sprintf(format, args...)}
}

func run(args []string, stdout, stderr io.Writer, getenv func(string) string) int {
	err := dispatch(args, stdout, getenv)
	switch {
	case err == nil:
		return 0
	case errors.Is(err, flag.ErrHelp):
		fmt.Fprint(stderr, usage)
		return 0
	case errors.As(err, new(*usageError)):
		fmt.Fprintf(stderr, "blockctl: %v\n\n%s", err, usage)
		return 2
	default:
		fmt.Fprintf(stderr, "blockctl: %v\n", err)
		return 1
	}
}

func dispatch(args []string, stdout io.Writer, getenv func(string) string) error {
	fs := flag.NewFlagSet("blockctl", flag.ContinueOnError)
	fs.SetOutput(io.Discard) // run prints the usage
	sockFlag := fs.String("s", "", "control socket")
	confFlag := fs.String("c", "", "configuration file")
	if err := fs.Parse(args); err != nil {
		return usageErr(err)
	}
	if fs.NArg() == 0 {
		return usagef("no command given")
	}
	cmd, cmdArgs := fs.Arg(0), fs.Args()[1:]
	switch cmd {
	case "status":
		cfs := flag.NewFlagSet("status", flag.ContinueOnError)
		cfs.SetOutput(io.Discard)
		output := cfs.String("o", "table", "output format")
		if err := cfs.Parse(cmdArgs); err != nil {
			return usageErr(err)
		}
		if cfs.NArg() > 0 {
			return usagef("status: unexpected argument %q", cfs.Arg(0))
		}
		if *output != "table" && *output != "json" {
			return usagef("status: output format %q is not table or json", *output)
		}
		socket, err := socketPath(*sockFlag, *confFlag, getenv)
		if err != nil {
			return err
		}
		return status(socket, *output, stdout)
	case "help":
		return flag.ErrHelp
	default:
		return usagef("unknown command %q", cmd)
	}
}

func usageErr(err error) error {
	if errors.Is(err, flag.ErrHelp) {
		return err
	}
	return usagef("%v", err)
}

// socketPath chooses the control socket: -s, else -c's control_socket, else
// $BLOCKREP_SOCKET, else DefaultSocket.
func socketPath(sockFlag, confFlag string, getenv func(string) string) (string, error) {
	switch {
	case sockFlag != "" && confFlag != "":
		return "", usagef("-s and -c both name the socket; give one")
	case sockFlag != "":
		return sockFlag, nil
	case confFlag != "":
		cfg, err := config.Load(confFlag)
		if err != nil {
			return "", err
		}
		return cfg.Node.ControlSocket, nil
	case getenv(EnvSocket) != "":
		return getenv(EnvSocket), nil
	}
	if _, err := os.Stat(DefaultConfig); err == nil {
		cfg, err := config.Load(DefaultConfig)
		if err != nil {
			return "", err
		}
		return cfg.Node.ControlSocket, nil
	}
	return DefaultSocket, nil
}

func status(socket, output string, stdout io.Writer) error {
	ctx, cancel := context.WithTimeout(context.Background(), requestTimeout)
	defer cancel()
	c := api.Dial(socket)
	defer c.Close()
	st, err := c.Status(ctx)
	if err != nil {
		return err
	}
	if output == "json" {
		b, err := json.MarshalIndent(st, "", "  ")
		if err != nil {
			return err
		}
		_, err = stdout.Write(append(b, '\n'))
		return err
	}
	return writeTable(stdout, st, time.Now())
}
