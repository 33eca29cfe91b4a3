package e2e

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	authv1 "github.com/gatehouse/gatehouse/gen/gatehouse/auth/v1"
	"github.com/gorilla/websocket"
)

// The chat room (/ws/chat/{room}/) against the built binaries, with real sessions.

func chatURL(edgeAddr, room string) string { return fmt.Sprintf("ws://%s/ws/chat/%s/", edgeAddr, room) }

func openChat(t *testing.T, s *system, room string, l *authv1.LoginResponse) *websocket.Conn {
	t.Helper()
	ws, code := dialWS(t, chatURL(s.edge.addr, room), cookieHeader(s.edge.addr, l.GetToken()))
	if code != http.StatusSwitchingProtocols {
		t.Fatalf("chat handshake: %d", code)
	}
	return ws
}

// frame reads one JSON frame.
func frame(t *testing.T, ws *websocket.Conn) map[string]any {
	t.Helper()
	_ = ws.SetReadDeadline(time.Now().Add(10 * time.Second))
	_, b, err := ws.ReadMessage()
	if err != nil {
		t.Fatalf("read: %v", err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatalf("not JSON: %q", b)
	}
	return m
}

func userOf(u *authv1.User) map[string]any {
	return map[string]any{"id": float64(u.GetId()), "username": u.GetUsername()}
}

func wantFrame(t *testing.T, got map[string]any, want map[string]any) {
	t.Helper()
	g, _ := json.Marshal(got)
	w, _ := json.Marshal(want)
	if string(g) != string(w) {
		t.Fatalf("frame %s, want %s", g, w)
	}
}

func TestChatRoom(t *testing.T) {
	s := newSystem(t, nil, nil)
	alice, apw := s.newUser(t)
	bob, bpw := s.newUser(t)
	la, lb := s.login(t, alice, apw), s.login(t, bob, bpw)
	room := "lobby-" + fmt.Sprint(time.Now().UnixNano())

	a := openChat(t, s, room, la)
	wantFrame(t, frame(t, a), map[string]any{"type": "chat.members", "room": room, "users": []any{userOf(alice)}})

	b := openChat(t, s, room, lb)
	wantFrame(t, frame(t, b), map[string]any{"type": "chat.members", "room": room, "users": []any{userOf(alice), userOf(bob)}})
	wantFrame(t, frame(t, a), map[string]any{"type": "chat.join", "room": room, "user": userOf(bob)})

	// A message reaches every member, the sender too.
	if err := b.WriteMessage(websocket.TextMessage, []byte(`{"message": "hi alice"}`)); err != nil {
		t.Fatal(err)
	}
	for _, ws := range []*websocket.Conn{a, b} {
		m := frame(t, ws)
		sent, err := time.Parse(time.RFC3339, fmt.Sprint(m["sent_at"]))
		if err != nil || time.Since(sent) > time.Minute {
			t.Fatalf("sent_at %v: %v", m["sent_at"], err)
		}
		delete(m, "sent_at")
		wantFrame(t, m, map[string]any{"type": "chat.message", "room": room, "user": userOf(bob), "message": "hi alice"})
	}

	// Anything else is an error frame, and the connection stays.
	for _, bad := range []string{`hello`, `{"message": ""}`, `{"message": "a", "to": "b"}`, `{"message": "` + strings.Repeat("x", 4097) + `"}`} {
		if err := a.WriteMessage(websocket.TextMessage, []byte(bad)); err != nil {
			t.Fatal(err)
		}
		m := frame(t, a)
		if m["type"] != "error" || m["error"] == "" {
			t.Fatalf("after %.30q: %v, want an error frame", bad, m)
		}
	}

	// Bob's second tab: no second join; leave only when his last tab closes.
	b2 := openChat(t, s, room, lb)
	if m := frame(t, b2); m["type"] != "chat.members" {
		t.Fatalf("second tab got %v first", m)
	}
	b.Close()
	if err := a.WriteMessage(websocket.TextMessage, []byte(`{"message": "still there?"}`)); err != nil {
		t.Fatal(err)
	}
	if m := frame(t, a); m["type"] != "chat.message" { // no chat.leave: bob has a tab left
		t.Fatalf("got %v, want alice's message (no leave yet)", m)
	}
	b2.Close()
	wantFrame(t, frame(t, a), map[string]any{"type": "chat.leave", "room": room, "user": userOf(bob)})

	// Refusals: a bad room name is no route; binary closes with 1003.
	for _, bad := range []string{"a%20b", strings.Repeat("r", 96), "%C3%A9"} {
		if _, code, reason := dialWSReason(t, chatURL(s.edge.addr, bad), cookieHeader(s.edge.addr, la.GetToken())); code != http.StatusNotFound || reason != "NO_ROUTE" {
			t.Errorf("room %q: %d %s, want 404 NO_ROUTE", bad, code, reason)
		}
	}
	if err := a.WriteMessage(websocket.BinaryMessage, []byte{1}); err != nil {
		t.Fatal(err)
	}
	expectClose(t, a, websocket.CloseUnsupportedData, "binary frames are not supported: send text", 5*time.Second)
}
