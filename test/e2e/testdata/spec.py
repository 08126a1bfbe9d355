# Run under nbdsh -n: requests that the NBD protocol (doc/proto.md, "Error
# values" and NBD_CMD_CACHE) says a server should or must refuse with
# EINVAL. libnbd's strict mode is off so the requests reach the server.
# Every check runs; the script fails at the end if any failed, after
# checking that the connection still works.
import errno
import os

import nbd

MiB = 1 << 20
uri = os.environ["NBD_URI"]
failures = []


def expect_error(want_errno, what, fn, *args):
    try:
        fn(*args)
    except nbd.Error as e:
        if e.errnum == want_errno:
            print("ok: %s fails with %s" % (what, errno.errorcode[want_errno]))
        else:
            failures.append("%s: got %s (%s), want %s" % (what, e.errno, e.string, errno.errorcode[want_errno]))
        return
    failures.append("%s: succeeded, want %s" % (what, errno.errorcode[want_errno]))


h = nbd.NBD()
h.connect_uri(uri)
size = h.get_size()
known = os.urandom(4096)
h.pwrite(known, MiB)
h.set_strict_mode(0)

UNKNOWN_FLAG = 1 << 9  # not defined by the protocol

# "It SHOULD return NBD_EINVAL if it receives a read or trim request
# including one or more sectors beyond the size of the device."
expect_error(errno.EINVAL, "trim past the end", h.trim, 4096, size)
# NBD_CMD_CACHE: "if it advertised the command, the server MUST reject any
# command flags it does not recognize."
expect_error(errno.EINVAL, "cache with an unknown flag", h.cache, 4096, 0, UNKNOWN_FLAG)
# "The server SHOULD return NBD_EINVAL if it receives an unknown command
# flag. It also SHOULD return NBD_EINVAL if it receives a request with a
# flag not explicitly documented as applicable to the given request."
expect_error(errno.EINVAL, "read with an unknown flag", h.pread, 4096, 0, UNKNOWN_FLAG)
expect_error(errno.EINVAL, "write with an unknown flag", h.pwrite, b"\x01" * 4096, 0, UNKNOWN_FLAG)
expect_error(errno.EINVAL, "flush with an unknown flag", h.flush, UNKNOWN_FLAG)
expect_error(errno.EINVAL, "write with FAST_ZERO (only for WRITE_ZEROES)", h.pwrite, b"\x01" * 4096, 0, nbd.CMD_FLAG_FAST_ZERO)
expect_error(errno.EINVAL, "read with NO_HOLE (only for WRITE_ZEROES)", h.pread, 4096, 0, nbd.CMD_FLAG_NO_HOLE)

if h.pread(4096, MiB) != known:
    failures.append("the connection no longer reads correctly")
h.shutdown()
if failures:
    raise AssertionError("server deviates from the NBD protocol:\n  " + "\n  ".join(failures))
print("all checks passed")
