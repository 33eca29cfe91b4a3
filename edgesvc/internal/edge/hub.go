package edge

import (
	"slices"
	"sync"
	"time"
)

// hub tracks live connections by session, and sessions that ended recently, so that
// a connection whose handshake raced with its session's end event is still closed.
type hub struct {
	mu        sync.Mutex
	bySession map[string][]*Conn // a slice, not a set: sessions have few sockets, and a map each costs ~300 B
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
	return &hub{bySession: map[string][]*Conn{}, ended: map[string]ended{}}
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
	h.bySession[c.session.ID] = append(h.bySession[c.session.ID], c)
	h.wg.Add(1)
	return true, ""
}

func (h *hub) remove(c *Conn) {
	h.mu.Lock()
	defer h.mu.Unlock()
	conns := h.bySession[c.session.ID]
	i := slices.Index(conns, c)
	if i < 0 {
		return
	}
	conns[i] = conns[len(conns)-1]
	conns[len(conns)-1] = nil
	if conns = conns[:len(conns)-1]; len(conns) == 0 {
		delete(h.bySession, c.session.ID)
	} else {
		h.bySession[c.session.ID] = conns
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
	return slices.Clone(h.bySession[sessionID])
}

// sessions returns one live connection per session, to re-validate each session once.
func (h *hub) sessions() []*Conn {
	h.mu.Lock()
	defer h.mu.Unlock()
	out := make([]*Conn, 0, len(h.bySession))
	for _, conns := range h.bySession {
		out = append(out, conns[0])
	}
	return out
}

// shutdown refuses new connections and returns every live one.
func (h *hub) shutdown() []*Conn {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.closing = true
	var out []*Conn
	for _, conns := range h.bySession {
		out = append(out, conns...)
	}
	return out
}
