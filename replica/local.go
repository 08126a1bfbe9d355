package replica

// Local returns, in one consistent reading, the volume's role, epoch and
// disk state, and whether it never held data (no generation, current or
// past): what a cluster member reports about its replica.
func (v *Volume) Local() (role Role, epoch uint64, disk DiskState, fresh bool) {
	v.mu.Lock()
	defer v.mu.Unlock()
	fresh = v.gens.Current == 0 && v.gens.History == [HistoryLen]GenID{}
	return v.role, v.epoch, v.disk, fresh
}
