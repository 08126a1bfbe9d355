package nbd

// Wire constants of the NBD protocol (NetworkBlockDevice doc/proto.md).
const (
	nbdMagic       = 0x4e42444d41474943 // "NBDMAGIC"
	optMagic       = 0x49484156454F5054 // "IHAVEOPT"
	optReplyMagic  = 0x0003e889045565a9
	requestMagic   = 0x25609513
	simpleMagic    = 0x67446698
	structMagic    = 0x668e33ef
	requestHdrLen  = 28
	simpleHdrLen   = 16
	structHdrLen   = 20
	maxOptionLen   = 64 << 10 // longest option payload we accept
	maxStringLen   = 4096     // longest name or string the spec allows
	defaultMaxBlk  = 32 << 20
	defaultPrefBlk = 4096
)

// Handshake flags.
const (
	flagFixedNewstyle = 1 << 0
	flagNoZeroes      = 1 << 1
)

// Client flags.
const (
	clientFixedNewstyle = 1 << 0
	clientNoZeroes      = 1 << 1
)

// Option types.
const (
	optExportName      = 1
	optAbort           = 2
	optList            = 3
	optStartTLS        = 5
	optInfo            = 6
	optGo              = 7
	optStructuredReply = 8
	optListMetaContext = 9
	optSetMetaContext  = 10
)

// Option reply types.
const (
	repAck         = 1
	repServer      = 2
	repInfo        = 3
	repMetaContext = 4
	repFlagError   = 1 << 31
	repErrUnsup    = repFlagError | 1
	repErrPolicy   = repFlagError | 2
	repErrInvalid  = repFlagError | 3
	repErrTLSReqd  = repFlagError | 5
	repErrUnknown  = repFlagError | 6
	repErrShutdown = repFlagError | 7
	repErrTooBig   = repFlagError | 9
)

// Info types.
const (
	infoExport      = 0
	infoName        = 1
	infoDescription = 2
	infoBlockSize   = 3
)

// Transmission flags.
const (
	tflagHasFlags       = 1 << 0
	tflagReadOnly       = 1 << 1
	tflagSendFlush      = 1 << 2
	tflagSendFUA        = 1 << 3
	tflagSendTrim       = 1 << 5
	tflagSendWriteZeros = 1 << 6
	tflagSendDF         = 1 << 7
	tflagCanMultiConn   = 1 << 8
	tflagSendCache      = 1 << 10
	tflagSendFastZero   = 1 << 11
)

// Commands.
const (
	cmdRead        = 0
	cmdWrite       = 1
	cmdDisc        = 2
	cmdFlush       = 3
	cmdTrim        = 4
	cmdCache       = 5
	cmdWriteZeroes = 6
	cmdBlockStatus = 7
)

// Command flags.
const (
	cmdFlagFUA      = 1 << 0
	cmdFlagNoHole   = 1 << 1
	cmdFlagDF       = 1 << 2
	cmdFlagReqOne   = 1 << 3
	cmdFlagFastZero = 1 << 4
)

// Structured reply flags and types.
const (
	replyFlagDone         = 1 << 0
	replyTypeNone         = 0
	replyTypeOffsetData   = 1
	replyTypeBlockStatus  = 5
	replyTypeError        = 1<<15 | 1
	stateHole             = 1 << 0
	stateZero             = 1 << 1
	metaContextAllocation = "base:allocation"
	metaContextAllocID    = 1
)

// Errno values on the wire.
const (
	errPerm   = 1
	errIO     = 5
	errNoMem  = 12
	errInval  = 22
	errNoSpc  = 28
	errNotSup = 95
)

func cmdName(c uint16) string {
	switch c {
	case cmdRead:
		return "READ"
	case cmdWrite:
		return "WRITE"
	case cmdDisc:
		return "DISC"
	case cmdFlush:
		return "FLUSH"
	case cmdTrim:
		return "TRIM"
	case cmdCache:
		return "CACHE"
	case cmdWriteZeroes:
		return "WRITE_ZEROES"
	case cmdBlockStatus:
		return "BLOCK_STATUS"
	}
	return "UNKNOWN"
}
