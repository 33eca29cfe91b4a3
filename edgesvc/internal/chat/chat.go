// Package chat is the Channels tutorial's chat room as a gatehouse consumer: on
// /ws/chat/{room}/ every member's messages reach every member of the room, across
// edges, with the room's members on joining and who joins and leaves.
package chat

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"hash/fnv"
	"net/http"
	"slices"
	"sync"
	"time"

	"github.com/gatehouse/gatehouse/edgesvc/edge"
)

// MaxMessage is the longest message, in bytes of UTF-8.
const MaxMessage = 4096

// ValidRoom reports whether name can be a room: 1–95 characters of ASCII letters,
// digits, '-', '_' and '.' (its group, "chat." + name, is then a valid group).
// "." and ".." are not rooms: HTTP routing treats them as path steps.
func ValidRoom(name string) bool {
	return len(name) >= 1 && len(name) <= 95 && edge.ValidGroup("chat."+name) && name != "." && name != ".."
}

// locks serialise, per room (by hash), a member's arrival (presence, members list,
// join, announcement) and departure (leave, presence, announcement), so that two of
// them never interleave: "first connection joins, last one leaves" then holds on one
// edge.
var locks [64]sync.Mutex

func lockRoom(group string) *sync.Mutex {
	h := fnv.New32a()
	_, _ = h.Write([]byte(group))
	return &locks[h.Sum32()%uint32(len(locks))]
}

// New returns the consumer factory for srv's chat route (a pattern with {room}).
func New(srv *edge.Server) func() edge.Consumer {
	return func() edge.Consumer { return &room{srv: srv} }
}

// room is the consumer of one connection in one room.
type room struct {
	srv   *edge.Server
	name  string
	group string
}

// user is a member as the protocol shows them.
type user struct {
	ID       int64  `json:"id"`
	Username string `json:"username"`
}

// Connect refuses a bad room name (404 NO_ROUTE); otherwise the new member first
// gets chat.members (the room's users, itself included), then joins the room, and the
// others get chat.join if this is the user's first connection there.
func (r *room) Connect(ctx context.Context, c *edge.Conn, req *http.Request) error {
	r.name = req.PathValue("room")
	if !ValidRoom(r.name) {
		return &edge.Refusal{Status: http.StatusNotFound, Reason: "NO_ROUTE",
			Message: "no such room: names are 1 to 95 characters of ASCII letters, digits, '-', '_' and '.'"}
	}
	r.group = "chat." + r.name
	mu := lockRoom(r.group)
	mu.Lock()
	defer mu.Unlock()
	p, err := r.srv.GroupPresence(ctx, r.group)
	if err != nil {
		return err
	}
	me := user{ID: c.User().ID, Username: c.User().Username}
	users := make([]user, 0, len(p.Users)+1)
	present := false
	for _, u := range p.Users {
		users = append(users, user{ID: u.ID, Username: u.Username})
		present = present || u.ID == me.ID
	}
	if !present {
		users = append(users, me)
		slices.SortFunc(users, func(a, b user) int { return cmp.Compare(a.ID, b.ID) })
	}
	// Queued before joining: nothing sent to the room can come before it.
	if err := c.Send(encode(map[string]any{"type": "chat.members", "room": r.name, "users": users})); err != nil {
		return err
	}
	if err := c.Join(r.group); err != nil {
		return err
	}
	if !present {
		return r.srv.Send(ctx, edge.ToGroup(r.group), encode(map[string]any{"type": "chat.join", "room": r.name, "user": me}), c.ID())
	}
	return nil
}

// Receive broadcasts a well-formed message to the room; anything else is answered with
// an error frame and the connection kept. Binary closes with 1003.
func (r *room) Receive(ctx context.Context, c *edge.Conn, m edge.Message) error {
	if m.Binary {
		c.Close(edge.CloseUnsupported, "binary frames are not supported: send text")
		return nil
	}
	text, err := ParseMessage(m.Text)
	if err != nil {
		return c.Reply(encode(map[string]string{"type": "error", "error": err.Error()}))
	}
	return r.srv.Send(ctx, edge.ToGroup(r.group), encode(map[string]any{
		"type": "chat.message", "room": r.name,
		"user":    user{ID: c.User().ID, Username: c.User().Username},
		"message": text, "sent_at": time.Now().UTC().Format(time.RFC3339),
	}))
}

// Disconnect leaves the room; if the user has no connection left in it, the others
// get chat.leave.
func (r *room) Disconnect(ctx context.Context, c *edge.Conn, _ int) {
	if r.group == "" {
		return
	}
	mu := lockRoom(r.group)
	mu.Lock()
	defer mu.Unlock()
	c.Leave(r.group)
	p, err := r.srv.GroupPresence(ctx, r.group)
	if err != nil {
		return
	}
	for _, u := range p.Users {
		if u.ID == c.User().ID {
			return
		}
	}
	_ = r.srv.Send(ctx, edge.ToGroup(r.group), encode(map[string]any{
		"type": "chat.leave", "room": r.name, "user": user{ID: c.User().ID, Username: c.User().Username},
	}))
}

// Errors of ParseMessage, as the error frame says them.
var (
	errNotJSON = errors.New(`send a JSON object: {"message": "..."}`)
	errShape   = errors.New(`send exactly {"message": "..."}, with a string and no other keys`)
	errEmpty   = errors.New("the message is empty")
	errTooLong = errors.New("the message is over 4096 bytes")
)

// ParseMessage returns S from exactly {"message": S}, S a string of 1–4096 UTF-8
// bytes; otherwise an error a person can read.
func ParseMessage(text string) (string, error) {
	dec := json.NewDecoder(bytes.NewReader([]byte(text)))
	var obj map[string]json.RawMessage
	if err := dec.Decode(&obj); err != nil || obj == nil {
		return "", errNotJSON
	}
	if dec.More() || dec.InputOffset() != int64(len(bytes.TrimRight([]byte(text), " \t\r\n"))) {
		return "", errNotJSON // something after the object
	}
	raw, ok := obj["message"]
	if !ok || len(obj) != 1 || duplicateKeys(text) {
		return "", errShape
	}
	var s string
	if len(raw) == 0 || raw[0] != '"' || json.Unmarshal(raw, &s) != nil { // a string, not null
		return "", errShape
	}
	switch {
	case s == "":
		return "", errEmpty
	case len(s) > MaxMessage:
		return "", errTooLong
	}
	return s, nil
}

// duplicateKeys reports whether the top-level object has a key more than once (a map
// keeps only the last, which would hide a second "message").
func duplicateKeys(text string) bool {
	dec := json.NewDecoder(bytes.NewReader([]byte(text)))
	if _, err := dec.Token(); err != nil { // {
		return false
	}
	seen := map[string]bool{}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return false
		}
		k, _ := tok.(string)
		if seen[k] {
			return true
		}
		seen[k] = true
		var skip json.RawMessage
		if err := dec.Decode(&skip); err != nil {
			return false
		}
	}
	return false
}

// encode is json.Marshal for the protocol's frames, which always encode.
func encode(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return string(b)
}
