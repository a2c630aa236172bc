package bolt

import (
	"context"
	"fmt"
	"hash/fnv"
	"slices"
	"sync"

	"github.com/opencontainers/go-digest"
)

// digestStripes is the number of digest locks; digests share them by hash.
const digestStripes = 256

// digestLocks serialise, per digest, placing content with recording it
// against garbage collection removing both. Digests share stripes by hash,
// so the table is small and fixed. Each stripe is a channel of capacity
// one, so that a wait can end with its context. Stripes are taken in
// ascending order, each once, so two holders cannot deadlock.
type digestLocks struct {
	m [digestStripes]chan struct{}
}

func (l *digestLocks) init() {
	for i := range l.m {
		l.m[i] = make(chan struct{}, 1)
	}
}

// stripe is the lock of d: FNV-1a of its string form.
func stripe(d digest.Digest) int {
	h := fnv.New32a()
	_, _ = h.Write([]byte(d))
	return int(h.Sum32() % digestStripes)
}

// lock takes the stripes of ds and returns their unlock, which may be
// called more than once. A done ctx stops the wait: the stripes taken so
// far are released and ctx's error returned.
func (l *digestLocks) lock(ctx context.Context, ds []digest.Digest) (func(), error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("lock digests: %w", err)
	}
	idx := make([]int, 0, len(ds))
	for _, d := range ds {
		idx = append(idx, stripe(d))
	}
	slices.Sort(idx)
	idx = slices.Compact(idx)
	release := func(held []int) {
		for _, i := range slices.Backward(held) {
			<-l.m[i]
		}
	}
	for n, i := range idx {
		select {
		case l.m[i] <- struct{}{}:
		case <-ctx.Done():
			release(idx[:n])
			return nil, fmt.Errorf("lock digests: %w", ctx.Err())
		}
	}
	var once sync.Once
	return func() { once.Do(func() { release(idx) }) }, nil
}
