// Package scenario runs data-driven test files: blocks of comments, a
// command, input lines, a "----" separator and the expected output lines,
// separated by blank lines. Tests give the command's meaning; this package
// parses the files, compares what the test produced with what the file
// expects, and with rewrite regenerates the expectations in place.
//
//	# one or more comment lines: what the case is and why the answer is right
//	<command> [arguments]
//	<input lines>
//	----
//	<expected output lines>
//
// A comment group followed by a blank line (no command) is free text and is
// kept as is. Every scenario must have at least one comment line.
package scenario

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// Block is one block of a scenario file: free text, or a scenario.
type Block struct {
	Comments []string // lines starting with '#'
	Cmd      string   // empty for free text
	Line     int      // line number of Cmd
	Input    []string
	Want     []string
}

// Parse reads a scenario file.
func Parse(path string) ([]Block, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var (
		blocks []Block
		cur    Block
		state  = 0 // 0 comments, 1 input, 2 output
		ln     = 0
	)
	flush := func() error {
		if cur.Cmd == "" && len(cur.Comments) == 0 {
			return nil
		}
		if cur.Cmd != "" && state != 2 {
			return fmt.Errorf("%s:%d: scenario %q has no ---- separator", path, cur.Line, cur.Cmd)
		}
		if cur.Cmd != "" && len(cur.Comments) == 0 {
			return fmt.Errorf("%s:%d: scenario %q has no comment explaining it", path, cur.Line, cur.Cmd)
		}
		blocks = append(blocks, cur)
		cur, state = Block{}, 0
		return nil
	}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		ln++
		text := strings.TrimRight(sc.Text(), " \t")
		switch {
		case text == "":
			if err := flush(); err != nil {
				return nil, err
			}
		case state == 0 && strings.HasPrefix(text, "#"):
			cur.Comments = append(cur.Comments, text)
		case state == 0:
			cur.Cmd, cur.Line, state = text, ln, 1
		case state == 1 && text == "----":
			state = 2
		case state == 1:
			cur.Input = append(cur.Input, text)
		default:
			cur.Want = append(cur.Want, text)
		}
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	if err := flush(); err != nil {
		return nil, err
	}
	return blocks, nil
}

// Write writes blocks in the format Parse reads.
func Write(path string, blocks []Block) error {
	var b strings.Builder
	for i, bl := range blocks {
		if i > 0 {
			b.WriteByte('\n')
		}
		for _, c := range bl.Comments {
			b.WriteString(c + "\n")
		}
		if bl.Cmd == "" {
			continue
		}
		b.WriteString(bl.Cmd + "\n")
		for _, l := range bl.Input {
			b.WriteString(l + "\n")
		}
		b.WriteString("----\n")
		for _, l := range bl.Want {
			b.WriteString(l + "\n")
		}
	}
	return os.WriteFile(path, []byte(b.String()), 0o644)
}

// Runner runs one scenario and returns its output lines. An error means the
// scenario itself is malformed or a check of the runner failed.
type Runner func(b *Block) ([]string, error)

// Options tune Run.
type Options struct {
	// Rewrite stores what the scenarios produced as their expectations.
	Rewrite bool
	// Sequential files carry state from block to block (newFile's runner
	// keeps it): an error stops the file, since later blocks depend on it.
	Sequential bool
}

// Run runs every file matching glob as a subtest; newFile gives each file
// a fresh runner.
func Run(t *testing.T, glob string, opt Options, newFile func() Runner) {
	t.Helper()
	files, err := filepath.Glob(glob)
	if err != nil {
		t.Fatal(err)
	}
	if len(files) == 0 {
		t.Fatalf("no scenario files match %s", glob)
	}
	for _, path := range files {
		t.Run(filepath.Base(path), func(t *testing.T) {
			blocks, err := Parse(path)
			if err != nil {
				t.Fatal(err)
			}
			run := newFile()
			n := 0
			for i := range blocks {
				b := &blocks[i]
				if b.Cmd == "" {
					continue
				}
				n++
				got, err := run(b)
				if err != nil {
					if opt.Sequential {
						t.Fatalf("%s:%d: %s: %v", path, b.Line, b.Cmd, err)
					}
					t.Errorf("%s:%d: %s: %v", path, b.Line, b.Cmd, err)
					continue
				}
				if opt.Rewrite {
					b.Want = got
					continue
				}
				if !slices.Equal(got, b.Want) {
					t.Errorf("%s:%d: %s\n%s\ngot:\n\t%s\nwant:\n\t%s", path, b.Line, b.Cmd,
						strings.Join(b.Comments, "\n"), strings.Join(got, "\n\t"), strings.Join(b.Want, "\n\t"))
				}
			}
			if n == 0 {
				t.Errorf("%s: no scenarios", path)
			}
			if opt.Rewrite {
				if err := Write(path, blocks); err != nil {
					t.Fatal(err)
				}
			}
		})
	}
}
