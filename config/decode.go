package config

import (
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/BurntSushi/toml"
)

// Error is one problem found in a configuration file. Parse and Load return
// every problem they find, joined with errors.Join; use errors.As to get at
// the first one.
type Error struct {
	// File is the name the configuration was parsed under.
	File string
	// Line is the 1-based line of the offending key, or 0 when not known.
	Line int
	// Key is the full path of the offending key ("volume.0.size"), or empty
	// for a problem with the file as a whole.
	Key string
	// Msg describes the problem; it names the key and the value.
	Msg string
}

// Error formats the problem as `config FILE: line N: MSG`.
func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString("config ")
	b.WriteString(e.File)
	b.WriteString(": ")
	if e.Line > 0 {
		b.WriteString("line ")
		b.WriteString(strconv.Itoa(e.Line))
		b.WriteString(": ")
	}
	b.WriteString(e.Msg)
	return b.String()
}

// problems collects the errors of one Parse call.
type problems struct {
	file  string
	lines lineIndex
	errs  []error
	bad   map[string]bool // keys that already have an error
}

// add records a problem with key. Only the first problem of a key is kept,
// so that a value of the wrong type does not also report "is required".
func (p *problems) add(key, format string, args ...any) {
	if key != "" {
		if p.bad[key] {
			return
		}
		p.bad[key] = true
	}
	p.errs = append(p.errs, &Error{File: p.file, Line: p.lines.find(key), Key: key, Msg: fmt.Sprintf(format, args...)})
}

func (p *problems) err() error { return errors.Join(p.errs...) }

// syntaxError converts an error of the TOML decoder.
func syntaxError(file string, err error) error {
	var pe toml.ParseError
	if errors.As(err, &pe) {
		msg := pe.Message
		if pe.Position.Col > 0 {
			msg = fmt.Sprintf("column %d: %s", pe.Position.Col, msg)
		}
		return &Error{File: file, Line: pe.Position.Line, Msg: "invalid TOML: " + msg}
	}
	return &Error{File: file, Msg: "invalid TOML: " + err.Error()}
}

// table reads typed values out of one decoded TOML table and remembers which
// keys it consumed, so that everything else can be reported as unknown.
type table struct {
	p    *problems
	path string // indexed path of the table; "" for the root
	m    map[string]any
	used map[string]bool
}

func (p *problems) table(path string, m map[string]any) *table {
	return &table{p: p, path: path, m: m, used: map[string]bool{}}
}

// key returns the full path of k in t.
func (t *table) key(k string) string {
	if t.path == "" {
		return k
	}
	return t.path + "." + k
}

// get returns the raw value of k and marks k as known.
func (t *table) get(k string) (any, bool) {
	t.used[k] = true
	v, ok := t.m[k]
	return v, ok
}

func (t *table) wrongType(k, want string, v any) {
	t.p.add(t.key(k), "%s: want %s, got %s", t.key(k), want, describe(v))
}

// str sets *dst to the string value of k, if present.
func (t *table) str(k string, dst *string) {
	v, ok := t.get(k)
	if !ok {
		return
	}
	s, ok := v.(string)
	if !ok {
		t.wrongType(k, "a string", v)
		return
	}
	*dst = s
}

// boolean sets *dst to the boolean value of k, if present.
func (t *table) boolean(k string, dst *bool) {
	v, ok := t.get(k)
	if !ok {
		return
	}
	b, ok := v.(bool)
	if !ok {
		t.wrongType(k, "true or false", v)
		return
	}
	*dst = b
}

// integer sets *dst to the integer value of k, if present, and checks that
// it lies in [lo, hi].
func (t *table) integer(k string, dst *int, lo, hi int) {
	v, ok := t.get(k)
	if !ok {
		return
	}
	x, ok := v.(int64)
	if !ok {
		t.wrongType(k, "an integer", v)
		return
	}
	if x < int64(lo) || x > int64(hi) {
		t.p.add(t.key(k), "%s: %d is out of range: want %d to %d", t.key(k), x, lo, hi)
		return
	}
	*dst = int(x)
}

// size sets *dst to the size value of k, an integer or a string accepted by
// ParseSize, if present. It reports whether k was present and valid.
func (t *table) size(k string, dst *int64) bool {
	v, ok := t.get(k)
	if !ok {
		return false
	}
	switch x := v.(type) {
	case int64:
		if x < 0 {
			t.p.add(t.key(k), "%s: size %d is negative", t.key(k), x)
			return false
		}
		*dst = x
		return true
	case string:
		n, err := ParseSize(x)
		if err != nil {
			t.p.add(t.key(k), "%s: %v", t.key(k), err)
			return false
		}
		*dst = n
		return true
	default:
		t.wrongType(k, `a size (4096 or "10GiB")`, v)
		return false
	}
}

// duration sets *dst to the duration value of k, a string accepted by
// time.ParseDuration ("2s", "500ms"), if present, and checks that it lies in
// [lo, hi]. A bare integer is refused rather than given a unit: 2 could mean
// seconds or milliseconds, and a wrong guess changes a timeout a thousandfold.
func (t *table) duration(k string, dst *time.Duration, lo, hi time.Duration) {
	v, ok := t.get(k)
	if !ok {
		return
	}
	switch x := v.(type) {
	case string:
		d, err := time.ParseDuration(x)
		if err != nil {
			t.p.add(t.key(k), "%s: invalid duration %q: want a number with a unit ns, us, ms, s, m or h (e.g. \"2s\", \"500ms\")", t.key(k), x)
			return
		}
		if d < lo || d > hi {
			t.p.add(t.key(k), "%s: %q is out of range: want %s to %s", t.key(k), x, FormatDuration(lo), FormatDuration(hi))
			return
		}
		*dst = d
	case int64:
		t.p.add(t.key(k), "%s: integer %d has no unit: write a duration string such as \"2s\" or \"500ms\"", t.key(k), x)
	default:
		t.wrongType(k, `a duration ("2s" or "500ms")`, v)
	}
}

// oneOf sets *dst to the string value of k, if present, and checks that it
// is one of allowed. An explicit empty string is an error like any other
// value outside allowed: leaving the key out is how to ask for the default.
func oneOf[T ~string](t *table, k string, dst *T, allowed ...T) {
	v, ok := t.get(k)
	if !ok {
		return
	}
	quoted := make([]string, len(allowed))
	for i, a := range allowed {
		quoted[i] = strconv.Quote(string(a))
	}
	list := strings.Join(quoted, ", ")
	s, ok := v.(string)
	if !ok {
		t.wrongType(k, "one of "+list, v)
		return
	}
	if !slices.Contains(allowed, T(s)) {
		t.p.add(t.key(k), "%s: %q is not one of %s", t.key(k), s, list)
		return
	}
	*dst = T(s)
}

// strings sets *dst to the array of strings of k, if present.
func (t *table) strings(k string, dst *[]string) {
	v, ok := t.get(k)
	if !ok {
		return
	}
	arr, ok := v.([]any)
	if !ok {
		t.wrongType(k, "an array of strings", v)
		return
	}
	out := make([]string, 0, len(arr))
	for i, e := range arr {
		s, ok := e.(string)
		if !ok {
			key := t.key(k) + "." + strconv.Itoa(i)
			t.p.add(key, "%s: want a string, got %s", key, describe(e))
			return
		}
		out = append(out, s)
	}
	*dst = out
}

// sub returns the table k, or an empty table when k is absent.
func (t *table) sub(k string) *table {
	v, ok := t.get(k)
	m, isTable := v.(map[string]any)
	if ok && !isTable {
		t.wrongType(k, fmt.Sprintf("a table ([%s])", t.key(k)), v)
	}
	return t.p.table(t.key(k), m)
}

// tables returns the elements of the array of tables k.
func (t *table) tables(k string) []*table {
	v, ok := t.get(k)
	if !ok {
		return nil
	}
	var elems []map[string]any
	switch x := v.(type) {
	case []map[string]any:
		elems = x
	case []any:
		for i, e := range x {
			m, ok := e.(map[string]any)
			if !ok {
				key := t.key(k) + "." + strconv.Itoa(i)
				t.p.add(key, "%s: want a table ([[%s]]), got %s", key, t.key(k), describe(e))
				return nil
			}
			elems = append(elems, m)
		}
	default:
		t.wrongType(k, fmt.Sprintf("an array of tables ([[%s]])", t.key(k)), v)
		return nil
	}
	out := make([]*table, len(elems))
	for i, m := range elems {
		out[i] = t.p.table(t.key(k)+"."+strconv.Itoa(i), m)
	}
	return out
}

// unknown reports every key of t that no accessor asked for, in the order
// they appear in the file.
func (t *table) unknown() {
	var keys []string
	for k := range t.m {
		if !t.used[k] {
			keys = append(keys, k)
		}
	}
	slices.SortFunc(keys, func(a, b string) int {
		la, lb := t.p.lines.find(t.key(a)), t.p.lines.find(t.key(b))
		if la != lb {
			return la - lb
		}
		return strings.Compare(a, b)
	})
	for _, k := range keys {
		t.p.add(t.key(k), "unknown key %q", t.key(k))
	}
}

// describe names the TOML type of a decoded value and shows it.
func describe(v any) string {
	switch x := v.(type) {
	case string:
		return fmt.Sprintf("string %q", x)
	case int64:
		return fmt.Sprintf("integer %d", x)
	case float64:
		return fmt.Sprintf("float %v", x)
	case bool:
		return fmt.Sprintf("boolean %v", x)
	case time.Time:
		return fmt.Sprintf("datetime %v", x)
	case []any, []map[string]any:
		return "an array"
	case map[string]any:
		return "a table"
	default:
		return fmt.Sprintf("%T", v)
	}
}
