package bench

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

func TestDiskLimits(t *testing.T) {
	for _, tc := range []struct {
		l       DiskLimits
		enabled bool
		text    string
	}{
		{DiskLimits{}, false, ""},
		{DiskLimits{ReadIOPS: 1000}, true, "1000 read IOPS"},
		{DiskLimits{ReadIOPS: 500, ReadBPS: 20e6}, true, "500 read IOPS, 20 MB/s read"},
	} {
		if got := tc.l.Enabled(); got != tc.enabled {
			t.Errorf("%+v: Enabled %v, want %v", tc.l, got, tc.enabled)
		}
		if got := tc.l.String(); got != tc.text {
			t.Errorf("%+v: String %q, want %q", tc.l, got, tc.text)
		}
	}
}

func TestCheckDiskCoverage(t *testing.T) {
	o := RaidOptions{Size: 256 << 20, Runtime: 3 * time.Second, Configs: DefaultRaidConfigs}
	if err := checkDiskCoverage(o); err != nil {
		t.Errorf("no bandwidth cap: %v", err)
	}
	o.Disks.ReadBPS = 20e6 // 4 members × 20 MB/s × 3 s = 240 MB < 256 MiB
	if err := checkDiskCoverage(o); err != nil {
		t.Errorf("20 MB/s: %v", err)
	}
	o.Disks.ReadBPS = 100e6
	err := checkDiskCoverage(o)
	if err == nil || !strings.Contains(err.Error(), "-size 256 MiB is too small for -disk-mbps 100") {
		t.Errorf("100 MB/s: %v, want a refusal naming -size and -disk-mbps", err)
	}
}

// TestThrottledDisks attaches a file to a throttled loop device and checks
// that the kernel holds the cap for this process, and that close detaches
// the device, leaves the cgroup and removes it.
func TestThrottledDisks(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: loop devices and a block I/O cgroup")
	}
	if _, err := os.Stat("/dev/loop-control"); err != nil {
		t.Skipf("no loop devices here: %v", err)
	}
	path := filepath.Join(t.TempDir(), "disk.img")
	if err := os.WriteFile(path, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(path, 8<<20); err != nil {
		t.Fatal(err)
	}
	d, err := newThrottledDisks(DiskLimits{ReadIOPS: 1234, ReadBPS: 5e6})
	if err != nil {
		t.Fatal(err)
	}
	closed := false
	defer func() {
		if !closed {
			d.close()
		}
	}()
	dev, err := d.attach(path)
	if err != nil {
		t.Fatal(err)
	}
	loop := filepath.Base(dev)
	backing, err := os.ReadFile(filepath.Join("/sys/block", loop, "loop", "backing_file"))
	if err != nil || strings.TrimSpace(string(backing)) != path {
		t.Fatalf("%s backs %q (%v), want %s", dev, backing, err, path)
	}
	if ra, _ := os.ReadFile(filepath.Join("/sys/block", loop, "queue", "read_ahead_kb")); strings.TrimSpace(string(ra)) != "128" {
		t.Errorf("%s readahead %q KiB, want a disk's 128", dev, ra)
	}
	numbers, err := os.ReadFile(filepath.Join("/sys/block", loop, "dev"))
	if err != nil {
		t.Fatal(err)
	}
	majmin := strings.TrimSpace(string(numbers))
	var limits string
	if d.cg.v2 {
		b, _ := os.ReadFile(filepath.Join(d.cg.dir, "io.max"))
		limits = string(b)
		if !strings.Contains(limits, majmin+" rbps=5000000 wbps=max riops=1234") {
			t.Errorf("io.max %q, want %s capped at rbps=5000000 riops=1234", limits, majmin)
		}
	} else {
		iops, _ := os.ReadFile(filepath.Join(d.cg.dir, "blkio.throttle.read_iops_device"))
		bps, _ := os.ReadFile(filepath.Join(d.cg.dir, "blkio.throttle.read_bps_device"))
		if !strings.Contains(string(iops), majmin+" 1234") || !strings.Contains(string(bps), majmin+" 5000000") {
			t.Errorf("read_iops_device %q, read_bps_device %q, want %s capped at 1234 and 5000000", iops, bps, majmin)
		}
	}
	procs, _ := os.ReadFile(filepath.Join(d.cg.dir, "cgroup.procs"))
	if !strings.Contains("\n"+string(procs), "\n"+strconv.Itoa(os.Getpid())+"\n") {
		t.Errorf("process %d not in %s (procs %q)", os.Getpid(), d.cg.dir, procs)
	}

	cgdir := d.cg.dir
	closed = true
	if err := d.close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join("/sys/block", loop, "loop", "backing_file")); err == nil {
		t.Errorf("%s still attached after close", dev)
	}
	if _, err := os.Stat(cgdir); err == nil {
		t.Errorf("cgroup %s still there after close", cgdir)
	}
}
