package replica

// LocalState is what a cluster member reports about its replica.
type LocalState struct {
	Role  Role
	Epoch uint64
	Disk  DiskState
	// Fresh is set when the replica never held data (no generation,
	// current or past).
	Fresh bool
	// Failed is the error that made the volume detach its local disk; ""
	// while it is attached.
	Failed string
}

// Local returns, in one consistent reading, the volume's role, epoch, disk
// state, whether it never held data and whether its disk failed.
func (v *Volume) Local() LocalState {
	v.mu.Lock()
	defer v.mu.Unlock()
	fresh := v.gens.Current == 0 && v.gens.History == [HistoryLen]GenID{}
	return LocalState{Role: v.role, Epoch: v.epoch, Disk: v.disk, Fresh: fresh, Failed: v.failed}
}
