package bench

import (
	"bytes"
	"os"
	"strings"
	"testing"
	"time"
)

func TestParseFio(t *testing.T) {
	// Real fio 3.33 output, with the line the nbd engine prints before the
	// JSON document.
	out, err := os.ReadFile("testdata/fio-randwrite-qd4.json")
	if err != nil {
		t.Fatal(err)
	}
	r, err := ParseFio(out)
	if err != nil {
		t.Fatal(err)
	}
	if r.ClientCPU < 1 || r.ClientCPU > 200 {
		t.Fatalf("client CPU %v%%", r.ClientCPU)
	}
	if int(r.IOPS) != 9164 || int64(r.Bandwidth) != 37538491 || r.MeanLat != 434260*time.Nanosecond || r.P99Lat != 3686400*time.Nanosecond {
		t.Fatalf("parsed %+v", r)
	}
	for _, bad := range []string{"", "fio: error", `{"jobs": []}`, `{"jobs": [{"error": 5}]}`, `{"jobs": [{"read": {"iops": 0}}]}`} {
		if _, err := ParseFio([]byte(bad)); err == nil {
			t.Errorf("ParseFio(%q) succeeded", bad)
		}
	}
}

func TestRatioAndMedian(t *testing.T) {
	runs := []Result{{IOPS: 30}, {IOPS: 10}, {IOPS: 20}}
	if m := Median(runs, IOPS); m.IOPS != 20 {
		t.Fatalf("median %v", m.IOPS)
	}
	lat := Comparison{Row: Row{Metric: Latency}, Reference: Result{MeanLat: 60 * time.Microsecond}, Blockrep: Result{MeanLat: 40 * time.Microsecond}}
	if r := lat.Ratio(); r < 1.49 || r > 1.51 {
		t.Fatalf("latency ratio %v, want 1.5 (lower latency is better)", r)
	}
	bw := Comparison{Row: Row{Metric: Bandwidth, Target: 1}, Reference: Result{Bandwidth: 200}, Blockrep: Result{Bandwidth: 100}}
	if r := bw.Ratio(); r != 0.5 {
		t.Fatalf("bandwidth ratio %v", r)
	}
	var buf bytes.Buffer
	WriteTable(&buf, "ref", []Comparison{bw})
	if !strings.Contains(buf.String(), "0.50×") || !strings.Contains(buf.String(), "MISSED") {
		t.Fatalf("table:\n%s", buf.String())
	}
}

func TestFioArgs(t *testing.T) {
	args := strings.Join(FioArgs("nbd://127.0.0.1:1", DefaultRows[0], 1<<30, 5*time.Second), " ")
	for _, want := range []string{"--ioengine=nbd", "--uri=nbd://127.0.0.1:1", "--rw=randwrite", "--bs=4k", "--iodepth=32", "--size=1073741824", "--runtime=5", "--time_based"} {
		if !strings.Contains(args, want) {
			t.Errorf("fio args %q lack %q", args, want)
		}
	}
}
