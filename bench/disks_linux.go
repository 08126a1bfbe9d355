package bench

// This file gives blockbench -raid separate disks on a machine that has
// one: every member file is attached to its own loop device, and the
// kernel's block throttle (cgroup v1 blkio or v2 io.max) caps each loop
// device's read IOPS and read bandwidth for the benchmark process. A
// capped loop device behaves as an independent disk of that speed, so
// the layer's ability to spread reads across members can be seen; with
// all members on one virtio disk it cannot (they share one queue).

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// DiskLimits are the read limits of every throttled disk; 0 is no limit.
type DiskLimits struct {
	ReadIOPS int64
	ReadBPS  int64
}

// Enabled reports whether any limit is set.
func (l DiskLimits) Enabled() bool { return l.ReadIOPS > 0 || l.ReadBPS > 0 }

// String describes the limits for the benchmark's header.
func (l DiskLimits) String() string {
	var parts []string
	if l.ReadIOPS > 0 {
		parts = append(parts, fmt.Sprintf("%d read IOPS", l.ReadIOPS))
	}
	if l.ReadBPS > 0 {
		parts = append(parts, fmt.Sprintf("%d MB/s read", l.ReadBPS/1e6))
	}
	return strings.Join(parts, ", ")
}

// throttledDisks owns the loop devices and the cgroup of one run. close
// undoes everything, in reverse, even after a partial setup.
type throttledDisks struct {
	limits DiskLimits
	cg     ioCgroup
	loops  []string // /dev/loopN, attached by us
}

func newThrottledDisks(l DiskLimits) (*throttledDisks, error) {
	if os.Geteuid() != 0 {
		return nil, errors.New("bench: throttled disks need root (loop devices and a block I/O cgroup)")
	}
	if _, err := exec.LookPath("losetup"); err != nil {
		return nil, fmt.Errorf("bench: throttled disks need losetup (util-linux): %w", err)
	}
	cg, err := newIOCgroup(fmt.Sprintf("blockbench-%d", os.Getpid()))
	if err != nil {
		return nil, err
	}
	return &throttledDisks{limits: l, cg: cg}, nil
}

// attach puts path on a new loop device, caps it, and returns the device.
func (d *throttledDisks) attach(path string) (string, error) {
	out, err := exec.Command("losetup", "--find", "--show", path).Output()
	if err != nil {
		return "", fmt.Errorf("bench: losetup %s: %w%s", path, err, stderrOf(err))
	}
	dev := strings.TrimSpace(string(out))
	d.loops = append(d.loops, dev)
	// A disk's readahead is 128 KiB by default; a loop device's is
	// 2.5 MiB, and with it the throttle let sequential reads through at
	// page-cache speed (1.6–2 GB/s through a 20 MB/s cap, seen on RAID 5
	// members), so the disks would not be of the speed they claim.
	ra := filepath.Join("/sys/block", filepath.Base(dev), "queue", "read_ahead_kb")
	if err := os.WriteFile(ra, []byte("128"), 0); err != nil {
		return "", fmt.Errorf("bench: set %s: %w", ra, err)
	}
	var st unix.Stat_t
	if err := unix.Stat(dev, &st); err != nil {
		return "", fmt.Errorf("bench: stat %s: %w", dev, err)
	}
	if err := d.cg.limit(unix.Major(st.Rdev), unix.Minor(st.Rdev), d.limits); err != nil {
		return "", fmt.Errorf("bench: throttle %s: %w", dev, err)
	}
	return dev, nil
}

func (d *throttledDisks) close() error {
	var errs []error
	for i := len(d.loops) - 1; i >= 0; i-- {
		if out, err := exec.Command("losetup", "--detach", d.loops[i]).CombinedOutput(); err != nil {
			errs = append(errs, fmt.Errorf("bench: losetup --detach %s: %w: %s", d.loops[i], err, bytes.TrimSpace(out)))
		}
	}
	d.loops = nil
	return errors.Join(append(errs, d.cg.remove())...)
}

func stderrOf(err error) string {
	var ee *exec.ExitError
	if errors.As(err, &ee) && len(ee.Stderr) > 0 {
		return ": " + string(bytes.TrimSpace(ee.Stderr))
	}
	return ""
}

// ioCgroup is a block I/O cgroup that this process joined.
type ioCgroup struct {
	dir    string // the cgroup's directory
	parent string // where the process was before (its cgroup.procs)
	v2     bool
}

// newIOCgroup creates a cgroup named name under the root of the block I/O
// hierarchy (v2 if the io controller is there, else v1 blkio) and moves
// this process into it, so that its reads are throttled by the limits set
// on that cgroup.
func newIOCgroup(name string) (ioCgroup, error) {
	const root = "/sys/fs/cgroup"
	var cg ioCgroup
	if ctrl, err := os.ReadFile(filepath.Join(root, "cgroup.controllers")); err == nil {
		if !slices.Contains(strings.Fields(string(ctrl)), "io") {
			return cg, fmt.Errorf("bench: cgroup v2 at %s has no io controller (controllers: %s)", root, strings.TrimSpace(string(ctrl)))
		}
		// Enabling io for the root's children is idempotent; it fails when
		// the root is not ours to change (then the mkdir below tells).
		os.WriteFile(filepath.Join(root, "cgroup.subtree_control"), []byte("+io"), 0)
		cg = ioCgroup{dir: filepath.Join(root, name), parent: filepath.Join(root, "cgroup.procs"), v2: true}
	} else if st, err := os.Stat(filepath.Join(root, "blkio", "blkio.throttle.read_iops_device")); err == nil && !st.IsDir() {
		cg = ioCgroup{dir: filepath.Join(root, "blkio", name), parent: filepath.Join(root, "blkio", "cgroup.procs")}
	} else {
		return cg, fmt.Errorf("bench: no block I/O cgroup: neither %s/cgroup.controllers (v2) nor %s/blkio (v1)", root, root)
	}
	if err := os.Mkdir(cg.dir, 0o755); err != nil {
		return cg, fmt.Errorf("bench: create cgroup: %w", err)
	}
	if err := os.WriteFile(filepath.Join(cg.dir, "cgroup.procs"), []byte(strconv.Itoa(os.Getpid())), 0); err != nil {
		os.Remove(cg.dir)
		return cg, fmt.Errorf("bench: join cgroup %s: %w", cg.dir, err)
	}
	return cg, nil
}

// limit caps reads of device major:minor by this cgroup's processes.
func (cg ioCgroup) limit(major, minor uint32, l DiskLimits) error {
	dev := fmt.Sprintf("%d:%d", major, minor)
	if cg.v2 {
		line := dev
		if l.ReadIOPS > 0 {
			line += fmt.Sprintf(" riops=%d", l.ReadIOPS)
		}
		if l.ReadBPS > 0 {
			line += fmt.Sprintf(" rbps=%d", l.ReadBPS)
		}
		return os.WriteFile(filepath.Join(cg.dir, "io.max"), []byte(line), 0)
	}
	if l.ReadIOPS > 0 {
		if err := os.WriteFile(filepath.Join(cg.dir, "blkio.throttle.read_iops_device"), []byte(fmt.Sprintf("%s %d", dev, l.ReadIOPS)), 0); err != nil {
			return err
		}
	}
	if l.ReadBPS > 0 {
		return os.WriteFile(filepath.Join(cg.dir, "blkio.throttle.read_bps_device"), []byte(fmt.Sprintf("%s %d", dev, l.ReadBPS)), 0)
	}
	return nil
}

// remove moves the process back to the root cgroup and deletes this one.
func (cg ioCgroup) remove() error {
	if cg.dir == "" {
		return nil
	}
	if err := os.WriteFile(cg.parent, []byte(strconv.Itoa(os.Getpid())), 0); err != nil {
		return fmt.Errorf("bench: leave cgroup %s: %w", cg.dir, err)
	}
	if err := os.Remove(cg.dir); err != nil {
		return fmt.Errorf("bench: remove cgroup %s: %w", cg.dir, err)
	}
	return nil
}
