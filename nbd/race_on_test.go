//go:build race

package nbd

// raceEnabled: the race detector makes sync.Pool drop buffers at random.
const raceEnabled = true
