// Package ratelimit is a keyed token bucket with bounded memory: how the
// controller limits attempts per source address and per user (Keystone
// logins, agent enrolments) before doing anything costly for them, and
// each user's API requests per HTTP verb.
//
// It must not block or sleep: a caller asks and is answered at once, with
// how long to wait when the answer is no.
package ratelimit

import (
	"sync"
	"time"
)

// Limiter allows Burst attempts per key at once and one more every Every.
// The zero value is not usable; use New.
type Limiter struct {
	burst   float64
	every   time.Duration
	maxKeys int
	now     func() time.Time

	mu      sync.Mutex
	buckets map[string]*bucket
}

type bucket struct {
	tokens float64
	at     time.Time
}

// MaxKeyLength is how much of a key is kept: keys can be chosen by a
// client (a user name).
const MaxKeyLength = 128

// New returns a limiter of burst attempts per key, refilled one per
// every, remembering at most maxKeys keys: when full, keys whose bucket is
// full again are dropped first, then arbitrary ones (a forgotten key starts
// with a full bucket, so memory stays bounded whatever the number of keys).
func New(burst int, every time.Duration, maxKeys int) *Limiter {
	return &Limiter{burst: float64(max(burst, 1)), every: max(every, time.Millisecond), maxKeys: max(maxKeys, 1),
		now: time.Now, buckets: map[string]*bucket{}}
}

// SetClock replaces time.Now (tests).
func (l *Limiter) SetClock(now func() time.Time) { l.now = now }

func (l *Limiter) refill(b *bucket, now time.Time) {
	if d := now.Sub(b.at); d > 0 {
		b.tokens = min(l.burst, b.tokens+float64(d)/float64(l.every))
	}
	b.at = now
}

func key(k string) string {
	if len(k) > MaxKeyLength {
		return k[:MaxKeyLength]
	}
	return k
}

// Allow reports whether key has an attempt left without taking it; if
// not, how long until it has.
func (l *Limiter) Allow(k string) (bool, time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	b, ok := l.buckets[key(k)]
	if !ok {
		return true, 0
	}
	l.refill(b, l.now())
	return b.tokens >= 1, l.wait(b)
}

func (l *Limiter) wait(b *bucket) time.Duration {
	if b.tokens >= 1 {
		return 0
	}
	return time.Duration((1 - b.tokens) * float64(l.every))
}

// Clean reports whether key has used none of its attempts lately (its
// bucket is full).
func (l *Limiter) Clean(k string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	b, ok := l.buckets[key(k)]
	if !ok {
		return true
	}
	l.refill(b, l.now())
	return b.tokens >= l.burst
}

// Take takes an attempt for key: false, and how long to wait, when none
// is left.
func (l *Limiter) Take(k string) (bool, time.Duration) {
	k = key(k)
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.now()
	b, ok := l.buckets[k]
	if !ok {
		l.makeRoom(now)
		b = &bucket{tokens: l.burst, at: now}
		l.buckets[k] = b
	}
	l.refill(b, now)
	if b.tokens < 1 {
		return false, l.wait(b)
	}
	b.tokens--
	return true, 0
}

// Give returns an attempt to key (it turned out to be legitimate).
func (l *Limiter) Give(k string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if b, ok := l.buckets[key(k)]; ok {
		l.refill(b, l.now())
		b.tokens = min(l.burst, b.tokens+1)
	}
}

// Remaining is how many attempts key has left now (whole ones), and when
// its bucket is full again (zero time: it is full).
func (l *Limiter) Remaining(k string) (int, time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.now()
	b, ok := l.buckets[key(k)]
	if !ok {
		return int(l.burst), time.Time{}
	}
	l.refill(b, now)
	if b.tokens >= l.burst {
		return int(l.burst), time.Time{}
	}
	return int(b.tokens), now.Add(time.Duration((l.burst - b.tokens) * float64(l.every)))
}

// Burst is how many attempts a key has when its bucket is full.
func (l *Limiter) Burst() int { return int(l.burst) }

// Len is the number of keys remembered.
func (l *Limiter) Len() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.buckets)
}

func (l *Limiter) makeRoom(now time.Time) {
	if len(l.buckets) < l.maxKeys {
		return
	}
	for k, b := range l.buckets {
		l.refill(b, now)
		if b.tokens >= l.burst {
			delete(l.buckets, k)
		}
	}
	for k := range l.buckets {
		if len(l.buckets) < l.maxKeys {
			break
		}
		delete(l.buckets, k)
	}
}
