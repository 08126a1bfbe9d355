// Package nfsexport is blockrep's NFSv3 server: it exports directories of
// mounted ext4 or xfs file systems to NFS clients over TCP, so that the
// file handles a client holds, the writes answered stable and the COMMIT
// verifier stay true across a failover to another node holding a
// block-identical copy of the file system.
//
// A Server puts together the programs of its subpackages on one ONC RPC
// server (package rpc):
//
//   - NFS version 3 (program 100003, package nfs3), on file descriptors and
//     kernel file handles (package fh), with each export's policy (package
//     export: client networks, read-only, squash);
//   - MOUNT version 3 (program 100005, package mount): the root handles,
//     the mount list, the export list;
//   - optionally a small portmapper (program 100000: PMAP version 2 and
//     rpcbind versions 3 and 4, package portmap) naming the port of NFS
//     and MOUNT, so that a client can mount with ordinary options.
//
// Every program is served on every listener, NFS and MOUNT on the same port
// (like knfsd with mountd pinned to 2049, or clients given
// port=2049,mountport=2049). Serve may be called for several listeners at
// once (say the NFS port and the portmapper's port 111); they share the
// programs, the mount list and the limits of Config.RPC. The portmapper
// answers, for NFS and MOUNT, Config.NFSPort, or, when that is 0, the port
// of the listener the question arrived on (which serves them too).
//
// # The write verifier
//
// New draws the write verifier (8 bytes from crypto/rand) that WRITE and
// COMMIT return. Each Server is one serving instance: make a new one at
// start and at every takeover, so that a client that wrote UNSTABLE to the
// previous instance sees a different verifier and sends those writes again,
// as RFC 1813 requires of a server that may have lost them.
//
// # Status and events
//
// Status lists the exports and, per export, its clients: the ones in the
// MOUNT list (when they last mounted) and the ones whose NFS calls it
// admitted (first and last call, number of calls). Both lists are bounded
// (DefaultMaxMounts, DefaultMaxClients; the least recent entries go first)
// and live in memory only: a new Server starts them empty.
//
// Config.OnEvent, if set, is told when a Serve call starts serving (with
// the verifier), when a client mounts or unmounts an export, and when a
// mount is refused; refusals are reported at most once per client a minute
// (mount.RefuseInterval), the next report counting those held back, so that
// a scanner cannot flood the event stream.
//
// NLM (file locking) is not provided: clients mount with nolock (or
// local_lock=all). For failover they use vers=3,proto=tcp,hard so that
// calls wait for the next server instead of failing.
package nfsexport
