package storeid

import (
	"flag"
	"fmt"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/blockrep/blockrep/internal/scenario"
)

// Scenario files for Decide (testdata/decide/*.txt). Each scenario is
//
//	decide
//	volume name=NAME path=PATH [size=N] [replicated] [read-only]
//	record none | record vol=ID size=N [store=ID gen=ID]   (no store: legacy)
//	store missing [kind=K] | store kind=K raw=N found=F [vol=ID store=ID gen=ID prev=ID size=N name=S] [detail=TEXT]
//	----
//	action=A size=N grow=B key=K
//	reason: TEXT
//
// Sizes are integers with an optional K or M suffix, summed with '+'
// (1M+4K). IDs are up to 12 hex digits, the end of a UUID that is zero
// elsewhere; reasons print them back in that short form. kind is file
// (default), block-device or array; found is one of Found's names.
//
// go test ./storeid/ -run TestDecideScenarios -rewrite regenerates the
// expected outputs in place (review the diff!).

var rewrite = flag.Bool("rewrite", false, "rewrite expected outputs of testdata/decide scenario files")

func TestDecideScenarios(t *testing.T) {
	scenario.Run(t, filepath.Join("testdata", "decide", "*.txt"), scenario.Options{Rewrite: *rewrite},
		func() scenario.Runner { return runDecide })
}

const idPrefix = "00000000-0000-0000-0000-"

// shortID matches a scenario ID's UUID; reasons print the short form.
var shortID = regexp.MustCompile(`00000000-0000-0000-0000-0*([0-9a-f]+)`)

func runDecide(b *scenario.Block) ([]string, error) {
	if b.Cmd != "decide" {
		return nil, fmt.Errorf("unknown command %q", b.Cmd)
	}
	f := Facts{ConfigFile: "/etc/blockrep/node.toml"}
	seen := map[string]bool{}
	for _, line := range b.Input {
		word, rest, _ := strings.Cut(line, " ")
		if seen[word] {
			return nil, fmt.Errorf("%s given twice", word)
		}
		seen[word] = true
		args, flags, err := parseArgs(rest)
		if err != nil {
			return nil, err
		}
		switch word {
		case "volume":
			f.Volume, f.Path = args["name"], args["path"]
			if f.ConfigSize, err = sizeArg(args, "size"); err != nil {
				return nil, err
			}
			f.Replicated, f.ReadOnly = flags["replicated"], flags["read-only"]
		case "record":
			if flags["none"] {
				continue
			}
			r := &Record{}
			if r.Volume, err = idArg(args, "vol"); err != nil {
				return nil, err
			}
			if r.Size, err = sizeArg(args, "size"); err != nil {
				return nil, err
			}
			if _, ok := args["store"]; ok {
				r.Identity = &Identity{}
				if r.Identity.Store, err = idArg(args, "store"); err != nil {
					return nil, err
				}
				if r.Identity.Gen, err = idArg(args, "gen"); err != nil {
					return nil, err
				}
			}
			f.Record = r
		case "store":
			f.Missing = flags["missing"]
			switch k := args["kind"]; k {
			case "", "file":
				f.Kind = File
			case "block-device":
				f.Kind = BlockDevice
			case "array":
				f.Kind = Array
			default:
				return nil, fmt.Errorf("unknown kind %q", k)
			}
			if f.Missing {
				continue
			}
			if f.RawSize, err = sizeArg(args, "raw"); err != nil {
				return nil, err
			}
			found := -1
			for i, n := range foundNames {
				if n == args["found"] {
					found = i
				}
			}
			if found < 0 {
				return nil, fmt.Errorf("unknown found %q", args["found"])
			}
			f.Found, f.Detail = Found(found), args["detail"]
			if f.Found == Valid {
				tr := &f.Trailer
				for k, p := range map[string]*uuid.UUID{"vol": &tr.Volume, "store": &tr.Store, "gen": &tr.Gen, "prev": &tr.Prev} {
					if _, ok := args[k]; ok {
						if *p, err = idArg(args, k); err != nil {
							return nil, err
						}
					}
				}
				if tr.Size, err = sizeArg(args, "size"); err != nil {
					return nil, err
				}
				tr.Name = args["name"]
				tr.Node = uuid.MustParse(idPrefix + "00000000000e")
				tr.Written = time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)
			}
		default:
			return nil, fmt.Errorf("unknown input %q", word)
		}
	}
	for _, w := range []string{"volume", "record", "store"} {
		if !seen[w] {
			return nil, fmt.Errorf("no %s line", w)
		}
	}
	v := Decide(f)
	if v.Reason == "" {
		return nil, fmt.Errorf("verdict %v has no reason", v.Action)
	}
	if v.Action == Refuse && !strings.Contains(v.Reason, f.Path) {
		return nil, fmt.Errorf("refusal does not name the path %s: %s", f.Path, v.Reason)
	}
	reason := shortID.ReplaceAllString(v.Reason, "$1")
	return []string{
		fmt.Sprintf("action=%v size=%d grow=%v key=%s", v.Action, v.Size, v.Grow, v.Key),
		"reason: " + reason,
	}, nil
}

// parseArgs splits "k=v k=v flag" (a value may be quoted).
func parseArgs(s string) (map[string]string, map[string]bool, error) {
	args, flags := map[string]string{}, map[string]bool{}
	for s = strings.TrimSpace(s); s != ""; s = strings.TrimSpace(s) {
		var field string
		k, v, ok := strings.Cut(s, "=")
		if ok && !strings.Contains(k, " ") && strings.HasPrefix(v, `"`) {
			end := strings.Index(v[1:], `"`)
			if end < 0 {
				return nil, nil, fmt.Errorf("unterminated quote in %q", s)
			}
			args[k] = v[1 : end+1]
			s = v[end+2:]
			continue
		}
		field, s, _ = strings.Cut(s, " ")
		if k, v, ok := strings.Cut(field, "="); ok {
			args[k] = v
		} else {
			flags[field] = true
		}
	}
	return args, flags, nil
}

func sizeArg(args map[string]string, key string) (int64, error) {
	s, ok := args[key]
	if !ok {
		return 0, nil
	}
	var total int64
	for _, part := range strings.Split(s, "+") {
		mul := int64(1)
		switch {
		case strings.HasSuffix(part, "K"):
			mul, part = 1<<10, strings.TrimSuffix(part, "K")
		case strings.HasSuffix(part, "M"):
			mul, part = 1<<20, strings.TrimSuffix(part, "M")
		}
		n, err := strconv.ParseInt(part, 10, 64)
		if err != nil {
			return 0, fmt.Errorf("%s: %v", key, err)
		}
		total += n * mul
	}
	return total, nil
}

func idArg(args map[string]string, key string) (uuid.UUID, error) {
	s, ok := args[key]
	if !ok || len(s) == 0 || len(s) > 12 {
		return uuid.UUID{}, fmt.Errorf("%s: want up to 12 hex digits, got %q", key, s)
	}
	return uuid.Parse(idPrefix + strings.Repeat("0", 12-len(s)) + s)
}
