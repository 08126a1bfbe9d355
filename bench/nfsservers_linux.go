package bench

// This file sets up blockbench -nfs: a loop-mounted file system per
// server, rpcbind and nfs-ganesha, blockrep's server in a process of its
// own, and the run that interleaves rows and servers. Everything it starts
// or attaches is undone in reverse order when RunNFS returns, whatever
// the reason (error, interrupt).

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/blockrep/blockrep/config"
	"github.com/blockrep/blockrep/internal/testtool"
)

// GaneshaParams are what GaneshaConfig needs.
type GaneshaParams struct {
	// Path is the exported directory, also its MOUNT path.
	Path string
	// NFSPort and MNTPort are the TCP ports of NFS and MOUNT on 127.0.0.1;
	// ganesha wants them different.
	NFSPort, MNTPort int
	// RecoveryDir takes ganesha's NFSv4 recovery directories (made even
	// with NFSv4 off), which default to /var/lib/nfs/ganesha.
	RecoveryDir string
}

// GaneshaConfig returns an nfs-ganesha 4.3 configuration that serves Path
// with the VFS FSAL over NFSv3 on TCP only, as blockrep's server serves
// it: read-write, no root squash, AUTH_SYS, no NLM, no RQUOTA, no UDP, no
// grace period, NFS and MOUNT on 127.0.0.1. Everything else is ganesha's
// default (its worker threads, its MDCACHE sizes).
func GaneshaConfig(p GaneshaParams) string {
	return fmt.Sprintf(`NFS_CORE_PARAM {
	Protocols = 3;
	Enable_NLM = false;
	Enable_RQUOTA = false;
	Enable_UDP = false;
	Bind_addr = 127.0.0.1;
	NFS_Port = %d;
	MNT_Port = %d;
}

NFSV4 {
	Graceless = true;
	RecoveryRoot = %q;
}

EXPORT {
	Export_Id = 1;
	Path = %q;
	Pseudo = %q;
	Protocols = 3;
	Transports = TCP;
	Access_Type = RW;
	Squash = No_Root_Squash;
	SecType = sys;
	FSAL {
		Name = VFS;
	}
}

LOG {
	Default_Log_Level = EVENT;
}
`, p.NFSPort, p.MNTPort, p.RecoveryDir, p.Path, p.Path)
}

// ganeshaVersion matches "NFS-Ganesha Release = V4.3" in ganesha.nfsd -v.
var ganeshaVersion = regexp.MustCompile(`Release = V?([0-9][0-9A-Za-z.\-]*)`)

// GaneshaName names the server in the table from ganesha.nfsd -v's output:
// "nfs-ganesha 4.3", or "nfs-ganesha" when the output has no version.
func GaneshaName(versionOutput string) string {
	if m := ganeshaVersion.FindStringSubmatch(versionOutput); m != nil {
		return "nfs-ganesha " + m[1]
	}
	return "nfs-ganesha"
}

// loopFS is a file system image attached to a loop device and mounted.
// close undoes what was done, in reverse, even after a partial setup.
type loopFS struct {
	img, dev, mnt string
	mounted       bool
}

// mkfsArgs is the command that makes a file system of type fstype on dev.
// ext4 is made with its inode tables and journal written now: lazy
// initialisation would write them from a kernel thread during the runs.
func mkfsArgs(fstype, dev string) []string {
	if fstype == "xfs" {
		return []string{"mkfs.xfs", "-q", "-f", dev}
	}
	return []string{"mkfs.ext4", "-q", "-F", "-E", "lazy_itable_init=0,lazy_journal_init=0", dev}
}

// newLoopFS makes a sparse image of size bytes at img, attaches it, makes
// an fstype file system on it and mounts it at mnt (created).
func newLoopFS(img, mnt, fstype string, size int64) (*loopFS, error) {
	fs := &loopFS{img: img, mnt: mnt}
	if err := os.WriteFile(img, nil, 0o600); err != nil {
		return nil, err
	}
	if err := os.Truncate(img, size); err != nil {
		return nil, err
	}
	out, err := exec.Command("losetup", "--find", "--show", img).Output()
	if err != nil {
		return nil, fmt.Errorf("bench: losetup %s: %w%s", img, err, stderrOf(err))
	}
	fs.dev = strings.TrimSpace(string(out))
	args := mkfsArgs(fstype, fs.dev)
	tool, err := testtool.Look(args[0])
	if err == nil {
		var out []byte
		if out, err = exec.Command(tool, args[1:]...).CombinedOutput(); err != nil {
			err = fmt.Errorf("%w: %s", err, bytes.TrimSpace(out))
		}
	}
	if err == nil {
		err = os.Mkdir(mnt, 0o755)
	}
	if err == nil {
		err = unix.Mount(fs.dev, mnt, fstype, 0, "")
		fs.mounted = err == nil
	}
	if err != nil {
		cerr := fs.close()
		return nil, errors.Join(fmt.Errorf("bench: %s on %s: %w", fstype, fs.dev, err), cerr)
	}
	return fs, nil
}

// close unmounts (retrying while a server that just exited still holds the
// mount busy), detaches the loop device and removes the image.
func (fs *loopFS) close() error {
	var errs []error
	if fs.mounted {
		var err error
		for i := 0; i < 50; i++ {
			if err = unix.Unmount(fs.mnt, 0); err != unix.EBUSY {
				break
			}
			time.Sleep(100 * time.Millisecond)
		}
		if err == unix.EBUSY {
			// Detach it lazily rather than leave it mounted; the loop
			// device then goes when the last user does.
			err = unix.Unmount(fs.mnt, unix.MNT_DETACH)
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("bench: unmount %s: %w", fs.mnt, err))
		} else {
			fs.mounted = false
			os.Remove(fs.mnt)
		}
	}
	if fs.dev != "" {
		if out, err := exec.Command("losetup", "--detach", fs.dev).CombinedOutput(); err != nil {
			errs = append(errs, fmt.Errorf("bench: losetup --detach %s: %w: %s", fs.dev, err, bytes.TrimSpace(out)))
		} else {
			fs.dev = ""
		}
	}
	if err := os.Remove(fs.img); err != nil && !os.IsNotExist(err) {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// portServed reports whether something accepts TCP connections on
// 127.0.0.1:port.
func portServed(port int) bool {
	c, err := net.DialTimeout("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), time.Second)
	if err != nil {
		return false
	}
	c.Close()
	return true
}

// cleanups runs undo functions in reverse order of registration.
type cleanups struct {
	fns []func() error
}

func (c *cleanups) add(fn func() error) { c.fns = append(c.fns, fn) }

func (c *cleanups) run() error {
	var errs []error
	for i := len(c.fns) - 1; i >= 0; i-- {
		errs = append(errs, c.fns[i]())
	}
	c.fns = nil
	return errors.Join(errs...)
}

// RunNFS runs blockbench -nfs (see NFSRows and docs/BENCHMARKS.md) and
// prints its table to o.Out. It needs root (loop devices, mounts,
// drop_caches), losetup, mkfs.ext4 or mkfs.xfs, and for ganesha
// ganesha.nfsd with its VFS FSAL and rpcbind.
func RunNFS(ctx context.Context, o NFSOptions) (err error) {
	o = o.withDefaults()
	if err := o.validate(); err != nil {
		return err
	}
	if os.Geteuid() != 0 {
		return errors.New("bench: nfs: needs root (loop devices, mounts, drop_caches)")
	}
	tools := []string{"losetup", mkfsArgs(o.FSType, "")[0]}
	measured := map[string]bool{}
	for _, s := range o.Servers {
		measured[s] = true
	}
	if measured[NFSGanesha] {
		tools = append(tools, o.Ganesha, o.Rpcbind)
	}
	paths := map[string]string{}
	for _, tool := range tools {
		p, err := testtool.Look(tool)
		if err != nil {
			return fmt.Errorf("bench: nfs: %w", err)
		}
		paths[tool] = p
	}
	if measured[NFSBlockrep] && o.Self == "" {
		if o.Self, err = os.Executable(); err != nil {
			return fmt.Errorf("bench: nfs: find blockbench itself to run blockrep's server: %w", err)
		}
	}

	work, err := os.MkdirTemp(o.Dir, "blockbench-nfs-")
	if err != nil {
		return err
	}
	var undo cleanups
	defer func() {
		if cerr := undo.run(); cerr != nil {
			o.Progress("cleanup: %v", cerr)
			err = errors.Join(err, cerr)
		}
		os.RemoveAll(work)
	}()

	var targets []*nfsTarget
	ganeshaName := "nfs-ganesha"
	for _, name := range []string{NFSGanesha, NFSBlockrep} {
		if !measured[name] {
			continue
		}
		start := time.Now()
		fs, err := newLoopFS(filepath.Join(work, name+".img"), filepath.Join(work, "mnt-"+name), o.FSType, o.FSSize)
		if err != nil {
			return err
		}
		undo.add(fs.close)
		if err := populate(ctx, fs.mnt, o); err != nil {
			return fmt.Errorf("bench: nfs: write the files for %s: %w", name, err)
		}
		o.Progress("%s: %s of %s on %s at %s, %s file and %d small files written in %.1fs",
			name, o.FSType, config.FormatSize(o.FSSize), fs.dev, fs.mnt, config.FormatSize(o.FileSize), o.Files, time.Since(start).Seconds())

		t := &nfsTarget{name: name, path: fs.mnt}
		if name == NFSGanesha {
			out, _ := exec.Command(paths[o.Ganesha], "-v").CombinedOutput()
			ganeshaName = GaneshaName(string(out))
			if t.proc, t.nfsAddr, t.mountAddr, err = startGanesha(ctx, paths[o.Ganesha], paths[o.Rpcbind], fs.mnt, filepath.Join(work, "ganesha"), &undo, o.Progress); err != nil {
				return err
			}
		} else {
			if t.proc, t.nfsAddr, err = startBlockrepNFS(ctx, o.Self, fs.mnt, filepath.Join(work, "blockrep.log"), o.ServerCPUProfile); err != nil {
				return err
			}
			undo.add(func() error { t.proc.Stop(); return nil })
			t.mountAddr = t.nfsAddr // NFS and MOUNT on one listener
		}
		if err := t.connect(ctx, o); err != nil {
			t.close()
			return err
		}
		undo.add(func() error { t.close(); return nil })
		targets = append(targets, t)
	}

	var names []string
	for _, t := range targets {
		names = append(names, t.name)
	}
	fmt.Fprintf(o.Out, "blockbench -nfs: %s; %d rows × %d rounds; %s of %s per server in %s; a %s file and %d files of %s–%s in %d directories; %d connections × %d calls in flight; random rows %s; page cache dropped (sync + drop_caches=3) before the cold rows, one untimed pass before the warm row\n\n",
		strings.Join(names, ", "), len(o.Rows), o.Rounds, o.FSType, config.FormatSize(o.FSSize), o.Dir, config.FormatSize(o.FileSize), o.Files,
		config.FormatSize(int64(o.MinFile)), config.FormatSize(int64(o.MaxFile)), o.Dirs, o.Conns, o.Depth, o.Runtime)

	runs := make(map[string][][]NFSResult) // server -> row -> runs
	for _, t := range targets {
		runs[t.name] = make([][]NFSResult, len(o.Rows))
	}
	for r := 0; r < o.Rounds; r++ {
		for ri, row := range o.Rows {
			for ti, t := range targets {
				if err := ctx.Err(); err != nil {
					return err
				}
				res, err := t.runRow(ctx, row, o, uint64(r*1000+ri*10+ti))
				if err != nil {
					return fmt.Errorf("%s (round %d): %w", row.Name, r+1, err)
				}
				runs[t.name][ri] = append(runs[t.name][ri], res)
				o.Progress("round %d %s %s: %.0f %s, client CPU %.0f%%, server CPU %.0f%%", r+1, row.Name, t.name,
					res.Value(row), row.Unit(), res.cpuPercent(res.ClientCPU), res.cpuPercent(res.ServerCPU))
			}
		}
	}
	var cs []NFSComparison
	for ri, row := range o.Rows {
		c := NFSComparison{Row: row}
		if rs, ok := runs[NFSGanesha]; ok {
			c.Ganesha = rs[ri]
		}
		if rs, ok := runs[NFSBlockrep]; ok {
			c.Blockrep = rs[ri]
		}
		cs = append(cs, c)
	}
	WriteNFSTable(o.Out, ganeshaName, cs)
	var rss []string
	for _, t := range targets {
		if peak, err := t.proc.PeakRSS(); err == nil {
			rss = append(rss, fmt.Sprintf("%s %.1f MiB", t.name, float64(peak)/(1<<20)))
		}
	}
	if len(rss) > 0 {
		fmt.Fprintf(o.Out, "\nServer peak resident set (VmHWM) after the runs: %s\n", strings.Join(rss, ", "))
	}
	return nil
}

// startGanesha starts rpcbind if nothing serves port 111 (ganesha 4.3
// does not start without it), then ganesha.nfsd in the foreground with its
// configuration, log, pid file and recovery directory in dir, and returns
// it with its NFS and MOUNT addresses. Both are stopped by undo, ganesha
// first.
func startGanesha(ctx context.Context, ganesha, rpcbind, export, dir string, undo *cleanups, progress func(string, ...any)) (s *Server, nfsAddr, mountAddr string, err error) {
	if err := os.MkdirAll(filepath.Join(dir, "recovery"), 0o755); err != nil {
		return nil, "", "", err
	}
	if !portServed(111) {
		rb, err := start(ctx, "rpcbind", 111, filepath.Join(dir, "rpcbind.log"), rpcbind, "-f", "-w")
		if err != nil {
			return nil, "", "", err
		}
		undo.add(func() error { rb.Stop(); return nil })
		progress("rpcbind: started (nothing served port 111); stopped at the end")
	}
	ports, err := freePorts(2)
	if err != nil {
		return nil, "", "", err
	}
	conf := filepath.Join(dir, "ganesha.conf")
	text := GaneshaConfig(GaneshaParams{Path: export, NFSPort: ports[0], MNTPort: ports[1], RecoveryDir: filepath.Join(dir, "recovery")})
	if err := os.WriteFile(conf, []byte(text), 0o644); err != nil {
		return nil, "", "", err
	}
	log := filepath.Join(dir, "ganesha.log")
	s, err = start(ctx, "nfs-ganesha", ports[0], log, ganesha, "-F", "-f", conf, "-L", log, "-p", filepath.Join(dir, "ganesha.pid"))
	if err != nil {
		return nil, "", "", err
	}
	undo.add(func() error { s.Stop(); return nil })
	return s, loopback(ports[0]), loopback(ports[1]), nil
}

func loopback(port int) string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(port)) }

// startBlockrepNFS runs blockrep's NFS server on export in a process of
// its own: self (blockbench) with the hidden flags that call ServeNFS. It
// returns the process and its address (NFS and MOUNT).
func startBlockrepNFS(ctx context.Context, self, export, logPath, cpuProfile string) (*Server, string, error) {
	port, err := freePort()
	if err != nil {
		return nil, "", err
	}
	args := []string{self, "-nfs-serve-dir", export, "-nfs-serve-listen", loopback(port)}
	if cpuProfile != "" {
		args = append(args, "-nfs-serve-cpuprofile", cpuProfile)
	}
	s, err := start(ctx, "blockrep", port, logPath, args...)
	return s, loopback(port), err
}
