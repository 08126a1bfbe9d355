// Package rpc is an ONC RPC version 2 server (RFC 5531) over TCP, the layer
// the NFSv3, MOUNT and portmapper programs of nfsexport sit on.
//
// Records: calls arrive record-marked (RFC 5531 section 11); fragments are
// reassembled, zero-length ones allowed, and a record over
// Config.MaxRecordSize closes the connection with a log line. Buffers grow
// with the bytes received, never with a length a peer claims.
//
// Calls: the header is decoded into a Call (xid, program, version, procedure,
// credential) and the arguments are left to the Handler as an xdr.Decoder.
// AUTH_NONE and AUTH_SYS credentials are accepted (AUTH_SYS decoded into
// SysCred: machine name of at most 255 bytes, at most 16 groups); any other
// flavor, or a malformed credential, is answered MSG_DENIED AUTH_ERROR
// AUTH_BADCRED, as knfsd does; a call verifier other than AUTH_NONE gets
// AUTH_BADVERF. Reply verifiers are AUTH_NONE. rpcvers other than 2 gets
// RPC_MISMATCH (2, 2). Records that cannot be answered at all (too short for
// the header, or not a CALL) are dropped.
//
// Dispatch: Register(prog, vers, h). A call to an unknown program gets
// PROG_UNAVAIL; to an unregistered version, PROG_MISMATCH with the lowest and
// highest registered version. The handler chooses SUCCESS (nil),
// PROC_UNAVAIL, GARBAGE_ARGS, SYSTEM_ERR or AUTH_TOOWEAK by its error; a
// panicking handler is answered SYSTEM_ERR.
//
// Concurrency: each connection has one reader goroutine, a goroutine per call
// in progress and one writer. Calls run concurrently up to
// Config.MaxCallsPerConn per connection and Config.MaxCalls in all; at the
// bound the reader stops reading (TCP backpressure). Replies go out whole, in
// the order calls complete, several per write when they queue up. A
// connection with no call in progress that sends nothing for
// Config.IdleTimeout is closed. Serve returns only when every goroutine it
// started has stopped.
package rpc
