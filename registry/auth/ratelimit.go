package auth

import (
	"sync"
	"time"
)

// maxLimiterKeys bounds how many (user, address) pairs the login limiter
// remembers. Each new pair costs the caller a bcrypt comparison, so
// filling the table within one window takes far more CPU time than a
// window has; past the bound the oldest windows are forgotten first.
const maxLimiterKeys = 100_000

// failureLimiter slows password guessing without handing anyone a lockout
// weapon. Attempts are counted per (user name, client address) pair in a
// fixed window: a guesser gets at most max wrong passwords per window for
// one user from one address, while the same user logging in from another
// address, and other users behind the guesser's address, are not
// affected. An attempt is counted when it starts, before the password
// check, so that parallel attempts cannot overrun the limit; a successful
// login clears its pair.
type failureLimiter struct {
	max    int
	window time.Duration

	mu   sync.Mutex
	seen map[string]*failures
}

type failures struct {
	// count is the failed attempts of the window plus those in flight.
	count int
	start time.Time
}

func newFailureLimiter(max int, window time.Duration) *failureLimiter {
	return &failureLimiter{max: max, window: window, seen: map[string]*failures{}}
}

// limiterKey is the pair a login attempt is counted under.
func limiterKey(user, addr string) string { return user + "\x00" + addr }

// begin counts an attempt for key at now, unless key has used up its
// attempts in the current window: then it returns false and how long the
// window still runs. The check and the count are one step, so no more
// than max attempts per window ever reach the password check.
func (l *failureLimiter) begin(now time.Time, key string) (ok bool, wait time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	f := l.seen[key]
	if f == nil || now.Sub(f.start) >= l.window {
		l.forget(now)
		f = &failures{start: now}
		l.seen[key] = f
	}
	if f.count >= l.max {
		return false, f.start.Add(l.window).Sub(now)
	}
	f.count++
	return true, 0
}

// succeeded clears key after a successful login: its failures were the
// user's own typing mistakes.
func (l *failureLimiter) succeeded(key string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	delete(l.seen, key)
}

// forget drops finished windows once the table grows, and the oldest
// windows if it is still over its bound. l.mu is held.
func (l *failureLimiter) forget(now time.Time) {
	if len(l.seen) < 1024 {
		return
	}
	for k, f := range l.seen {
		if now.Sub(f.start) >= l.window {
			delete(l.seen, k)
		}
	}
	for len(l.seen) >= maxLimiterKeys {
		var oldest string
		var at time.Time
		for k, f := range l.seen {
			if oldest == "" || f.start.Before(at) {
				oldest, at = k, f.start
			}
		}
		delete(l.seen, oldest)
	}
}
