// Package raid provides the local stores under a replica: one file or block
// device (File), or an array of them (Array) with local redundancy, so that
// a storage server survives a failed disk without a failover.
//
// Every store implements block.Device. The file store is Linux-only: it
// uses pread/pwrite, pwritev2(RWF_DSYNC), fallocate, lseek(SEEK_DATA/
// SEEK_HOLE) and the block-device ioctls directly.
//
// The array is built in layers, each tested on its own:
//   - layout.go: the geometry of RAID 1 (n-way mirror), RAID 10 (near
//     copies), RAID 5 and RAID 6 (left-symmetric rotating parity, as md's
//     default) as pure functions from logical ranges to member extents;
//   - parity.go: RAID 5/6 parity on klauspost/reedsolomon (P is the XOR
//     of the data; Q is that library's code, not byte-compatible with
//     md's RAID 6);
//   - superblock.go and assemble.go: the 4 KiB superblock on every member
//     (array and member UUIDs, geometry, role, event counter, clean/dirty,
//     what each member knew of the others) and the pure plan that
//     assembles an array from the superblocks found, refusing foreign and
//     stale members;
//   - array.go and member.go: the Array device: reads and writes by level,
//     degraded operation (a member that fails a write is marked Faulty and
//     the array goes on; reads reconstruct), read-error repair (good data
//     written back to a member that failed a read; past 20 repairs, halved
//     hourly, the member is failed instead, as md's
//     max_corrected_read_errors), reads of a request's chunks that continue
//     one another on a member in one preadv, and ErrTooManyFailed beyond
//     what the level tolerates;
//   - rebuild.go: Fail, Remove, Replace and Add of members, Rebuild onto a
//     replacement (stripe by stripe under the stripe lock, rate-limited,
//     with a resumable checkpoint) while the array serves I/O, and Scrub
//     (compare mirrors, verify parity, repair; RAID 6 names and repairs a
//     single wrong chunk);
//   - intent.go: the write-intent bitmap (a region is marked durable on
//     every in-sync member before it is written, cleared lazily when the
//     array is optimal and the region idle), which resyncs only the dirty
//     regions after a crash (closing the RAID 5/6 write hole) and only what
//     a returning member missed;
//   - disk.go: the persistent array (Create, Open, Close): members are
//     files or block devices with a superblock at offset 0 and data from
//     1 MiB; an array is marked dirty while open, resyncs its dirty regions
//     (or everything, if the bitmap is unreadable) and its stale members
//     at open, and writes every member state change and rebuild checkpoint
//     to the superblocks of the members still in the array;
//   - spare.go: hot spares of a DiskArray (superblock role RoleSpare), one
//     taken into the slot of a member that fails, or is missing at Open,
//     and rebuilt in the background.
package raid
