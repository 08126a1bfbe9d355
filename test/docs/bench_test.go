package docs

import (
	"os"
	"os/exec"
	"sort"
	"strings"
	"testing"
)

// benchFlags are blockbench's boolean flags (the others take a value).
var benchFlags = map[string]bool{"-replication": true, "-failover": true, "-raid": true, "-warm": true, "-nfs": true, "-nfs-quick": true}

// docBench shortens a documented blockbench command line: it appends
// -rounds 1 -runtime 1s (250ms with -raid, which runs in-process)
// -size 64MiB -dir DIR to every blockbench run (the Go flag package lets
// the later flag win), before the "; done" of a loop; with -nfs, whose
// -size is a file system's, -nfs-quick instead of -size (a 64 MiB file
// and 1000 small files). The runs then take seconds instead of minutes and
// still go through every row.
func docBench(line, dir string) string {
	runtime := "1s"
	if strings.Contains(line, " -raid") {
		runtime = "250ms"
	}
	size := " -size 64MiB"
	if strings.Contains(line, " -nfs") {
		size = " -nfs-quick"
	}
	short := " -rounds 1 -runtime " + runtime + size + " -dir " + dir
	if strings.HasSuffix(line, "; done") {
		return strings.TrimSuffix(line, "; done") + short + "; done"
	}
	return line + short
}

// benchKey is what decides a blockbench run: its flags after the last
// occurrence of each wins, sorted, without a leading "go build ... &&" (the
// build is the same every time). Two documented commands with the same
// key are one run.
func benchKey(line string) string {
	if _, after, ok := strings.Cut(line, " && "); ok && strings.HasPrefix(line, "go build ") {
		line = after
	}
	words := strings.Fields(line)
	flags := map[string]string{}
	for i := 1; i < len(words); i++ {
		w := words[i]
		if !strings.HasPrefix(w, "-") {
			continue
		}
		if benchFlags[w] || i+1 == len(words) {
			flags[w] = ""
			continue
		}
		flags[w] = words[i+1]
		i++
	}
	var out []string
	for k, v := range flags {
		out = append(out, k+" "+v)
	}
	sort.Strings(out)
	return strings.Join(out, " ")
}

// runBench runs a documented blockbench command, shortened, once per
// benchKey, and checks that it printed its tables.
func runBench(t *testing.T, f *docFixture, key string) {
	if strings.Contains(key, "-disk-iops") {
		// Loop devices and a block I/O cgroup.
		if os.Geteuid() != 0 {
			t.Skip("-disk-iops needs root (loop devices, a cgroup)")
		}
		needTools(t, "losetup")
	}
	if strings.Contains(key, "-nfs") {
		// Loop mounts, drop_caches, nfs-ganesha.
		if os.Geteuid() != 0 {
			t.Skip("-nfs needs root (loop devices, mounts, drop_caches)")
		}
		mkfs := "mkfs.ext4"
		if strings.Contains(key, "-nfs-fs xfs") {
			mkfs = "mkfs.xfs"
		}
		needTools(t, "losetup", mkfs, "ganesha.nfsd", "rpcbind")
	}
	line := docBench(f.substitute(t, key, f.Vars), f.Vars["BENCHDIR"])
	k := benchKey(line)
	r, ok := f.Runs[k]
	if ok {
		t.Logf("the same run as %s", r.Line)
	} else {
		r = f.shell(t, "", line)
		f.Runs[k] = r
	}
	if r.Code != 0 {
		t.Fatalf("want exit 0: %v", r)
	}
	var want []string
	switch {
	case strings.Contains(line, "-nfs"):
		want = []string{"1M sequential write (UNSTABLE + COMMIT)", "1M sequential read (cold cache)", "4K random read (cold cache)",
			"4K random write (UNSTABLE + COMMIT)", "small files LOOKUP+GETATTR+READ (cold cache)",
			"small files LOOKUP+GETATTR+READ (warm cache)", "small files CREATE+WRITE+COMMIT+REMOVE", "nfs-ganesha 4."}
	case strings.Contains(line, "-raid"):
		want = []string{"single file", "RAID1 ×2", "RAID10 4×2", "RAID5 ×3", "RAID6 ×4"}
	case strings.Contains(line, "-failover"):
		want = []string{"node1 → node2", "median"}
	case strings.Contains(line, "-replication"):
		want = []string{"4K random write QD32", "resync"}
		if strings.Contains(line, "-security none,mac,tls") {
			want = append(want, `"tls"`)
		}
	default:
		want = []string{"4K random write QD32", "4K random read QD32", "1M sequential write QD8", "4K random write QD1 latency"}
	}
	rows := 0
	for _, l := range strings.Split(r.Stdout, "\n") {
		if strings.HasPrefix(l, "| ") && !strings.HasPrefix(l, "| row ") {
			rows++
		}
	}
	if !strings.Contains(r.Stdout, "|---|") || rows < 2 {
		t.Errorf("%s: no table rows in its output:\n%s", r.Line, r.Stdout)
	}
	for _, w := range want {
		if !strings.Contains(r.Stdout, w) {
			t.Errorf("%s: no %q in its output:\n%s", r.Line, w, r.Stdout)
		}
	}
}

func benchGroup() docGroup {
	var steps []docStep
	for _, k := range []string{
		"go build -o bin/ ./cmd/... && bin/blockbench",
		"go build -o bin/ ./cmd/... && bin/blockbench -rounds 5 -runtime 5s",
		"bin/blockbench -replication",
		"blockbench -replication",
		"go build -o bin/ ./cmd/... && bin/blockbench -replication -rounds 5 -runtime 5s",
		"bin/blockbench -replication -rounds 5 -runtime 5s",
		"bin/blockbench -replication -runtime 2s -rounds 1 -size 256MiB",
		"go build -o bin/ ./cmd/... && bin/blockbench -replication -security none,mac,tls -rounds 5 -runtime 5s",
		"bin/blockbench -failover",
		"blockbench -failover",
		"go build -o bin/ ./cmd/... && bin/blockbench -failover -rounds 10",
		"bin/blockbench -failover -rounds 10",
		"bin/blockbench -failover -rounds 10 -failover-timeout 600ms -heartbeat 100ms",
		"bin/blockbench -raid",
		"blockbench -raid",
		"go build -o bin/ ./cmd/... && bin/blockbench -raid -rounds 3 -runtime 3s",
		"bin/blockbench -raid -rounds 3 -runtime 3s",
		// -size 2GiB is shortened to 64MiB like the others: at 2GiB the
		// stores alone take minutes to fill.
		"bin/blockbench -raid -rounds 3 -runtime 3s -size 2GiB",
		"bin/blockbench -raid -warm -rounds 3 -runtime 3s",
		"go build -o bin/ ./cmd/... && bin/blockbench -raid -disk-iops 1000 -disk-mbps 20 -rounds 3 -runtime 3s",
		"go build -o bin/ ./cmd/... && bin/blockbench -nfs -rounds 3",
		"blockbench -nfs",
		"bin/blockbench -nfs -nfs-fs xfs -rounds 3",
		"bin/blockbench -nfs -rounds 3 -nfs-server-cpuprofile /tmp/nfs-server.prof",
	} {
		steps = append(steps, docStep{k, runBench})
	}
	steps = append(steps,
		// The profile the run above had blockrep's server write.
		docStep{"go tool pprof -top -nodecount 25 bin/blockbench /tmp/nfs-server.prof", func(t *testing.T, f *docFixture, key string) {
			r := f.mustShell(t, "", f.substitute(t, key, f.Vars))
			if !strings.Contains(r.Stdout, "flat%") || !strings.Contains(r.Stdout, "cum%") {
				t.Errorf("%s: no profile table:\n%s", r.Line, r.Stdout)
			}
		}},
		docStep{"go test ./replica -run X -bench ReplicatedWriteQD1", func(t *testing.T, f *docFixture, key string) {
			r := f.mustShell(t, "", key+" -benchtime 20x")
			if !strings.Contains(r.Stdout, "BenchmarkReplicatedWriteQD1") || !strings.Contains(r.Stdout, "ns/op") {
				t.Errorf("%s: no benchmark result:\n%s", r.Line, r.Stdout)
			}
		}},
		// The "1 MiB reads with vectored member reads" block: the old
		// binary is built in a worktree of a clone of the repository (so
		// the repository gets no worktree), /tmp/ is a temporary
		// directory, the runs are shortened.
		docStep{"git worktree add /tmp/wt 012a917~1 && (cd /tmp/wt && go build -o /tmp/bb-old ./cmd/blockbench)", func(t *testing.T, f *docFixture, key string) {
			if err := exec.Command("git", "-C", f.root, "rev-parse", "--git-dir").Run(); err != nil {
				t.Skipf("%s is not a git checkout: %v", f.root, err)
			}
			if out, err := exec.Command("git", "-C", f.root, "rev-parse", "--is-shallow-repository").Output(); err == nil && strings.TrimSpace(string(out)) == "true" {
				if out, err := exec.Command("git", "-C", f.root, "cat-file", "-e", "012a917^{commit}").CombinedOutput(); err != nil {
					t.Skipf("%s is a shallow clone without commit 012a917, which docs/BENCHMARKS.md builds (git fetch --unshallow to run this): %v: %s", f.root, err, out)
				}
			}
			if out, err := exec.Command("git", "-C", f.root, "cat-file", "-e", "012a917^{commit}").CombinedOutput(); err != nil {
				t.Fatalf("commit 012a917, which docs/BENCHMARKS.md builds, is not in the repository: %v: %s", err, out)
			}
			clone := f.dir(t, "clone")
			f.mustShell(t, "", "git clone -q --shared "+f.root+" "+clone)
			f.mustShell(t, clone, f.substitute(t, key, f.Vars))
		}},
		docStep{"go build -o /tmp/bb-new ./cmd/blockbench", func(t *testing.T, f *docFixture, key string) {
			f.mustShell(t, "", f.substitute(t, key, f.Vars))
		}},
		docStep{`for b in old new; do /tmp/bb-$b -raid -warm -rounds 3 -runtime 2s -rows "RAID10,RAID5 ×3,RAID6"; done`, func(t *testing.T, f *docFixture, key string) {
			r := f.mustShell(t, "", docBench(f.substitute(t, key, f.Vars), f.Vars["BENCHDIR"]))
			for _, w := range []string{"RAID10 4×2", "RAID5 ×3", "RAID6 ×4"} {
				if n := strings.Count(r.Stdout, "| "+w+" |"); n < 2 {
					t.Errorf("%s: %d rows of %s, want one in each binary's tables:\n%s", r.Line, n, w, r.Stdout)
				}
			}
		}},
	)
	return docGroup{Name: "benchmarks", Lane: "benchmarks",
		Setup: func(t *testing.T, f *docFixture) {
			needTools(t, "nbdkit", "fio", "git")
			f.Vars = docVars{"BENCHDIR": f.dir(t, "bench"), "/tmp/": f.dir(t, "tmp")}
		},
		Steps: steps}
}
