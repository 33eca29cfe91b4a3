package natslayer

import "sync"

// queue is a first-in first-out queue bounded in bytes, with one reader that waits
// on ready and takes everything queued at once. Pushing never blocks.
type queue[T any] struct {
	mu    sync.Mutex
	items []T
	bytes int64
	limit int64
	ready chan struct{} // holds a token while items are queued
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
	q.items = append(q.items, v)
	q.bytes += size
	q.mu.Unlock()
	select {
	case q.ready <- struct{}{}:
	default:
	}
	return true
}

// take returns everything queued, oldest first, and empties the queue.
func (q *queue[T]) take() []T {
	q.mu.Lock()
	defer q.mu.Unlock()
	items := q.items
	q.items, q.bytes = nil, 0
	return items
}

// len returns how many items are queued.
func (q *queue[T]) len() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return len(q.items)
}
