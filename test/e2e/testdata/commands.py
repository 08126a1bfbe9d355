# Run under nbdsh -n: exercises every NBD command the server offers and the
# error paths that must leave the connection usable. Environment:
#   NBD_URI   the export
#   NBD_SIZE  its size in bytes
# Any failed check raises, so nbdsh exits non-zero.
import errno
import os

import nbd

MiB = 1 << 20
uri = os.environ["NBD_URI"]
want_size = int(os.environ["NBD_SIZE"])


def check(cond, msg):
    if not cond:
        raise AssertionError(msg)
    print("ok:", msg)


def expect_error(want_errno, what, fn, *args, **kw):
    """Call fn and require nbd.Error with errno want_errno (a number)."""
    try:
        fn(*args, **kw)
    except nbd.Error as e:
        check(e.errnum == want_errno,
              "%s fails with %s (got errnum=%s errno=%s: %s)" %
              (what, errno.errorcode[want_errno], e.errnum, e.errno, e.string))
        return
    raise AssertionError("%s succeeded, want %s" % (what, errno.errorcode[want_errno]))


def extents(h, count, offset, flags=0):
    """Return the base:allocation extents as [(offset, length, flags)]."""
    got = []

    def cb(metacontext, off, entries, err):
        if metacontext != nbd.CONTEXT_BASE_ALLOCATION:
            return 0
        pos = off
        for i in range(0, len(entries), 2):
            got.append((pos, entries[i], entries[i + 1]))
            pos += entries[i]
        return 0

    h.block_status(count, offset, cb, flags)
    return got


def flags_at(ext, offset):
    for (o, n, f) in ext:
        if o <= offset < o + n:
            return f
    raise AssertionError("no extent covers offset %d in %r" % (offset, ext))


def zeroes(n):
    return bytearray(n)


h = nbd.NBD()
h.add_meta_context(nbd.CONTEXT_BASE_ALLOCATION)
h.connect_uri(uri)
default_strict = h.get_strict_mode()

check(h.get_size() == want_size, "export size is %d" % want_size)
check(h.is_read_only() == 0, "export is writable")
check(h.can_meta_context(nbd.CONTEXT_BASE_ALLOCATION) == 1, "server agreed to base:allocation")
check(h.get_structured_replies_negotiated() == 1, "structured replies negotiated")
check(h.get_block_size(nbd.SIZE_MINIMUM) == 512, "minimum block size 512")
check(h.get_block_size(nbd.SIZE_PREFERRED) == 4096, "preferred block size 4096")
check(h.get_block_size(nbd.SIZE_MAXIMUM) == 32 * MiB, "maximum block size 32MiB")

# 1. pwrite / pread round trip, small and large (over the inline limit).
for off, n in ((0, 512), (MiB + 4096, 4096), (3 * MiB, 8 * MiB)):
    data = os.urandom(n)
    h.pwrite(data, off)
    check(h.pread(n, off) == data, "pread returns what pwrite wrote at %d (+%d)" % (off, n))

# 2. trim, then the range reads as zeroes.
base = 16 * MiB
h.pwrite(os.urandom(2 * MiB), base)
h.trim(MiB, base)
check(h.pread(MiB, base) == zeroes(MiB), "trimmed range reads as zeroes")
check(h.pread(MiB, base + MiB) != zeroes(MiB), "data next to the trimmed range survives")

# 3. WRITE_ZEROES in its four flavours; each range must read back as zeroes.
base = 20 * MiB
for i, (flags, name) in enumerate((
        (0, "zero"),
        (nbd.CMD_FLAG_NO_HOLE, "zero NO_HOLE"),
        (nbd.CMD_FLAG_FAST_ZERO, "zero FAST_ZERO"),
        (nbd.CMD_FLAG_NO_HOLE | nbd.CMD_FLAG_FAST_ZERO, "zero NO_HOLE|FAST_ZERO"))):
    off = base + i * MiB
    h.pwrite(os.urandom(MiB), off)
    h.zero(MiB, off, flags)
    check(h.pread(MiB, off) == zeroes(MiB), "%s: range reads as zeroes" % name)
# A zero with FUA, across a partial block (aligned to 512 but not 4096).
off = base + 4 * MiB
h.pwrite(os.urandom(MiB), off)
h.zero(3 * 512, off + 512, nbd.CMD_FLAG_FUA)
got = h.pread(MiB, off)
check(got[512:2048] == zeroes(1536), "zero FUA of 1536 bytes at +512 reads as zeroes")
check(got[:512] != zeroes(512) and got[2048:4096] != zeroes(2048), "zero FUA leaves its neighbours alone")

# block status: a zero that may punch is a hole, a NO_HOLE zero is zero but
# allocated, data is data.
ext = extents(h, 2 * MiB, base)
check(flags_at(ext, base) == nbd.STATE_HOLE | nbd.STATE_ZERO,
      "block_status: zero without NO_HOLE is hole|zero (%r)" % ext)
# NO_HOLE means allocated: never a hole. (ZERO may or may not be reported:
# ext4 calls the unwritten extent data once its pages are cached, and that
# read-back above cached them.)
check(flags_at(ext, base + MiB) & nbd.STATE_HOLE == 0,
      "block_status: zero with NO_HOLE is not a hole (%r)" % ext)

# 4. flush.
h.pwrite(b"\x5a" * 4096, 30 * MiB)
h.flush()
check(h.pread(4096, 30 * MiB) == b"\x5a" * 4096, "flush succeeds and data is readable")

# 5. pwrite with FUA, small and large.
for off, n in ((31 * MiB, 4096), (32 * MiB, 2 * MiB)):
    data = os.urandom(n)
    h.pwrite(data, off, nbd.CMD_FLAG_FUA)
    check(h.pread(n, off) == data, "FUA pwrite of %d bytes reads back" % n)

# cache is advisory but must succeed.
h.cache(MiB, 0)

# 6. Out of range: the server (not libnbd) must refuse, and the same handle
# must keep working. Strict mode off so the requests reach the server.
size = h.get_size()
known = os.urandom(4096)
h.pwrite(known, 40 * MiB)
h.set_strict_mode(0)
expect_error(errno.EINVAL, "pread past the end", h.pread, 4096, size)
expect_error(errno.EINVAL, "pread straddling the end", h.pread, 8192, size - 4096)
check(h.pread(4096, 40 * MiB) == known, "same handle reads after an out-of-range pread")
expect_error(errno.ENOSPC, "pwrite past the end", h.pwrite, os.urandom(65536), size)
check(h.pread(4096, 40 * MiB) == known, "same handle reads after an out-of-range pwrite (payload skipped)")
expect_error(errno.ENOSPC, "zero past the end", h.zero, 4096, size)
expect_error(errno.EINVAL, "block_status past the end", extents, h, 4096, size)
check(h.pread(4096, 40 * MiB) == known, "same handle reads after out-of-range zero and block_status")

# 7. Misaligned requests (min block size 512): EINVAL, connection intact.
expect_error(errno.EINVAL, "misaligned pread (offset 1)", h.pread, 512, 40 * MiB + 1)
expect_error(errno.EINVAL, "misaligned pread (length 100)", h.pread, 100, 40 * MiB)
expect_error(errno.EINVAL, "misaligned pwrite", h.pwrite, b"\xff" * 1000, 40 * MiB + 7)
check(h.pread(4096, 40 * MiB) == known, "misaligned pwrite changed nothing and the stream is intact")
# Zero-length requests: the protocol leaves the answer open but says the
# server should not disconnect.
for what, fn, args in (("pread", h.pread, (0, 40 * MiB)), ("pwrite", h.pwrite, (b"", 40 * MiB)),
                       ("trim", h.trim, (0, 40 * MiB)), ("zero", h.zero, (0, 40 * MiB))):
    try:
        fn(*args)
    except nbd.Error as e:
        print("zero-length %s: %s" % (what, e.string))
check(h.pread(4096, 40 * MiB) == known, "same handle reads after zero-length requests")
h.set_strict_mode(default_strict)
check(h.pread(4096, 40 * MiB) == known, "strict mode restored and reads work")

# 8. block status over a region with data, then a hole, then data.
base = 48 * MiB
h.pwrite(os.urandom(3 * MiB), base)
h.trim(MiB, base + MiB)
ext = extents(h, 3 * MiB, base)
print("extents:", ext)
check(ext[0][0] == base, "block_status starts at the requested offset")
check(all(n % 512 == 0 for (_, n, _) in ext), "block_status lengths are multiples of the minimum block size")
check(flags_at(ext, base) == 0, "block_status: written range is data")
check(flags_at(ext, base + MiB) == nbd.STATE_HOLE | nbd.STATE_ZERO, "block_status: trimmed range is hole|zero")
check(flags_at(ext, base + 2 * MiB + 4096) == 0, "block_status: data after the hole is data")
one = extents(h, 3 * MiB, base, nbd.CMD_FLAG_REQ_ONE)
check(len(one) == 1 and one[0][0] == base and one[0][1] == MiB and one[0][2] == 0,
      "block_status REQ_ONE returns exactly the first extent (%r)" % one)
# The never-written tail of the export is a hole.
ext = extents(h, MiB, size - MiB)
check(len(ext) >= 1 and all(f == nbd.STATE_HOLE | nbd.STATE_ZERO for (_, _, f) in ext),
      "block_status: unwritten tail is hole|zero (%r)" % ext)

# 9. The largest request allowed (32 MiB) works; one block more is refused
# by the server.
data = os.urandom(32 * MiB)
h.pwrite(data, 0)
check(h.pread(32 * MiB, 0) == data, "32 MiB pwrite/pread (the maximum block size) round trip")
h.set_strict_mode(0)
expect_error(errno.EINVAL, "pread over the maximum block size", h.pread, 32 * MiB + 512, 0)
expect_error(errno.EINVAL, "pwrite over the maximum block size", h.pwrite, bytes(32 * MiB + 512), 0)
check(h.pread(4096, 40 * MiB) == known, "same handle reads after oversized requests")
h.set_strict_mode(default_strict)
h.shutdown()

# 10. Without structured replies: simple replies, including error replies
# to reads, which must carry no payload (or the stream would desync).
h2 = nbd.NBD()
h2.set_request_structured_replies(False)
h2.connect_uri(uri)
check(h2.get_structured_replies_negotiated() == 0, "second handle uses simple replies")
data = os.urandom(256 * 1024)
h2.pwrite(data, 44 * MiB)
check(h2.pread(len(data), 44 * MiB) == data, "simple replies: pread returns what pwrite wrote")
h2.set_strict_mode(0)
expect_error(errno.EINVAL, "simple replies: pread past the end", h2.pread, 65536, size)
check(h2.pread(len(data), 44 * MiB) == data, "simple replies: stream intact after a failed read")
expect_error(errno.EINVAL, "simple replies: misaligned pread", h2.pread, 65536, 44 * MiB + 3)
check(h2.pread(4096, 40 * MiB) == known, "simple replies: stream intact after a misaligned read")
h2.shutdown()
print("all checks passed")
