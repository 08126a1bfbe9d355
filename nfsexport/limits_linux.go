package nfsexport

import (
	"fmt"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// RaiseOpenFileLimit raises the process's limit of open files
// (RLIMIT_NOFILE) to fs.nr_open, as a systemd unit's LimitNOFILE would, so
// that the NFS server's fd cache (nfs3.DefaultOpenFiles) fits: the cache
// leaves an eighth of the limit to the rest of the process. Without
// CAP_SYS_RESOURCE only the soft limit rises, to the hard one. It returns the limit now in force. Call it from
// main, before serving: the limit is the whole process's.
func RaiseOpenFileLimit() (uint64, error) {
	var lim unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &lim); err != nil {
		return 0, fmt.Errorf("getrlimit NOFILE: %w", err)
	}
	want := lim.Max
	if b, err := os.ReadFile("/proc/sys/fs/nr_open"); err == nil {
		if n, err := strconv.ParseUint(strings.TrimSpace(string(b)), 10, 64); err == nil && n > want {
			want = n
		}
	}
	if lim.Cur >= want {
		return lim.Cur, nil
	}
	if err := unix.Setrlimit(unix.RLIMIT_NOFILE, &unix.Rlimit{Cur: want, Max: want}); err == nil {
		return want, nil
	}
	if lim.Cur < lim.Max {
		cur := lim.Cur
		lim.Cur = lim.Max
		if err := unix.Setrlimit(unix.RLIMIT_NOFILE, &lim); err != nil {
			return cur, fmt.Errorf("setrlimit NOFILE %d: %w", lim.Max, err)
		}
	}
	return lim.Cur, nil
}
