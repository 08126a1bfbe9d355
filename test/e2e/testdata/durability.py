# Run under nbdsh -n. MODE=write writes three regions of reproducible random
# data, made durable by FLUSH or by FUA writes, and stays connected until
# stdin closes; MODE=read reads them back. Both print one line
# "REGION sha256" per region, which the Go test compares across a kill -9 of
# the daemon.
import hashlib
import os
import random
import sys

import nbd

MiB = 1 << 20
uri = os.environ["NBD_URI"]
mode = os.environ["MODE"]

# region name -> (offset, length, seed)
regions = {
    "flush": (0, 8 * MiB, 11),
    "fua": (16 * MiB, 4 * MiB, 12),
    "fua-small": (24 * MiB + 4096, 64 * 1024, 13),
}
# With UNFLUSHED=1, a last region written with neither FLUSH nor FUA: the
# control of the power-cut test, which nothing promises to keep.
if os.environ.get("UNFLUSHED") == "1":
    regions["unflushed"] = (32 * MiB, 4 * MiB, 14)


def data(length, seed):
    return random.Random(seed).randbytes(length)


h = nbd.NBD()
h.connect_uri(uri)
for name, (off, length, seed) in regions.items():
    if mode == "write":
        buf = data(length, seed)
        if name == "flush":
            # Plain writes in 1 MiB pieces, then one FLUSH.
            for i in range(0, length, MiB):
                h.pwrite(buf[i:i + MiB], off + i)
            h.flush()
        elif name == "unflushed":
            h.pwrite(buf, off)
        else:
            # Every write carries FUA; no FLUSH.
            step = min(length, MiB)
            for i in range(0, length, step):
                h.pwrite(buf[i:i + step], off + i, nbd.CMD_FLAG_FUA)
        got = h.pread(length, off)
        if got != buf:
            raise AssertionError("%s: read back differs right after writing" % name)
    print(name, hashlib.sha256(h.pread(length, off)).hexdigest(), flush=True)
if mode == "write":
    # Stay connected: the test kills the daemon under this open connection
    # and then closes our stdin.
    print("ready", flush=True)
    sys.stdin.readline()
else:
    h.shutdown()
