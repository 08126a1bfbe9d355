# Run under nbdsh -n against a read-only export (NBD_URI): every kind of
# write must be refused with EPERM by the server, and reads keep working.
import errno
import os

import nbd

uri = os.environ["NBD_URI"]


def check(cond, msg):
    if not cond:
        raise AssertionError(msg)
    print("ok:", msg)


def expect_eperm(what, fn, *args):
    try:
        fn(*args)
    except nbd.Error as e:
        check(e.errnum == errno.EPERM,
              "%s fails with EPERM (got errnum=%s errno=%s: %s)" % (what, e.errnum, e.errno, e.string))
        return
    raise AssertionError("%s on a read-only export succeeded" % what)


h = nbd.NBD()
h.connect_uri(uri)
check(h.is_read_only() == 1, "export is read-only")
before = h.pread(65536, 0)

# libnbd itself refuses in strict mode; turn that off so that the server
# has to refuse.
h.set_strict_mode(0)
expect_eperm("pwrite", h.pwrite, b"\xee" * 4096, 0)
expect_eperm("pwrite FUA", h.pwrite, b"\xee" * 4096, 4096, nbd.CMD_FLAG_FUA)
expect_eperm("large pwrite", h.pwrite, b"\xee" * (1 << 20), 0)
expect_eperm("trim", h.trim, 4096, 0)
expect_eperm("zero", h.zero, 4096, 0)
check(h.pread(65536, 0) == before, "contents unchanged and the connection still works")
h.flush()
print("all checks passed")
