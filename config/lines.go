package config

import (
	"strconv"
	"strings"
)

// lineIndex maps key paths in the form used by error messages
// ("volume.0.size") to the line that defines them. The TOML decoder does not
// expose key positions, so indexLines finds them with a light scan of the
// text. It understands table headers, arrays of tables, dotted and quoted keys
// and skips multi-line strings; anything it does not understand is simply not
// indexed, and errors then go without a line number.
type lineIndex map[string]int

// find returns the line of key, or of its longest indexed prefix (a key inside
// an inline table reports the line of the table), or 0.
func (li lineIndex) find(key string) int {
	for key != "" {
		if n, ok := li[key]; ok {
			return n
		}
		i := strings.LastIndexByte(key, '.')
		if i < 0 {
			return 0
		}
		key = key[:i]
	}
	return 0
}

func (li lineIndex) record(key string, line int) {
	if _, ok := li[key]; !ok && key != "" {
		li[key] = line
	}
}

// indexLines scans a TOML document for the lines of its keys.
func indexLines(data []byte) lineIndex {
	li := lineIndex{}
	arrays := map[string]int{} // plain header path -> elements seen so far
	cur := ""                  // indexed path of the current table
	inString := ""             // closing delimiter of an open multi-line string
	for i, line := range strings.Split(string(data), "\n") {
		n := i + 1
		if inString != "" {
			if strings.Contains(line, inString) {
				inString = ""
			}
			continue
		}
		s := strings.TrimSpace(line)
		if s == "" || s[0] == '#' {
			continue
		}
		if strings.HasPrefix(s, "[[") {
			end := strings.Index(s, "]]")
			if end < 0 {
				continue
			}
			parts := splitKey(s[2:end])
			plain := strings.Join(parts, ".")
			arrays[plain]++
			for k := range arrays {
				if strings.HasPrefix(k, plain+".") {
					delete(arrays, k)
				}
			}
			cur = indexedPath(parts, arrays)
			li.record(cur, n)
			continue
		}
		if s[0] == '[' {
			end := strings.IndexByte(s, ']')
			if end < 0 {
				continue
			}
			cur = indexedPath(splitKey(s[1:end]), arrays)
			li.record(cur, n)
			continue
		}
		eq := indexOutsideQuotes(s, '=')
		if eq < 0 {
			continue
		}
		key := cur
		for _, part := range splitKey(s[:eq]) {
			if key != "" {
				key += "."
			}
			key += part
			li.record(key, n) // a dotted key defines its prefixes too
		}
		rest := s[eq+1:]
		for _, d := range []string{`"""`, `'''`} {
			if strings.Count(rest, d) == 1 {
				inString = d
			}
		}
	}
	return li
}

// indexedPath turns a header path into the indexed form, inserting the
// current element number after every component that names an array of
// tables: [volume.sub] inside the second [[volume]] is "volume.1.sub".
func indexedPath(parts []string, arrays map[string]int) string {
	var b strings.Builder
	plain := ""
	for i, p := range parts {
		if i > 0 {
			b.WriteByte('.')
			plain += "."
		}
		b.WriteString(p)
		plain += p
		if n := arrays[plain]; n > 0 {
			b.WriteString("." + strconv.Itoa(n-1))
		}
	}
	return b.String()
}

// splitKey splits a dotted TOML key into its parts, removing quotes.
func splitKey(s string) []string {
	var parts []string
	for {
		i := indexOutsideQuotes(s, '.')
		if i < 0 {
			break
		}
		parts = append(parts, unquoteKey(s[:i]))
		s = s[i+1:]
	}
	return append(parts, unquoteKey(s))
}

func unquoteKey(s string) string {
	s = strings.TrimSpace(s)
	if len(s) >= 2 && (s[0] == '"' || s[0] == '\'') && s[len(s)-1] == s[0] {
		return s[1 : len(s)-1]
	}
	return s
}

// indexOutsideQuotes returns the index of the first c in s that is not inside
// a basic or literal string, or -1.
func indexOutsideQuotes(s string, c byte) int {
	var quote byte
	for i := 0; i < len(s); i++ {
		switch {
		case quote != 0:
			if s[i] == '\\' && quote == '"' {
				i++
			} else if s[i] == quote {
				quote = 0
			}
		case s[i] == '"' || s[i] == '\'':
			quote = s[i]
		case s[i] == c:
			return i
		}
	}
	return -1
}
