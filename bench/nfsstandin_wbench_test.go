//go:build wbench_standin

package bench

// Built with nfsexport's stand-in (nfsexport/standin_wbench.go), whose
// NFS procedures are stubs; delete with it.
func init() { nfsStandin = true }
