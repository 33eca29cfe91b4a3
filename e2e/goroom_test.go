package e2e

import (
	"net/http"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	authv1 "github.com/gatehouse/gatehouse/gen/gatehouse/auth/v1"
	"github.com/gorilla/websocket"
)

// TestGoConsumerFromAnotherModule: examples/go-room, a module of its own that imports
// only the public edgesvc/edge package, builds (without the workspace, as a user's
// module would) and runs an edge with its own consumer on its own route against the
// real authsvc: authorised before the upgrade, refused by the consumer with its own
// status and reason, closed with 4401 when the session is revoked.
func TestGoConsumerFromAnotherModule(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "go-room")
	build := exec.CommandContext(t.Context(), "go", "build", "-o", bin, ".")
	build.Dir = filepath.Join("..", "examples", "go-room")
	build.Env = append(build.Environ(), "GOWORK=off")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build examples/go-room with GOWORK=off: %v\n%s", err, out)
	}

	auth := startAuth(t)
	room := start(t, bin, "AUTHSVC_ADDR="+auth.addr, "ROOM_LISTEN=127.0.0.1:0")
	cc := dial(t, auth.addr)
	s := &system{auth: auth, authCC: cc, authC: authv1.NewAuthServiceClient(cc), admin: authv1.NewAdminServiceClient(cc)}
	u, pw := s.newUser(t)
	l := s.login(t, u, pw)
	bearer := http.Header{"Authorization": {"Bearer " + l.GetToken()}}
	base := "ws://" + room.addr + "/ws/room/"

	if _, code, reason := dialWSReason(t, base+"lobby/", nil); code != http.StatusUnauthorized || reason != "NO_CREDENTIAL" {
		t.Fatalf("no credential: %d %s, want 401 NO_CREDENTIAL", code, reason)
	}
	if _, code, reason := dialWSReason(t, base+"closed/", bearer); code != http.StatusForbidden || reason != "ROOM_CLOSED" {
		t.Fatalf("closed room: %d %s, want the consumer's 403 ROOM_CLOSED", code, reason)
	}
	ws, code, _ := dialWSReason(t, base+"lobby/", bearer)
	if code != http.StatusSwitchingProtocols {
		t.Fatalf("lobby: %d, want 101", code)
	}
	_ = ws.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, got, err := ws.ReadMessage(); err != nil || string(got) != "welcome to lobby, "+u.GetUsername() {
		t.Fatalf("greeting = %q, %v", got, err)
	}
	if err := ws.WriteMessage(websocket.TextMessage, []byte("hi")); err != nil {
		t.Fatal(err)
	}
	if _, got, err := ws.ReadMessage(); err != nil || string(got) != "lobby: hi" {
		t.Fatalf("reply = %q, %v", got, err)
	}
	if _, err := s.authC.Logout(t.Context(), &authv1.LogoutRequest{Token: l.GetToken()}); err != nil {
		t.Fatal(err)
	}
	expectClose(t, ws, 4401, "logout", 5*time.Second)
	if !strings.Contains(room.logs(), "room edge listening") {
		t.Fatalf("unexpected log:\n%s", room.logs())
	}
}
