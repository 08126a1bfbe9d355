package raid

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
)

var parityShapes = []struct{ k, m int }{
	{2, 1}, {3, 1}, {7, 1}, {2, 2}, {4, 2}, {8, 2},
}

// randomStripe returns k data and m parity chunks of one random size (a
// multiple of 64 bytes up to 64 KiB), the data random and the parity zero.
func randomStripe(rng *rand.Rand, k, m int) (data, parity [][]byte) {
	size := 64 * (1 + rng.IntN(1024))
	data = make([][]byte, k)
	for i := range data {
		data[i] = make([]byte, size)
		fillRandom(rng, data[i])
	}
	parity = make([][]byte, m)
	for i := range parity {
		parity[i] = make([]byte, size)
	}
	return data, parity
}

func fillRandom(rng *rand.Rand, b []byte) {
	for i := range b {
		b[i] = byte(rng.Uint32())
	}
}

func cloneChunks(cs [][]byte) [][]byte {
	out := make([][]byte, len(cs))
	for i, c := range cs {
		if c != nil {
			out[i] = bytes.Clone(c)
		}
	}
	return out
}

func equalChunks(a, b [][]byte) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if !bytes.Equal(a[i], b[i]) {
			return false
		}
	}
	return true
}

func mustParity(t testing.TB, k, m int) *Parity {
	t.Helper()
	p, err := NewParity(k, m)
	if err != nil {
		t.Fatalf("NewParity(%d, %d): %v", k, m, err)
	}
	return p
}

func TestParityNewErrors(t *testing.T) {
	for _, c := range []struct {
		k, m int
		want string
	}{
		{4, 0, "parity chunks = 0"},
		{4, 3, "parity chunks = 3"},
		{0, 1, "data chunks = 0"},
		{-1, 2, "data chunks = -1"},
		{255, 2, "255 data + 2 parity"},
	} {
		_, err := NewParity(c.k, c.m)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("NewParity(%d, %d) = %v, want error containing %q", c.k, c.m, err, c.want)
		}
	}
}

// TestParityProperties runs, for every shape and many random stripes: encode,
// verify, corruption detection, reconstruction of every single and (RAID 6)
// every pair of lost chunks, refusal of m+1 lost chunks, and Update against a
// fresh Encode.
func TestParityProperties(t *testing.T) {
	iters := 20
	if testing.Short() {
		iters = 4
	}
	for _, sh := range parityShapes {
		t.Run(fmt.Sprintf("k%d_m%d", sh.k, sh.m), func(t *testing.T) {
			rng := rand.New(rand.NewPCG(uint64(sh.k), uint64(sh.m)))
			p := mustParity(t, sh.k, sh.m)
			for range iters {
				checkParityStripe(t, rng, p)
			}
		})
	}
}

func checkParityStripe(t *testing.T, rng *rand.Rand, p *Parity) {
	t.Helper()
	k, m := p.DataChunks(), p.ParityChunks()
	data, parity := randomStripe(rng, k, m)
	size := len(data[0])
	dataCopy := cloneChunks(data)

	if err := p.Encode(data, parity); err != nil {
		t.Fatalf("Encode: %v", err)
	}
	if !equalChunks(data, dataCopy) {
		t.Fatalf("Encode modified the data")
	}
	if m == 1 {
		xor := make([]byte, size)
		for _, d := range data {
			for i := range xor {
				xor[i] ^= d[i]
			}
		}
		if !bytes.Equal(parity[0], xor) {
			t.Fatalf("RAID 5 parity (size %d) is not the XOR of the data", size)
		}
	}
	if ok, err := p.Verify(data, parity); err != nil || !ok {
		t.Fatalf("Verify after Encode = %v, %v; want true, nil", ok, err)
	}

	// One flipped byte anywhere in the stripe must fail verification.
	stripe := append(cloneChunks(data), cloneChunks(parity)...)
	c, off := rng.IntN(k+m), rng.IntN(size)
	stripe[c][off] ^= byte(1 + rng.IntN(255))
	if ok, err := p.Verify(stripe[:k], stripe[k:]); err != nil || ok {
		t.Fatalf("Verify with chunk %d byte %d flipped = %v, %v; want false, nil", c, off, ok, err)
	}

	orig := append(cloneChunks(data), cloneChunks(parity)...)
	rebuild := func(missing []int, keepBuffers bool) {
		t.Helper()
		chunks := cloneChunks(orig)
		bufs := make([][]byte, len(chunks))
		for _, i := range missing {
			if keepBuffers {
				// A stale buffer of the right size: must be reused and overwritten.
				fillRandom(rng, chunks[i])
				bufs[i] = chunks[i]
			} else {
				chunks[i] = nil
			}
		}
		if err := p.Reconstruct(chunks, missing); err != nil {
			t.Fatalf("Reconstruct(missing %v, size %d): %v", missing, size, err)
		}
		if !equalChunks(chunks, orig) {
			t.Fatalf("Reconstruct(missing %v, size %d): stripe differs from the original", missing, size)
		}
		for _, i := range missing {
			if keepBuffers && &bufs[i][0] != &chunks[i][0] {
				t.Fatalf("Reconstruct(missing %v): buffer of chunk %d not reused", missing, i)
			}
		}

		// ReconstructData rebuilds the data chunks only.
		chunks = cloneChunks(orig)
		for _, i := range missing {
			chunks[i] = nil
		}
		if err := p.ReconstructData(chunks, missing); err != nil {
			t.Fatalf("ReconstructData(missing %v): %v", missing, err)
		}
		if !equalChunks(chunks[:k], orig[:k]) {
			t.Fatalf("ReconstructData(missing %v): data differs from the original", missing)
		}
	}
	for i := range k + m {
		rebuild([]int{i}, i%2 == 0)
	}
	if m == 2 {
		for i := range k + m {
			for j := i + 1; j < k+m; j++ {
				rebuild([]int{i, j}, (i+j)%2 == 0)
			}
		}
	}

	// m+1 lost chunks is beyond the level.
	perm := rng.Perm(k + m)[:m+1]
	chunks := cloneChunks(orig)
	for _, i := range perm {
		chunks[i] = nil
	}
	err := p.Reconstruct(chunks, perm)
	want := fmt.Sprintf("%d chunks missing", m+1)
	if err == nil || !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), fmt.Sprintf("at most %d", m)) {
		t.Fatalf("Reconstruct(missing %v) = %v, want error containing %q and %q", perm, err, want, fmt.Sprintf("at most %d", m))
	}

	// Update of a random subset of data chunks equals Encode of the new stripe.
	newData := make([][]byte, k)
	oldData := make([][]byte, k)
	full := cloneChunks(data)
	changed := 0
	for i := range k {
		if rng.IntN(2) == 0 {
			continue
		}
		changed++
		newData[i] = make([]byte, size)
		fillRandom(rng, newData[i])
		oldData[i] = bytes.Clone(data[i])
		full[i] = newData[i]
	}
	newCopy := cloneChunks(newData)
	upd := cloneChunks(parity)
	if err := p.Update(oldData, newData, upd); err != nil {
		t.Fatalf("Update(%d of %d changed): %v", changed, k, err)
	}
	if !equalChunks(newData, newCopy) {
		t.Fatalf("Update modified newData")
	}
	want2 := make([][]byte, m)
	for i := range want2 {
		want2[i] = make([]byte, size)
	}
	if err := p.Encode(full, want2); err != nil {
		t.Fatalf("Encode: %v", err)
	}
	if !equalChunks(upd, want2) {
		t.Fatalf("Update(%d of %d changed, size %d) parity differs from Encode of the new stripe", changed, k, size)
	}
	if ok, err := p.Verify(full, upd); err != nil || !ok {
		t.Fatalf("Verify after Update = %v, %v; want true, nil", ok, err)
	}
}

func TestParityArgumentErrors(t *testing.T) {
	p := mustParity(t, 4, 2)
	rng := rand.New(rand.NewPCG(1, 2))
	data, parity := randomStripe(rng, 4, 2)
	if err := p.Encode(data, parity); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name string
		err  error
		want string
	}{
		{"encode short data", p.Encode(data[:3], parity), "3 data chunks, want 4"},
		{"encode short parity", p.Encode(data, parity[:1]), "1 parity chunks, want 2"},
		{"encode ragged", p.Encode(append(cloneChunks(data[:3]), data[3][:64]), parity), "data chunk 3 is 64 bytes"},
		{"verify ragged parity", func() error {
			_, err := p.Verify(data, [][]byte{parity[0], parity[1][:64]})
			return err
		}(), "parity chunk Q is 64 bytes"},
		{"reconstruct bad index", p.Reconstruct(append(cloneChunks(data), cloneChunks(parity)...), []int{6}), "index 6 out of range"},
		{"reconstruct duplicate", p.Reconstruct(append(cloneChunks(data), cloneChunks(parity)...), []int{1, 1}), "listed twice"},
		{"reconstruct unlisted nil", p.Reconstruct(append(append(cloneChunks(data[:2]), nil, data[3]), cloneChunks(parity)...), nil), "data chunk 2 is empty but not listed"},
		{"reconstruct wrong count", p.Reconstruct(cloneChunks(data), nil), "4 chunks, want 4 data + 2 parity = 6"},
		{"update missing old", p.Update(make([][]byte, 4), [][]byte{nil, data[1], nil, nil}, cloneChunks(parity)), "old data chunk 1 is 0 bytes"},
		{"update short parity", p.Update(make([][]byte, 4), make([][]byte, 4), parity[:1]), "1 parity chunks, want 2"},
	} {
		if c.err == nil || !strings.Contains(c.err.Error(), c.want) {
			t.Errorf("%s: err = %v, want containing %q", c.name, c.err, c.want)
		}
	}

	// Update with nothing changed leaves the parity alone.
	upd := cloneChunks(parity)
	if err := p.Update(make([][]byte, 4), make([][]byte, 4), upd); err != nil || !equalChunks(upd, parity) {
		t.Fatalf("Update with no changes: err %v, parity changed %v", err, !equalChunks(upd, parity))
	}
}

func TestParityPreferReconstructWrite(t *testing.T) {
	p := mustParity(t, 8, 2)
	// RMW reads w+2, RCW reads 8-w: RCW wins from w = 3.
	for w, want := range []bool{false, false, false, true, true, true, true, true, true} {
		if got := p.PreferReconstructWrite(w); got != want {
			t.Errorf("8+2 PreferReconstructWrite(%d) = %v, want %v", w, got, want)
		}
	}
	p = mustParity(t, 2, 1)
	if p.PreferReconstructWrite(0) || !p.PreferReconstructWrite(1) {
		t.Errorf("2+1: want RMW for 0 changed, RCW for 1")
	}
}

func BenchmarkParityEncode(b *testing.B) {
	for _, sh := range []struct{ k, m int }{{4, 2}, {4, 1}} {
		b.Run(fmt.Sprintf("k%d_m%d_64KiB", sh.k, sh.m), func(b *testing.B) {
			const size = 64 << 10
			p := mustParity(b, sh.k, sh.m)
			rng := rand.New(rand.NewPCG(3, 4))
			data := make([][]byte, sh.k)
			for i := range data {
				data[i] = make([]byte, size)
				fillRandom(rng, data[i])
			}
			parity := make([][]byte, sh.m)
			for i := range parity {
				parity[i] = make([]byte, size)
			}
			b.SetBytes(int64(sh.k * size))
			for b.Loop() {
				if err := p.Encode(data, parity); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkParityReconstruct2(b *testing.B) {
	const size = 64 << 10
	p := mustParity(b, 4, 2)
	rng := rand.New(rand.NewPCG(5, 6))
	data := make([][]byte, 4)
	for i := range data {
		data[i] = make([]byte, size)
		fillRandom(rng, data[i])
	}
	parity := [][]byte{make([]byte, size), make([]byte, size)}
	if err := p.Encode(data, parity); err != nil {
		b.Fatal(err)
	}
	chunks := append(data, parity...)
	b.SetBytes(4 * size)
	for b.Loop() {
		if err := p.Reconstruct(chunks, []int{0, 2}); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkParityUpdate1of8(b *testing.B) {
	const size = 64 << 10
	p := mustParity(b, 8, 2)
	rng := rand.New(rand.NewPCG(7, 8))
	old := make([][]byte, 8)
	nw := make([][]byte, 8)
	old[3] = make([]byte, size)
	nw[3] = make([]byte, size)
	fillRandom(rng, nw[3])
	parity := [][]byte{make([]byte, size), make([]byte, size)}
	b.SetBytes(size)
	for b.Loop() {
		if err := p.Update(old, nw, parity); err != nil {
			b.Fatal(err)
		}
	}
}
