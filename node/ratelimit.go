package node

import (
	"errors"
	"fmt"
	"sync"
	"time"
)

// ErrStationRateLimited reports an append refused because its station
// exceeded its rate (Config.StationRate); the client should retry after
// the hint in the error.
var ErrStationRateLimited = errors.New("station append rate exceeded")

// maxLimitedStations bounds the rate limiter's memory: buckets idle long
// enough to be full again are dropped first.
const maxLimitedStations = 1 << 16

// stationLimiter is a token bucket per station: rate appends a second on
// average, bursts of up to burst. Only entries whose station signature
// verified reach it, so one station cannot spend another's budget.
type stationLimiter struct {
	rate  float64
	burst float64
	now   func() time.Time

	mu      sync.Mutex
	buckets map[[32]byte]*bucket
}

type bucket struct {
	tokens float64
	at     time.Time
}

// newStationLimiter returns a limiter, or nil (no limit) for rate <= 0.
func newStationLimiter(rate float64, burst int) *stationLimiter {
	if rate <= 0 {
		return nil
	}
	return &stationLimiter{rate: rate, burst: float64(max(burst, 1)), now: time.Now, buckets: make(map[[32]byte]*bucket)}
}

// allow takes a token for station id, or returns ErrStationRateLimited and
// how long until one is available.
func (l *stationLimiter) allow(id [32]byte) (time.Duration, error) {
	if l == nil {
		return 0, nil
	}
	now := l.now()
	l.mu.Lock()
	defer l.mu.Unlock()
	b := l.buckets[id]
	if b == nil {
		if len(l.buckets) >= maxLimitedStations {
			l.evictFull(now)
		}
		b = &bucket{tokens: l.burst, at: now}
		l.buckets[id] = b
	}
	b.tokens = min(l.burst, b.tokens+now.Sub(b.at).Seconds()*l.rate)
	b.at = now
	if b.tokens >= 1 {
		b.tokens--
		return 0, nil
	}
	wait := time.Duration((1 - b.tokens) / l.rate * float64(time.Second))
	return wait, fmt.Errorf("%w: station %x may append %g a second (bursts of %g); retry in %s",
		ErrStationRateLimited, id, l.rate, l.burst, wait.Round(time.Millisecond))
}

// evictFull drops the buckets that have refilled: forgetting them changes
// nothing.
func (l *stationLimiter) evictFull(now time.Time) {
	for id, b := range l.buckets {
		if b.tokens+now.Sub(b.at).Seconds()*l.rate >= l.burst {
			delete(l.buckets, id)
		}
	}
}
