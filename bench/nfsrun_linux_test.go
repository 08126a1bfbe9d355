package bench

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/blockrep/blockrep/internal/testtool"
)

// nfsStandin is set when the package is built with the nfsexport
// stand-in (tag wbench_standin), whose NFS procedures all answer
// PROC_UNAVAIL: blockrep's side can then only be checked to fail clearly.
var nfsStandin bool

// TestMain lets the test binary be blockrep's NFS server process, as
// blockbench is for blockbench -nfs: RunNFS starts Self with
// -nfs-serve-dir.
func TestMain(m *testing.M) {
	if len(os.Args) > 1 && os.Args[1] == "-nfs-serve-dir" {
		fs := flag.NewFlagSet("nfs-serve", flag.ExitOnError)
		dir := fs.String("nfs-serve-dir", "", "")
		listen := fs.String("nfs-serve-listen", "", "")
		profile := fs.String("nfs-serve-cpuprofile", "", "")
		fs.Parse(os.Args[1:])
		ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
		err := ServeNFS(ctx, NFSServeOptions{Dir: *dir, Listen: *listen, CPUProfile: *profile})
		stop()
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// needNFSBench skips unless the machine can run blockbench -nfs.
func needNFSBench(t *testing.T, fstype string) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("blockbench -nfs needs root (loop devices, mounts, drop_caches)")
	}
	testtool.Need(t, "losetup", "util-linux")
	testtool.Need(t, mkfsArgs(fstype, "")[0], map[string]string{"ext4": "e2fsprogs", "xfs": "xfsprogs"}[fstype])
	testtool.Need(t, "ganesha.nfsd", "nfs-ganesha")
	testtool.Need(t, "rpcbind", "rpcbind")
	if m, _ := filepath.Glob("/usr/lib/*/ganesha/libfsalvfs.so"); len(m) == 0 {
		testtool.Missing(t, "nfs-ganesha's VFS FSAL (libfsalvfs.so) is not installed (Debian package nfs-ganesha-vfs)")
	}
}

// tinyNFS is a run of every row in seconds.
func tinyNFS(t *testing.T, fstype string, servers []string, out *bytes.Buffer) NFSOptions {
	return NFSOptions{
		Dir: t.TempDir(), FSType: fstype,
		FileSize: 8 << 20, Files: 200, Dirs: 4, MinFile: 1000, MaxFile: 20000,
		Runtime: 300 * time.Millisecond, Rounds: 1, Conns: 2, Depth: 4,
		Servers: servers, Self: os.Args[0],
		Out: out, Progress: t.Logf,
	}
}

// tableFigures returns, for each row of NFSRows, the leading number of
// its ganesha and blockrep cells in the printed table (-1 for "—").
func tableFigures(t *testing.T, out string) map[string][2]float64 {
	t.Helper()
	figs := map[string][2]float64{}
	for _, line := range strings.Split(out, "\n") {
		cells := strings.Split(line, " | ")
		if len(cells) < 3 || !strings.HasPrefix(line, "| ") {
			continue
		}
		name := strings.TrimPrefix(cells[0], "| ")
		var f [2]float64
		for i, c := range cells[1:3] {
			num, _, _ := strings.Cut(c, " ")
			v, err := strconv.ParseFloat(num, 64)
			if err != nil {
				v = -1
			}
			f[i] = v
		}
		figs[name] = f
	}
	return figs
}

// checkCleanedUp fails if a mount or loop device of dir is left.
func checkCleanedUp(t *testing.T, dir string) {
	t.Helper()
	mi, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(mi), dir) {
		t.Errorf("a mount under %s is left:\n%s", dir, mi)
	}
	out, err := exec.Command("losetup", "--list", "--noheadings", "--output", "NAME,BACK-FILE").Output()
	if err != nil {
		t.Fatalf("losetup --list: %v", err)
	}
	if strings.Contains(string(out), dir) {
		t.Errorf("a loop device of %s is left:\n%s", dir, out)
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 0 {
		t.Errorf("%s still holds %d entries (the work directory is not removed)", dir, len(entries))
	}
}

// TestRunNFS runs blockbench -nfs end to end with tiny sizes: every row has
// a figure above zero for each server, and nothing is left mounted or
// attached.
func TestRunNFS(t *testing.T) {
	for _, fstype := range []string{"ext4", "xfs"} {
		t.Run(fstype, func(t *testing.T) {
			needNFSBench(t, fstype)
			servers := []string{NFSGanesha, NFSBlockrep}
			if nfsStandin {
				servers = []string{NFSGanesha}
				t.Log("built with the nfsexport stand-in (PROC_UNAVAIL): measuring ganesha alone")
			}
			var out bytes.Buffer
			o := tinyNFS(t, fstype, servers, &out)
			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
			defer cancel()
			if err := RunNFS(ctx, o); err != nil {
				t.Fatalf("RunNFS: %v\n%s", err, out.String())
			}
			t.Logf("\n%s", out.String())
			figs := tableFigures(t, out.String())
			for _, row := range NFSRows {
				f, ok := figs[row.Name]
				if !ok {
					t.Errorf("no row %q in the table", row.Name)
					continue
				}
				for i, s := range []string{NFSGanesha, NFSBlockrep} {
					measured := i == 0 || !nfsStandin
					if measured && f[i] <= 0 {
						t.Errorf("%s: %s's figure is %v, want > 0", row.Name, s, f[i])
					}
				}
			}
			if !strings.Contains(out.String(), "nfs-ganesha 4.") {
				t.Errorf("the table does not name ganesha's version:\n%s", out.String())
			}
			checkCleanedUp(t, o.Dir)
		})
	}
}

// TestRunNFSFailsClearly: a server that cannot serve the rows (here: gone
// before the first call, as after a crash) ends the run with an error
// naming it, and everything is cleaned up.
func TestRunNFSFailsClearly(t *testing.T) {
	needNFSBench(t, "ext4")
	var out bytes.Buffer
	o := tinyNFS(t, "ext4", []string{NFSBlockrep}, &out)
	want := "blockrep: "
	if nfsStandin {
		want = "blockrep: NFS FSINFO: PROC_UNAVAIL"
	} else {
		// Not a blockbench binary: the "server" exits at once.
		o.Self = "/bin/true"
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	err := RunNFS(ctx, o)
	if err == nil || !strings.Contains(err.Error(), want) {
		t.Fatalf("RunNFS: %v, want an error containing %q", err, want)
	}
	t.Log(err)
	checkCleanedUp(t, o.Dir)
}
