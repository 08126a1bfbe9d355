package config

import "testing"

func TestIndexLines(t *testing.T) {
	doc := `# comment
top = 1
[node]
name = "a=b" # an = inside a string
"quoted.key" = 2
[[volume]]
name = "v0"
description = """
fake = 1
"""
[volume.sub]
x.y = 3
[[volume]]
name = "v1"
[[volume.member]]
dev = "/a"
[[volume.member]]
dev = "/b"
inline = { k = 1 }
`
	li := indexLines([]byte(doc))
	tests := []struct {
		key  string
		want int
	}{
		{"top", 2},
		{"node", 3},
		{"node.name", 4},
		{"node.quoted.key", 5},
		{"volume.0", 6},
		{"volume.0.name", 7},
		{"volume.0.description", 8},
		{"volume.0.fake", 6}, // inside a multi-line string: falls back to the table
		{"volume.0.sub", 11},
		{"volume.0.sub.x", 12},
		{"volume.0.sub.x.y", 12},
		{"volume.1.name", 14},
		{"volume.1.member.0.dev", 16},
		{"volume.1.member.1.dev", 18},
		{"volume.1.member.1.inline.k", 19},
		{"volume.2.name", 0},
		{"missing", 0},
	}
	for _, tt := range tests {
		if got := li.find(tt.key); got != tt.want {
			t.Errorf("find(%q) = %d, want %d", tt.key, got, tt.want)
		}
	}
}
