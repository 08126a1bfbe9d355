// Package wire is the peer link's wire format: versioned binary frames with a
// checksummed fixed header, the epoch fence every receiver applies, and the
// mutual HMAC challenge–response that authenticates a link before any
// replication frame is trusted, and the per-session MACs that protect every
// frame after it.
//
// The package does no replication itself: it knows how to put a frame on a
// stream and take it off again, and how two nodes prove to each other that
// they hold the cluster's shared secret. Payload semantics of the replication
// frame types are defined by the code that uses them (replica/).
//
// Layout of the 64-byte header (all integers big-endian):
//
//	offset size field
//	     0    4 magic "BRPL" (0x4252504C)
//	     4    1 protocol version
//	     5    1 frame type
//	     6    2 flags
//	     8   16 volume UUID
//	    24    8 epoch
//	    32    8 sequence number
//	    40    8 offset (bytes into the volume)
//	    48    4 payload length (<= MaxPayload)
//	    52    4 payload crc32c (only with FlagChecksum, else zero)
//	    56    4 reserved (zero)
//	    60    4 header crc32c over bytes 0..59
//
// The payload (Length bytes) follows the header directly. On a link with
// ProtectMAC (the default from version 2 on) a TagSize-byte tag follows the
// payload of every frame after the handshake: see MAC.
package wire
