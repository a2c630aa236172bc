package auth

import (
	"sync"
	"time"
)

// failureLimiter counts failed logins per key (a client address, a user
// name) in a fixed window and refuses further attempts once a key reaches
// the limit, until its window ends.
type failureLimiter struct {
	max    int
	window time.Duration

	mu   sync.Mutex
	seen map[string]*failures
}

type failures struct {
	count int
	start time.Time
}

func newFailureLimiter(max int, window time.Duration) *failureLimiter {
	return &failureLimiter{max: max, window: window, seen: map[string]*failures{}}
}

// blocked reports whether any of keys has used up its failures at now, and
// for how long it stays blocked.
func (l *failureLimiter) blocked(now time.Time, keys ...string) (bool, time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	var wait time.Duration
	for _, k := range keys {
		f := l.seen[k]
		if f == nil || now.Sub(f.start) >= l.window {
			continue
		}
		if f.count >= l.max {
			wait = max(wait, f.start.Add(l.window).Sub(now))
		}
	}
	return wait > 0, wait
}

// fail records a failed attempt for each key.
func (l *failureLimiter) fail(now time.Time, keys ...string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, k := range keys {
		f := l.seen[k]
		if f == nil || now.Sub(f.start) >= l.window {
			f = &failures{start: now}
			l.seen[k] = f
		}
		f.count++
	}
	// Forget finished windows so the map stays as small as the attack.
	if len(l.seen) > 1024 {
		for k, f := range l.seen {
			if now.Sub(f.start) >= l.window {
				delete(l.seen, k)
			}
		}
	}
}
