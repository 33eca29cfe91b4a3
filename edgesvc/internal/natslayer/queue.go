package natslayer

import "sync"

// queue is a first-in first-out queue bounded in bytes, with one reader that waits
// on ready, takes everything queued at once and releases each item's bytes once it
// is done with it. Pushing never blocks.
type queue[T any] struct {
	mu    sync.Mutex
	items []entry[T]
	bytes int64 // queued or taken and not yet released
	limit int64
	ready chan struct{} // holds a token while items are queued
}

type entry[T any] struct {
	v    T
	size int64
}

func newQueue[T any](limit int64) *queue[T] {
	return &queue[T]{limit: limit, ready: make(chan struct{}, 1)}
}

// push queues v, of size bytes, unless that would take the queue past its limit
// (false); with always, v is queued whatever the size (small control items). One
// item always fits an empty queue.
func (q *queue[T]) push(v T, size int64, always bool) bool {
	q.mu.Lock()
	if !always && q.bytes > 0 && q.bytes+size > q.limit {
		q.mu.Unlock()
		return false
	}
	q.items = append(q.items, entry[T]{v, size})
	q.bytes += size
	q.mu.Unlock()
	select {
	case q.ready <- struct{}{}:
	default:
	}
	return true
}

// take returns everything queued, oldest first, and empties the queue; the bytes
// still count until released.
func (q *queue[T]) take() []entry[T] {
	q.mu.Lock()
	defer q.mu.Unlock()
	items := q.items
	q.items = nil
	return items
}

// release says the reader is done with an item of size bytes.
func (q *queue[T]) release(size int64) {
	q.mu.Lock()
	q.bytes -= size
	q.mu.Unlock()
}
