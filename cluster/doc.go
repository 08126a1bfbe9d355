// Package cluster holds the replicated cluster state of blockrep and the
// rules that change it: which nodes exist (data nodes and witnesses), and per
// volume who is primary, at which epoch, which replicas are UpToDate, and
// which node is the preferred primary.
//
// The state is a deterministic state machine. Every change is a Command;
// State.Apply decides it from the state alone (no clock, no network, no
// randomness, no I/O), so every node that applies the same commands in the
// same order — the Raft log order — holds byte-identical state
// (MarshalBinary). FSM runs it under hashicorp/raft: Apply for each
// committed log entry, MarshalBinary/UnmarshalBinary for snapshots. The
// Raft leader is the arbiter that proposes decisions (ChooseFailover's
// answer, an operator's promote/demote); it is not by itself the primary: a
// witness can lead. Time-based conditions (heartbeats missed, the old primary's lease run
// out) are judged by the proposer before it proposes; the state machine only
// judges what the log says.
//
// A refused command returns a *RefusedError naming the rule it broke and
// leaves the state unchanged. Commands are applied on every node, so a
// refusal is also deterministic: the log may contain refused entries (a
// stale leader's proposal) and they are harmless.
//
// # Rules and the invariants of shared/DESIGN.md they enforce
//
// Epochs (invariants 3 and 4). Each volume has an epoch, 0 for a new
// volume. Promote changes it, and only to exactly current+1: two
// arbiters that race to promote from the same state both propose E+1, and
// the second to commit sees a stale epoch and is refused, so each epoch has
// at most one primary. Every other command that names an epoch (Demote,
// Outdate, SetDisk, PrimaryLost) must name the current one, so a decision
// made against an older primary cannot land after a newer one took over.
// RaiseEpoch lifts the epoch of a volume without a primary to one a
// replica saw before this cluster existed (replication driven by hand, or
// a cluster rebuilt from scratch), so that the next promotion is newer than
// any epoch a replica would fence on.
//
// Promotion (invariant 3). Promote(volume, node, E+1) requires:
//   - node is a data node with a replica of the volume: a witness is never
//     primary;
//   - its disk is UpToDate; an Outdated disk only with Force (and a Reason,
//     which is logged). A forced promotion of an Outdated disk declares its
//     data current: it becomes UpToDate, and every other UpToDate replica
//     becomes Outdated (Result.Outdated; they may hold acknowledged writes
//     the new primary lacks, which is what may be lost). An Inconsistent or
//     Diskless disk is never promoted, not even with Force;
//   - the volume has no primary, or Force. "No primary" is the record of a
//     prior Demote (graceful) or PrimaryLost (the arbiter saw the primary
//     stop answering and waited out its lease, invariant 4). With Force the
//     command itself deposes the recorded primary (Result.Deposed): the
//     operator asserts that the old primary has stopped serving.
//
// Outdating a peer (invariant 2). Only the primary at the current epoch can
// take a peer out of the UpToDate set (Outdate, or SetDisk naming a lower
// state), so a primary cut off from quorum cannot commit it and therefore
// cannot go on acknowledging writes alone. The primary's own disk cannot
// change while it is primary (it must demote first): the primary is always
// UpToDate.
//
// Disk reports. The primary at the current epoch may set any state for a
// peer (UpToDate after a resync, Inconsistent when one starts). A node may
// report its own disk only downward (UpToDate > Outdated > Inconsistent >
// Diskless), e.g. Outdated on a clean leave: shrinking the set of promotion
// candidates is always safe, growing it needs the primary's word. The one
// exception is a volume never promoted (Promoted unset): no primary has
// acknowledged a write, so each node reports its own data either way (a
// node with the volume's data, or the designated first primary of a blank
// volume, reports UpToDate; that is how a new cluster gets its first
// primary).
//
// Failed disks (on_io_error = "detach"). DiskFailed(volume, node, E) at the
// current epoch records that node's local disk failed: its replica becomes
// Diskless, whatever its role, and if node is the primary its term ends
// (no primary at E). The arbiter proposes it when a node's heartbeat says
// its disk failed (LocalReport.Failed), and for a primary proposes the
// promotion of an alive UpToDate replica at E+1 in the same round: the
// failed primary detached its disk before it said so and acknowledges
// nothing any more, so there is no lease to wait out. A Diskless replica is
// never promoted; the node, restarted with its disk repaired, reports
// itself Inconsistent (downward only, so it stays Diskless in the state)
// and the primary raises it after a full resync.
//
// Nodes. A node that is some volume's primary cannot be removed. Removing a
// node drops its replicas (and clears a preference for it); removing the
// last UpToDate replica of a volume needs Force and a Reason, because the
// volume is then left with no current copy.
//
// Check verifies the structural invariants after every command: every
// primary is a data node holding an UpToDate replica at an epoch ≥ 1, every
// replica and preference names a data node, and map keys match names.
// ChooseFailover is the pure failover policy the arbiter uses: it only ever
// picks an alive UpToDate data node, never the witness and never an
// Outdated or Inconsistent replica (those need an operator's force).
package cluster
