package ratelimit_test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"strata/controller/ratelimit"
)

type clock struct{ t time.Time }

func (c *clock) now() time.Time { return c.t }

func TestBurstThenOnePerInterval(t *testing.T) {
	c := &clock{time.Unix(1000, 0)}
	l := ratelimit.New(3, 10*time.Second, 100)
	l.SetClock(c.now)
	for i := range 3 {
		if ok, _ := l.Take("a"); !ok {
			t.Fatalf("attempt %d refused within the burst", i+1)
		}
	}
	ok, wait := l.Take("a")
	if ok || wait != 10*time.Second {
		t.Fatalf("fourth attempt: %v, wait %s; want refused, 10s", ok, wait)
	}
	if ok, _ := l.Take("b"); !ok {
		t.Fatal("another key was limited")
	}
	c.t = c.t.Add(4 * time.Second)
	if ok, wait := l.Allow("a"); ok || wait != 6*time.Second {
		t.Fatalf("after 4s: %v %s", ok, wait)
	}
	c.t = c.t.Add(6 * time.Second)
	if ok, _ := l.Take("a"); !ok {
		t.Fatal("after the interval, refused")
	}
	if ok, _ := l.Take("a"); ok {
		t.Fatal("two attempts after one interval")
	}
	l.Give("a")
	if ok, _ := l.Take("a"); !ok {
		t.Fatal("a given-back attempt was not available")
	}
	if l.Clean("a") || !l.Clean("never-seen") {
		t.Fatal("Clean: a used key is clean, or an unknown one is not")
	}
	c.t = c.t.Add(time.Hour)
	if !l.Clean("a") {
		t.Fatal("a key whose bucket refilled is not clean")
	}
}

// Keys a client chooses (user names) cannot grow the limiter's memory.
func TestMemoryIsBounded(t *testing.T) {
	c := &clock{time.Unix(1000, 0)}
	l := ratelimit.New(2, time.Minute, 50)
	l.SetClock(c.now)
	for i := range 10000 {
		l.Take(fmt.Sprintf("user-%d-%s", i, strings.Repeat("x", 1000)))
	}
	if n := l.Len(); n > 50 {
		t.Fatalf("%d keys remembered, want at most 50", n)
	}
	// Long keys are cut: two keys equal in their first MaxKeyLength
	// characters share a bucket.
	long := strings.Repeat("y", ratelimit.MaxKeyLength)
	l.Take(long + "1")
	l.Take(long + "2")
	if ok, _ := l.Take(long + "3"); ok {
		t.Fatal("keys longer than MaxKeyLength do not share a bucket")
	}
}

// TestRemaining reports what a key has left and when it is full again,
// without taking anything (the API's GET /limits shows it).
func TestRemaining(t *testing.T) {
	c := &clock{time.Unix(1000, 0)}
	l := ratelimit.New(3, 10*time.Second, 100)
	l.SetClock(c.now)
	if n, full := l.Remaining("a"); n != 3 || !full.IsZero() {
		t.Fatalf("unknown key: %d, %v; want 3, zero", n, full)
	}
	l.Take("a")
	l.Take("a")
	if n, full := l.Remaining("a"); n != 1 || !full.Equal(c.t.Add(20*time.Second)) {
		t.Fatalf("after two: %d, %v; want 1, +20s", n, full)
	}
	if n, _ := l.Remaining("a"); n != 1 {
		t.Fatalf("Remaining took an attempt: %d left", n)
	}
	c.t = c.t.Add(25 * time.Second)
	if n, full := l.Remaining("a"); n != 3 || !full.IsZero() {
		t.Fatalf("after 25s: %d, %v; want 3, zero", n, full)
	}
	if l.Burst() != 3 {
		t.Fatalf("Burst %d", l.Burst())
	}
}
