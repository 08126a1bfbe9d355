// Package replica is the volume state machine: roles, disk states,
// generation identifiers, bitmap and activity log, the peer protocol, resync
// and verify.
//
// So far it holds the pure parts that the peer link and resync will build
// on: Decide (who syncs from whom after a connect, and how), Bitmap (one bit
// per block out of sync) and ActivityLog (the hot extents a crashed primary's
// successor must resync).
package replica
