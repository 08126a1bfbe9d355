package serving

import (
	"fmt"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/blockrep/blockrep/internal/mountinfo"
)

// mountFlags are the mount options that are flags to mount(2), not the
// file system's own (those go in its data string).
var mountFlags = map[string]uintptr{
	"ro": unix.MS_RDONLY, "nosuid": unix.MS_NOSUID, "nodev": unix.MS_NODEV, "noexec": unix.MS_NOEXEC,
	"sync": unix.MS_SYNCHRONOUS, "dirsync": unix.MS_DIRSYNC, "noatime": unix.MS_NOATIME,
	"nodiratime": unix.MS_NODIRATIME, "relatime": unix.MS_RELATIME, "strictatime": unix.MS_STRICTATIME,
	"lazytime": unix.MS_LAZYTIME,
}

// SplitOptions splits mount options as mount(8) takes them ("noatime",
// "discard", "commit=5") into mount(2)'s flags and the file system's data
// string. "rw" and "defaults" are the absence of flags.
func SplitOptions(opts []string) (flags uintptr, data string) {
	var rest []string
	for _, o := range opts {
		switch f, ok := mountFlags[o]; {
		case ok:
			flags |= f
		case o == "rw" || o == "defaults" || o == "":
		default:
			rest = append(rest, o)
		}
	}
	return flags, strings.Join(rest, ",")
}

// MountFS mounts the file system of type fstype on dev at dir with the
// options opts, then verifies it: the mount now on top at dir is of dev.
func MountFS(dev, dir, fstype string, opts []string) error {
	flags, data := SplitOptions(opts)
	if err := unix.Mount(dev, dir, fstype, flags, data); err != nil {
		return fmt.Errorf("serving: mount %s (%s) on %s with %q: %w", dev, fstype, dir, strings.Join(opts, ","), err)
	}
	m, ok, err := MountedAt(dir)
	switch {
	case err != nil:
		return err
	case !ok || m.Source != dev:
		return fmt.Errorf("serving: mount %s on %s: mountinfo shows %+v there afterwards", dev, dir, m)
	}
	return nil
}

// UnmountFS unmounts the file system on top at dir and verifies that dev's
// is not mounted there any more. It may block as long as the file system
// waits for its device (a fenced volume with fence = "suspend"): run it
// where that blocks nothing else.
func UnmountFS(dev, dir string) error {
	if err := unix.Unmount(dir, 0); err != nil && err != unix.EINVAL {
		return fmt.Errorf("serving: unmount %s: %w", dir, err)
	}
	ms, err := mountinfo.Read()
	if err != nil {
		return err
	}
	for _, m := range mountinfo.At(ms, filepath.Clean(dir)) {
		if m.Source == dev {
			return fmt.Errorf("serving: unmount %s: %s is still mounted there", dir, dev)
		}
	}
	return nil
}

// MountedAt returns the mount on top at dir, if any: what a node that
// restarts finds from before (Decide then counts the mount as up).
func MountedAt(dir string) (mountinfo.Mount, bool, error) {
	ms, err := mountinfo.Read()
	if err != nil {
		return mountinfo.Mount{}, false, err
	}
	at := mountinfo.At(ms, filepath.Clean(dir))
	if len(at) == 0 {
		return mountinfo.Mount{}, false, nil
	}
	return at[len(at)-1], true, nil
}
