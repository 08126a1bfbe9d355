package fh

import (
	"bytes"
	"encoding/binary"
	"fmt"
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
