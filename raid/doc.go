// Package raid provides the local stores under a replica: one file or block
// device now, RAID across several later.
//
// Every store implements block.Device. The stores are Linux-only: they use
// pread/pwrite, pwritev2(RWF_DSYNC), fallocate, lseek(SEEK_DATA/SEEK_HOLE)
// and the block-device ioctls directly.
package raid
