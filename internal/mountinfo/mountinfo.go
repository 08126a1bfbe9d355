// Package mountinfo reads /proc/self/mountinfo (proc(5)): which file
// systems are mounted where, from which device.
package mountinfo

import (
	"fmt"
	"os"
	"strconv"
	"strings"
)

// Mount is one line of /proc/self/mountinfo (the fields blockrep uses).
type Mount struct {
	// ID is the mount ID (as name_to_handle_at returns it).
	ID int
	// Major and Minor are the st_dev of files on the mount.
	Major, Minor uint32
	// Root is the path of the mount's root within its file system.
	Root string
	// MountPoint is where it is mounted.
	MountPoint string
	// FSType is the file system type (ext4, xfs, ...).
	FSType string
	// Source is the mount source (the block device for ext4/xfs).
	Source string
}

// Parse parses the text of /proc/self/mountinfo.
func Parse(mountinfo string) ([]Mount, error) {
	var out []Mount
	for line := range strings.SplitSeq(mountinfo, "\n") {
		if line == "" {
			continue
		}
		m, err := parseLine(line)
		if err != nil {
			return nil, err
		}
		out = append(out, m)
	}
	return out, nil
}

// Read parses the calling process's /proc/self/mountinfo.
func Read() ([]Mount, error) {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return nil, fmt.Errorf("mountinfo: %w", err)
	}
	return Parse(string(b))
}

// ByID returns the line of mountinfo (the text of /proc/self/mountinfo)
// whose mount ID is id.
func ByID(mountinfo string, id int) (Mount, error) {
	ms, err := Parse(mountinfo)
	if err != nil {
		return Mount{}, err
	}
	for _, m := range ms {
		if m.ID == id {
			return m, nil
		}
	}
	return Mount{}, fmt.Errorf("mountinfo: no mount with ID %d", id)
}

// At returns the mounts whose mount point is dir (the last one is on
// top), none if nothing is mounted there.
func At(ms []Mount, dir string) []Mount {
	var out []Mount
	for _, m := range ms {
		if m.MountPoint == dir {
			out = append(out, m)
		}
	}
	return out
}

// parseLine parses one line as proc(5) describes it:
// "36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root rw,errors=continue".
func parseLine(line string) (Mount, error) {
	var m Mount
	f := strings.Fields(line)
	sep := -1
	for i := 6; i < len(f); i++ {
		if f[i] == "-" {
			sep = i
			break
		}
	}
	if len(f) < 6 || sep < 0 || sep+2 >= len(f) {
		return m, fmt.Errorf("mountinfo: malformed line %q", line)
	}
	id, err := strconv.Atoi(f[0])
	if err != nil {
		return m, fmt.Errorf("mountinfo: mount ID %q: %w", f[0], err)
	}
	maj, min, ok := strings.Cut(f[2], ":")
	if !ok {
		return m, fmt.Errorf("mountinfo: device %q is not major:minor", f[2])
	}
	ma, err1 := strconv.ParseUint(maj, 10, 32)
	mi, err2 := strconv.ParseUint(min, 10, 32)
	if err1 != nil || err2 != nil {
		return m, fmt.Errorf("mountinfo: device %q is not major:minor", f[2])
	}
	m.ID, m.Major, m.Minor = id, uint32(ma), uint32(mi)
	m.Root, m.MountPoint = unescape(f[3]), unescape(f[4])
	m.FSType, m.Source = f[sep+1], unescape(f[sep+2])
	return m, nil
}

// unescape undoes the kernel's octal escapes (\040 for a space,
// \011, \012, \134) in mountinfo paths.
func unescape(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+4 <= len(s) {
			if v, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(v))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}
