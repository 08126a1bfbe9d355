package docs

import (
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// docCommand is one command the documentation tells a user to type.
type docCommand struct {
	File string // path relative to the repository root, with slashes
	Line int    // 1-based line where the command starts
	Text string // the command, normalised (see normaliseCommand)
	// Inline is true for a code span in prose, false for a line of a
	// fenced code block.
	Inline bool
}

func (c docCommand) String() string {
	return c.File + ":" + itoa(c.Line) + ": " + c.Text
}

// shellInfo are the info strings of fenced code blocks whose lines are
// commands.
var shellInfo = []string{"sh", "bash", "shell", "console"}

// inlinePrefixes are how a code span in prose begins when it is a command a
// user is told to type: the project's own programs and scripts (blockctl,
// blockrepd, blockbench, bin/..., scripts/..., .ci/...), the Go tool
// (build, test, profiles) and the shell commands the docs give for preparing
// files and reading an export (head -c, truncate, chmod, nbdinfo). A span
// must hold the program and at least one argument ("blockctl" alone is the
// program's name), except for a path (bin/, scripts/, .ci/), which is a
// command by itself. Third-party tools the docs name as what something runs
// or what was measured (nbdkit, fio, strace, perf, git diff, mdadm,
// drbdsetup) are not commands a user is told to type.
var inlinePrefixes = []string{
	"blockctl ", "blockrepd ", "blockbench ",
	"bin/", "scripts/", ".ci/",
	"go ", "head -c ", "truncate ", "chmod ", "nbdinfo ",
}

// subcommandWord is how a span begins that names a subcommand in an item
// documenting a program (see extractCommands).
var subcommandWord = regexp.MustCompile(`^[a-z][a-z-]*( |$)`)

// programSpan is the first code span of an item that documents a program.
var programSpan = regexp.MustCompile(`^cmd/([a-z]+)$`)

// extractCommands returns every command that the Markdown text src (the
// file named file) tells a user to type, in the order they appear:
//
//   - every line of a fenced code block whose info string is sh, bash,
//     shell or console: a trailing comment ("# ..." after a blank, outside
//     quotes) is removed, a line ending in a backslash is joined with the
//     next one, blank and comment-only lines are skipped, and nothing else
//     is split ("a && b" and "a | b" stay one command). In a console block
//     only the lines that start with the prompt "$ " are commands (the
//     others are output), without the prompt;
//   - every code span in prose (paragraphs, list items, table rows) that
//     begins as inlinePrefixes says; a span may run over several lines;
//   - in a list item whose first code span is `cmd/NAME` (the item that
//     documents the program NAME), every later span that begins with a
//     lower-case word is a subcommand: "NAME " and the span.
//
// Every command is normalised by normaliseCommand.
func extractCommands(file, src string) []docCommand {
	var out []docCommand
	lines := strings.Split(src, "\n")
	var block []int // line indexes of the current prose block
	flush := func() {
		out = append(out, proseCommands(file, lines, block)...)
		block = block[:0]
	}
	for i := 0; i < len(lines); i++ {
		fence, info, ok := openingFence(lines[i])
		if !ok {
			l := strings.TrimSpace(lines[i])
			switch {
			case l == "":
				flush()
			case strings.HasPrefix(l, "#"), strings.HasPrefix(l, "|"), isListItem(l):
				// A heading or a table row stands alone; a list item
				// starts a new block.
				flush()
				block = append(block, i)
				if !isListItem(l) {
					flush()
				}
			default:
				block = append(block, i)
			}
			continue
		}
		flush()
		shell := slices.Contains(shellInfo, info)
		var pending strings.Builder
		start := 0
		for i++; i < len(lines); i++ {
			l := lines[i]
			if closesFence(l, fence) {
				break
			}
			if !shell {
				continue
			}
			if info == "console" && pending.Len() == 0 {
				if !strings.HasPrefix(l, "$ ") {
					continue
				}
				l = l[2:]
			}
			if pending.Len() == 0 {
				start = i
			}
			l = stripComment(l)
			if strings.HasSuffix(l, `\`) {
				pending.WriteString(strings.TrimSuffix(l, `\`))
				continue
			}
			pending.WriteString(l)
			if c := normaliseCommand(pending.String()); c != "" {
				out = append(out, docCommand{File: file, Line: start + 1, Text: c})
			}
			pending.Reset()
		}
	}
	flush()
	return out
}

func isListItem(l string) bool {
	return strings.HasPrefix(l, "- ") || strings.HasPrefix(l, "* ")
}

// openingFence reports whether l opens a fenced code block, and returns the
// fence and the first word of the info string.
func openingFence(l string) (fence, info string, ok bool) {
	t := strings.TrimLeft(l, " ")
	if len(l)-len(t) > 3 {
		return "", "", false
	}
	for _, ch := range []string{"`", "~"} {
		n := len(t) - len(strings.TrimLeft(t, ch))
		if n >= 3 {
			f := strings.Fields(t[n:])
			if len(f) > 0 {
				info = f[0]
			}
			return t[:n], info, true
		}
	}
	return "", "", false
}

func closesFence(l, fence string) bool {
	t := strings.TrimSpace(l)
	return strings.HasPrefix(t, fence) && strings.Trim(t, fence[:1]) == ""
}

// stripComment removes a shell comment: a # at the start of a word,
// outside quotes, and what follows it.
func stripComment(l string) string {
	var quote rune
	prev := ' '
	for i, r := range l {
		switch {
		case quote != 0:
			if r == quote {
				quote = 0
			}
		case r == '\'' || r == '"':
			quote = r
		case r == '#' && (prev == ' ' || prev == '\t'):
			return strings.TrimRight(l[:i], " \t")
		}
		prev = r
	}
	return strings.TrimRight(l, " \t")
}

// normaliseCommand trims s and collapses every run of blanks and line
// breaks outside quotes into one space.
func normaliseCommand(s string) string {
	var b strings.Builder
	var quote rune
	space := false
	for _, r := range strings.TrimSpace(s) {
		if quote == 0 && (r == ' ' || r == '\t' || r == '\n' || r == '\r') {
			space = true
			continue
		}
		if space {
			b.WriteByte(' ')
			space = false
		}
		switch {
		case quote != 0 && r == quote:
			quote = 0
		case quote == 0 && (r == '\'' || r == '"'):
			quote = r
		}
		b.WriteRune(r)
	}
	return b.String()
}

// span is a code span of a prose block.
type span struct {
	line int // 0-based
	text string
}

// codeSpans returns the code spans of the lines block (indexes into
// lines): a run of n backticks up to the next run of exactly n.
func codeSpans(lines []string, block []int) []span {
	var text strings.Builder
	var lineAt []int // line of every byte of text
	for _, i := range block {
		text.WriteString(lines[i])
		text.WriteByte('\n')
		for range len(lines[i]) + 1 {
			lineAt = append(lineAt, i)
		}
	}
	s := text.String()
	var out []span
	run := func(j int) int { // length of the backtick run at j
		n := 0
		for j+n < len(s) && s[j+n] == '`' {
			n++
		}
		return n
	}
	for j := 0; j < len(s); {
		if s[j] != '`' {
			j++
			continue
		}
		n := run(j)
		end := -1
		for k := j + n; k < len(s); {
			if s[k] != '`' {
				k++
				continue
			}
			m := run(k)
			if m == n {
				end = k
				break
			}
			k += m
		}
		if end < 0 {
			j += n
			continue
		}
		out = append(out, span{line: lineAt[j], text: normaliseCommand(s[j+n : end])})
		j = end + n
	}
	return out
}

// proseCommands returns the commands among the code spans of a prose block.
func proseCommands(file string, lines []string, block []int) []docCommand {
	spans := codeSpans(lines, block)
	program := ""
	if len(spans) > 0 && isListItem(strings.TrimSpace(lines[block[0]])) {
		if m := programSpan.FindStringSubmatch(spans[0].text); m != nil {
			program = m[1]
		}
	}
	var out []docCommand
	for k, sp := range spans {
		c := sp.text
		switch {
		case isInlineCommand(c):
		case program != "" && k > 0 && subcommandWord.MatchString(c):
			c = program + " " + c
		default:
			continue
		}
		out = append(out, docCommand{File: file, Line: sp.line + 1, Text: c, Inline: true})
	}
	return out
}

func isInlineCommand(c string) bool {
	for _, p := range inlinePrefixes {
		if strings.HasPrefix(c, p) && (strings.HasSuffix(p, "/") || len(c) > len(p)) {
			return true
		}
	}
	return false
}

// expandCommand returns the concrete commands a documented one stands for:
// an optional part "[X]" gives the command without it and with it, and a
// word "a|b|c" (no blank around the bars, outside quotes; " | " is a pipe)
// gives one command per alternative. "blockctl resync [--checksum|--full]"
// is "blockctl resync", "blockctl resync --checksum" and "blockctl resync
// --full".
func expandCommand(c string) []string {
	words := splitWords(c)
	variants := [][]string{nil}
	for _, w := range words {
		var alts []string
		switch {
		case strings.HasPrefix(w, "[") && strings.HasSuffix(w, "]"):
			alts = append([]string{""}, expandCommand(w[1:len(w)-1])...)
		case strings.Contains(w, "|") && w[0] != '\'' && w[0] != '"' && w != "|" && w != "||":
			alts = strings.Split(w, "|")
		default:
			alts = []string{w}
		}
		var next [][]string
		for _, v := range variants {
			for _, a := range alts {
				n := slices.Clone(v)
				if a != "" {
					n = append(n, a)
				}
				next = append(next, n)
			}
		}
		variants = next
	}
	var out []string
	for _, v := range variants {
		s := strings.Join(v, " ")
		if !slices.Contains(out, s) {
			out = append(out, s)
		}
	}
	return out
}

// splitWords splits a normalised command at its spaces, keeping quoted
// text and bracketed groups ("[-o json]") whole.
func splitWords(c string) []string {
	var words []string
	var b strings.Builder
	var quote rune
	depth := 0
	for _, r := range c {
		switch {
		case quote != 0:
			if r == quote {
				quote = 0
			}
		case r == '\'' || r == '"':
			quote = r
		case r == '[':
			depth++
		case r == ']':
			depth--
		case r == ' ' && depth == 0:
			words = append(words, b.String())
			b.Reset()
			continue
		}
		b.WriteRune(r)
	}
	if b.Len() > 0 {
		words = append(words, b.String())
	}
	return words
}

func TestExtractCommands(t *testing.T) {
	for _, tc := range []struct {
		name string
		src  string
		want []docCommand
	}{
		{
			name: "fenced sh block: comments stripped, blank and comment lines skipped",
			src:  "intro\n\n```sh\nscripts/demo    # build, then run\n\n# a comment\nbin/blockctl -c /etc/x.toml status   # or -s SOCKET\n```\n",
			want: []docCommand{{"F.md", 4, "scripts/demo", false}, {"F.md", 7, "bin/blockctl -c /etc/x.toml status", false}},
		},
		{
			name: "a # inside quotes or a word is not a comment",
			src:  "```bash\necho \"a # b\" x#y # gone\n```\n",
			want: []docCommand{{"F.md", 2, `echo "a # b" x#y`, false}},
		},
		{
			name: "backslash continuation joined, pipes and && kept",
			src:  "```shell\ngo build -o bin/ ./cmd/... && \\\n  bin/blockbench -rounds 5 | tee out\n```\n",
			want: []docCommand{{"F.md", 2, "go build -o bin/ ./cmd/... && bin/blockbench -rounds 5 | tee out", false}},
		},
		{
			name: "console block: only prompt lines",
			src:  "```console\n$ blockctl status\nnode1 primary\n$ blockctl demote\n```\n",
			want: []docCommand{{"F.md", 2, "blockctl status", false}, {"F.md", 4, "blockctl demote", false}},
		},
		{
			name: "other fences are not commands, and their spans are not prose",
			src:  "```toml\nx = `blockctl status`\n```\n\n```\nblockctl demote\n```\n",
			want: nil,
		},
		{
			name: "inline spans: commands by prefix, names and keys are not",
			src:  "one CLI (`blockctl`) and `blockrepd`; run `blockctl\n  status -o json` or `bin/blockbench`;\n`nbdkit --foreground file FILE` and `strace -c` are not; `size` neither.\n",
			want: []docCommand{{"F.md", 1, "blockctl status -o json", true}, {"F.md", 2, "bin/blockbench", true}},
		},
		{
			name: "a span over a line break, quotes and placeholders kept",
			src:  "- Both lost:\n  `blockctl promote NODE --force --reason \"…\"` when you accept it; `head -c 32 /dev/urandom | base64 >\n/etc/blockrep/secret; chmod 600 /etc/blockrep/secret`.\n",
			want: []docCommand{
				{"F.md", 2, `blockctl promote NODE --force --reason "…"`, true},
				{"F.md", 2, "head -c 32 /dev/urandom | base64 > /etc/blockrep/secret; chmod 600 /etc/blockrep/secret", true},
			},
		},
		{
			name: "a blank line ends a paragraph: an unclosed backtick does not pair across it",
			src:  "a ` stray\n\n`scripts/test` runs\n",
			want: []docCommand{{"F.md", 3, "scripts/test", true}},
		},
		{
			name: "double backticks",
			src:  "run ``blockctl events [-o json]`` now\n",
			want: []docCommand{{"F.md", 1, "blockctl events [-o json]", true}},
		},
		{
			name: "subcommands in the item documenting a program",
			src:  "- **CLI** (`cmd/blockctl`): `status [-o json]` (role, `disk`?), `promote\n  NODE [--force]`, `[x]`;\n- **Daemon** (`cmd/blockrepd`): `[replication]` included\n- other `connect`\n",
			want: []docCommand{
				{"F.md", 1, "blockctl status [-o json]", true}, {"F.md", 1, "blockctl disk", true},
				{"F.md", 1, "blockctl promote NODE [--force]", true},
			},
		},
		{
			name: "a table row stands alone",
			src:  "| `bin/blockbench -raid` | `blockctl\n",
			want: []docCommand{{"F.md", 1, "bin/blockbench -raid", true}},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := extractCommands("F.md", tc.src)
			if !slices.Equal(got, tc.want) {
				t.Errorf("extractCommands:\n got %q\nwant %q", got, tc.want)
			}
		})
	}
}

func TestExpandCommand(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want []string
	}{
		{"blockctl status", []string{"blockctl status"}},
		{"blockctl events [-o json]", []string{"blockctl events", "blockctl events -o json"}},
		{"blockctl resync [--checksum|--full]", []string{"blockctl resync", "blockctl resync --checksum", "blockctl resync --full"}},
		{"blockctl raid status|fail|remove", []string{"blockctl raid status", "blockctl raid fail", "blockctl raid remove"}},
		{"blockctl cluster add|remove [-v] x", []string{"blockctl cluster add x", "blockctl cluster add -v x", "blockctl cluster remove x", "blockctl cluster remove -v x"}},
		{`head -c 32 /dev/urandom | base64 > f`, []string{`head -c 32 /dev/urandom | base64 > f`}},
		{`bb -rows "A|B"`, []string{`bb -rows "A|B"`}},
		{`blockctl promote NODE --force --reason "…"`, []string{`blockctl promote NODE --force --reason "…"`}},
	} {
		if got := expandCommand(tc.in); !slices.Equal(got, tc.want) {
			t.Errorf("expandCommand(%q):\n got %q\nwant %q", tc.in, got, tc.want)
		}
	}
}

func itoa(n int) string { return strconv.Itoa(n) }

func TestExpandVars(t *testing.T) {
	v := docVars{"NODE": "node2", "HOST:PORT": "127.0.0.1:7000", "NAME": "w2", "ADDRESS": "127.0.0.1:7001", "PATH": "/x/m3.img"}
	for _, tc := range []struct{ in, want, err string }{
		{`blockctl promote NODE --force --reason "…"`, `blockctl promote node2 --force --reason "docs test"`, ""},
		{"blockctl --node HOST:PORT status", "blockctl --node 127.0.0.1:7000 status", ""},
		{"blockctl cluster add NAME ADDRESS", "blockctl cluster add w2 127.0.0.1:7001", ""},
		{"FOO=$PATH blockctl raid add PATH NODES", "", "the placeholder NODES has no value"},
		{"go test ./replica -run X -bench Y", "go test ./replica -run X -bench Y", ""},
		{"X=$PATH blockctl raid add PATH", "X=$PATH blockctl raid add /x/m3.img", ""},
		{"truncate -s SIZE PATH", "", "the placeholder SIZE has no value"},
	} {
		got, err := expandVars(tc.in, v)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("expandVars(%q): error %v, want one saying %q", tc.in, err, tc.err)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("expandVars(%q) = %q, %v; want %q", tc.in, got, err, tc.want)
		}
	}
}

func TestWithConfig(t *testing.T) {
	e := &docEnv{bin: "/b"}
	for _, tc := range []struct{ in, want string }{
		{"blockctl status", "blockctl -c /c.toml status"},
		{"/b/blockctl --node H:1 status", "/b/blockctl -c /c.toml --node H:1 status"},
		{"blockctl -s /s status", "blockctl -s /s status"},
		{"blockrepd -pprof 127.0.0.1:6061", "blockrepd -config /c.toml -pprof 127.0.0.1:6061"},
		{"blockrepd -config /x.toml -forget-volume vol0", "blockrepd -config /x.toml -forget-volume vol0"},
		{"truncate -s 1 /p", "truncate -s 1 /p"},
	} {
		if got := e.withConfig(tc.in, "/c.toml"); got != tc.want {
			t.Errorf("withConfig(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}
