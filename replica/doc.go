// Package replica is the volume state machine: roles, disk states,
// generation identifiers, bitmap and activity log, the peer protocol, resync
// and verify.
//
// The pure parts are Decide (who syncs from whom after a connect, and how),
// Bitmap (one bit per block out of sync) and ActivityLog (the hot extents a
// crashed primary's successor must resync). Volume puts them to work on one
// node: as primary it writes locally and to every connected peer before
// acknowledging (write.go: "The write path of a primary"), as secondary it
// applies what its primary sends; Transport carries the peer links.
//
// A Volume runs in one of two modes. Standalone (no VolumeConfig.Authority)
// it decides alone: SetRole(Primary) counts its own epochs, and a primary
// that cannot reach an UpToDate peer refuses writes with ErrPeerUnreachable
// (or, with the unsafe continue_alone, records the peer Outdated itself and
// goes on). Under a cluster (an Authority) the Raft group decides: epochs
// come from Promote, a peer leaves the UpToDate set only through a commit
// (writes it misses wait for that commit), and the primary serves I/O only
// while its lease (SetLease) lasts. cluster.go describes that mode.
package replica
