package fh

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"strconv"
	"strings"
)

// SuperblockReadSize is how many bytes from the start of a block device
// [SuperblockUUID] needs (the ext4 superblock ends at 2048, the xfs one
// starts at 0).
const SuperblockReadSize = 4096

// Superblock layout facts (from the on-disk formats):
// ext2/3/4: the superblock starts at byte 1024; s_magic (le16 0xEF53) at
// offset 0x38, s_uuid (16 bytes) at offset 0x68.
// xfs: the superblock starts at byte 0; sb_magicnum "XFSB" at 0, then
// sb_blocksize (4), sb_dblocks, sb_rblocks, sb_rextents (8 each), sb_uuid
// (16 bytes) at offset 32.
const (
	ext4SuperOffset = 1024
	ext4MagicOffset = ext4SuperOffset + 0x38
	ext4Magic       = 0xEF53
	ext4UUIDOffset  = ext4SuperOffset + 0x68
	xfsUUIDOffset   = 32
)

// SuperblockUUID returns the file-system UUID from the first
// SuperblockReadSize bytes sb of a block device holding a file system of
// type fstype (as /proc/self/mountinfo names it: ext2, ext3, ext4, xfs).
// It checks the magic number so that a wrong device is an error, not a
// wrong UUID.
func SuperblockUUID(fstype string, sb []byte) (UUID, error) {
	var u UUID
	switch fstype {
	case "ext2", "ext3", "ext4":
		if len(sb) < ext4UUIDOffset+16 {
			return u, fmt.Errorf("%s superblock: read %d bytes, need %d", fstype, len(sb), ext4UUIDOffset+16)
		}
		if m := binary.LittleEndian.Uint16(sb[ext4MagicOffset:]); m != ext4Magic {
			return u, fmt.Errorf("%s superblock: magic %#04x at byte %d, want %#04x", fstype, m, ext4MagicOffset, ext4Magic)
		}
		copy(u[:], sb[ext4UUIDOffset:])
	case "xfs":
		if len(sb) < xfsUUIDOffset+16 {
			return u, fmt.Errorf("xfs superblock: read %d bytes, need %d", len(sb), xfsUUIDOffset+16)
		}
		if !bytes.Equal(sb[0:4], []byte("XFSB")) {
			return u, fmt.Errorf("xfs superblock: magic %q at byte 0, want \"XFSB\"", sb[0:4])
		}
		copy(u[:], sb[xfsUUIDOffset:])
	default:
		return u, fmt.Errorf("file system type %q: reading its UUID from the superblock is not supported (ext2/3/4 and xfs are)", fstype)
	}
	if u.IsZero() {
		return u, fmt.Errorf("%s superblock: the UUID is all zeros", fstype)
	}
	return u, nil
}

// MountInfo is one line of /proc/self/mountinfo (the fields this package
// uses).
type MountInfo struct {
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

// FindMount returns the line of mountinfo (the text of
// /proc/self/mountinfo) whose mount ID is id.
func FindMount(mountinfo string, id int) (MountInfo, error) {
	for line := range strings.SplitSeq(mountinfo, "\n") {
		if line == "" {
			continue
		}
		m, err := parseMountInfoLine(line)
		if err != nil {
			return MountInfo{}, err
		}
		if m.ID == id {
			return m, nil
		}
	}
	return MountInfo{}, fmt.Errorf("mountinfo: no mount with ID %d", id)
}

// parseMountInfoLine parses one line as proc(5) describes it:
// "36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root rw,errors=continue".
func parseMountInfoLine(line string) (MountInfo, error) {
	var m MountInfo
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
	m.Root, m.MountPoint = unescapeMountInfo(f[3]), unescapeMountInfo(f[4])
	m.FSType, m.Source = f[sep+1], unescapeMountInfo(f[sep+2])
	return m, nil
}

// unescapeMountInfo undoes the kernel's octal escapes (\040 for a space,
// \011, \012, \134) in mountinfo paths.
func unescapeMountInfo(s string) string {
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
