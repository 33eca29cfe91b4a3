package edge

import (
	"sync"
	"time"
)

// hub tracks live connections by session, and sessions that ended recently, so that
// a connection whose handshake raced with its session's end event is still closed.
type hub struct {
	mu        sync.Mutex
	bySession map[string]map[*Conn]struct{}
	ended     map[string]ended
	lastPrune time.Time
	closing   bool
	wg        sync.WaitGroup
}

type ended struct {
	reason string
	at     time.Time
}

// endedTTL is how long an ended session is remembered: far longer than any
// handshake takes between its ValidateSession and its registration here.
const endedTTL = 5 * time.Minute

func newHub() *hub {
	return &hub{bySession: map[string]map[*Conn]struct{}{}, ended: map[string]ended{}}
}

// add registers c. It returns false and the reason if c must be closed at once: its
// session has ended (reason for 4401), or the edge is shutting down (reason "").
func (h *hub) add(c *Conn) (bool, string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closing {
		return false, ""
	}
	if e, ok := h.ended[c.session.ID]; ok {
		return false, e.reason
	}
	set := h.bySession[c.session.ID]
	if set == nil {
		set = map[*Conn]struct{}{}
		h.bySession[c.session.ID] = set
	}
	set[c] = struct{}{}
	h.wg.Add(1)
	return true, ""
}

func (h *hub) remove(c *Conn) {
	h.mu.Lock()
	defer h.mu.Unlock()
	set := h.bySession[c.session.ID]
	if _, ok := set[c]; !ok {
		return
	}
	delete(set, c)
	if len(set) == 0 {
		delete(h.bySession, c.session.ID)
	}
	h.wg.Done()
}

// end records that the session ended and returns its live connections.
func (h *hub) end(sessionID, reason string) []*Conn {
	h.mu.Lock()
	defer h.mu.Unlock()
	now := time.Now()
	if now.Sub(h.lastPrune) > time.Minute {
		for id, e := range h.ended {
			if now.Sub(e.at) > endedTTL {
				delete(h.ended, id)
			}
		}
		h.lastPrune = now
	}
	h.ended[sessionID] = ended{reason: reason, at: now}
	var out []*Conn
	for c := range h.bySession[sessionID] {
		out = append(out, c)
	}
	return out
}

// sessions returns one live connection per session, to re-validate each session once.
func (h *hub) sessions() []*Conn {
	h.mu.Lock()
	defer h.mu.Unlock()
	out := make([]*Conn, 0, len(h.bySession))
	for _, set := range h.bySession {
		for c := range set {
			out = append(out, c)
			break
		}
	}
	return out
}

// shutdown refuses new connections and returns every live one.
func (h *hub) shutdown() []*Conn {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.closing = true
	var out []*Conn
	for _, set := range h.bySession {
		for c := range set {
			out = append(out, c)
		}
	}
	return out
}
